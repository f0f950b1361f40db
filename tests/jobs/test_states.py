from podium.jobs.states import state_for_results


def test_a_result_with_an_error_fails_the_node() -> None:
    assert state_for_results({"_output": "ok"}) == "finished"
    assert state_for_results({"_error": {"msg": "boom"}}) == "failed"
