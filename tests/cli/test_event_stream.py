"""Following a job's events: the Server-Sent Events parser, and
``ApiClient.stream_events`` over a stream that is cut and taken up again with
``Last-Event-ID`` (through ``httpx.MockTransport``, and once over a real TLS socket)."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.cli.client import ApiClient, SseEvent, SseParser
from podium.errors import NotFound, PodiumError
from podium.pki.ca import CertificateAuthority


def parse(text: str) -> list[SseEvent]:
    parser = SseParser()
    events = [parser.line(line) for line in text.split("\n")]
    return [e for e in events if e is not None]


def test_the_parser_reads_ids_types_and_data_and_skips_comments():
    stream = (
        ": keepalive\n"
        'id: 1\nevent: node_running\ndata: {"a": 1}\n\n'
        ": keepalive\n\n"
        "id:2\nevent:node_output\ndata: first\ndata:second\nretry: 100\nunknown: x\n\n"
        "data: no id, no type\n\n"
        "event: lonely\n\n"  # no data: not an event
    )
    assert parse(stream) == [
        SseEvent("1", "node_running", '{"a": 1}'),
        SseEvent("2", "node_output", "first\nsecond"),
        SseEvent("2", "message", "no id, no type"),  # the last id stays
    ]


def test_an_event_cut_off_before_its_blank_line_is_never_returned():
    assert parse("id: 1\nevent: a\ndata: {}\n\nid: 2\nevent: b\ndata: {") == [
        SseEvent("1", "a", "{}")
    ]


@given(st.lists(st.text(), max_size=20))
def test_the_parser_takes_any_lines_without_failing(lines):
    parser = SseParser()
    for line in lines:
        event = parser.line(line.replace("\n", ""))
        assert event is None or isinstance(event.data, str)


# -- the client -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("ca") / "ca")


def event(n: int, type_: str, **details: object) -> str:
    view = {"id": str(n), "type": type_, "timestamp": "t", "message": "", "details": details}
    return f"id: {n}\nevent: {type_}\ndata: {json.dumps(view)}\n\n"


class Cut(httpx.SyncByteStream):
    """A response body that sends ``chunks`` and then, with ``error``, drops."""

    def __init__(self, chunks: list[str], error: Exception | None = None) -> None:
        self.chunks, self.error = chunks, error

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            yield chunk.encode()
        if self.error is not None:
            raise self.error


class Server:
    """Answers the events path from a list of answers, one per request, recording them."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def sse(*chunks: str, error: Exception | None = None) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Cut(list(chunks), error)
    )


def client(ca: CertificateAuthority, server: Server) -> ApiClient:
    return ApiClient(
        "https://podium.test:8143",
        ca.ca_cert_path,
        "t0ken",
        transport=httpx.MockTransport(server),
    )


def test_a_cut_stream_is_taken_up_after_the_last_whole_event(ca):
    first = event(1, "job_running") + event(2, "node_running", node="web01")
    cut_in_the_middle = event(3, "node_finished", node="web01")[:30]
    server = Server(
        sse(first, cut_in_the_middle, error=httpx.RemoteProtocolError("peer closed")),
        sse(": keepalive\n\n", event(3, "node_finished", node="web01"), event(4, "job_finished")),
    )
    slept: list[float] = []
    with client(ca, server) as api:
        events = list(api.stream_events("12", sleep=slept.append))
    assert [e["id"] for e in events] == ["1", "2", "3", "4"]
    assert events[2]["details"] == {"node": "web01"}
    first_request, second = server.requests
    assert first_request.headers["accept"] == "text/event-stream"
    assert first_request.headers["x-authentication"] == "t0ken"
    assert "last-event-id" not in first_request.headers
    assert second.headers["last-event-id"] == "2"
    assert second.url.params["start"] == "3"
    assert slept == [0.5]


def test_following_from_a_given_event_sends_its_id(ca):
    server = Server(sse(event(8, "job_finished", state="finished")))
    with client(ca, server) as api:
        assert [e["id"] for e in api.stream_events("12", "7", sleep=lambda s: None)] == ["8"]
    assert server.requests[0].headers["last-event-id"] == "7"


def test_the_stream_ends_with_job_finished_even_if_the_server_keeps_it_open(ca):
    server = Server(sse(event(1, "job_finished", state="finished"), event(2, "never_read")))
    with client(ca, server) as api:
        assert [e["type"] for e in api.stream_events("12")] == ["job_finished"]


def test_a_stream_that_brings_nothing_for_a_job_that_has_ended_ends(ca):
    server = Server(sse("retry: 1000\n\n"), httpx.Response(200, json={"state": "finished"}))
    with client(ca, server) as api:
        assert list(api.stream_events("12", "40", sleep=lambda s: None)) == []
    assert [r.url.path for r in server.requests] == [
        "/orchestrator/v1/jobs/12/events",
        "/orchestrator/v1/jobs/12",
    ]


def test_a_server_that_stays_away_gets_a_few_retries_then_a_clear_error(ca):
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    server = Server(
        sse(event(1, "job_running"), error=httpx.ReadError("reset")),
        *([refused] * 6),
    )
    slept: list[float] = []
    with client(ca, server) as api, pytest.raises(PodiumError) as raised:
        for _ in api.stream_events("12", sleep=slept.append):
            pass
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert raised.value.msg.startswith("lost the events of job 12: cannot reach the server")
    assert "see it with `podium job show 12`" in raised.value.msg
    assert all(r.headers["last-event-id"] == "1" for r in server.requests[1:])


def test_a_server_error_is_retried_and_an_unknown_job_is_not(ca):
    busy = httpx.Response(503, json={"kind": "x", "msg": "restarting"})
    server = Server(busy, sse(event(1, "job_finished", state="finished")))
    with client(ca, server) as api:
        assert len(list(api.stream_events("12", sleep=lambda s: None))) == 1
    gone = Server(httpx.Response(404, json={"kind": "unknown-job", "msg": "no job 99"}))
    with client(ca, gone) as api, pytest.raises(NotFound, match="no job 99"):
        list(api.stream_events("99", sleep=lambda s: None))
    assert len(gone.requests) == 1


def test_a_server_without_event_streams_is_read_page_by_page(ca):
    def page(items, start, state="running"):
        return httpx.Response(
            200,
            json={
                "next-events": {"id": "u", "event": str(start)},
                "items": items,
                "job_state": state,
            },
        )

    ran = {"id": "1", "type": "node_running", "details": {"node": "a"}}
    done = {"id": "2", "type": "job_finished", "details": {"state": "finished"}}
    server = Server(page([ran], 2), page([], 2), page([done], 3, "finished"))
    polls: list[float] = []
    with client(ca, server) as api:
        events = list(api.stream_events("12", sleep=polls.append, poll=0.25))
    assert events == [ran, done]
    assert [r.url.params["start"] for r in server.requests] == ["0", "2", "2"]
    assert polls == [0.25]  # only after a page that brought nothing


# -- over a real socket -------------------------------------------------------------------


class _Events(http.server.BaseHTTPRequestHandler):
    """The first request gets two events and half of a third, then the socket closes;
    later ones get what follows the Last-Event-ID they send."""

    protocol_version = "HTTP/1.1"
    EVENTS = [
        event(1, "job_running"),
        event(2, "node_running", node="a"),
        event(3, "node_finished", node="a"),
        event(4, "job_finished", state="finished"),
    ]

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        server.last_ids.append(self.headers.get("Last-Event-ID"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        last = int(self.headers.get("Last-Event-ID") or 0)
        if last == 0:
            self.wfile.write((self.EVENTS[0] + self.EVENTS[1] + self.EVENTS[2][:25]).encode())
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(b": keepalive\n\n")
        for text in self.EVENTS[last:]:
            self.wfile.write(text.encode())
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    last_ids: list[str | None]


def test_a_stream_cut_by_the_server_is_resumed_over_a_real_tls_socket(ca, tmp_path: Path):
    cert, key = ca.issue("server", ip_addresses=["127.0.0.1"])
    (tmp_path / "s.pem").write_bytes(cert)
    (tmp_path / "s.key").write_bytes(key)
    server = _Server(("127.0.0.1", 0), _Events)
    server.last_ids = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "s.pem", tmp_path / "s.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        with ApiClient(url, ca.ca_cert_path, "t0ken") as api:
            events = list(api.stream_events("5", sleep=lambda s: None))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert [e["type"] for e in events] == ["job_running", "node_running", "node_finished",
                                           "job_finished"]  # fmt: skip
    assert server.last_ids == [None, "2"]
