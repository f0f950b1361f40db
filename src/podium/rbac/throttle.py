"""Failed attempts counted per key (a login, an address), in a sliding window (pure).

A key with ``limit`` failures in the last ``window`` seconds is refused until the
oldest of them leaves the window; a success clears the key. The clock is the caller's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class Throttle:
    limit: int
    window: float
    max_keys: int = 100_000  # beyond this the oldest keys are forgotten
    _failures: dict[str, deque[float]] = field(default_factory=dict, repr=False)

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until ``key`` may try again; None when it may now."""
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        if len(times) < self.limit:
            return None
        return times[0] + self.window - now

    def failed(self, key: str, now: float) -> None:
        times = self._failures.pop(key, None) or deque(maxlen=self.limit)
        times.append(now)
        self._failures[key] = times  # most recent last: the first key is the stalest
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
