"""A running task's output, streamed live to its controller as ``task_output`` chunks.

- :class:`OutputStream` (pure) turns the bytes of one stream, read as they come, into
  chunks: text decoded incrementally, so that a character cut between two reads is never
  split (invalid bytes become U+FFFD); at most ``MAX_OUTPUT_CHUNK`` characters each
  (:mod:`podium.protocol.messages`); ``offset`` the bytes of the stream before the
  chunk; nothing past ``limit`` bytes of the stream.
- :class:`OutputFollower` reads the task's ``stdout`` and ``stderr`` files in its spool
  folder every ``interval`` seconds, in a worker thread, and hands at most one chunk per
  stream per tick to ``send``; once the task has ended it flushes what is left (up to the
  limit), before the final result is sent.

Streaming is best effort: chunks are not spooled and never sent twice, ``send`` may drop
them (the agent is disconnected), and a file that cannot be read ends the streaming
quietly. The final result carries the task's output whatever was streamed.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

from podium.protocol.messages import MAX_OUTPUT_CHUNK, TaskOutput

log = logging.getLogger(__name__)

STREAMS: Final = ("stdout", "stderr")
# Seconds between two reads of a running task's output.
OUTPUT_INTERVAL: Final = 0.25
# Bytes of each stream streamed at most; the rest is only in the final result (capped
# too) and the spool.
OUTPUT_LIMIT: Final = 1024 * 1024


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


class OutputStream:
    """One stream's chunks, from its bytes read in order from ``start`` (pure).

    Feed it what :meth:`wanted` says may be read; each :meth:`feed` gives at most one
    chunk ``(offset, text)``. Started past the beginning (a task followed after an agent
    restart), it skips the rest of a character cut at ``start``.
    """

    def __init__(
        self, *, start: int = 0, limit: int = OUTPUT_LIMIT, chunk: int = MAX_OUTPUT_CHUNK
    ) -> None:
        self.position = start  # bytes of the stream fed so far: where the next read starts
        self.limit = limit
        self._chunk = chunk
        self._shown = start  # bytes of the stream whose text has been given out
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._mid_character = start > 0

    @property
    def capped(self) -> bool:
        """Whether the stream has reached its limit: nothing more is given out."""
        return self.position >= self.limit

    def wanted(self) -> int:
        """How many bytes the next read may take: one chunk's worth, within the limit."""
        # Each character decodes from at least one byte, so the bytes held back (a
        # character not yet whole) and the new ones make at most ``chunk`` characters.
        held = len(self._decoder.getstate()[0])
        return max(0, min(self._chunk - held, self.limit - self.position))

    def feed(self, data: bytes, *, final: bool = False) -> tuple[int, str] | None:
        """The chunk that ``data`` (at most :meth:`wanted` bytes) completes, if any;
        ``final`` when the stream has ended, so that a character cut short at its end
        becomes U+FFFD rather than being held back."""
        if len(data) > self.wanted():
            raise ValueError(f"fed {len(data)} bytes where {self.wanted()} were wanted")
        self.position += len(data)
        if self._mid_character and data:
            skip = 0
            while skip < min(3, len(data)) and _is_continuation(data[skip]):
                skip += 1
            data = data[skip:]
            self._shown += skip
            self._mid_character = False
        # A character cut by the limit is dropped, never shown as U+FFFD.
        text = self._decoder.decode(data, final=final and not self.capped)
        offset = self._shown
        self._shown = self.position - len(self._decoder.getstate()[0])
        return (offset, text) if text else None


def _read(path: Path, position: int, size: int) -> bytes:
    """Up to ``size`` bytes of ``path`` from ``position`` (blocking; a missing file is
    empty: the task has not opened it yet)."""
    if size <= 0:
        return b""
    try:
        with path.open("rb") as f:
            f.seek(position)
            return f.read(size)
    except FileNotFoundError:
        return b""


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class OutputFollower:
    """Streams the output of the task in ``txdir`` to ``send`` while it runs.

    ``resume``: the task was started by an earlier agent process, which may have sent
    its output so far; streaming starts at the files' current ends.
    """

    def __init__(
        self,
        txdir: Path,
        transaction_id: str,
        send: Callable[[TaskOutput], object],
        *,
        resume: bool = False,
        # Timeouts
        interval: float = OUTPUT_INTERVAL,
        # Limits
        limit: int = OUTPUT_LIMIT,
    ) -> None:
        self.txdir = txdir
        self.transaction_id = transaction_id
        self.interval = interval
        self.limit = limit
        self._send = send
        self._resume = resume
        self._streams: dict[str, OutputStream] | None = None

    async def follow(self, ended: asyncio.Event) -> None:
        """Stream until ``ended`` is set, then flush what is left; never raises for a
        file it cannot read (it stops streaming)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await ended.wait()
            final = ended.is_set()
            try:
                chunks = await asyncio.to_thread(self.read, final=final)
            except OSError as exc:
                log.info("stopped streaming the output of %s: %s", self.transaction_id, exc)
                return
            for chunk in chunks:
                self._send(chunk)
            if final:
                return

    def read(self, *, final: bool = False) -> list[TaskOutput]:
        """The chunks of what the task wrote since the last read (blocking): at most one
        per stream, or with ``final`` all that is left up to the limit."""
        if self._streams is None:
            self._streams = {
                name: OutputStream(
                    start=min(_size(self.txdir / name), self.limit) if self._resume else 0,
                    limit=self.limit,
                )
                for name in STREAMS
            }
        chunks = []
        for name, stream in self._streams.items():
            path = self.txdir / name
            while not stream.capped:
                wanted = stream.wanted()
                data = _read(path, stream.position, wanted)
                ended = final and len(data) < wanted
                chunk = stream.feed(data, final=ended)
                if chunk is not None:
                    offset, text = chunk
                    chunks.append(TaskOutput(self.transaction_id, name, offset, text))
                if not final or ended:
                    break
        return chunks


T = TypeVar("T")


async def streamed(follower: OutputFollower, until: Awaitable[T], *, what: str = "a run") -> T:
    """What ``until`` (the wait for a run's end) gives, ``follower`` streaming its
    output meanwhile; the last of the output is sent before this returns. Streaming is
    best effort: its failure is logged, never the run's result lost to it."""
    ended = asyncio.Event()
    streaming = asyncio.ensure_future(follower.follow(ended))
    try:
        value = await until
    except BaseException:
        streaming.cancel()
        raise
    ended.set()
    try:
        await streaming
    except Exception:
        log.exception("streaming the output of %s failed", what)
    return value
