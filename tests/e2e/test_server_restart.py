"""A job survives the server being killed while its nodes run."""

from __future__ import annotations

import re

import pytest

from e2e.installation import new_database, start_installation, wait_for

pytestmark = pytest.mark.e2e

NODES = ["east.e2e", "west.e2e", "north.e2e"]
FINISHED = ("success", "failure")  # an agent's spool states of a finished transaction


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_job_completes_after_the_server_is_killed_mid_job(
    request: pytest.FixtureRequest, backend: str
) -> None:
    with start_installation(NODES, database_url=new_database(request, backend)) as podium:
        runs, go = podium.root / "runs", podium.root / "go"
        # A task runs in its agent's file cache, so its working directory names the node.
        # It goes on once the test says so: only after the server's restart.
        command = f'pwd >> {runs}; while [ ! -e {go} ]; do sleep 0.05; done; echo "done"'
        job_id = podium.run_task("podium::command", {"command": command}, NODES)
        for node in NODES:
            podium.wait_node_state(job_id, node, "running")
        wait_for(
            "the task to run on every node",
            lambda: runs.exists() and len(runs.read_text().splitlines()) == len(NODES),
        )

        podium.kill_server()
        podium.restart_server()
        podium.wait_connected(*NODES)
        go.touch()

        job = podium.wait_job(job_id)
        nodes = podium.nodes(job_id)
        assert {n: v["result"] for n, v in nodes.items()} == {
            n: {"_output": "done\n"} for n in NODES
        }
        assert {n: v["state"] for n, v in nodes.items()} == dict.fromkeys(NODES, "finished")
        assert job["state"] == "finished"
        assert [e["type"] for e in podium.events(job_id)].count("job_finished") == 1
        started = runs.read_text().splitlines()
        assert len(started) == len(set(started)) == len(NODES), started


def test_task_runs_when_the_server_dies_before_its_agent_fetched_the_task_file() -> None:
    node = "slow.e2e"  # a new agent: the task file is not in its cache yet
    with start_installation([node]) as podium:
        podium.pause_agent(node)
        job_id = podium.run_task("podium::echo", {"message": "hi"}, [node])
        txid = podium.nodes(job_id)[node]["transaction_id"]
        podium.kill_server()
        podium.resume_agent(node)
        wait_for(
            "the agent to take the request", lambda: podium.spool_status(node, txid) is not None
        )
        # The agent meets the dead server before it comes back, and retries.
        wait_for(
            "the agent to find the server gone",
            lambda: re.search(r"download of \S+ failed .*; retrying", podium.agent_log(node)),
        )
        assert podium.spool_status(node, txid) not in FINISHED

        podium.restart_server()

        job = podium.wait_job(job_id)
        assert podium.nodes(job_id)[node]["result"] == {"_output": "hi\n"}
        assert job["state"] == "finished"
