"""PuppetDB's inventory benchmark on Podium: the shared scripts, unmodified, on a real server.

    .venv/bin/python bench/pql.py                                  # SQLite, 10,000 nodes
    .venv/bin/python bench/pql.py --postgres                       # a throw-away PostgreSQL
    .venv/bin/python bench/pql.py --database-url postgresql://user@127.0.0.1/podium
    .venv/bin/python bench/pql.py --nodes 2000 --reps 5

It starts ``podium server`` (the machinery of ``podium demo``, see ``harness.py``) in a
temporary directory, and runs the scripts of ``--scripts`` (default
``/work/shared/bench/pql``, or ``$PODIUM_PQL_BENCH``) against its HTTPS API with the
server's admin token: ``make_fleet.py`` (its fleet file is kept in ``--workdir``),
``load.py`` (the first load, then the same fleet again: unchanged facts),
``time_queries.py`` on ``queries.txt``. It prints their output, the server's RSS
(``VmRSS``, and the peak ``VmHWM``) after loading and after the queries, and a summary.
``--postgres`` starts a PostgreSQL server of the test harness (``tests/pgserver.py``:
fsync off) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import (
    CpuMeter,
    cpu_seconds,
    default_workdir,
    interrupt_on_signals,
    running_server,
    wait_quiet,
)

SCRIPTS = Path(os.environ.get("PODIUM_PQL_BENCH", "/work/shared/bench/pql"))
TESTS = Path(__file__).resolve().parent.parent / "tests"


def proc_status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def memory(pid: int) -> str:
    rss, peak = proc_status_kb(pid, "VmRSS") / 1024, proc_status_kb(pid, "VmHWM") / 1024
    return f"RSS {rss:.0f} MiB (peak {peak:.0f} MiB)"


def fleet_file(scripts: Path, workdir: Path, nodes: int) -> Path:
    """The fleet of ``nodes``, made once (make_fleet.py is deterministic)."""
    path = workdir / f"fleet{nodes}.json"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"making {path} ...", flush=True)
        run([sys.executable, str(scripts / "make_fleet.py"), str(nodes), str(path)])
    return path


def run(command: list[str]) -> int:
    """Run a script with its output shown as it comes; its exit code."""
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, check=False).returncode


@contextlib.contextmanager
def database(args: argparse.Namespace) -> Iterator[str | None]:
    if not args.postgres:
        yield args.database_url
        return
    sys.path.insert(0, str(TESTS))
    from pgserver import PostgresServer  # the test harness's throw-away server

    with PostgresServer() as server:
        yield server.create_database()


def bench(args: argparse.Namespace) -> int:
    scripts = args.scripts
    fleet = fleet_file(scripts, args.workdir, args.nodes)
    busy = wait_quiet(args.quiet_wait)
    results: dict[str, Any] = {"nodes": args.nodes, "other_cpu_at_start": round(busy, 2)}
    with (
        database(args) as url,
        running_server(database_url=url) as (_demo, server),
        tempfile.TemporaryDirectory(prefix="podium-pql-") as reports,
    ):
        results["database"] = "postgresql" if url else "sqlite"
        token = server.token_file.read_text().strip()
        common = ["--token", token, "--insecure"]
        out = Path(reports)
        print(f"server up (pid {server.pid}) at {server.url}; {memory(server.pid)}", flush=True)
        loads = []
        for name in ("first load", "same fleet again"):
            print(f"--- load.py: {name}", flush=True)
            report = out / f"load-{len(loads)}.json"
            cpu, meter = cpu_seconds(server.pid), CpuMeter([server.pid])
            code = run(
                [
                    sys.executable,
                    str(scripts / "load.py"),
                    server.url,
                    str(fleet),
                    *common,
                    "--json",
                    str(report),
                ]
            )
            loads.append(json.loads(report.read_text()) if report.exists() else {"exit": code})
            _mine, other, _steal = meter.read()
            loads[-1]["server_cpu_s"] = round(cpu_seconds(server.pid) - cpu, 1)
            loads[-1]["other_cpu_s"] = round(other, 1)  # load.py itself, and anything else
            print(f"after {name}: {memory(server.pid)}", flush=True)
            results.setdefault("rss_mib_after_load", proc_status_kb(server.pid, "VmRSS") // 1024)
        results["loads"] = loads
        time.sleep(1.0)  # let the last writes settle before timing queries
        print("--- time_queries.py", flush=True)
        report = out / "queries.json"
        queries = str(scripts / "queries.txt")
        code = run(
            [
                sys.executable,
                str(scripts / "time_queries.py"),
                server.url,
                queries,
                *common,
                "--reps",
                str(args.reps),
                "--json",
                str(report),
            ]
        )
        results["queries"] = json.loads(report.read_text()) if report.exists() else {"exit": code}
        results["rss_mib_end"] = proc_status_kb(server.pid, "VmRSS") // 1024
        results["peak_rss_mib"] = proc_status_kb(server.pid, "VmHWM") // 1024
        print(f"after the queries: {memory(server.pid)}", flush=True)
    print(summary(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all("exit" not in r for r in loads) else 1


def summary(results: dict[str, Any]) -> str:
    lines = [f"== {results['nodes']} nodes on {results['database']} =="]
    for label, load in zip(("first load", "re-send"), results["loads"], strict=False):
        if "visible_s" in load:
            lines.append(
                f"{label}: submitted in {load['submit_s']:.1f} s, all visible after "
                f"{load['visible_s']:.1f} s ({load['accepted']}/{load['nodes']} accepted); "
                f"CPU: server {load['server_cpu_s']} s, load.py and other processes "
                f"{load['other_cpu_s']} s"
            )
    lines.append(f"server RSS after loading: {results['rss_mib_after_load']} MiB")
    queries = results["queries"]
    if "queries" in queries:
        worst = max(q["p50_ms"] for q in queries["queries"])
        lines.append(
            f"queries: overall p50 {queries['overall_p50_ms']:.1f} ms, p95 "
            f"{queries['overall_p95_ms']:.1f} ms; slowest p50 {worst:.1f} ms; "
            f"statuses {sorted({q['status'] for q in queries['queries']})}"
        )
    if results["other_cpu_at_start"] > 0.2:
        lines.append(
            f"WARNING: other processes used {results['other_cpu_at_start']:.0%} of a CPU "
            "when the run started: the figures are pessimistic"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10_000, help="fleet size (10,000)")
    parser.add_argument("--reps", type=int, default=20, help="timed runs per query (20)")
    parser.add_argument("--database-url", help="a PostgreSQL URL (default: SQLite)")
    parser.add_argument("--postgres", action="store_true", help="start a throw-away PostgreSQL")
    parser.add_argument(
        "--scripts", type=Path, default=SCRIPTS, help=f"the shared scripts ({SCRIPTS})"
    )
    parser.add_argument(
        "--workdir", type=Path, default=default_workdir(), help="where fleet files are kept"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=60, help="wait this long for a quiet machine"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    interrupt_on_signals()
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
