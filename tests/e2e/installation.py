"""A running Podium installation as the end-to-end tests drive it.

:class:`Installation` wraps a :class:`~podium.cli.fleet.Fleet` (the same process
machinery as ``podium demo``) with the API client and the CLI, and with waits that
poll against a deadline and fail with what they were waiting for.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgserver import PostgresServer
from podium.cli.client import ApiClient
from podium.cli.fleet import SERVER_CERTNAME, Fleet
from podium.errors import NotFound
from waiting import DEADLINE, wait_for

NODES = [f"node-{i}.e2e" for i in range(1, 6)]
SERVER_URI = f"pcp://{SERVER_CERTNAME}/server"
TERMINAL = frozenset({"finished", "failed", "stopped"})
ECHO = "still here"


def echoed(nodes: list[str]) -> dict[str, Any]:
    """What :meth:`Installation.echo_results` returns when every node ran the task."""
    return {n: {"_output": f"{ECHO}\n"} for n in nodes}


def new_database(request: pytest.FixtureRequest, backend: str) -> str | None:
    """A new, empty database's URL on ``backend``; None means SQLite in the datadir."""
    if backend == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


def job_id_in(output: str) -> str:
    """The job id ``podium task run`` printed."""
    match = re.search(r"^New job ID: (\d+)$", output, re.MULTILINE)
    assert match, f"no job id in:\n{output}"
    return match.group(1)


class Installation:
    """A server and agents, with the API client and CLI pointed at them."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.api = ApiClient(fleet.server_url, fleet.cacert, fleet.api_token)

    def close(self) -> None:
        self.api.close()

    # -- processes --------------------------------------------------------------------

    def add_agent(self, certname: str, *, token: str | None = None) -> None:
        """Start an agent; one with the server's enrollment token is waited for."""
        self.fleet.start_agent(certname, token=token)
        if token is None:
            self.wait_connected(certname)

    def kill_agent(self, certname: str) -> None:
        self.fleet.kill_agent(certname)

    def restart_agent(self, certname: str) -> None:
        self.fleet.start_agent(certname)

    def stop_agent(self, certname: str) -> None:
        self.fleet.stop_agent(certname)

    def pause_agent(self, certname: str) -> None:
        """Freeze the agent (SIGSTOP): what the broker sends it waits in its socket."""
        os.kill(self.fleet.agents[certname].pid, signal.SIGSTOP)

    def resume_agent(self, certname: str) -> None:
        os.kill(self.fleet.agents[certname].pid, signal.SIGCONT)

    def kill_server(self) -> None:
        self.fleet.kill_server()

    def restart_server(self) -> None:
        self.fleet.start_server()

    @property
    def root(self) -> Path:
        """The installation's directory, removed with it: a place for scratch files."""
        return self.fleet.root

    def vardir(self, certname: str) -> Path:
        return self.fleet.vardir(certname)

    def spool_status(self, certname: str, txid: str) -> str | None:
        """The transaction's state in the agent's spool (None while it has none)."""
        metadata = self.vardir(certname) / "spool" / txid / "metadata.json"
        try:
            status: str = json.loads(metadata.read_text())["status"]
        except (OSError, ValueError):
            return None
        return status

    def agent_log(self, certname: str) -> str:
        path = self.fleet.agent_log(certname)
        return path.read_text(errors="replace") if path.exists() else ""

    # -- inventory --------------------------------------------------------------------

    def inventory(self, certname: str) -> dict[str, Any]:
        item: dict[str, Any] = self.api.call("GET", f"/inventory/{certname}")
        return item

    def connected(self, certname: str) -> bool:
        return bool(self.inventory(certname)["connected"])

    def wait_connected(self, *certnames: str, timeout: float = 30.0) -> None:
        self.fleet.wait_connected(self.api, certnames, timeout=timeout)

    def wait_for_facts(self, *certnames: str, timeout: float = 30.0) -> None:
        """Until the server has stored facts of each of ``certnames``."""

        def stored(certname: str) -> Any:
            url = f"{self.fleet.server_url}/pdb/query/v4/nodes/{certname}/facts"
            try:
                return self.api.call("GET", url)
            except NotFound:  # not yet
                return None

        for certname in certnames:
            wait_for(f"facts of {certname}", lambda c=certname: stored(c), timeout=timeout)

    def wait_disconnected(self, certname: str, *, timeout: float = 10.0) -> None:
        wait_for(
            f"the broker to report {certname} disconnected",
            lambda: not self.connected(certname),
            timeout=timeout,
        )

    # -- jobs -------------------------------------------------------------------------

    def run_task(self, task: str, params: dict[str, Any], nodes: list[str], **options: Any) -> str:
        body = {"task": task, "params": params, "scope": {"nodes": nodes}, **options}
        return str(self.api.call("POST", "/command/task", json=body)["job"]["name"])

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.api.call("GET", f"/jobs/{job_id}")
        return job

    def nodes(self, job_id: str) -> dict[str, dict[str, Any]]:
        items = self.api.call("GET", f"/jobs/{job_id}/nodes")["items"]
        return {n["name"]: n for n in items}

    def events(self, job_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api.call("GET", f"/jobs/{job_id}/events")["items"]
        return items

    def wait_job(self, job_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """The job once it has ended; a timeout fails with its nodes' states and logs."""
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["state"] not in TERMINAL:
            if time.monotonic() > deadline:
                states = {n: v["state"] for n, v in self.nodes(job_id).items()}
                pytest.fail(
                    f"job {job_id} still {job['state']} after {timeout:.0f} s: {states}\n"
                    f"server log:\n{self.fleet.tail(self.fleet.server_log)}"
                )
            time.sleep(0.05)
        return job

    def wait_node_state(self, job_id: str, certname: str, state: str) -> None:
        wait_for(
            f"{certname} to be {state} in job {job_id}",
            lambda: self.nodes(job_id)[certname]["state"] == state,
        )

    def echo_results(self, nodes: list[str]) -> dict[str, Any]:
        """Each node's result of ``podium::echo message=ECHO``; compare with :func:`echoed`."""
        job_id = self.run_task("podium::echo", {"message": ECHO}, nodes)
        self.wait_job(job_id)
        return {n: v["result"] for n, v in self.nodes(job_id).items()}

    # -- the CLI ----------------------------------------------------------------------

    def cli(
        self, *args: str, timeout: float = 60.0, token: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``podium ARGS`` as an operator types it, pointed at this server, as the admin
        (or as the holder of ``token``; an empty one: nobody logged in)."""
        env = {
            **os.environ,
            "PODIUM_SERVER_URL": self.fleet.server_url,
            "PODIUM_CACERT": str(self.fleet.cacert),
            "PODIUM_TOKEN_FILE": str(self.fleet.token_file),
        }
        if token is not None:
            env["PODIUM_TOKEN_FILE"] = os.devnull
            env["PODIUM_TOKEN"] = token
        return subprocess.run(
            [sys.executable, "-m", "podium", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )


@contextlib.contextmanager
def start_installation(
    agents: list[str],
    *,
    database_url: str | None = None,
    codedir: Path | None = None,
    server_args: tuple[str, ...] = (),
) -> Iterator[Installation]:
    """A server (with ``server_args``) and ``agents`` in a temporary directory; all gone
    when it exits."""
    root = Path(tempfile.mkdtemp(prefix="podium-e2e-"))
    fleet = Fleet(root, database_url=database_url, codedir=codedir, server_args=server_args)
    installation: Installation | None = None
    try:
        fleet.start_server()
        installation = Installation(fleet)
        for certname in agents:
            fleet.start_agent(certname)
        installation.wait_connected(*agents)
        yield installation
    finally:
        crashed = fleet.server is not None and fleet.server.poll() is not None
        server_log = fleet.tail(fleet.server_log, 40)
        if installation is not None:
            installation.close()
        fleet.stop()
        # SIGKILL is delivered, not waited for: give the kernel a moment.
        deadline = time.monotonic() + DEADLINE
        while (leftovers := fleet.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"processes outlived the installation: {leftovers}"
        assert not crashed, f"the server exited on its own; its log ends with:\n{server_log}"
