"""Reconnection delays: full-jitter exponential backoff.

Ten thousand agents that lose their broker at once must not come back at once:
each waits a random time in ``[0, min(cap, base * 2**attempt))``.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def full_jitter(
    attempt: int, *, base: float = 1.0, cap: float = 32.0, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before reconnection ``attempt`` (0 for the first retry)."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return float(ceiling * rand())
