"""Pace, stop, rerun, deadlines and live output with real agents, as the event log and
the CLI show them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.installation import NODES, Installation, job_id_in, start_installation, wait_for

pytestmark = pytest.mark.e2e

FINALS = {"node_finished", "node_failed", "node_errored", "node_skipped"}


@pytest.fixture(scope="module")
def quick() -> Iterator[Installation]:
    """Five agents on a server that gives up on silent or vanished agents within seconds."""
    with start_installation(
        NODES, server_args=("--reconnect-grace", "3", "--answer-timeout", "2")
    ) as installation:
        yield installation


def wait_command(go: Path, then: str = "echo done") -> str:
    """A shell command that waits until the test creates ``go``."""
    return f"while [ ! -e {go} ]; do sleep 0.05; done; {then}"


def peak_running(events: list[dict[str, Any]]) -> int:
    """The most nodes that were between their start and their end at once, by the log."""
    live, peak = set(), 0
    for event in events:
        node = event["details"].get("node")
        if event["type"] == "node_running":
            live.add(node)
            peak = max(peak, len(live))
        elif event["type"] in FINALS:
            live.discard(node)
    return peak


def test_concurrency_is_never_exceeded_by_the_event_log(fleet: Installation) -> None:
    job_id = fleet.run_task(
        "podium::command", {"command": "sleep 0.2; echo ok"}, NODES, concurrency=2
    )
    assert fleet.wait_job(job_id)["state"] == "finished"
    events = fleet.events(job_id)
    assert peak_running(events) <= 2
    assert sum(e["type"] == "node_finished" for e in events) == len(NODES)
    assert fleet.job(job_id)["options"]["concurrency"] == 2


def test_batches_run_one_after_the_other(fleet: Installation) -> None:
    job_id = fleet.run_task("podium::echo", {"message": "b"}, NODES, batch="40%")
    assert fleet.wait_job(job_id)["state"] == "finished"
    order: list[tuple[str, str]] = [
        (e["type"], e["details"]["node"]) for e in fleet.events(job_id) if "node" in e["details"]
    ]
    ended: set[str] = set()
    batches = [sorted(NODES)[0:2], sorted(NODES)[2:4], sorted(NODES)[4:]]
    for kind, node in order:
        if kind == "node_running":
            index = next(i for i, b in enumerate(batches) if node in b)
            earlier = {n for b in batches[:index] for n in b}
            assert earlier <= ended, f"{node} started before batch {index - 1} ended"
        elif kind in FINALS:
            ended.add(node)


def test_fail_fast_skips_the_nodes_after_the_first_failure(fleet: Installation) -> None:
    job_id = fleet.run_task(
        "podium::command", {"command": "exit 3"}, NODES, concurrency=1, fail_fast=True
    )
    assert fleet.wait_job(job_id)["state"] == "failed"
    states = sorted(n["state"] for n in fleet.nodes(job_id).values())
    assert states == ["failed"] + ["skipped"] * (len(NODES) - 1)


def test_stop_lets_the_running_node_finish_and_skips_the_rest(fleet: Installation) -> None:
    go = fleet.root / "stop-go"
    job_id = fleet.run_task(
        "podium::command", {"command": wait_command(go)}, NODES[:3], concurrency=1
    )
    first = sorted(NODES[:3])[0]
    fleet.wait_node_state(job_id, first, "running")
    stopped = fleet.cli("job", "stop", job_id)
    assert stopped.returncode == 0, stopped.stderr
    assert fleet.job(job_id)["state"] == "stopping"
    go.touch()
    assert fleet.wait_job(job_id)["state"] == "stopped"
    nodes = fleet.nodes(job_id)
    assert nodes[first]["state"] == "finished"
    assert {nodes[n]["state"] for n in sorted(NODES[:3])[1:]} == {"skipped"}
    again = fleet.cli("job", "stop", job_id)  # idempotent
    assert again.returncode == 0, again.stderr


def test_a_forced_stop_kills_the_task_and_the_node_ends_errored(fleet: Installation) -> None:
    pidfile = fleet.root / "forced-pid"
    node = NODES[0]
    job_id = fleet.run_task(
        "podium::command", {"command": f"echo $$ > {pidfile}; exec sleep 600"}, [node]
    )
    wait_for("the task to start", lambda: pidfile.exists() and pidfile.read_text().strip())
    pid = int(pidfile.read_text())
    stopped = fleet.cli("job", "stop", job_id, "--force")
    assert stopped.returncode == 0, stopped.stderr
    assert fleet.wait_job(job_id)["state"] == "stopped"
    assert fleet.nodes(job_id)[node]["state"] == "errored"
    assert "stopped by admin" in fleet.nodes(job_id)[node]["details"]["message"]
    wait_for("the task's process to be killed", lambda: not _alive(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_rerun_only_failed_runs_the_nodes_that_did_not_succeed(fleet: Installation) -> None:
    ghost = "ghost.e2e"
    job_id = fleet.run_task("podium::echo", {"message": "again"}, [NODES[0], ghost])
    assert fleet.wait_job(job_id)["state"] == "failed"
    rerun = fleet.cli("job", "rerun", job_id, "--only-failed", "--format", "json")
    assert rerun.returncode == 3, rerun.stderr  # the ghost fails again: no node answered
    new = fleet.api.call("GET", "/jobs", params={"limit": 1})["items"][0]
    assert new["name"] != job_id
    assert new["options"]["task"] == "podium::echo"
    assert set(fleet.nodes(new["name"])) == {ghost}
    everything = fleet.cli("job", "rerun", job_id, "--format", "json")
    latest = fleet.api.call("GET", "/jobs", params={"limit": 1})["items"][0]
    assert everything.returncode == 2  # some failed
    assert set(fleet.nodes(latest["name"])) == {NODES[0], ghost}


def test_an_agent_that_never_answers_ends_errored(quick: Installation) -> None:
    node = NODES[1]
    quick.pause_agent(node)
    try:
        job_id = quick.run_task("podium::echo", {"message": "anyone?"}, [node])
        assert quick.wait_job(job_id, timeout=60)["state"] == "failed"
        result = quick.nodes(job_id)[node]
        assert result["state"] == "errored"
        message = result["details"]["message"]
        assert "did not accept the request" in message or "did not come back" in message
    finally:
        quick.resume_agent(node)
    quick.wait_connected(node, timeout=60)


def test_a_node_whose_agent_drops_shows_as_disconnected_until_given_up(
    quick: Installation,
) -> None:
    node = NODES[2]
    go = quick.root / "never"
    job_id = quick.run_task("podium::command", {"command": wait_command(go)}, [node])
    quick.wait_node_state(job_id, node, "running")
    quick.kill_agent(node)
    wait_for(
        "the node to show as disconnected",
        lambda: quick.nodes(job_id)[node]["disconnected"] is not None,
    )
    shown = quick.cli("job", "show", job_id)
    assert "disconnected" in shown.stdout, shown.stdout
    assert quick.wait_job(job_id, timeout=60)["state"] == "failed"
    assert "did not come back within 3 s" in quick.nodes(job_id)[node]["details"]["message"]
    go.touch()
    quick.restart_agent(node)
    quick.wait_connected(node)


def test_an_offline_node_with_a_ttl_runs_when_its_agent_starts(quick: Installation) -> None:
    node = NODES[3]
    quick.stop_agent(node)
    quick.wait_disconnected(node)
    job_id = quick.run_task("podium::echo", {"message": "late"}, [node], offline_ttl=120)
    wait_for("the job to run", lambda: quick.job(job_id)["state"] == "running")
    assert quick.nodes(job_id)[node]["state"] == "new"  # waiting for its agent
    quick.restart_agent(node)
    assert quick.wait_job(job_id, timeout=60)["state"] == "finished"
    assert quick.nodes(job_id)[node]["result"] == {"_output": "late\n"}


def test_live_output_arrives_before_the_task_ends(fleet: Installation) -> None:
    go = fleet.root / "output-go"
    node = NODES[4]
    job_id = fleet.run_task(
        "podium::command", {"command": "echo first line; " + wait_command(go, "echo last")}, [node]
    )

    def streamed() -> str:
        return "".join(
            e["details"]["data"] for e in fleet.events(job_id) if e["type"] == "node_output"
        )

    wait_for("the first line to be streamed", lambda: "first line" in streamed())
    assert fleet.nodes(job_id)[node]["state"] == "running"
    go.touch()
    assert fleet.wait_job(job_id)["state"] == "finished"


def test_task_run_streams_output_and_ctrl_c_stops_the_job(fleet: Installation) -> None:
    go = fleet.root / "ctrl-c-go"
    env = {
        **os.environ,
        "PODIUM_SERVER_URL": fleet.fleet.server_url,
        "PODIUM_CACERT": str(fleet.fleet.cacert),
        "PODIUM_TOKEN_FILE": str(fleet.fleet.token_file),
    }
    command = "echo hello from the task; " + wait_command(go)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "podium", "task", "run", "podium::command"),
            *(f"command={command}", "--nodes", ",".join(NODES[:2]), "--concurrency", "1"),
            "--stream",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "hello from the task" in line:
                break
        streamed = [line for line in lines if "hello from the task" in line]
        assert streamed and streamed[0].startswith(sorted(NODES[:2])[0]), lines
        job_id = job_id_in("".join(lines))
        proc.send_signal(signal.SIGINT)
        wait_for("the job to be stopping", lambda: fleet.job(job_id)["state"] == "stopping")
        go.touch()
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert "Stopping job" in output, output + err
    assert fleet.wait_job(job_id)["state"] == "stopped"
    assert "Job stopped." in output, output
    assert proc.returncode != 0
