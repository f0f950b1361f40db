"""Failed logins counted per key in a sliding window, on an injected clock."""

from __future__ import annotations

from podium.rbac.throttle import Throttle


def test_a_key_is_refused_after_its_limit_until_the_oldest_failure_leaves_the_window() -> None:
    throttle = Throttle(limit=3, window=60.0)
    for t in (0.0, 10.0, 20.0):
        assert throttle.retry_after("alice", t) is None
        throttle.failed("alice", t)
    assert throttle.retry_after("alice", 30.0) == 30.0
    assert throttle.retry_after("bob", 30.0) is None
    assert throttle.retry_after("alice", 60.0) is None  # the first failure has left


def test_a_success_clears_the_key() -> None:
    throttle = Throttle(limit=2, window=60.0)
    throttle.failed("alice", 0.0)
    throttle.failed("alice", 1.0)
    assert throttle.retry_after("alice", 2.0) is not None
    throttle.succeeded("alice")
    assert throttle.retry_after("alice", 2.0) is None


def test_memory_is_bounded_by_forgetting_the_stalest_keys() -> None:
    throttle = Throttle(limit=1, window=60.0, max_keys=3)
    for i in range(5):
        throttle.failed(f"k{i}", float(i))
    assert throttle.retry_after("k0", 5.0) is None
    assert throttle.retry_after("k4", 5.0) is not None
