"""``podium demo``: a throw-away server and N real agents on loopback, and a task on them."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from podium.cli.fleet import Fleet
from podium.errors import PodiumError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="try Podium: a server and N agents on this machine, and a task on them",
        description=(
            "Create a throw-away CA and SQLite database, start a server and N real agent "
            "processes with their own certificates on loopback, run a task on every agent "
            "with a line per node as it finishes, print the job summary, then stop "
            "everything and remove what it made (unless --keep)."
        ),
    )
    p.add_argument("--nodes", type=int, default=5, help="how many agents to start (default 5)")
    p.add_argument("--codedir", type=Path, help="run on your own environments and modules")
    p.add_argument("--task", default="podium::echo", help="task to run (default podium::echo)")
    p.add_argument(
        "--params",
        default='{"message": "Hello from Podium"}',
        help="the task's parameters as JSON",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave server and agents running and print how to use and stop them",
    )
    p.set_defaults(func=run)


class Demo(Fleet):
    """The processes of a demo installation under one directory."""

    def __init__(self, root: Path, nodes: int, codedir: Path | None) -> None:
        super().__init__(root, codedir=codedir)
        self.certnames = [f"agent-{i:02d}.demo" for i in range(1, nodes + 1)]

    def start_agents(self) -> None:
        for certname in self.certnames:
            self.start_agent(certname)


def run(args: argparse.Namespace) -> int:
    import json

    from podium.cli.client import ApiClient
    from podium.cli.job import watch

    if not 1 <= args.nodes <= 1000:
        raise PodiumError("--nodes must be between 1 and 1000")
    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        raise PodiumError(f"--params is not valid JSON: {exc}") from exc
    root = Path(tempfile.mkdtemp(prefix="podium-demo-"))
    demo = Demo(root, args.nodes, args.codedir)
    keep = False
    try:
        print(f"Starting a server and {args.nodes} agents in {root} ...")
        started = time.monotonic()
        demo.start_server()
        demo.start_agents()
        with ApiClient(demo.server_url, demo.cacert, demo.api_token) as client:
            demo.wait_connected(client, demo.certnames)
            elapsed = time.monotonic() - started
            print(f"{args.nodes} agents enrolled and connected in {elapsed:.1f} s.\n")
            print(
                f"$ podium task run {args.task} --params {shlex.quote(args.params)} "
                f"--nodes {','.join(demo.certnames)}\n"
            )
            body = {"task": args.task, "params": params, "scope": {"nodes": demo.certnames}}
            job = client.call("POST", "/command/task", json=body)["job"]
            print(f"New job ID: {job['name']}")
            code = watch(client, job["name"], out=sys.stdout)
        if args.keep:
            keep = True
            _print_keep(demo)
        return code
    finally:
        if not keep:
            demo.stop()
            shutil.rmtree(root, ignore_errors=True)


def _print_keep(demo: Demo) -> None:
    pids = " ".join(str(p.pid) for p in demo.procs)
    (demo.root / "pids").write_text(pids + "\n")
    print(
        "\nThe server and agents keep running. Point the CLI at them:\n\n"
        f"  export PODIUM_SERVER_URL={demo.server_url}\n"
        f"  export PODIUM_CACERT={demo.cacert}\n"
        f"  export PODIUM_TOKEN_FILE={demo.token_file}\n\n"
        "Then, for example:\n\n"
        f"  podium task run podium::command command='uname -a' --nodes {','.join(demo.certnames)}\n"
        "  podium job show\n\n"
        "Logs are in "
        f"{demo.root}. To stop everything and remove it:\n\n"
        f"  kill $(cat {demo.root / 'pids'}); rm -rf {demo.root}\n"
    )
    sys.stdout.flush()
