"""Running tasks from the API and the CLI, as a user sees them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.installation import (
    NODES,
    Installation,
    job_id_in,
    new_database,
    start_installation,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def five_nodes(request: pytest.FixtureRequest) -> Iterator[Installation]:
    """The five agents of ``NODES`` on a server with each database."""
    url = new_database(request, request.param)
    if url is None:
        yield request.getfixturevalue("fleet")
        return
    with start_installation(NODES, database_url=url) as installation:
        yield installation


def test_echo_task_finishes_on_five_nodes(five_nodes: Installation) -> None:
    job_id = five_nodes.run_task("podium::echo", {"message": "hello e2e"}, NODES)

    job = five_nodes.wait_job(job_id)

    assert job["state"] == "finished"
    assert job["node_count"] == 5
    assert job["node_states"] == {"finished": 5}
    nodes = five_nodes.nodes(job_id)
    assert {name: node["state"] for name, node in nodes.items()} == dict.fromkeys(NODES, "finished")
    assert {name: node["result"] for name, node in nodes.items()} == {
        name: {"_output": "hello e2e\n"} for name in NODES
    }
    events = five_nodes.events(job_id)
    for node in NODES:
        mine = [e for e in events if e["details"].get("node") == node]
        assert [e["type"] for e in mine] == ["node_running", "node_output", "node_finished"]
        assert mine[1]["details"]["data"] == "hello e2e\n"  # streamed before the result
    assert [e["type"] for e in events].count("job_finished") == 1
    assert events[-1]["type"] == "job_finished"
    assert events[-1]["details"] == {"state": "finished"}


def test_cli_runs_a_task_and_shows_every_node(five_nodes: Installation) -> None:
    run = five_nodes.cli(
        "task", "run", "podium::echo", "message=hello from the cli", "--nodes", ",".join(NODES)
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "Job completed. 5/5 nodes succeeded." in run.stdout
    for node in NODES:
        assert f"Started on {node} ..." in run.stdout
        assert f"Finished on node {node}" in run.stdout
    job_id = job_id_in(run.stdout)

    show = five_nodes.cli("job", "show", job_id)

    assert show.returncode == 0, show.stdout + show.stderr
    assert f"Job {job_id}: finished" in show.stdout
    assert "Nodes:       5 (5 finished)" in show.stdout
    for node in NODES:
        assert f"Finished on node {node}" in show.stdout
    assert show.stdout.count("    hello from the cli\n") == 5


def test_unknown_node_fails_by_name_while_the_others_succeed(fleet: Installation) -> None:
    targets = [NODES[0], "ghost.e2e", NODES[1]]

    run = fleet.cli("task", "run", "podium::echo", "message=hi", "--nodes", ",".join(targets))

    assert run.returncode == 2, run.stdout + run.stderr
    assert "Job completed. 2/3 nodes succeeded." in run.stdout
    assert "Failed on ghost.e2e\n  Error: unknown node ghost.e2e" in run.stdout
    job_id = job_id_in(run.stdout)
    assert fleet.job(job_id)["state"] == "failed"
    nodes = fleet.nodes(job_id)
    assert nodes["ghost.e2e"]["state"] == "failed"
    assert nodes["ghost.e2e"]["details"]["message"].startswith("unknown node ghost.e2e")
    for node in (NODES[0], NODES[1]):
        assert nodes[node]["state"] == "finished"
        assert nodes[node]["result"] == {"_output": "hi\n"}
