"""Puppet apply benchmark: Podium's overhead on a Puppet run, and a job on 50 real agents.

A real server and real agents on loopback (the machinery of ``podium demo``), real
``puppet apply``. The manifest manages a few files and an exec per node, under a folder
of the benchmark's own, and is already applied (warm: the agents have the packed
environment cached and nothing changes), so both sides do the same work:

1. **Overhead per node.** ``--rounds`` times in turn, each measured from the start of a
   command to its end: bare ``puppet apply`` of the same environment, with the same
   Puppet folders, as the agent would run it; and a one-node deploy job through Podium
   (POST ``/command/deploy`` → agent → ``puppet apply`` → result stored, as the client
   polls it). The overhead is the difference of the medians.
2. **A job on ``--agents`` nodes** (50): its wall time, against that many bare applies in
   sequence (``--agents`` times the bare median), the way one would run them by hand.

    .venv/bin/python bench/puppet_apply.py                  # 50 agents, 7 rounds
    .venv/bin/python bench/puppet_apply.py --agents 20 --rounds 11
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from harness import Api, interrupt_on_signals, median, raise_nofile, running_server, wait_quiet

SITE = """\
node default {{
  $dir = "{root}/${{trusted['certname']}}"
  file {{ $dir: ensure => directory }}
  file {{ "${{dir}}/motd": content => "managed by Podium\\n" }}
  file {{ "${{dir}}/limits.conf": content => "* soft nofile 65536\\n", mode => '0644' }}
  exec {{ 'stamp':
    command => "/bin/sh -c 'date > ${{dir}}/stamp'",
    creates => "${{dir}}/stamp",
    require => File[$dir],
  }}
}}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Podium's overhead on puppet apply.")
    parser.add_argument("--agents", type=int, default=50, help="agents for the big job (50)")
    parser.add_argument("--rounds", type=int, default=7, help="timed runs of each kind (7)")
    parser.add_argument("--timeout", type=float, default=600, help="per job, seconds (600)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--quiet-wait", type=float, default=120, help="wait for a quiet machine (120 s)"
    )
    args = parser.parse_args(argv)
    interrupt_on_signals()
    raise_nofile(args.agents * 8 + 1024)
    if shutil.which("puppet") is None:
        print("no puppet on the PATH: run scripts/ensure-puppet first", file=sys.stderr)
        return 1
    busy = wait_quiet(args.quiet_wait)
    if busy >= 0.2:
        print(f"WARNING: other processes use {busy:.0%} of a CPU; figures will be noisy")
    work = Path(tempfile.mkdtemp(prefix="podium-bench-puppet-"))
    try:
        return run(args, work)
    except KeyboardInterrupt:
        print("interrupted; stopped everything", file=sys.stderr)
        return 130
    finally:
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    code = work / "code"
    manifests = code / "environments/production/manifests"
    manifests.mkdir(parents=True)
    (work / "managed").mkdir()
    (manifests / "site.pp").write_text(SITE.format(root=work / "managed"))
    with running_server(agents=args.agents, keep_logs=args.keep_logs, codedir=code) as (
        demo,
        server,
    ):
        api = Api(server, timeout=args.timeout)
        try:
            demo.start_agents()
            api.wait_connected(demo.certnames, timeout=args.timeout)
            first = demo.certnames[0]
            print(f"{args.agents} agents connected; warming up (every node applies once)")
            warm = api.deploy(demo.certnames, timeout=args.timeout)
            print(f"warm-up job {warm.job_id}: {warm.seconds:.1f} s, {warm.node_states}")
            bare_command = bare(demo.vardir(first) / "puppet", server.datadir, first)
            bare_runs, podium_runs, server_side = [], [], []
            for i in range(1, args.rounds + 1):
                started = time.monotonic()
                done = subprocess.run(bare_command, capture_output=True, text=True, check=False)
                bare_runs.append(time.monotonic() - started)
                if done.returncode != 0:  # 0: applied, nothing to change
                    print(done.stdout + done.stderr, file=sys.stderr)
                    raise RuntimeError(f"bare puppet apply exited {done.returncode}")
                job = api.deploy([first], poll=0.02, timeout=args.timeout)
                podium_runs.append(job.seconds)
                server_side.append(job.server_duration or 0.0)
                print(
                    f"round {i}: bare puppet apply {bare_runs[-1]:.2f} s, "
                    f"Podium job {job.job_id} {job.seconds:.2f} s "
                    f"({server_side[-1]:.2f} s from its start to its end on the server)"
                )
            big = api.deploy(demo.certnames, timeout=args.timeout)
        finally:
            api.close()
    bare_median, podium_median = median(bare_runs), median(podium_runs)
    overhead = podium_median - bare_median
    spread = statistics.pstdev(bare_runs)
    print(
        textwrap.dedent(
            f"""
            One node, warm cache, {args.rounds} rounds of each, alternating:
              bare puppet apply        median {bare_median:.3f} s (spread {spread:.3f} s)
              Podium deploy job        median {podium_median:.3f} s
              (server side             median {median(server_side):.3f} s)
              Podium's overhead        {overhead:+.3f} s per node (target: at most 0.200 s)

            {args.agents} nodes in one apply-mode job (job {big.job_id}, {big.node_states}):
              wall time                {big.seconds:.1f} s
              bare applies in a row    {args.agents * bare_median:.1f} s ({args.agents} x median)
              speed-up                 {args.agents * bare_median / big.seconds:.1f}x
            """
        )
    )
    return 0 if big.node_states.get("finished") == args.agents else 1


def bare(puppet_root: Path, datadir: Path, certname: str) -> list[str]:
    """``puppet apply`` as the agent runs it, on the environment the server packed, in
    the agent's own Puppet folders, without the classifier (the node has no groups)."""
    envs = sorted(
        (puppet_root.parent / "tasks-cache" / "environments").glob("*/production"),
        key=lambda p: p.stat().st_mtime,
    )
    if not envs:
        raise RuntimeError(f"no unpacked environment under {puppet_root.parent}")
    env = envs[-1]
    folders = {
        "confdir": "etc",
        "vardir": "var",
        "codedir": "code",
        "logdir": "log",
        "rundir": "run",
        "publicdir": "public",
        "ssldir": "etc/ssl",
    }
    command = [shutil.which("puppet") or "puppet", "apply", "--detailed-exitcodes"]
    for flag, sub in folders.items():
        command += [f"--{flag}", str(puppet_root / sub)]
    command += ["--environmentpath", str(env.parent), "--environment", "production"]
    command += ["--certname", certname, str(env / "manifests")]
    return command


if __name__ == "__main__":
    sys.exit(main())
