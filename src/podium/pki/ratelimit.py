"""How often one client may submit a certificate request: a token bucket per address.

Anyone may submit a request (agents have no credentials yet), so the CA bounds what
one address can make it store: a burst, then a steady rate. The clock is passed in, so
the arithmetic is tested without waiting.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from podium.errors import ValidationError


class RateLimiter:
    """A token bucket per client: ``burst`` requests at once, then ``per_minute``.

    It remembers the ``max_clients`` clients seen last; one forgotten starts again with
    a full bucket, which only matters to someone spreading requests over more
    addresses than that. Safe to share between threads.
    """

    def __init__(
        self,
        *,
        per_minute: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 65_536,
    ) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValidationError(
                f"a rate limit needs a rate above 0 and a burst of at least 1, "
                f"not {per_minute:g}/min and {burst}"
            )
        self.per_minute = per_minute
        self.burst = burst
        self._per_second = per_minute / 60.0
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # level, when
        self._lock = threading.Lock()

    def acquire(self, client: str) -> float:
        """Take one request from ``client``'s bucket: ``0.0`` when it is granted, else
        the seconds until the bucket holds one again (nothing is taken then)."""
        now = self._clock()
        with self._lock:
            level, then = self._buckets.pop(client, (float(self.burst), now))
            level = min(float(self.burst), level + max(0.0, now - then) * self._per_second)
            wait = 0.0
            if level >= 1.0:
                level -= 1.0
            else:
                wait = (1.0 - level) / self._per_second
            self._buckets[client] = (level, now)  # the most recent last
            while len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(host: str | None) -> str:
    """The bucket an address draws from: IPv4 addresses each their own, IPv6 addresses
    by /64 (one host usually holds a whole /64), anything else as given."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a Unix socket path or a test client's name
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
