"""Puppet runs end to end: real agents run real ``puppet apply`` of an environment the
server packs, with each node's classification; results, reports, noop, failures, a
disabled agent, run order, and comparing a resource across nodes."""

from __future__ import annotations

import contextlib
import json
import shlex
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.installation import Installation, start_installation, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NODES = ["pup-01.e2e", "pup-02.e2e", "pup-03.e2e"]
ROOT_GROUP = "00000000-0000-4000-8000-000000000000"
DIFFERENT = "pup-03.e2e"  # sees its own copy of the compared file


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("puppet-runs")


@pytest.fixture(scope="module")
def code(work: Path) -> Path:
    """An environment whose nodes manage files under ``work/managed/<certname>``."""
    root = work / "code"
    env = root / "environments/production"
    (env / "manifests").mkdir(parents=True)
    managed = work / "managed"
    managed.mkdir()
    (env / "manifests/site.pp").write_text(
        textwrap.dedent(
            f"""\
            node default {{
              $dir = "{managed}/${{trusted['certname']}}"
              file {{ $dir: ensure => directory }}
              file {{ "${{dir}}/motd": content => "managed by Podium\\n" }}
              exec {{ 'stamp':
                command => "/bin/sh -c 'echo stamped > ${{dir}}/stamp'",
                creates => "${{dir}}/stamp",
                require => File[$dir],
              }}
              if $broken {{
                exec {{ 'broken': command => '/bin/false', require => File[$dir] }}
              }}
            }}
            """
        )
    )
    module = env / "modules/greeting/manifests"
    module.mkdir(parents=True)
    (module / "init.pp").write_text(
        textwrap.dedent(
            f"""\
            class greeting(String $text) {{
              file {{ "{managed}/${{trusted['certname']}}/greeting": content => "${{text}}\\n" }}
            }}
            """
        )
    )
    return root


@pytest.fixture(scope="module")
def compared(work: Path) -> Path:
    """A file under /etc that every node sees, but one: DIFFERENT sees its own copy."""
    target = Path("/etc") / f"podium-e2e-{work.name}"
    target.write_text("the same everywhere\n")
    yield target
    target.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def pup(code: Path, work: Path, compared: Path) -> Iterator[Installation]:
    with start_installation(NODES[:2], codedir=code) as installation:
        own = work / "own-copy"
        own.write_text("changed on one node\n")
        # A mount namespace of its own: the same path, another file, for this agent only.
        mount = f"mount --bind {shlex.quote(str(own))} {shlex.quote(str(compared))}"
        wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        wrapper += [f'{mount} && exec "$@"', "sh"]
        installation.fleet.start_agent(DIFFERENT, wrapper=wrapper)
        installation.wait_connected(DIFFERENT)
        yield installation


def deploy(pup: Installation, nodes: list[str], **body: Any) -> tuple[dict, dict]:
    answer = pup.api.call("POST", "/command/deploy", json={"scope": {"nodes": nodes}, **body})
    job_id = answer["job"]["name"]
    job = pup.wait_job(job_id, timeout=240)
    return job, pup.nodes(job_id)


@contextlib.contextmanager
def group(pup: Installation, name: str, node: str, **content: Any) -> Iterator[str]:
    """A node group holding ``node`` (classes, variables), deleted afterwards."""
    group_id = str(uuid.uuid4())
    url = f"{pup.fleet.server_url}/classifier-api/v1/groups/{group_id}"
    body = {"name": name, "parent": ROOT_GROUP, "rule": ["=", "name", node], "classes": {}}
    pup.api.call("PUT", url, json={**body, **content})
    try:
        yield group_id
    finally:
        pup.api.call("DELETE", url)


def managed(work: Path, node: str) -> Path:
    return work / "managed" / node


def test_a_first_run_changes_and_a_second_changes_nothing(pup: Installation, work: Path) -> None:
    node = NODES[0]
    job, nodes = deploy(pup, [node])
    assert job["state"] == "finished", json.dumps(nodes, indent=1)[:3000]
    result = nodes[node]["result"]
    assert result["status"] == "changed"
    assert result["metrics"]["changed"] == 3  # the folder, motd and the exec
    assert result["metrics"]["failed"] == 0
    changed = {(e["resource_type"], e["resource_title"]) for e in result["events"]}
    assert ("Exec", "stamp") in changed
    assert (managed(work, node) / "motd").read_text() == "managed by Podium\n"
    assert (managed(work, node) / "stamp").read_text() == "stamped\n"
    assert result["environment"] == "production"
    assert result["transaction_uuid"]
    assert any("Applied catalog" in line["message"] for line in result["logs"])

    job, nodes = deploy(pup, [node])
    again = nodes[node]["result"]
    assert again["status"] == "unchanged"
    assert again["metrics"]["changed"] == 0
    assert again["events"] == []


def test_the_report_is_stored_with_its_job_and_serves_as_a_target(
    pup: Installation, work: Path
) -> None:
    node = NODES[1]
    job, _ = deploy(pup, [node])
    url = f"{pup.fleet.server_url}/pdb/query/v4/reports"
    query = json.dumps(["=", "job_id", job["name"]])
    (report,) = wait_for(
        "the run's report", lambda: pup.api.call("GET", url, params={"query": query})
    )
    assert report["certname"] == node
    assert report["status"] == "changed"
    events = pup.api.call(
        "GET",
        f"{pup.fleet.server_url}/pdb/query/v4/events",
        params={"query": json.dumps(["=", "report", report["hash"]])},
    )
    assert ("File", f"{managed(work, node)}/motd") in {
        (e["resource_type"], e["resource_title"]) for e in events
    }
    target = pup.cli("job", "plan", "--query", f'reports[certname] {{ job_id = "{job["name"]}" }}')
    assert target.returncode == 0, target.stderr
    assert node in target.stdout


def test_a_noop_run_reports_pending_changes_and_changes_nothing(
    pup: Installation, work: Path
) -> None:
    node = NODES[0]
    deploy(pup, [node])
    motd = managed(work, node) / "motd"
    motd.write_text("edited by hand\n")
    job, nodes = deploy(pup, [node], noop=True)
    result = nodes[node]["result"]
    assert job["state"] == "finished"
    assert result["noop"] is True
    assert result["noop_pending"] is True
    assert result["metrics"]["noop"] == 1
    assert [(e["resource_title"], e["status"]) for e in result["events"]] == [(str(motd), "noop")]
    assert motd.read_text() == "edited by hand\n"


def test_a_failing_resource_fails_the_node_with_its_message(pup: Installation) -> None:
    node = NODES[1]
    with group(pup, "broken", node, variables={"broken": True}):
        job, nodes = deploy(pup, [node])
    assert job["state"] == "failed"
    failed = nodes[node]
    assert failed["state"] == "failed"
    assert "Exec[broken]" in failed["result"]["_error"]["msg"]
    assert failed["result"]["metrics"]["failed"] == 1


def test_classes_and_their_parameters_come_from_node_groups(pup: Installation, work: Path) -> None:
    node = NODES[0]
    with group(pup, "greeters", node, classes={"greeting": {"text": "hello from a group"}}):
        job, nodes = deploy(pup, [node])
    assert job["state"] == "finished", nodes
    assert (managed(work, node) / "greeting").read_text() == "hello from a group\n"


def test_the_cli_shows_resource_event_counts_and_json_metrics(pup: Installation) -> None:
    node = NODES[2]
    run = pup.cli("job", "run", "--nodes", node, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Finished on node {node}: changed" in run.stdout
    assert "Resource events: 0 failed 3 changed 0 skipped 0 noop" in run.stdout
    again = pup.cli("job", "run", "--nodes", node, "--format", "json", timeout=240)
    assert again.returncode == 0, again.stderr
    finished = [json.loads(line) for line in again.stdout.splitlines()]
    (event,) = [e for e in finished if e["type"] == "node_finished"]
    assert event["details"]["result"]["metrics"]["changed"] == 0


def test_a_disabled_agent_refuses_with_its_reason(pup: Installation) -> None:
    node = NODES[1]
    disable = pup.cli("puppet", "disable", "--message", "maintenance window", "--nodes", node)
    assert disable.returncode == 0, disable.stdout + disable.stderr
    try:
        status = pup.cli("puppet", "status", "--nodes", node)
        assert "maintenance window" in status.stdout
        _, nodes = deploy(pup, [node])
        assert nodes[node]["state"] == "failed"
        error = nodes[node]["result"]["_error"]
        assert error["kind"] == "podium.puppet/agent_disabled"
        assert "maintenance window" in error["msg"]
    finally:
        enable = pup.cli("puppet", "enable", "--nodes", node)
        assert enable.returncode == 0, enable.stdout + enable.stderr
    _, nodes = deploy(pup, [node])
    assert nodes[node]["state"] == "finished"


def test_an_ordered_application_skips_the_dependants_of_a_failure(
    pup: Installation, code: Path
) -> None:
    db, web = NODES[1], NODES[0]
    apps = code / "environments/production/applications"
    apps.mkdir(exist_ok=True)
    (apps / "shop.yaml").write_text(
        f"components:\n  db: {{nodes: [{db}], produces: [Sql]}}\n"
        f"  web: {{nodes: [{web}], consumes: [Sql]}}\n"
    )
    try:
        with group(pup, "broken db", db, variables={"broken": True}):
            planned = pup.cli("job", "plan", "--nodes", f"{web},{db}")
            assert "2 levels" in planned.stdout, planned.stdout
            _, nodes = deploy(pup, [web, db])
    finally:
        (apps / "shop.yaml").unlink()
    assert nodes[db]["state"] == "failed"
    assert nodes[web]["state"] == "skipped"
    assert db in nodes[web]["details"]["message"]


def test_comparing_a_file_across_nodes_shows_the_one_that_differs(
    pup: Installation, compared: Path
) -> None:
    shown = pup.cli("resource", "file", str(compared), "--nodes", ",".join(NODES))
    assert shown.returncode == 2, shown.stdout + shown.stderr  # they differ
    assert "2 groups: 2 nodes identical, 1 node differs." in shown.stdout
    same, other = shown.stdout.split("\nGroup ")[1:3]
    assert NODES[0] in same and NODES[1] in same and DIFFERENT not in same
    assert DIFFERENT in other
