"""``podium demo``: a throw-away server and N real agents on loopback, and a task on them."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from podium.cli.fleet import Fleet, stop_processes_under
from podium.cli.task import parameter_types, parse_params
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
        "parameters",
        nargs="*",
        metavar="KEY=VALUE",
        help="the task's parameters, as for podium task run (default for podium::echo: "
        "message='Hello from Podium')",
    )
    p.add_argument("--params", help="the task's parameters as JSON, or @FILE.json")
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave server and agents running and print how to use and stop them",
    )
    p.add_argument(
        "--stop",
        type=Path,
        metavar="DIR",
        help="stop everything a demo started with --keep runs in DIR, and remove DIR",
    )
    p.set_defaults(func=run, takes_pairs=True)


_PREFIX = "podium-demo-"
_MARKER = "pids"


class Demo(Fleet):
    """The processes of a demo installation under one directory."""

    def __init__(self, root: Path, nodes: int, codedir: Path | None) -> None:
        super().__init__(root, codedir=codedir)
        self.certnames = [f"agent-{i:02d}.demo" for i in range(1, nodes + 1)]

    def start_agents(self) -> None:
        for certname in self.certnames:
            self.start_agent(certname)


def run(args: argparse.Namespace) -> int:
    from podium.cli.client import ApiClient
    from podium.cli.job import watch

    if args.stop is not None:
        return stop_demo(args.stop)
    if not 1 <= args.nodes <= 1000:
        raise PodiumError("--nodes must be between 1 and 1000")
    pairs = list(args.parameters)
    if not pairs and args.params is None and args.task == "podium::echo":
        pairs = ["message=Hello from Podium"]
    root = Path(tempfile.mkdtemp(prefix=_PREFIX))
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
            types = parameter_types(client, args.task, "production") if pairs else {}
            params = parse_params(pairs, args.params, types)
            given = " ".join(shlex.quote(p) for p in pairs) or (
                f"--params {shlex.quote(args.params)}" if args.params else ""
            )
            command = " ".join(["podium task run", args.task, given, "--nodes"]).replace("  ", " ")
            print(f"$ {command} {','.join(demo.certnames)}\n")
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
    (demo.root / _MARKER).write_text(" ".join(str(p.pid) for p in demo.procs) + "\n")
    bindir = Path(sys.executable).parent
    nodes = ",".join(demo.certnames)
    print(
        "\nThe server and agents keep running. Point the CLI at them:\n\n"
        f"  export PATH={shlex.quote(str(bindir))}:$PATH\n"
        f"  export PODIUM_SERVER_URL={demo.server_url}\n"
        f"  export PODIUM_CACERT={shlex.quote(str(demo.cacert))}\n"
        f"  export PODIUM_TOKEN_FILE={shlex.quote(str(demo.token_file))}\n"
        f"  export PODIUM_CADIR={shlex.quote(str(demo.cadir))}\n\n"
        "The CLI is logged in as admin for a day; to log in again (or as another user):\n\n"
        f"  podium access login --user admin --password-stdin "
        f"< {shlex.quote(str(demo.admin_password_file))}\n\n"
        "Then, for example:\n\n"
        f"  podium task run podium::command command='uname -a' --nodes {nodes}\n"
        f"  podium task run package action=status name=bash --nodes {nodes}\n"
        "  podium task show\n"
        "  podium job show\n"
        "  podium ca list --all\n\n"
        f"Logs are in {demo.root}; beside each log, a .start script starts that process "
        f"again (e.g. after kill {demo.agents[demo.certnames[0]].pid}, an agent with\n"
        f"  sh {shlex.quote(str(demo.agent_log(demo.certnames[0]).with_suffix('.start')))} &\n"
        ").\n\nTo stop everything, restarted agents too, and remove it all:\n\n"
        f"  podium demo --stop {shlex.quote(str(demo.root))}\n"
    )
    sys.stdout.flush()


def stop_demo(root: Path) -> int:
    """Stop every process of a kept demo (agents restarted by hand too) and remove it."""
    root = root.absolute()
    if not (root / _MARKER).is_file() or not root.name.startswith(_PREFIX):
        raise PodiumError(
            f"{root} is not a folder that `podium demo --keep` made (they are named "
            f"{_PREFIX}… and hold a {_MARKER} file); nothing was stopped or removed"
        )
    stopped = stop_processes_under(root)
    shutil.rmtree(root, ignore_errors=True)
    print(f"Stopped {stopped} processes and removed {root}.")
    return 0
