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
import os
import sys
import time
from pathlib import Path

from harness import (
    Api,
    CpuMeter,
    JobRun,
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

CPUS = os.cpu_count() or 1


def rss_anon_kb(pid: int) -> int:
    """RssAnon: the part of the RSS that is the process's own (not shared libraries)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


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
    with running_server(
        agents=args.agents, database_url=args.database_url, keep_logs=args.keep_logs
    ) as (demo, server):
        api = Api(server)
        try:
            started = time.monotonic()
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
            meter = CpuMeter([server.pid, *agent_pids])
            for i in range(1, args.rounds + 1):
                time.sleep(args.pause)
                meter.restart()
                run = api.run_task(
                    demo.certnames,
                    params={"message": f"round {i}"},
                    poll=args.poll,
                    timeout=args.timeout,
                )
                ours, other, _steal = meter.read()
                runs.append(run)
                cpu_ours.append(ours)
                cpu_other.append(other)
                print(
                    f"round {i}: job {run.job_id} stored in {ms(run.seconds)} "
                    f"(POST answered in {ms(run.submit_seconds)}, "
                    f"server duration {ms(run.server_duration)}); CPU {ours:.2f} s "
                    f"server + agents + tasks, {other:.2f} s other processes"
                )
            time.sleep(1.0)  # let the agents finish their acknowledgements
            wait_idle(server.pid)
            rss_agents = [rss_kb(pid) for pid in agent_pids]
            anon_agents = [rss_anon_kb(pid) for pid in agent_pids]
            rss_server = rss_kb(server.pid)
        finally:
            api.close()
    seconds = [r.seconds for r in runs]
    durations = [r.server_duration for r in runs if r.server_duration is not None]
    print(
        f"\n{args.agents} real agents, podium::echo, {args.rounds} rounds after a warm-up, "
        f"poll every {ms(args.poll)}; CPU per round (median) {median(cpu_ours):.2f} s for "
        f"server, agents and task processes, {median(cpu_ours) / args.agents * 1000:.1f} ms "
        f"per node\n"
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
