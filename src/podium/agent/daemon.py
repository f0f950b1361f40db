"""The agent: keeps a connection to a broker, runs requested actions, reports back.

Results live in the spool until the controller acknowledges them, so a result survives
a dropped connection or an agent restart; a request whose transaction id is already in
the spool is answered from the spool and never run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from podium.agent import http
from podium.agent.config import AgentConfig
from podium.agent.facts import gather
from podium.agent.filecache import FileCache
from podium.agent.spool import Spool, TransactionRecord
from podium.agent.taskrun import (
    fit_result,
    read_outcome,
    recorded_pid,
    start_task,
    wait_task,
)
from podium.errors import PodiumError, ProtocolError
from podium.protocol import envelope as pcp
from podium.protocol import messages as msg
from podium.protocol.backoff import full_jitter

log = logging.getLogger(__name__)

AGENT_TYPE = "agent"
# A connection that lasted this long resets the backoff.
_STABLE_AFTER = 30.0


def _now() -> datetime:
    return datetime.now(UTC)


class Agent:
    """One node's agent."""

    def __init__(self, config: AgentConfig, *, ssl_context: ssl.SSLContext) -> None:
        self.config = config
        self.uri = pcp.make_uri(config.certname, AGENT_TYPE)
        self._ssl = ssl_context
        self.spool = Spool(config.spooldir, ttl=config.spool_ttl)
        self.cache = FileCache(config.cachedir, self._fetch)
        self._pool = asyncio.Semaphore(config.concurrency)
        self._ws: ClientConnection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------

    async def run(self) -> None:
        """Recover unfinished work, then stay connected until :meth:`stop`."""
        self._recover()
        self._spawn(self._housekeeping())
        attempt = 0
        while not self._stopping.is_set():
            for url in self.config.brokers:
                started = asyncio.get_running_loop().time()
                try:
                    await self._session(url)
                except (OSError, WebSocketException, TimeoutError) as exc:
                    retry_after = _retry_after(exc)
                    log.warning("broker %s: %s", url, _describe(exc))
                    if retry_after:
                        await self._sleep(retry_after)
                if self._stopping.is_set():
                    break
                if asyncio.get_running_loop().time() - started > _STABLE_AFTER:
                    attempt = 0
            if self._stopping.is_set():
                break
            delay = full_jitter(attempt, base=self.config.backoff_base, cap=self.config.backoff_cap)
            attempt += 1
            log.info("reconnecting in %.1f s", delay)
            await self._sleep(delay)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()
        if self._ws is not None:
            self._spawn(self._ws.close())

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _session(self, url: str) -> None:
        async with connect(
            f"{url.rstrip('/')}/{AGENT_TYPE}",
            ssl=self._ssl,
            compression=None,
            open_timeout=self.config.connect_timeout,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            max_size=self.config.max_message_bytes,
            max_queue=4,
        ) as ws:
            self._ws = ws
            log.info("connected to %s as %s", url, self.uri)
            try:
                self._send_facts()
                for record in self.spool.unacknowledged():
                    self._send_result(record)
                async for frame in ws:
                    self._receive(frame)
            except ConnectionClosed:
                pass
            finally:
                self._ws = None
            log.warning("disconnected from %s", url)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(3600)
            removed = await asyncio.to_thread(self.spool.purge, _now())
            await self.cache.purge(_now())
            if removed:
                log.info("purged %d old transactions from the spool", removed)

    # -- sending ----------------------------------------------------------------------

    def _send(self, message: msg.Message, target: str, in_reply_to: str | None = None) -> bool:
        ws = self._ws
        if ws is None:
            return False
        env = msg.encode(message, sender=self.uri, target=target, in_reply_to=in_reply_to)
        ws_send(ws, pcp.serialize(env))
        return True

    def _send_facts(self) -> None:
        facts = gather(self.config.certname, self.config.facts_file)
        self._send(msg.FactsUpdate(facts=facts), "pcp://*/server")

    def _send_result(self, record: TransactionRecord) -> None:
        results = record.results or {}
        self._send(
            msg.NonBlockingResponse(transaction_id=record.transaction_id, results=results),
            record.requester,
        )

    # -- receiving --------------------------------------------------------------------

    def _receive(self, frame: bytes | str) -> None:
        try:
            env = pcp.parse(frame, max_bytes=self.config.max_message_bytes)
            message = msg.decode(env)
        except ProtocolError as exc:
            log.warning("ignoring an invalid message: %s", exc.msg)
            return
        if isinstance(message, msg.ResultAck):
            with contextlib.suppress(PodiumError):
                self.spool.acknowledge(message.transaction_id, _now())
        elif isinstance(message, msg.BlockingRequest | msg.NonBlockingRequest):
            self._on_request(env, message)
        elif isinstance(message, msg.Error):
            log.warning("broker error: %s", message.description)
        else:
            log.debug("ignoring %s from %s", env.message_type, env.sender)

    def _on_request(self, env: pcp.Envelope, request: msg.Request) -> None:
        txid = request.transaction_id
        if (request.module, request.action) == ("status", "query"):
            self._answer_status(env, request)
            return
        record = self.spool.get(txid)
        if record is not None:
            # A re-sent request: answer from the spool, never run twice.
            if record.status in ("success", "failure"):
                self._send_result(record)
            else:
                self._send(msg.ProvisionalResponse(transaction_id=txid), env.sender, env.id)
            return
        if (request.module, request.action) != ("task", "run"):
            self._send(
                msg.RpcError(
                    transaction_id=txid,
                    description=f"unknown action {request.module}/{request.action}; "
                    "this agent offers task/run and status/query",
                ),
                env.sender,
                env.id,
            )
            return
        record = self.spool.create(
            txid,
            module=request.module,
            action=request.action,
            params=request.params,
            requester=env.sender,
            now=_now(),
        )
        self._send(msg.ProvisionalResponse(transaction_id=txid), env.sender, env.id)
        self._spawn(self._run_task(record))

    def _answer_status(self, env: pcp.Envelope, request: msg.Request) -> None:
        wanted = request.params.get("transaction_id")
        record = None
        with contextlib.suppress(PodiumError):
            record = self.spool.get(str(wanted))
        status = "unknown"
        results: dict[str, Any] = {"transaction_id": wanted}
        if record is not None:
            status = {"accepted": "running"}.get(record.status, record.status)
            if record.results is not None:
                results["results"] = record.results
        results["status"] = status
        reply = msg.BlockingResponse(transaction_id=request.transaction_id, results=results)
        self._send(reply, env.sender, env.id)

    # -- actions ----------------------------------------------------------------------

    async def _run_task(self, record: TransactionRecord) -> None:
        txid = record.transaction_id
        async with self._pool:
            try:
                ok, results = await self._execute(record)
            except PodiumError as exc:
                ok, results = False, _error("puppetlabs.tasks/task-error", exc.msg)
            except Exception as exc:
                log.exception("task %s failed unexpectedly", txid)
                ok, results = False, _error("podium.agent/internal-error", str(exc))
        await self._finish(txid, ok, results)

    async def _finish(self, txid: str, ok: bool, results: dict[str, Any]) -> None:
        # Room for the envelope around the results, so the message fits the broker's cap.
        fitted = fit_result(results, self.config.max_message_bytes - pcp.ENVELOPE_ROOM)
        record = await asyncio.to_thread(
            self.spool.finish,
            txid,
            status="success" if ok else "failure",
            results=fitted,
            now=_now(),
        )
        self._send_result(record)

    async def _execute(self, record: TransactionRecord) -> tuple[bool, dict[str, Any]]:
        params = record.params
        files = params.get("files")
        if not isinstance(files, list) or not files or not isinstance(params.get("task"), str):
            raise ProtocolError("task/run needs 'task' and a non-empty 'files' list")
        paths = [await self.cache.get(spec) for spec in files]
        txdir = self.spool.path(record.transaction_id)
        task_input = params.get("input") or {}
        if not isinstance(task_input, dict):
            raise ProtocolError("task/run: 'input' must be an object")
        installdir = paths[0].parent
        if len(paths) > 1:
            # Extra files sit at <installdir>/<module>/<mount>/<path>, as Bolt lays them out.
            installdir = txdir / "install"
            for spec, path in zip(files[1:], paths[1:], strict=True):
                link = installdir / spec["filename"]  # parts checked by the file cache
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
        pid = await start_task(
            txdir,
            paths[0],
            task_name=params["task"],
            params=task_input,
            input_method=params.get("input_method"),
            installdir=installdir,
            noop=bool(params.get("noop", False)),
        )
        # No spool write here: the wrapper has recorded its pid for recovery already.
        return await wait_task(txdir, pid)

    def _recover(self) -> None:
        """After a restart: follow tasks that kept running, close the others."""
        for record in self.spool.running():
            txid = record.transaction_id
            txdir = self.spool.path(txid)
            pid = recorded_pid(txdir)
            if pid is not None or (txdir / "exitcode").exists():
                self._spawn(self._follow(txid, pid))
                continue
            if (txdir / "pid").exists():  # started before the node rebooted
                kind, text = (
                    "podium.agent/lost",
                    ("the node restarted while the task ran; its outcome is unknown"),
                )
            else:
                kind, text = (
                    "podium.agent/interrupted",
                    ("the agent stopped before the task started; it was not run"),
                )
            self.spool.finish(txid, status="failure", results=_error(kind, text), now=_now())

    async def _follow(self, txid: str, pid: int | None) -> None:
        txdir = self.spool.path(txid)
        if pid is None:  # it ended before the restart
            ok, results = await asyncio.to_thread(read_outcome, txdir)
        else:
            ok, results = await wait_task(txdir, pid)
        await self._finish(txid, ok, results)

    async def _fetch(self, path_and_query: str) -> bytes:
        """A task file from the server, retried while the server is away (it may be
        restarting: the job goes on after it is back)."""
        url = self.config.server_url.rstrip("/") + path_and_query
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.fetch_timeout
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(http.request, url, context=self._ssl)
            except http.HttpError as exc:
                if not exc.transient or loop.time() > deadline:
                    raise
                delay = full_jitter(attempt, base=0.5, cap=8.0)
                log.warning("download of %s failed (%s); retrying in %.1f s", url, exc.msg, delay)
                await self._sleep(delay)
                attempt += 1


def ws_send(ws: ClientConnection, data: bytes) -> None:
    """Queue a text frame without waiting for the socket (the agent never blocks on I/O)."""
    from websockets.asyncio.connection import broadcast

    broadcast((ws,), data, text=True)


def _error(kind: str, text: str) -> dict[str, Any]:
    return {"_error": {"kind": kind, "msg": text, "details": {}}}


def _retry_after(exc: BaseException) -> float:
    if isinstance(exc, InvalidStatus) and exc.response.status_code == 503:
        with contextlib.suppress(KeyError, ValueError):
            return float(exc.response.headers["Retry-After"])
    return 0.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
        return f"refused with HTTP {exc.response.status_code}: {body}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return str(exc) or type(exc).__name__


def _enroll_in_child(config: AgentConfig) -> None:
    """Enroll in a forked child, so that the daemon never loads the crypto library
    (about 11 MB of resident memory it would keep for nothing)."""
    from podium.agent.enroll import enroll

    if config.cert_path.exists() and config.key_path.exists() and config.ca_path.exists():
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            enroll(config)
        except PodiumError as exc:
            log.error("enrollment failed: %s", exc.msg)
            code = 1
        except BaseException:
            log.exception("enrollment failed")
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)

    def forward(signum: int, _frame: object) -> None:
        os.kill(pid, signal.SIGTERM)
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if os.waitstatus_to_exitcode(status) != 0:
        raise PodiumError(f"{config.certname} could not enroll; see the messages above")


def run_agent(config: AgentConfig) -> int:
    """Enroll if needed, then run until SIGTERM/SIGINT."""
    from podium.pki.tls import client_context

    _enroll_in_child(config)
    context = client_context(ca=config.ca_path, cert=config.cert_path, key=config.key_path)

    async def main() -> None:
        agent = Agent(config, ssl_context=context)
        loop = asyncio.get_running_loop()
        # Blocking work (downloads, process start, spool writes) needs few threads.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2, thread_name_prefix="agent"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    asyncio.run(main())
    return 0
