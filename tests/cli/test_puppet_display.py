"""A deploy job's nodes as people see them: resource event counts as PE's CLI prints
them, what changed or would change, failures with their message, the log in job show,
and identical runs grouped in a large job."""

from __future__ import annotations

import copy
from typing import Any

from podium.cli.job import job_lines
from podium.cli.runs import comparable, counts_text, event_text, outcome, run_lines
from podium.cli.watch import JobDisplay, node_results

METRICS = {
    "total": 4,
    "changed": 2,
    "failed": 0,
    "skipped": 0,
    "out_of_sync": 2,
    "noop": 0,
    "corrective_change": 0,
    "restarted": 0,
    "failed_to_restart": 0,
    "scheduled": 0,
}


def run(**changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "status": "changed",
        "noop": False,
        "noop_pending": False,
        "metrics": dict(METRICS),
        "events": [
            {
                "resource_type": "File",
                "resource_title": "/etc/motd",
                "property": "ensure",
                "old_value": "absent",
                "new_value": "file",
                "status": "success",
                "message": "defined content as '{sha256}ab'",
                "timestamp": "2026-12-02T10:00:00.000Z",
            },
            {
                "resource_type": "Exec",
                "resource_title": "reload",
                "property": "returns",
                "old_value": "notrun",
                "new_value": ["0"],
                "status": "success",
                "message": "executed successfully",
                "timestamp": "2026-12-02T10:00:01.000Z",
            },
        ],
        "logs": [
            {"level": "notice", "source": "Puppet", "message": "Applied catalog in 0.02 seconds"}
        ],
        "configuration_version": "1764669600",
        "transaction_uuid": "5f0c",
        "duration": 1.25,
    }
    result.update(changes)
    return result


def test_the_counts_read_as_pe_prints_them() -> None:
    assert counts_text(METRICS) == (
        "Resource events: 0 failed 2 changed 0 skipped 0 noop (4 resources)"
    )
    assert counts_text({**METRICS, "corrective_change": 1}).endswith("(4 resources, 1 corrective)")


def test_a_changed_run_lists_its_events_and_version() -> None:
    lines = run_lines(run())
    assert lines == [
        "  Resource events: 0 failed 2 changed 0 skipped 0 noop (4 resources)",
        "  Changed: File[/etc/motd] ensure: absent → file",
        '  Changed: Exec[reload] returns: notrun → ["0"]',
        "  Configuration version: 1764669600",
        "  Duration: 1.25 s",
    ]


def test_a_noop_run_says_what_would_change() -> None:
    pending = run(
        status="unchanged",
        noop=True,
        noop_pending=True,
        metrics={**METRICS, "changed": 0, "noop": 1},
        events=[{**run()["events"][0], "status": "noop"}],
    )
    assert outcome(pending) == "noop, 1 pending change"
    assert "  Would change: File[/etc/motd] ensure: absent → file" in run_lines(pending)
    assert outcome(run(noop=True, status="unchanged", metrics=METRICS | {"noop": 0})) == (
        "noop, nothing to change"
    )


def test_a_failed_event_carries_its_message() -> None:
    failed = {
        "resource_type": "Exec",
        "resource_title": "migrate",
        "property": "returns",
        "old_value": "notrun",
        "new_value": ["0"],
        "status": "failure",
        "message": "'false' returned 1 instead of one of [0]",
    }
    assert event_text(failed) == (
        "Failed: Exec[migrate] returns: notrun → [\"0\"] ('false' returned 1 instead of one of [0])"
    )


def test_what_a_node_sends_is_cleaned_before_it_is_printed() -> None:
    sneaky = run(events=[{**run()["events"][0], "resource_title": "/tmp/\x1b]0;owned\x07x"}])
    assert all("\x1b" not in line for line in run_lines(sneaky))


def test_the_live_display_prints_a_deploy_node_with_its_counts() -> None:
    view = JobDisplay({"name": "7", "node_count": 2, "type": "deploy"})
    lines = view.feed(
        {"id": "1", "type": "node_finished", "details": {"node": "web-1", "result": run()}}
    )
    texts = [line.text for line in lines]
    assert texts[0] == "Finished on node web-1: changed"
    assert texts[1] == "  Resource events: 0 failed 2 changed 0 skipped 0 noop (4 resources)"
    failed = run(status="failed", _error={"msg": "1 resource failed: Exec[migrate]"})
    lines = view.feed(
        {"id": "2", "type": "node_failed", "details": {"node": "db-1", "result": failed}}
    )
    assert [line.text for line in lines][:2] == [
        "Failed on db-1: failed",
        "  Error: 1 resource failed: Exec[migrate]",
    ]
    assert lines[0].style == "error"


def test_identical_runs_on_many_nodes_are_grouped_whatever_their_times() -> None:
    view = JobDisplay({"name": "8", "node_count": 30, "type": "deploy"})
    printed = []
    for n in range(30):
        result = run(transaction_uuid=f"tx-{n}", duration=1 + n / 10)
        for event in result["events"]:
            event["timestamp"] = f"2026-12-02T10:00:{n:02}.000Z"
        event = {"id": str(n + 1), "type": "node_finished", "details": {"node": f"web-{n}"}}
        event["details"]["result"] = result  # type: ignore[index]
        printed += [line.text for line in view.feed(event)]
    assert printed.count("Finished on node web-0: changed") == 1
    assert not any(line.startswith("Finished on node web-1:") for line in printed)
    summary = [line.text for line in view.summary()]
    assert any(line.startswith("  30 nodes finished like web-0") for line in summary)


def test_comparable_leaves_out_times_and_ids() -> None:
    one, two = run(), copy.deepcopy(run(transaction_uuid="other", duration=9.0))
    two["events"][0]["timestamp"] = "2027-01-01T00:00:00.000Z"
    assert comparable(one) == comparable(two)
    assert comparable(one) != comparable(run(status="failed"))


def test_job_show_prints_every_event_and_the_log() -> None:
    job = {"name": "9", "node_count": 1, "type": "deploy"}
    many = run(events=[{**run()["events"][0], "resource_title": f"/f{i}"} for i in range(15)])
    nodes = [{"name": "web-1", "state": "finished", "result": many, "details": {}}]
    texts = [line.text for line in node_results(job, nodes)]
    assert sum("Changed: File[/f" in t for t in texts) == 15
    assert "  Log:" in texts
    assert "    notice: Applied catalog in 0.02 seconds" in texts


def test_job_show_names_the_mode_and_flags_of_a_deploy() -> None:
    job = {
        "name": "5",
        "state": "finished",
        "type": "deploy",
        "options": {"mode": "apply", "noop": True, "debug": True, "scope": {"nodes": ["a"]}},
        "environment": {"name": "production"},
        "owner": {"login": "admin"},
        "node_count": 1,
        "node_states": {"finished": 1},
    }
    lines = job_lines(job)
    assert "  Mode:        apply" in lines
    assert "  Options:     noop; debug" in lines


def test_a_run_refused_before_puppet_started_says_so() -> None:
    refused = {"_error": {"kind": "podium.puppet/agent_disabled", "msg": "Puppet is disabled"}}
    assert outcome(refused) == "Puppet did not run"
    assert run_lines(refused) == ["  Error: Puppet is disabled"]
