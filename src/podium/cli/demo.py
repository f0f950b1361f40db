"""``podium demo``: a throw-away server and N real agents on loopback, and a task on them."""

from __future__ import annotations

import argparse
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from podium.errors import PodiumError

SERVER_CERTNAME = "podium-server"


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    """The processes of a demo installation under one directory."""

    def __init__(self, root: Path, nodes: int, codedir: Path | None) -> None:
        self.root = root
        self.count = nodes
        self.codedir = codedir
        self.api_port = _free_port()
        self.broker_port = _free_port()
        self.token = secrets.token_urlsafe(16)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.certnames = [f"agent-{i:02d}.demo" for i in range(1, nodes + 1)]

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def cacert(self) -> Path:
        return self.root / "server" / "ca" / "ca_crt.pem"

    def _spawn(self, args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "podium", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def start_server(self) -> None:
        args = [
            *("server", "--datadir", str(self.root / "server")),
            *("--certname", SERVER_CERTNAME, "--log-level", "warning"),
            *("--port", str(self.api_port), "--broker-port", str(self.broker_port)),
            *("--autosign-token", self.token),
        ]
        if self.codedir is not None:
            args += ["--codedir", str(self.codedir.resolve())]
        server = self._spawn(args, self.root / "server.log")
        deadline = time.monotonic() + 30
        while not self.cacert.exists() or not self._up():
            if server.poll() is not None or time.monotonic() > deadline:
                raise PodiumError("the demo server did not start:\n" + self._tail("server.log"))
            time.sleep(0.1)

    def _up(self) -> bool:
        import httpx

        try:
            httpx.get(f"{self.server_url}/status/v1/simple", verify=str(self.cacert), timeout=1)
        except httpx.HTTPError:
            return False
        return True

    def start_agents(self) -> None:
        for certname in self.certnames:
            self._spawn(
                [
                    *("agent", "--certname", certname, "--server-url", self.server_url),
                    *("--broker", f"wss://127.0.0.1:{self.broker_port}/pcp/v2"),
                    *("--vardir", str(self.root / "agents" / certname)),
                    *("--cacert", str(self.cacert), "--enrollment-token", self.token),
                    *("--log-level", "warning"),
                ],
                self.root / "agents" / f"{certname}.log",
            )

    def wait_connected(self, client: object, timeout: float = 120.0) -> None:
        from podium.cli.client import ApiClient

        assert isinstance(client, ApiClient)
        deadline = time.monotonic() + timeout
        while True:
            items = client.call("POST", "/inventory", json={"nodes": self.certnames})["items"]
            missing = [i["name"] for i in items if not i["connected"]]
            if not missing:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(self._tail(f"agents/{m}.log") for m in missing[:3])
                raise PodiumError(f"agents did not connect: {', '.join(missing)}\n{logs}")
            time.sleep(0.1)

    def _tail(self, name: str) -> str:
        path = self.root / name
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return f"({path} is missing)"

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


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
        client = ApiClient(demo.server_url, demo.cacert)
        demo.wait_connected(client)
        print(
            f"{args.nodes} agents enrolled and connected in {time.monotonic() - started:.1f} s.\n"
        )
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
        f"  export PODIUM_CACERT={demo.cacert}\n\n"
        "Then, for example:\n\n"
        f"  podium task run podium::command command='uname -a' --nodes {','.join(demo.certnames)}\n"
        "  podium job show\n\n"
        "Logs are in "
        f"{demo.root}. To stop everything and remove it:\n\n"
        f"  kill $(cat {demo.root / 'pids'}); rm -rf {demo.root}\n"
    )
    sys.stdout.flush()
