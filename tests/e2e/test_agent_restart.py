"""An agent killed while its task runs picks the task's outcome up after a restart."""

from __future__ import annotations

import pytest

from e2e.installation import Installation, wait_for

pytestmark = pytest.mark.e2e


def test_killed_agent_reports_its_task_once_after_a_restart(fleet: Installation) -> None:
    certname = "restarted.e2e"
    fleet.add_agent(certname)
    marker, go = fleet.root / "restarted-runs", fleet.root / "restarted-go"
    # The task goes on once the test says so: only after its agent is killed.
    command = f"echo ran >> {marker}; while [ ! -e {go} ]; do sleep 0.05; done; echo done"
    job_id = fleet.run_task("podium::command", {"command": command}, [certname])
    # Killed once the task has begun (its wrapper has recorded its pid by then).
    wait_for("the task to start", lambda: marker.exists() and marker.read_text())

    fleet.kill_agent(certname)
    fleet.wait_disconnected(certname)
    assert fleet.nodes(job_id)[certname]["state"] == "running"
    go.touch()
    fleet.restart_agent(certname)

    job = fleet.wait_job(job_id)
    assert job["state"] == "finished"
    node = fleet.nodes(job_id)[certname]
    assert node["state"] == "finished"
    assert node["result"] == {"_output": "done\n"}
    assert marker.read_text() == "ran\n"
