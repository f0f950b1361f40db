"""What a client may cost the server before it has proved who it is.

- Request bodies: :class:`BodyLimit`, ASGI middleware that answers 413 to a body over
  the cap (at once when ``Content-Length`` says so, else as soon as the application has
  received more than the cap), so that no more than the cap is ever held for a request.
- Connections: :class:`ConnectionTable` decides which of the API's connections to keep
  when it is full and which have waited too long for a request head; the listener in
  :mod:`podium.server.peer` acts on its answers.
- File descriptors: :func:`raise_nofile_limit` at start, then :func:`watching_descriptors`
  warns, at most once a minute, when the process nears its open-file limit or fails to
  accept a connection for the lack of a descriptor.

The decisions (what to drop, what limit to ask for, whether a warning is due) are pure
and take the time as an argument; the I/O around them is thin.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import resource
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podium.errors import PodiumError

log = logging.getLogger(__name__)

K = TypeVar("K")

MIB = 1024 * 1024


# -- request bodies ---------------------------------------------------------------------


class RequestTooLarge(PodiumError):
    """A request body over the server's (or the endpoint's) cap: 413."""

    kind = "podium/request-too-large"
    status = 413

    def __init__(self, limit: int, *, setting: bool = True) -> None:
        if setting:
            where = "this server accepts"
            remedy = (
                "send less, or start the server with a larger --max-request-body "
                "(PODIUM_MAX_REQUEST_BODY)"
            )
        else:
            where, remedy = "this endpoint accepts", "send less"
        super().__init__(
            f"the request body is over {size_text(limit)}, the most {where}: {remedy}",
            details={"limit": limit},
        )
        self.limit = limit


class BodyLimit:
    """ASGI middleware: request bodies over ``limit`` bytes are answered 413.

    ``routes`` maps exact paths to caps of their own (larger or smaller), which take the
    place of ``limit`` there. The 413 closes the connection, so the rest of the body is
    never read. An application that was reading the body is told the client went away.
    """

    def __init__(self, app: ASGIApp, *, limit: int, routes: Mapping[str, int] | None = None):
        if limit <= 0:
            raise ValueError("the request body limit must be positive")
        self.app = app
        self.limit = limit
        self.routes = dict(routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        own = self.routes.get(scope["path"])
        guard = _BodyGuard(RequestTooLarge(own or self.limit, setting=own is None), receive, send)
        declared = _content_length(scope.get("headers", ()))
        if declared is not None and declared > guard.limit:
            await guard.answer()
            return
        try:
            await self.app(scope, guard.receive, guard.send)
        except ClientDisconnect:
            if not guard.answered:
                raise
            # What the application made of the disconnect we told it of.


class _BodyGuard:
    """One request's receive and send, counting body bytes as the application takes them."""

    def __init__(self, error: RequestTooLarge, receive: Receive, send: Send) -> None:
        self.error = error
        self.limit = error.limit
        self._receive = receive
        self._send = send
        self.received = 0
        self.over = False
        self.started = False  # the application began its response
        self.answered = False  # ours, the 413, went instead

    async def receive(self) -> Message:
        if self.over:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.over = True
                if not self.started:
                    await self.answer()
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def answer(self) -> None:
        self.answered = True
        body = orjson.dumps(self.error.to_dict())
        await self._send(
            {
                "type": "http.response.start",
                "status": self.error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),  # the rest of the body is not read
                ],
            }
        )
        await self._send({"type": "http.response.body", "body": body})


def _content_length(headers: Any) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser has refused it already
    return None


_SIZE = re.compile(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}


def byte_size(text: str) -> int:
    """``"16777216"``, ``"512K"``, ``"16M"``, ``"1GiB"``: a size in bytes (powers of 1024)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size: write bytes, or a number with K, M or G")
    return int(match[1]) * _UNITS[match[2].lower()]


def size_text(n: int) -> str:
    """A size as people write it: ``16 MiB`` when exact, else bytes."""
    for unit, factor in (("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


# -- connections ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionLimits:
    """How many API connections at once, and how long one may take to send a request."""

    max_connections: int = 5_000
    # From accept (or from the previous response) to a complete request head; the TLS
    # handshake counts against it.
    header_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.header_timeout <= 0:
            raise ValueError("connection limits must be positive")


@dataclass(frozen=True)
class Admission(Generic[K]):
    """A new connection's fate, and the connection that must go to make room for it."""

    admitted: bool
    evicted: K | None = None


class ConnectionTable(Generic[K]):
    """The connections a listener holds, each waiting for a request head or busy with one.

    At most ``capacity`` at once. When full, a newcomer takes the place of the connection
    that has waited longest for a request head (handshaking, idle between requests, or
    sending one slowly), as nginx reuses idle keep-alive connections; when every
    connection is busy with a request, the newcomer is refused. A connection waiting for a
    head more than ``header_timeout`` seconds expires. A connection that is evicted or
    expires leaves the table at once; :meth:`close` on it later does nothing.
    """

    def __init__(self, capacity: int, *, header_timeout: float) -> None:
        self.capacity = capacity
        self.header_timeout = header_timeout
        self._waiting: dict[K, float] = {}  # since when, oldest first
        self._busy: set[K] = set()

    def __len__(self) -> int:
        return len(self._waiting) + len(self._busy)

    def __contains__(self, conn: object) -> bool:
        return conn in self._waiting or conn in self._busy

    def open(self, conn: K, now: float) -> Admission[K]:
        """A connection was accepted at ``now``: it waits for its first request head."""
        evicted = None
        if len(self) >= self.capacity:
            if not self._waiting:
                return Admission(False)
            evicted = next(iter(self._waiting))
            del self._waiting[evicted]
        self._waiting[conn] = now
        return Admission(True, evicted)

    def busy(self, conn: K) -> None:
        """A complete request head arrived: the connection is no longer timed or evictable."""
        if self._waiting.pop(conn, None) is not None:
            self._busy.add(conn)

    def waiting(self, conn: K, now: float) -> None:
        """The connection waits for its next request head from ``now``; one that was
        waiting already keeps its first time, so a trickle of bytes gains nothing."""
        if conn in self._busy:
            self._busy.discard(conn)
            self._waiting[conn] = now

    def close(self, conn: K) -> None:
        self._waiting.pop(conn, None)
        self._busy.discard(conn)

    def expired(self, now: float) -> list[K]:
        """Remove and return the connections that waited for a head too long."""
        deadline = now - self.header_timeout
        gone = []
        for conn, since in self._waiting.items():
            if since > deadline:
                break
            gone.append(conn)
        for conn in gone:
            del self._waiting[conn]
        return gone

    def waiting_connections(self) -> list[K]:
        return list(self._waiting)


# -- file descriptors -------------------------------------------------------------------


def nofile_target(soft: int, hard: int | None, *, ceiling: int) -> int:
    """The soft open-file limit to ask for: the hard limit (``None``: unlimited, then
    ``ceiling``, the most the kernel allows a process), never less than ``soft`` now."""
    return max(soft, ceiling if hard is None else hard)


def near_limit(open_fds: int, limit: int, *, ratio: float = 0.9) -> bool:
    """Whether ``open_fds`` descriptors are close enough to ``limit`` to warn about."""
    return open_fds >= ratio * limit


class Throttle:
    """Lets something happen at most once per ``interval`` seconds; the time is given."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: float | None = None

    def ready(self, now: float) -> bool:
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True


def raise_nofile_limit(*, wanted: int | None = None) -> int:
    """Raise this process's soft open-file limit to its hard limit and log it; the limit
    in force. Warns when that is below ``wanted``, the descriptors the settings allow for."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = nofile_target(
        soft, None if hard == resource.RLIM_INFINITY else hard, ceiling=_kernel_nofile_max()
    )
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    log.info("open-file limit: %d", soft)
    if wanted is not None and soft < wanted:
        log.warning(
            "the open-file limit (%d) is below the %d connections the settings allow for: "
            "raise the hard limit (LimitNOFILE= of the systemd unit, ulimit -Hn) or lower "
            "the connection limits",
            soft,
            wanted,
        )
    return soft


def _kernel_nofile_max() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024 * 1024  # Linux's default nr_open


def open_descriptors() -> int | None:
    """How many descriptors this process has open, where the system tells (Linux, BSDs)."""
    for where in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(where)) - 1  # less the one listdir opened
    return None


_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})


class DescriptorWatch:
    """Warns, at most once per ``every`` seconds each, when open descriptors pass
    ``ratio`` of ``limit``, and when a connection could not be accepted for want of one."""

    def __init__(self, limit: int, *, ratio: float = 0.9, every: float = 60.0) -> None:
        self.limit = limit
        self.ratio = ratio
        self._near = Throttle(every)
        self._accept = Throttle(every)

    def check(self, open_fds: int, now: float) -> None:
        if near_limit(open_fds, self.limit, ratio=self.ratio) and self._near.ready(now):
            log.warning(
                "%d of the %d file descriptors this process may open are in use; at the "
                "limit, new connections are refused: raise the open-file limit or lower "
                "the connection limits",
                open_fds,
                self.limit,
            )

    def accept_failed(self, exc: OSError, now: float) -> None:
        if self._accept.ready(now):
            log.warning(
                "could not accept a connection: %s (open-file limit %d); connections are "
                "refused until descriptors are free",
                exc.strerror or exc,
                self.limit,
            )

    def exception_handler(
        self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
    ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
        """An event loop exception handler that reports accept failures for want of a
        descriptor (asyncio's loop logs each as an error, many a second) and hands
        everything else to ``previous``. (uvloop's libuv sheds such connections itself,
        silently; :meth:`check` still sees the process near its limit.)"""

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in _OUT_OF_DESCRIPTORS:
                self.accept_failed(exc, time.monotonic())
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        return handle


@contextlib.asynccontextmanager
async def watching_descriptors(limit: int, *, interval: float = 5.0) -> AsyncIterator[None]:
    """While inside, check the open descriptors every ``interval`` seconds against
    ``limit`` and report accept failures (see :class:`DescriptorWatch`)."""
    watch = DescriptorWatch(limit)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(watch.exception_handler(previous))

    async def poll() -> None:
        while True:
            count = open_descriptors()
            if count is None:
                return
            watch.check(count, time.monotonic())
            await asyncio.sleep(interval)

    task = asyncio.create_task(poll())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        loop.set_exception_handler(previous)
