"""A running task's output cut into task_output chunks: bounds, offsets, characters."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from podium.agent.output import OutputFollower, OutputStream
from podium.protocol.messages import MAX_OUTPUT_CHUNK, TaskOutput

CHECK = "\u2713"  # three bytes in UTF-8


def feed_all(
    stream: OutputStream, data: bytes, cuts: list[int] | None = None
) -> list[tuple[int, str]]:
    """Every chunk of ``data`` fed in pieces (cut at ``cuts``, and never more than the
    stream wants at a time), then the end of the stream."""
    chunks = []
    pieces = _pieces(data, cuts or [])
    for piece in pieces:
        while piece:
            taken, piece = piece[: stream.wanted()], piece[stream.wanted() :]
            if not taken:  # at the limit: the rest is never read
                break
            chunk = stream.feed(taken)
            if chunk is not None:
                chunks.append(chunk)
    last = stream.feed(b"", final=True)
    if last is not None:
        chunks.append(last)
    return chunks


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_output_is_cut_into_chunks_of_at_most_the_chunk_size_with_byte_offsets():
    stream = OutputStream(chunk=4)
    assert feed_all(stream, b"abcdefghij") == [(0, "abcd"), (4, "efgh"), (8, "ij")]


def test_a_character_cut_between_two_reads_is_never_split():
    stream = OutputStream()
    data = f"ok {CHECK}\n".encode()
    assert stream.feed(data[:4]) == (0, "ok ")  # the first byte of the check mark waits
    assert stream.feed(data[4:5]) is None  # so does the second
    assert stream.feed(data[5:]) == (3, f"{CHECK}\n")


def test_a_chunk_never_holds_more_characters_than_allowed_even_with_a_character_held_back():
    stream = OutputStream(chunk=4)
    check = CHECK.encode()
    assert stream.feed(b"a" + check[:2]) == (0, "a")
    assert stream.wanted() == 2  # two bytes wait: the next read makes four at most
    assert stream.feed(check[2:] + b"b") == (1, f"{CHECK}b")


def test_invalid_bytes_become_replacement_characters():
    stream = OutputStream()
    assert feed_all(stream, b"a\xffb\xc3") == [(0, "a\ufffdb"), (3, "\ufffd")]


def test_nothing_past_the_limit_is_given_out_and_a_character_cut_by_it_is_dropped():
    stream = OutputStream(limit=5)
    assert stream.wanted() == 5
    chunks = feed_all(stream, b"abcd" + CHECK.encode() + b"more")
    assert chunks == [(0, "abcd")]
    assert stream.capped
    assert stream.wanted() == 0


def test_a_stream_resumed_in_the_middle_of_a_character_skips_the_rest_of_it():
    data = f"x{CHECK}yz".encode()
    stream = OutputStream(start=2)  # after the check mark's first byte
    assert feed_all(stream, data[2:]) == [(4, "yz")]


def test_a_chunk_never_exceeds_what_a_task_output_message_takes():
    stream = OutputStream()
    chunks = feed_all(stream, CHECK.encode() * 10_000 + b"\xff" * 20_000)
    assert all(len(text) <= MAX_OUTPUT_CHUNK for _, text in chunks)
    assert "".join(text for _, text in chunks) == CHECK * 10_000 + "\ufffd" * 20_000


@given(
    st.binary(max_size=300) | st.text(max_size=100).map(str.encode),
    st.lists(st.integers(min_value=0), max_size=8),
    st.integers(min_value=4, max_value=40),
)
def test_chunks_decode_the_stream_exactly_and_start_where_their_bytes_start(data, cuts, size):
    stream = OutputStream(chunk=size)
    chunks = feed_all(stream, data, cuts)
    assert "".join(text for _, text in chunks) == data.decode("utf-8", errors="replace")
    ends = [offset for offset, _ in chunks[1:]] + [len(data)] if chunks else []
    for (offset, text), end in zip(chunks, ends, strict=True):
        assert 0 < len(text) <= size
        assert data[offset:end].decode("utf-8", errors="replace") == text


# -- following the spool's files ------------------------------------------------------


def chunks_of(messages: list[TaskOutput], stream: str) -> list[tuple[int, str]]:
    return [(m.offset, m.data) for m in messages if m.stream == stream]


def test_each_read_gives_at_most_one_chunk_per_stream_and_the_last_one_all_that_is_left(
    tmp_path: Path,
) -> None:
    (tmp_path / "stdout").write_bytes(b"o" * (MAX_OUTPUT_CHUNK + 10))
    (tmp_path / "stderr").write_bytes(b"e" * 3)
    follower = OutputFollower(tmp_path, "tx-1", print)
    first = follower.read()
    assert chunks_of(first, "stdout") == [(0, "o" * MAX_OUTPUT_CHUNK)]
    assert chunks_of(first, "stderr") == [(0, "eee")]
    assert all(m.transaction_id == "tx-1" for m in first)
    with (tmp_path / "stdout").open("ab") as f:
        f.write(b"o" * MAX_OUTPUT_CHUNK + CHECK.encode()[:1])
    last = follower.read(final=True)
    assert chunks_of(last, "stdout") == [
        (MAX_OUTPUT_CHUNK, "o" * MAX_OUTPUT_CHUNK),
        (2 * MAX_OUTPUT_CHUNK, "o" * 10 + "\ufffd"),  # the stream ended mid-character
    ]
    assert chunks_of(last, "stderr") == []


def test_a_follower_stops_at_the_limit(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_bytes(b"x" * 100)
    follower = OutputFollower(tmp_path, "tx-1", print, limit=30)
    assert chunks_of(follower.read(final=True), "stdout") == [(0, "x" * 30)]
    assert follower.read(final=True) == []


def test_a_follower_of_a_task_left_by_an_earlier_agent_starts_at_the_current_end(
    tmp_path: Path,
) -> None:
    (tmp_path / "stdout").write_bytes(b"sent before the restart\n")
    follower = OutputFollower(tmp_path, "tx-1", print, resume=True)
    assert follower.read() == []
    with (tmp_path / "stdout").open("ab") as f:
        f.write(b"new\n")
    assert chunks_of(follower.read(), "stdout") == [(24, "new\n")]


def test_files_not_written_yet_are_empty(tmp_path: Path) -> None:
    assert OutputFollower(tmp_path / "not-yet", "tx-1", print).read(final=True) == []


async def test_following_flushes_what_is_left_once_the_task_has_ended(tmp_path: Path) -> None:
    sent: list[TaskOutput] = []
    follower = OutputFollower(tmp_path, "tx-1", sent.append, interval=1000.0)
    (tmp_path / "stdout").write_bytes(b"done\n")
    ended = asyncio.Event()
    ended.set()
    await follower.follow(ended)
    assert sent == [TaskOutput("tx-1", "stdout", 0, "done\n")]


async def test_a_folder_that_cannot_be_read_ends_the_streaming_quietly(tmp_path: Path) -> None:
    (tmp_path / "stdout").mkdir()  # reading it fails with IsADirectoryError
    follower = OutputFollower(tmp_path, "tx-1", print, interval=0.001)
    ended = asyncio.Event()
    await asyncio.wait_for(follower.follow(ended), 30)
    assert not ended.is_set()
