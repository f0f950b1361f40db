"""A real Puppet Server compiles for a Podium node, and its PuppetDB terminus feeds
Podium's inventory: the node's facts and the run's report."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from e2e.installation import Installation
from podium.errors import PodiumError
from puppet.conftest import NODE
from puppetserver import PuppetAgent, PuppetServer, TlsFiles, agent_files
from waiting import DEADLINE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]  # the first starts a JVM


def _output(run: subprocess.CompletedProcess[str]) -> str:
    return f"exit code {run.returncode}\n{run.stdout}\n{run.stderr}"


def _manages(server: PuppetServer, node: str, path: Path, content: str) -> None:
    """Give ``node`` a catalog that writes ``content`` to ``path``."""
    server.manifest().write_text(
        f"node '{node}' {{\n  file {{ '{path}': content => {json.dumps(content)} }}\n}}\n"
    )


def _configuration_version(run: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"Applying configuration version '([^']+)'", run.stdout)
    assert match, _output(run)
    return match.group(1)


def _wait_in_podium(what: str, probe: Callable[[], Any], server: PuppetServer, since: int) -> Any:
    """Poll ``probe`` (API errors count as "not yet") until it returns something truthy;
    fail with Podium's last answer and what the Puppet Server logged since ``since``."""
    deadline = time.monotonic() + DEADLINE
    last = ""
    while True:
        try:
            value = probe()
        except PodiumError as error:
            value, last = None, f"{type(error).__name__}: {error}"
        if value:
            return value
        if time.monotonic() > deadline:
            errors = "\n".join(server.errors(since)[-6:]) or "(no errors)"
            pytest.fail(
                f"{what} did not show in Podium within {DEADLINE:.0f} s; Podium last "
                f"answered: {last or 'nothing yet'}\nthe Puppet Server logged:\n{errors}"
            )
        time.sleep(0.1)


def test_the_puppet_server_compiles_a_catalog_that_the_node_applies(
    puppet_server: PuppetServer, puppet_agent: PuppetAgent, tmp_path: Path
) -> None:
    target = tmp_path / "motd"
    _manages(puppet_server, puppet_agent.certname, target, "managed by Puppet\n")

    first = puppet_agent.run()
    assert first.returncode == 2, _output(first)  # changes applied
    assert target.read_text() == "managed by Puppet\n"
    second = puppet_agent.run()
    assert second.returncode == 0, _output(second)  # nothing left to change


def test_the_terminus_stores_the_nodes_facts_in_podium(
    podium: Installation, puppet_server: PuppetServer, puppet_agent: PuppetAgent, tmp_path: Path
) -> None:
    node = puppet_agent.certname
    marker = secrets.token_hex(8)
    _manages(puppet_server, node, tmp_path / "facts-run", "facts\n")
    since = puppet_server.log_size()

    run = puppet_agent.run(facts={"podium_marker": marker})
    assert run.returncode == 2, _output(run)

    url = f"{podium.fleet.server_url}/pdb/query/v4/nodes/{node}/facts/podium_marker"
    facts = _wait_in_podium(
        f"the fact podium_marker={marker} of {node}",
        lambda: [f for f in podium.api.call("GET", url) if f["value"] == marker],
        puppet_server,
        since,
    )
    assert facts == [
        {"certname": node, "name": "podium_marker", "value": marker, "environment": "production"}
    ]
    factset = podium.api.call("GET", f"{podium.fleet.server_url}/pdb/query/v4/factsets/{node}")
    assert factset["producer"] == puppet_server.certname
    assert factset["facts"]["data"]  # the whole set, Facter's facts with the marker
    names = {fact["name"] for fact in factset["facts"]["data"]}
    assert {"podium_marker", "puppetversion", "clientcert"} <= names


def test_the_terminus_stores_the_runs_report_in_podium(
    podium: Installation, puppet_server: PuppetServer, puppet_agent: PuppetAgent, tmp_path: Path
) -> None:
    node = puppet_agent.certname
    target = tmp_path / "reported"
    _manages(puppet_server, node, target, "reported\n")
    since = puppet_server.log_size()

    run = puppet_agent.run()
    assert run.returncode == 2, _output(run)
    version = _configuration_version(run)

    query = json.dumps(["=", "certname", node])
    url = f"{podium.fleet.server_url}/pdb/query/v4/reports"
    reports = _wait_in_podium(
        f"the report of {node}'s run of configuration version {version}",
        lambda: [
            r
            for r in podium.api.call("GET", url, params={"query": query})
            if r["configuration_version"] == version
        ],
        puppet_server,
        since,
    )
    (report,) = reports
    assert report["status"] == "changed"
    assert report["producer"] == puppet_server.certname
    assert report["environment"] == "production"
    events = podium.api.call(
        "GET",
        f"{podium.fleet.server_url}/pdb/query/v4/events",
        params={"query": json.dumps(["=", "report", report["hash"]])},
    )
    assert [(e["resource_type"], e["resource_title"], e["status"]) for e in events] == [
        ("File", str(target), "success")
    ]


def test_a_deploy_job_in_agent_mode_runs_against_the_puppet_server(
    podium: Installation, puppet_server: PuppetServer, tmp_path: Path
) -> None:
    node = NODE
    # The Podium agent runs Puppet in its own Puppet folders (<vardir>/puppet): point
    # them at the Puppet Server, with the node's own certificate from Podium's CA.
    root = podium.vardir(node) / "puppet"
    ssldir = podium.vardir(node) / "ssl"
    tls = TlsFiles(
        cert=ssldir / "certs" / f"{node}.pem",
        key=ssldir / "private_keys" / f"{node}.pem",
        ca=podium.fleet.cacert,
    )
    agent_files(
        root / "etc",
        root / "etc" / "ssl",
        certname=node,
        server=puppet_server,
        tls=tls,
        ca_url=podium.fleet.server_url,
    )
    target = tmp_path / "agent-mode"
    _manages(puppet_server, node, target, "from the Puppet Server\n")
    since = puppet_server.log_size()

    answer = podium.api.call(
        "POST", "/command/deploy", json={"scope": {"nodes": [node]}, "mode": "agent"}
    )
    job = podium.wait_job(answer["job"]["name"], timeout=240)
    result = podium.nodes(job["name"])[node]["result"]
    assert job["state"] == "finished", result
    assert result["status"] == "changed"
    assert result["metrics"]["changed"] == 1
    assert target.read_text() == "from the Puppet Server\n"
    version = result["configuration_version"]

    query = json.dumps(["=", "certname", node])
    url = f"{podium.fleet.server_url}/pdb/query/v4/reports"
    stored = _wait_in_podium(
        f"the report of the job's run (configuration version {version})",
        lambda: [
            r
            for r in podium.api.call("GET", url, params={"query": query})
            if r["configuration_version"] == version
        ],
        puppet_server,
        since,
    )
    # the terminus's report and the job's own, the same run seen twice
    assert {r["transaction_uuid"] for r in stored} == {result["transaction_uuid"]}
    assert {r["job_id"] for r in stored} >= {job["name"]}
