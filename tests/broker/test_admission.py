from podium.broker.admission import TokenBucket


def test_bursts_are_admitted_then_callers_are_told_how_long_to_wait():
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == 0.1
    assert bucket.take(0.1) == 0.0


def test_tokens_never_exceed_the_burst():
    bucket = TokenBucket(rate=100, burst=2, now=0.0)
    bucket.take(1000.0)
    bucket.take(1000.0)
    assert bucket.take(1000.0) > 0
