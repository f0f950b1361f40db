"""The built-in package and service tasks through real agents, and who may fetch task files."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from e2e.installation import NODES, Installation
from tasks.debrepo import APT_MISSING, installed_version, local_repo

pytestmark = pytest.mark.e2e
PACKAGE = "podium-test-e2e-hello"


def run(fleet: Installation, task: str, params: dict, nodes: list[str]):
    job_id = fleet.run_task(task, params, nodes)
    job = fleet.wait_job(job_id, timeout=120)
    return job, fleet.nodes(job_id)


def test_package_status_reports_an_installed_package_and_its_version(fleet: Installation) -> None:
    expected = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "dpkg"], capture_output=True, text=True, check=True
    ).stdout
    job, nodes = run(fleet, "package", {"action": "status", "name": "dpkg"}, NODES[:2])
    assert job["state"] == "finished", nodes
    for node in NODES[:2]:
        result = nodes[node]["result"]
        assert result["status"] == "installed"
        assert result["version"] == expected


@pytest.mark.skipif(APT_MISSING is not None, reason=APT_MISSING or "")
def test_a_package_is_installed_and_removed_through_an_agent(
    fleet: Installation, tmp_path: Path
) -> None:
    node = NODES[0]
    with local_repo(tmp_path, packages=[(PACKAGE, "1.0")]):
        job, nodes = run(fleet, "package", {"action": "install", "name": PACKAGE}, [node])
        assert job["state"] == "finished", nodes
        assert nodes[node]["result"]["status"] == "installed"
        assert installed_version(PACKAGE) == "1.0"

        _, nodes = run(fleet, "package", {"action": "status", "name": PACKAGE}, [node])
        assert nodes[node]["result"]["version"] == "1.0"

        job, nodes = run(fleet, "package", {"action": "uninstall", "name": PACKAGE}, [node])
        assert job["state"] == "finished", nodes
        assert installed_version(PACKAGE) is None

        _, nodes = run(fleet, "package", {"action": "status", "name": PACKAGE}, [node])
        assert nodes[node]["result"]["status"] == "uninstalled"


def test_package_parameters_are_checked_before_anything_runs(fleet: Installation) -> None:
    wrong = fleet.cli("task", "run", "package", "action=purge", "name=x", "--nodes", NODES[0])
    assert wrong.returncode == 1
    assert "action: expected Enum[" in wrong.stderr
    assert 'got "purge"' in wrong.stderr


def test_service_status_answers_for_a_service_of_this_machine(fleet: Installation) -> None:
    # An init script that exists here, whatever runs as the service manager.
    script = next(
        (p for p in sorted(Path("/etc/init.d").glob("*")) if p.is_file() and p.name != "README"),
        None,
    )
    assert script is not None, "this machine has no init script to ask about"
    job, nodes = run(fleet, "service", {"action": "status", "name": script.name}, [NODES[0]])
    result = nodes[NODES[0]]["result"]
    assert job["state"] == "finished", result
    assert result["status"] in {"running", "stopped"}
    assert "enabled" in result


def test_task_files_are_served_only_to_holders_of_a_certificate_from_the_ca(
    fleet: Installation,
) -> None:
    found = fleet.api.call("GET", "/tasks/podium/echo")
    (entry,) = found["files"]
    url = fleet.fleet.server_url + entry["uri"]["path"]
    params = entry["uri"]["params"]
    anonymous = ssl.create_default_context(cafile=str(fleet.fleet.cacert))
    refused = httpx.get(url, params=params, verify=anonymous)
    assert refused.status_code == 403
    assert "certificate issued by this server's CA" in refused.json()["msg"]

    ssldir = fleet.vardir(NODES[0]) / "ssl"
    agent = ssl.create_default_context(cafile=str(fleet.fleet.cacert))
    agent.load_cert_chain(
        ssldir / "certs" / f"{NODES[0]}.pem", ssldir / "private_keys" / f"{NODES[0]}.pem"
    )
    served = httpx.get(url, params=params, verify=agent)
    assert served.status_code == 200
    assert served.content.startswith(b"#!/bin/sh")
