"""Real-agent benchmark: ``podium::echo`` on N real ``podium agent`` processes.

A real server and N real agents on loopback, started with the machinery of
``podium demo`` (each agent enrolls with the CA, connects to the embedded broker and
runs the task under its detached wrapper). One warm-up job fills the agents' task file
cache; then R timed rounds, each from submission to every result stored. Afterwards
the idle RSS of the agent processes and the server's RSS are read from /proc.

    .venv/bin/python bench/agents.py                 # 50 agents, 10 rounds
    .venv/bin/python bench/agents.py --agents 20 --rounds 30
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from fanout import Probe, server_environment
from harness import (
    Api,
    CpuMeter,
    JobRun,
    ServerInfo,
    cpu_seconds,
    cpu_seconds_with_children,
    interrupt_on_signals,
    median,
    ms,
    percentile,
    raise_nofile,
    rss_kb,
    running_server,
    table,
    wait_idle,
    wait_quiet,
)

from podium.cli.demo import Demo

CPUS = os.cpu_count() or 1


def rss_anon_kb(pid: int) -> int:
    """RssAnon: the part of the RSS that is the process's own (not shared libraries)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def cpu_split(server: int, agents: list[int]) -> tuple[float, float, float]:
    """CPU seconds so far of the server, of the agent processes themselves, and of the
    task processes they reaped."""
    own = [cpu_seconds(pid) for pid in agents]
    with_tasks = [cpu_seconds_with_children(pid) for pid in agents]
    return cpu_seconds(server), sum(own), sum(with_tasks) - sum(own)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time podium::echo on real agent processes.")
    parser.add_argument("--agents", type=int, default=50, help="agent processes (50)")
    parser.add_argument("--rounds", type=int, default=10, help="timed jobs (10)")
    parser.add_argument("--database-url", help="e.g. postgresql://user@127.0.0.1/db (SQLite)")
    parser.add_argument(
        "--poll", type=float, default=0.005, help="job polling interval in seconds (0.005)"
    )
    parser.add_argument(
        "--pause", type=float, default=0.5, help="seconds between rounds, for a quiet start (0.5)"
    )
    parser.add_argument("--timeout", type=float, default=120, help="per step, seconds (120)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PREFIX",
        help="profile the server and every agent during the timed rounds with cProfile: "
        "PREFIX-server-main.prof, PREFIX-agent-<pid>-main.prof (and -threads.prof), for "
        "pstats; the figures then include the profiler's overhead",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="wait up to this long for other processes to go quiet first (120 s)",
    )
    args = parser.parse_args(argv)
    interrupt_on_signals()
    raise_nofile(args.agents * 8 + 1024)
    busy = wait_quiet(args.quiet_wait)
    if busy >= 0.2:
        print(f"WARNING: other processes use {busy:.0%} of a CPU; figures will be noisy")
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; stopped everything", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    server_probe = agent_probe = None
    if args.profile is not None:
        server_probe = Probe(args.profile.with_name(args.profile.name + "-server"), True)
        agent_probe = Probe(args.profile.with_name(args.profile.name + "-agent"), True)
        agent_probe.per_pid = True
    with contextlib.ExitStack() as stack:
        for probe in (server_probe, agent_probe):
            if probe is not None:
                stack.callback(probe.close)
        with server_environment(None, server_probe):
            demo, server = stack.enter_context(
                running_server(
                    agents=args.agents, database_url=args.database_url, keep_logs=args.keep_logs
                )
            )
        code = measure(args, demo, server, agent_probe)
    if args.profile is not None:
        print(
            f"\nprofiles: {args.profile}-server-main.prof (and -threads.prof), "
            f"{args.profile}-agent-<pid>-main.prof (and -threads.prof)"
        )
    return code


def measure(args: argparse.Namespace, demo: Demo, server: ServerInfo, probe: Probe | None) -> int:
    """The rounds on a running server; ``probe``: the agents run fanout.PROFILER too."""
    api = Api(server)
    try:
        started = time.monotonic()
        with server_environment(None, probe):
            demo.start_agents()
        api.wait_connected(demo.certnames, timeout=args.timeout)
        print(
            f"{args.agents} agents enrolled and connected in "
            f"{time.monotonic() - started:.1f} s (server pid {server.pid})"
        )
        agent_pids = [p.pid for p in demo.procs[1:]]
        wait_idle(server.pid)
        rss_connected = [rss_kb(pid) for pid in agent_pids]
        warm = api.run_task(demo.certnames, poll=args.poll, timeout=args.timeout)
        print(f"warm-up job {warm.job_id}: {ms(warm.seconds)}")
        runs: list[JobRun] = []
        cpu_ours: list[float] = []
        cpu_other: list[float] = []
        splits: list[tuple[float, ...]] = []
        meter = CpuMeter([server.pid, *agent_pids])
        profiled = [server.pid, *agent_pids] if probe is not None else []
        for pid in profiled:
            os.kill(pid, signal.SIGUSR1)  # the timed rounds only
        for i in range(1, args.rounds + 1):
            time.sleep(args.pause)
            meter.restart()
            split_before = cpu_split(server.pid, agent_pids)
            run = api.run_task(
                demo.certnames,
                params={"message": f"round {i}"},
                poll=args.poll,
                timeout=args.timeout,
            )
            ours, other, _steal = meter.read()
            split = tuple(
                a - b for a, b in zip(cpu_split(server.pid, agent_pids), split_before, strict=True)
            )
            splits.append(split)
            runs.append(run)
            cpu_ours.append(ours)
            cpu_other.append(other)
            print(
                f"round {i}: job {run.job_id} stored in {ms(run.seconds)} "
                f"(POST answered in {ms(run.submit_seconds)}, "
                f"server duration {ms(run.server_duration)}); CPU {ours:.2f} s "
                f"server + agents + tasks ({split[0]:.2f} + {split[1]:.2f} + "
                f"{split[2]:.2f} s; the acknowledgements may still be under way), "
                f"{other:.2f} s other processes"
            )
        for pid in profiled:
            os.kill(pid, signal.SIGUSR2)
        time.sleep(1.0)  # let the agents finish their acknowledgements
        wait_idle(server.pid)
        rss_agents = [rss_kb(pid) for pid in agent_pids]
        anon_agents = [rss_anon_kb(pid) for pid in agent_pids]
        rss_server = rss_kb(server.pid)
    finally:
        api.close()
    seconds = [r.seconds for r in runs]
    posts = [r.submit_seconds for r in runs]
    durations = [r.server_duration for r in runs if r.server_duration is not None]
    print(
        f"\n{args.agents} real agents, podium::echo, {args.rounds} rounds after a warm-up, "
        f"poll every {ms(args.poll)}; CPU per round (median) {median(cpu_ours):.2f} s for "
        f"server, agents and task processes, {median(cpu_ours) / args.agents * 1000:.1f} ms "
        f"per node; of a round, server {median([x[0] for x in splits]) * 1000:.0f} ms, agents "
        f"{median([x[1] for x in splits]) * 1000:.0f} ms, task processes "
        f"{median([x[2] for x in splits]) * 1000:.0f} ms (medians)\n"
    )
    print(
        table(
            ["figure", "median", "p90", "best"],
            [
                [
                    "submission → every result stored",
                    ms(median(seconds)),
                    ms(percentile(seconds, 90)),
                    ms(min(seconds)),
                ],
                [
                    "POST /command/task answered",
                    ms(median(posts)),
                    ms(percentile(posts, 90)),
                    ms(min(posts)),
                ],
                [
                    "server-side job duration",
                    ms(median(durations)) if durations else "-",
                    ms(percentile(durations, 90)) if durations else "-",
                    ms(min(durations)) if durations else "-",
                ],
            ],
        )
    )
    print()
    print(
        table(
            ["process", "median RSS", "max RSS"],
            [
                [
                    "agent, idle after connecting",
                    f"{median(rss_connected) / 1024:.1f} MiB",
                    f"{max(rss_connected) / 1024:.1f} MiB",
                ],
                [
                    "agent, idle after the rounds",
                    f"{median(rss_agents) / 1024:.1f} MiB",
                    f"{max(rss_agents) / 1024:.1f} MiB",
                ],
                [
                    "agent, idle after the rounds: RssAnon only",
                    f"{median(anon_agents) / 1024:.1f} MiB",
                    f"{max(anon_agents) / 1024:.1f} MiB",
                ],
                ["server", f"{rss_server / 1024:.1f} MiB", ""],
            ],
        )
    )
    other = sum(cpu_other)
    if other >= 0.1 and other > 0.1 * sum(seconds) * CPUS:
        print(
            f"\nWARNING: other processes used {other:.1f} CPU-s during the rounds "
            f"({other / (sum(seconds) * CPUS):.0%} of this machine): "
            + (
                "that includes the database server's own processes."
                if args.database_url
                else "the figures are noisy."
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
