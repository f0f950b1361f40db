"""A Podium installation as child processes: a server and agents on loopback.

``podium demo`` runs one, and so do the end-to-end tests. Every file (CA, database,
the agents' vardirs, logs) lives under one root directory. :meth:`Fleet.stop` ends every
process it started and every task those agents left running (tasks run detached, in
their own sessions, so that they outlive their agent), after which the root can go.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from podium.errors import PodiumError

if TYPE_CHECKING:
    from podium.cli.client import ApiClient

SERVER_CERTNAME = "podium-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fleet:
    """A server and its agents, each a ``podium`` process with its files under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        codedir: Path | None = None,
        database_url: str | None = None,
        log_level: str = "warning",
        server_args: Sequence[str] = (),
    ) -> None:
        self.root = root.absolute()
        self.server_args = list(server_args)  # more `podium server` flags
        self.codedir = codedir
        self.database_url = database_url
        self.log_level = log_level
        self.api_port = free_port()
        self.broker_port = free_port()
        self.token = secrets.token_urlsafe(16)  # the enrollment token the server autosigns
        self.server: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.procs: list[subprocess.Popen[bytes]] = []  # every process started, in order

    # -- where things are -------------------------------------------------------------

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def broker_url(self) -> str:
        return f"wss://127.0.0.1:{self.broker_port}/pcp/v2"

    @property
    def datadir(self) -> Path:
        return self.root / "server"

    @property
    def cadir(self) -> Path:
        return self.datadir / "ca"

    @property
    def cacert(self) -> Path:
        return self.cadir / "ca_crt.pem"

    @property
    def admin_password_file(self) -> Path:
        """The admin user's password, made up before the server's first start."""
        return self.root / "admin-password"

    @property
    def token_file(self) -> Path:
        """A token of the admin user, written by each :meth:`start_server`."""
        return self.root / "token"

    @property
    def api_token(self) -> str:
        return self.token_file.read_text().strip()

    def login(self, login: str = "admin", password: str | None = None) -> str:
        """A token for ``login`` (a day long), as ``podium access login`` gets one."""
        import ssl

        import httpx

        if password is None:
            password = self.admin_password_file.read_text().strip()
        response = httpx.post(
            f"{self.server_url}/rbac-api/v1/auth/token",
            json={"login": login, "password": password, "lifetime": "1d", "label": "fleet"},
            verify=ssl.create_default_context(cafile=str(self.cacert)),
            timeout=30,
        )
        if response.status_code != 200:
            raise PodiumError(f"cannot log in as {login}: {response.text}")
        token: str = response.json()["token"]
        return token

    @property
    def enrollment_token_file(self) -> Path:
        """The server's autosign token, which agents enroll with unless told otherwise."""
        return self.root / "enrollment-token"

    def vardir(self, certname: str) -> Path:
        return self.root / "agents" / certname

    def agent_log(self, certname: str) -> Path:
        return self.root / "agents" / f"{certname}.log"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    # -- starting ---------------------------------------------------------------------

    def _spawn(
        self, args: Sequence[str], log: Path, wrapper: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [*wrapper, sys.executable, "-m", "podium", *args]
        # How to start it again by hand, e.g. after stopping an agent of a kept demo.
        log.with_suffix(".start").write_text(
            f"#!/bin/sh\n# Starts this process again, its output added to {log.name}\n"
            f"exec {shlex.join(argv)} >>{shlex.quote(str(log))} 2>&1 </dev/null\n"
        )
        with log.open("ab") as out:  # a restarted process adds to its log
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def start_server(self, *, timeout: float = 30.0) -> subprocess.Popen[bytes]:
        """Start the server (again, after :meth:`kill_server`) and wait until it answers."""
        if self.server is not None and self.server.poll() is None:
            raise PodiumError("the server is already running")
        args = [
            *("server", "--datadir", str(self.datadir)),
            *("--certname", SERVER_CERTNAME, "--log-level", self.log_level),
            *("--port", str(self.api_port), "--broker-port", str(self.broker_port)),
            # A file, not the token: a command line is visible to every user.
            *("--autosign-token-file", str(_token_file(self.enrollment_token_file, self.token))),
            *("--admin-password-file", str(self._admin_password())),
        ]
        if self.codedir is not None:
            args += ["--codedir", str(self.codedir.resolve())]
        if self.database_url is not None:
            args += ["--database-url", self.database_url]
        args += self.server_args
        server = self.server = self._spawn(args, self.server_log)
        deadline = time.monotonic() + timeout
        while not self.cacert.exists() or not self._up():
            if server.poll() is not None or time.monotonic() > deadline:
                raise PodiumError("the server did not start:\n" + self.tail(self.server_log))
            time.sleep(0.05)
        _token_file(self.token_file, self.login())
        return server

    def _admin_password(self) -> Path:
        path = self.admin_password_file
        if not path.exists():
            _token_file(path, secrets.token_urlsafe(18))
        return path

    def _up(self) -> bool:
        import ssl

        import httpx

        trust = ssl.create_default_context(cafile=str(self.cacert))
        try:
            httpx.get(f"{self.server_url}/status/v1/simple", verify=trust, timeout=1)
        except httpx.HTTPError:
            return False
        return True

    def start_agent(
        self,
        certname: str,
        *,
        token: str | None = None,
        facts_file: Path | None = None,
        wrapper: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """Start (or restart) the agent ``certname``; it enrolls with ``token``, by default
        the server's autosign token, when its vardir holds no certificate yet, and adds the
        facts of ``facts_file`` (a JSON object) to its own. ``wrapper``: a command the
        agent's own is run through (e.g. ``unshare``), its arguments last."""
        proc = self.agents.get(certname)
        if proc is not None and proc.poll() is None:
            raise PodiumError(f"the agent {certname} is already running")
        extra = ["--facts-file", str(facts_file)] if facts_file is not None else []
        token_file = self.enrollment_token_file
        if token and token != self.token:
            token_file = _token_file(self.root / "agents" / f"{certname}.token", token)
        elif not token_file.exists():
            _token_file(token_file, self.token)
        self.agents[certname] = self._spawn(
            [
                *("agent", "--certname", certname, "--server-url", self.server_url),
                *("--broker", self.broker_url, "--vardir", str(self.vardir(certname))),
                *("--cacert", str(self.cacert), "--enrollment-token-file", str(token_file)),
                # Puppet's state (locks, last run, SSL) per agent, not the host's own.
                *("--puppet-root", str(self.vardir(certname) / "puppet")),
                *("--log-level", self.log_level),
                *extra,
            ],
            self.agent_log(certname),
            wrapper,
        )
        return self.agents[certname]

    def wait_connected(
        self, client: ApiClient, certnames: Iterable[str], *, timeout: float = 120.0
    ) -> None:
        """Until every one of ``certnames`` is connected to the broker."""
        names = list(certnames)
        deadline = time.monotonic() + timeout
        while True:
            items = client.call("POST", "/inventory", json={"nodes": names})["items"]
            missing = [i["name"] for i in items if not i["connected"]]
            if not missing:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(self.tail(self.agent_log(m)) for m in missing[:3])
                raise PodiumError(f"agents did not connect: {', '.join(missing)}\n{logs}")
            time.sleep(0.05)

    # -- stopping ---------------------------------------------------------------------

    def kill_server(self) -> None:
        """SIGKILL the server, as a crash or power loss would."""
        if self.server is not None:
            _kill(self.server)

    def kill_agent(self, certname: str) -> None:
        """SIGKILL an agent; the tasks it started keep running."""
        _kill(self.agents[certname])

    def stop_agent(self, certname: str, *, timeout: float = 10.0) -> None:
        """Stop an agent as its service manager would (SIGTERM), SIGKILL if it hangs."""
        proc = self.agents[certname]
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop every process and every task left running under the root."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGCONT)  # a stopped process acts on it once continued
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
        stop_processes_under(self.root, timeout=timeout)

    def leftovers(self) -> list[int]:
        """Processes still running whose command line names a path under the root."""
        return _pids_naming(self.root)

    def tail(self, log: Path, lines: int = 15) -> str:
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"({log} is missing)"


def stop_processes_under(root: Path, *, timeout: float = 10.0) -> int:
    """SIGTERM every process whose command line names a path under ``root``, SIGKILL
    those still there after ``timeout``, and kill the process groups of task wrappers
    (they lead their own groups, holding the task's processes). Returns how many."""
    found = _pids_naming(root)
    for pid in found:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pids_naming(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in _pids_naming(root):
        _signal_group(pid, signal.SIGKILL)
    return len(found)


def _token_file(path: Path, token: str) -> Path:
    """``path``, holding ``token`` and readable by this user alone."""
    from podium.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, token.encode() + b"\n", mode=0o600)
    return path


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid``'s whole process group when it leads one (servers, agents and task
    wrappers each start their own), else ``pid`` alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _pids_naming(root: Path) -> list[int]:
    """Live processes with an argument at or under ``root`` (from /proc: none elsewhere)."""
    needle = os.fsencode(root)
    own = os.getpid()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")  # empty for a zombie
        except OSError:
            continue
        if pid != own and any(a == needle or a.startswith(needle + b"/") for a in args):
            found.append(pid)
    return found
