"""What a client may cost before it is authenticated: bodies, connections, descriptors.

Three tiers: the pure decisions (:class:`ConnectionTable`, the open-file arithmetic, the
throttle), the body cap as ASGI middleware in process, and the API's listener over real
TLS sockets on loopback, on asyncio's loop and on uvloop (the server's).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import Body, FastAPI, Request

from identities import Identities
from podium import loop as podium_loop
from podium.server.app import create_app
from podium.server.limits import (
    MIB,
    BodyLimit,
    ConnectionLimits,
    ConnectionTable,
    DescriptorWatch,
    Throttle,
    byte_size,
    near_limit,
    nofile_target,
    size_text,
)
from podium.server.main import ApiServer
from podium.server.peer import CERT_NAME
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings
from waiting import DEADLINE, until

# -- which connections stay -------------------------------------------------------------


def test_a_table_admits_connections_up_to_its_capacity() -> None:
    table: ConnectionTable[str] = ConnectionTable(2, header_timeout=10)
    assert table.open("a", 0).admitted
    assert table.open("b", 0).admitted
    assert len(table) == 2


def test_a_full_table_drops_the_connection_that_waited_longest_for_a_request() -> None:
    table: ConnectionTable[str] = ConnectionTable(3, header_timeout=10)
    for name, now in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        table.open(name, now)
    table.busy("a")  # a request under way: not a candidate
    admission = table.open("d", 3.0)
    assert admission.admitted
    assert admission.evicted == "b"
    assert "b" not in table
    assert {"a", "c", "d"} == {c for c in "abcd" if c in table}


def test_a_full_table_of_busy_connections_refuses_a_newcomer() -> None:
    table: ConnectionTable[str] = ConnectionTable(2, header_timeout=10)
    for name in ("a", "b"):
        table.open(name, 0)
        table.busy(name)
    admission = table.open("c", 1)
    assert not admission.admitted
    assert admission.evicted is None
    assert "c" not in table
    table.close("a")
    assert table.open("c", 2).admitted


def test_a_connection_without_a_request_head_expires_after_the_header_timeout() -> None:
    table: ConnectionTable[str] = ConnectionTable(10, header_timeout=10)
    table.open("early", 0)
    table.open("late", 5)
    assert table.expired(9.9) == []
    assert table.expired(10) == ["early"]
    assert table.expired(14) == []
    assert table.expired(15) == ["late"]
    assert len(table) == 0


def test_a_connection_busy_with_a_request_never_expires() -> None:
    table: ConnectionTable[str] = ConnectionTable(10, header_timeout=10)
    table.open("a", 0)
    table.busy("a")
    assert table.expired(1000) == []
    assert "a" in table


def test_bytes_that_trickle_in_do_not_restart_the_header_timeout() -> None:
    table: ConnectionTable[str] = ConnectionTable(10, header_timeout=10)
    table.open("slow", 0)
    for now in (3.0, 6.0, 9.0):
        table.waiting("slow", now)  # what the protocol reports while the head is partial
    assert table.expired(10) == ["slow"]


def test_after_a_response_the_next_request_head_is_timed_from_then() -> None:
    table: ConnectionTable[str] = ConnectionTable(10, header_timeout=10)
    table.open("kept-alive", 0)
    table.busy("kept-alive")
    table.waiting("kept-alive", 50)
    assert table.expired(59) == []
    assert table.expired(60) == ["kept-alive"]


def test_a_connection_dropped_by_the_table_is_not_counted_again_when_it_closes() -> None:
    table: ConnectionTable[str] = ConnectionTable(1, header_timeout=10)
    table.open("a", 0)
    assert table.open("b", 1).evicted == "a"
    table.close("a")  # its connection_lost, later
    table.busy("a")
    table.waiting("a", 2)
    assert len(table) == 1
    assert "b" in table


# -- descriptors and warnings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("soft", "hard", "ceiling", "target"),
    [
        (1024, 524_288, 1_048_576, 524_288),  # the usual: up to the hard limit
        (1024, None, 1_048_576, 1_048_576),  # unlimited: as far as the kernel lets
        (65_536, 65_536, 1_048_576, 65_536),  # already there
        (4096, 1024, 1_048_576, 4096),  # never lowered
    ],
)
def test_the_open_file_limit_asked_for(soft: int, hard: int | None, ceiling: int, target: int):
    assert nofile_target(soft, hard, ceiling=ceiling) == target


def test_nearing_the_limit_is_ninety_percent_of_it() -> None:
    assert not near_limit(899, 1000)
    assert near_limit(900, 1000)


def test_a_throttle_lets_one_through_per_interval() -> None:
    throttle = Throttle(60)
    assert [throttle.ready(t) for t in (0, 1, 59.9, 60, 100, 121)] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]


def test_a_process_near_its_limit_is_warned_about_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = DescriptorWatch(1000)
    with caplog.at_level(logging.WARNING, logger="podium.server.limits"):
        for now, open_fds in ((0, 500), (5, 950), (10, 990), (65, 960), (200, 100)):
            watch.check(open_fds, now)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith("950 of the 1000 file descriptors")


def test_accept_failing_for_want_of_descriptors_is_warned_about_not_logged_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = DescriptorWatch(1000)
    others: list[dict[str, Any]] = []
    handle = watch.exception_handler(lambda _loop, context: others.append(context))
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="podium.server.limits"):
            for _ in range(50):
                handle(
                    loop,
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(errno.EMFILE, "Too many open files"),
                    },
                )
            handle(loop, {"message": "something else", "exception": ValueError("x")})
    finally:
        loop.close()
    assert [r.getMessage() for r in caplog.records] == [
        "could not accept a connection: Too many open files (open-file limit 1000); "
        "connections are refused until descriptors are free"
    ]
    assert [c["message"] for c in others] == ["something else"]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1024", 1024),
        ("512K", 512 * 1024),
        ("16M", 16 * MIB),
        ("16MiB", 16 * MIB),
        ("2 g", 2048 * MIB),
        ("3kb", 3072),
    ],
)
def test_sizes_are_written_in_bytes_or_with_a_unit(text: str, size: int) -> None:
    assert byte_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1", "1.5M", "16T", "lots"])
def test_a_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        byte_size(text)


def test_sizes_read_as_people_write_them() -> None:
    assert [size_text(n) for n in (16 * MIB, 16 * 1024, 1000, 3 * 1024**3)] == [
        "16 MiB",
        "16 KiB",
        "1000 bytes",
        "3 GiB",
    ]


# -- request bodies ---------------------------------------------------------------------

CAP = 1024


def capped_app() -> tuple[FastAPI, list[str]]:
    """An app whose routes read their bodies three ways, behind the cap; and the list of
    routes that ran to their end."""
    app = FastAPI()
    ran: list[str] = []

    @app.post("/json")
    async def json_body(data: dict[str, Any] = Body(...)) -> dict[str, int]:  # noqa: B008
        ran.append("json")
        return {"keys": len(data)}

    @app.post("/stream")
    async def stream(request: Request) -> dict[str, int]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        ran.append("stream")
        return {"bytes": total}

    @app.post("/big")
    async def big(request: Request) -> dict[str, int]:
        body = await request.body()
        ran.append("big")
        return {"bytes": len(body)}

    app.add_middleware(BodyLimit, limit=CAP, routes={"/big": 4 * CAP})
    return app, ran


def client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://podium.test")


async def chunks(total: int, size: int = 100) -> AsyncIterator[bytes]:
    """A body sent chunked, without Content-Length."""
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def assert_too_large(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["connection"] == "close"
    error = response.json()
    assert error["kind"] == "podium/request-too-large"
    assert error["details"] == {"limit": limit}
    assert size_text(limit) in error["msg"]


async def test_a_body_declared_over_the_cap_is_refused_before_the_app_runs() -> None:
    app, ran = capped_app()
    async with client_of(app) as client:
        response = await client.post("/stream", content=b"x" * (CAP + 1))
    assert_too_large(response, CAP)
    assert "--max-request-body" in response.json()["msg"]
    assert ran == []


@pytest.mark.parametrize("route", ["/json", "/stream"])
async def test_a_chunked_body_over_the_cap_is_answered_413_however_the_app_reads(
    route: str,
) -> None:
    app, ran = capped_app()
    async with client_of(app) as client:
        response = await client.post(route, content=chunks(10 * CAP))
    assert "content-length" not in response.request.headers
    assert_too_large(response, CAP)
    assert ran == []


async def test_a_body_under_the_cap_reaches_the_app() -> None:
    app, ran = capped_app()
    async with client_of(app) as client:
        streamed = await client.post("/stream", content=chunks(CAP))
        parsed = await client.post("/json", json={"a": "x" * 100})
    assert streamed.json() == {"bytes": CAP}
    assert parsed.json() == {"keys": 1}
    assert ran == ["stream", "json"]


async def test_a_route_with_a_cap_of_its_own_is_held_to_that_one() -> None:
    app, ran = capped_app()
    async with client_of(app) as client:
        allowed = await client.post("/big", content=b"x" * (3 * CAP))
        refused = await client.post("/big", content=chunks(5 * CAP))
    assert allowed.json() == {"bytes": 3 * CAP}
    assert_too_large(refused, 4 * CAP)
    assert "--max-request-body" not in refused.json()["msg"]
    assert ran == ["big"]


async def test_the_server_caps_request_bodies_before_it_asks_who_sends_them(
    tmp_path: Path,
) -> None:
    runtime = Runtime(
        ServerSettings(datadir=tmp_path / "server", certname="podium-server", max_request_body=CAP)
    )
    try:
        async with client_of(create_app(runtime)) as client:
            response = await client.post("/orchestrator/v1/command/task", content=b"{" * (CAP + 1))
            small = await client.get("/status/v1/simple")
    finally:
        runtime.store.close()
    assert_too_large(response, CAP)
    assert small.json() == {"state": "running"}


# -- the API's listener over loopback ---------------------------------------------------

Runner = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Runs a scenario to its end on one of the two event loops."""
    if request.param == "asyncio":
        return asyncio.run
    return podium_loop.run


@pytest.fixture
def ids(tmp_path: Path) -> Identities:
    return Identities(tmp_path)


class Echo:
    """An ASGI app answering the client certificate's name; ``/slow`` waits for
    :attr:`release`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/slow":
            self.waiting += 1
            await self.release.wait()
        body = orjson.dumps({"cert": scope["state"].get(CERT_NAME)})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def api_server(
    ids: Identities, app: Any, *, max_connections: int = 10, header_timeout: float = 60.0
) -> AsyncIterator[ApiServer]:
    cert, key = ids.files("podium-server", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_ca_certs=str(ids.ca.ca_cert_path),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        lifespan="off",
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=1,  # a failed test's requests do not hold it up
    )
    server = ApiServer(config, ConnectionLimits(max_connections, header_timeout))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started or task.done(), what="the server to listen")
    if task.done():
        task.result()
    try:
        yield server
    finally:
        server.should_exit = True
        await task


async def get(
    server: ApiServer, path: str, context: ssl.SSLContext, *, close: bool = True
) -> tuple[int, dict[str, Any]]:
    """GET ``path`` over a new connection: the status and the JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
    try:
        header = "Connection: close\r\n" if close else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: podium\r\n{header}\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        body = await reader.readexactly(length)
        return int(head.split()[1]), orjson.loads(body)
    finally:
        await close_quietly(writer)


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def idle(server: ApiServer, context: ssl.SSLContext | None = None):
    """A connection that sends nothing (over TLS, after its handshake, with ``context``)."""
    return await asyncio.open_connection("127.0.0.1", server.port, ssl=context)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server ends the connection (an EOF or a reset) within the deadline."""
    try:
        return await asyncio.wait_for(reader.read(), DEADLINE) == b""
    except TimeoutError:  # an OSError too
        return False
    except OSError:
        return True


def held_ports(server: ApiServer) -> set[int]:
    """The client ports of the connections the listener holds."""
    assert server.listener is not None
    table = server.listener.table
    return {
        conn.transport.get_extra_info("peername")[1]
        for conn in table.waiting_connections()
        if conn.transport is not None
    }


def test_the_client_certificate_reaches_the_app(run: Runner, ids: Identities) -> None:
    async def scenario() -> None:
        async with api_server(ids, Echo()) as server:
            assert await get(server, "/", ids.context("node-1.example")) == (
                200,
                {"cert": "node-1.example"},
            )
            assert await get(server, "/", ids.context(None)) == (200, {"cert": None})

    run(scenario())


def test_connections_that_send_no_request_head_in_time_are_closed(
    run: Runner, ids: Identities
) -> None:
    async def scenario() -> None:
        async with api_server(ids, Echo(), header_timeout=0.5) as server:
            tcp, tcp_w = await idle(server)  # never starts TLS
            tls, tls_w = await idle(server, ids.context(None))  # TLS, then silence
            partial, partial_w = await idle(server, ids.context(None))
            partial_w.write(b"GET / HTTP/1.1\r\nHost: podium\r\n")  # and no end of head
            try:
                assert await closed_by_server(tcp)
                assert await closed_by_server(tls)
                assert await closed_by_server(partial)
                assert len(server.listener.table) == 0  # type: ignore[union-attr]
            finally:
                for writer in (tcp_w, tls_w, partial_w):
                    await close_quietly(writer)
            assert await get(server, "/", ids.context(None)) == (200, {"cert": None})

    run(scenario())


def test_a_kept_alive_connection_must_send_its_next_head_in_time(
    run: Runner, ids: Identities
) -> None:
    async def scenario() -> None:
        async with api_server(ids, Echo(), header_timeout=0.5) as server:
            reader, writer = await idle(server, ids.context(None))
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: podium\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
                assert head.startswith(b"HTTP/1.1 200")
                await reader.readexactly(len(b'{"cert":null}'))
                writer.write(b"GET / HTTP/1.1\r\n")  # half a head: uvicorn's own
                # keep-alive timer stops at the first byte; the header timeout does not
                assert await closed_by_server(reader)
            finally:
                await close_quietly(writer)

    run(scenario())


def test_a_full_server_closes_the_connection_that_waited_longest_for_a_request(
    run: Runner, ids: Identities
) -> None:
    async def scenario() -> None:
        async with api_server(ids, Echo(), max_connections=3) as server:
            sockets = []
            try:
                for count in range(1, 4):
                    sockets.append(await idle(server))
                    await until(lambda n=count: len(server.listener.table) == n)  # type: ignore[union-attr]
                ports = [w.get_extra_info("sockname")[1] for _, w in sockets]
                assert await get(server, "/", ids.context(None)) == (200, {"cert": None})
                assert await closed_by_server(sockets[0][0])
                assert held_ports(server) == set(ports[1:])
            finally:
                for _, writer in sockets:
                    await close_quietly(writer)

    run(scenario())


def test_a_full_server_of_busy_connections_closes_a_new_one_at_once(
    run: Runner, ids: Identities
) -> None:
    async def scenario() -> None:
        app = Echo()
        async with api_server(ids, app, max_connections=3) as server:
            slow = [asyncio.create_task(get(server, "/slow", ids.context(None))) for _ in range(3)]
            try:
                await until(lambda: app.waiting == 3, what="three requests under way")
                reader, writer = await idle(server)
                try:
                    assert await closed_by_server(reader)
                finally:
                    await close_quietly(writer)
            finally:
                app.release.set()
            assert [await t for t in slow] == [(200, {"cert": None})] * 3
            assert await get(server, "/", ids.context(None)) == (200, {"cert": None})

    run(scenario())
