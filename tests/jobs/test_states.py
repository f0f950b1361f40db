import pytest

from podium.jobs.states import can_move, job_outcome, state_for_results


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("new", "running", True),
        ("new", "failed", True),
        ("running", "finished", True),
        ("running", "running", False),
        ("finished", "running", False),
        ("failed", "finished", False),
    ],
)
def test_a_final_node_state_is_final(current, new, allowed):
    assert can_move(current, new) is allowed


def test_a_result_with_an_error_fails_the_node():
    assert state_for_results({"_output": "ok"}) == "finished"
    assert state_for_results({"_error": {"msg": "boom"}}) == "failed"


def test_a_job_fails_when_any_node_failed_or_errored():
    assert job_outcome(["finished", "finished"]) == "finished"
    assert job_outcome(["finished", "skipped"]) == "finished"
    assert job_outcome(["finished", "errored"]) == "failed"
    assert job_outcome(["failed"]) == "failed"
