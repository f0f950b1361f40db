"""The per-address token bucket, driven by a clock the test moves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.errors import ValidationError
from podium.pki.ratelimit import RateLimiter, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_burst_is_granted_then_the_next_waits_for_the_rate(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=10, burst=20, clock=clock)
    assert [limiter.acquire("10.0.0.1") for _ in range(20)] == [0.0] * 20
    assert limiter.acquire("10.0.0.1") == pytest.approx(6.0)  # one every 6 s
    clock.now += 5.9
    assert limiter.acquire("10.0.0.1") == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.acquire("10.0.0.1") == 0.0
    assert limiter.acquire("10.0.0.1") == pytest.approx(6.0)


def test_a_refused_request_takes_nothing(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    assert limiter.acquire("a") == 0.0
    for _ in range(5):
        assert limiter.acquire("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.acquire("a") == 0.0


def test_addresses_have_buckets_of_their_own(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=1, burst=1, clock=clock)
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_an_idle_bucket_refills_to_the_burst_and_no_more(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    for _ in range(3):
        limiter.acquire("a")
    clock.now += 3600
    assert [limiter.acquire("a") for _ in range(3)] == [0.0] * 3
    assert limiter.acquire("a") > 0


def test_a_clock_going_back_grants_nothing_extra(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    limiter.acquire("a")
    clock.now -= 100
    assert limiter.acquire("a") == pytest.approx(1.0)


def test_the_clients_remembered_are_bounded(clock: Clock) -> None:
    limiter = RateLimiter(per_minute=1, burst=1, clock=clock, max_clients=2)
    for client in ("a", "b", "c"):
        limiter.acquire(client)
    assert len(limiter) == 2
    assert limiter.acquire("a") == 0.0  # the oldest was forgotten: a full bucket again
    assert limiter.acquire("c") > 0


@pytest.mark.parametrize(("per_minute", "burst"), [(0, 1), (-1, 5), (10, 0)])
def test_a_limit_that_grants_nothing_is_refused(per_minute: float, burst: int) -> None:
    with pytest.raises(ValidationError, match="rate limit"):
        RateLimiter(per_minute=per_minute, burst=burst)


@given(
    per_minute=st.floats(min_value=0.1, max_value=600),
    burst=st.integers(min_value=1, max_value=50),
    steps=st.lists(st.floats(min_value=0, max_value=30), max_size=200),
)
def test_never_more_than_the_burst_plus_the_rate_over_any_run(
    per_minute: float, burst: int, steps: list[float]
) -> None:
    clock = Clock()
    start = clock.now
    limiter = RateLimiter(per_minute=per_minute, burst=burst, clock=clock)
    granted = 0
    for step in steps:
        clock.now += step
        if limiter.acquire("a") == 0.0:
            granted += 1
    assert granted <= burst + (clock.now - start) * per_minute / 60 + 1e-6


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("testclient", "testclient"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_the_bucket_of_an_address(host: str | None, key: str) -> None:
    assert client_key(host) == key
