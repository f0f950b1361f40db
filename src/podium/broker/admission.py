"""Admission control: how many new connections the broker accepts per second."""

from __future__ import annotations


class TokenBucket:
    """``rate`` admissions per second with bursts up to ``burst``; the clock is given."""

    def __init__(self, rate: float, burst: int, *, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> float:
        """0.0 if admitted now, else how many seconds until a token is free."""
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate
