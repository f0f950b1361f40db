"""The agent: keeps a connection to a broker, runs requested actions, reports back.

The connection loop dispatches each request to the action registered for its module
and action (:mod:`podium.agent.actions`) and knows none by name. Results live in the
spool until the controller acknowledges them, so a result survives a dropped connection
or an agent restart; a request whose transaction id is already in the spool is answered
from the spool and never run again. The spool is read and written in worker threads,
never on the event loop; a spool that fails (a full disk, a folder the agent may not
write) fails the request with an ``rpc_error_message`` that names the folder and the
cause, never the connection, and no message the agent cannot handle ends it either.

Every spooled transaction in hand (queued for the pool, running, followed after a
restart) has a :class:`~podium.agent.actions.StopSignal` until its outcome is known; one
stopped while queued is not run. Best-effort messages about a transaction (a task's
live output) go to its requester through :meth:`Agent.report`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import signal
import ssl
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from podium.agent import http
from podium.agent.actions import (
    ImmediateAction,
    Outcome,
    Registry,
    SpooledAction,
    StopSignal,
    default_registry,
)
from podium.agent.config import AgentConfig
from podium.agent.facts import FactsTracker, gather
from podium.agent.facts import features as node_features
from podium.agent.filecache import FileCache
from podium.agent.results import fit_result
from podium.agent.spool import Spool, TransactionRecord
from podium.errors import ConfigError, Conflict, PodiumError, ProtocolError
from podium.protocol import envelope as pcp
from podium.protocol import messages as msg
from podium.protocol.backoff import full_jitter

log = logging.getLogger(__name__)

AGENT_TYPE = "agent"
# A connection that lasted this long resets the backoff.
_STABLE_AFTER = 30.0
# Best-effort messages (a task's output) are dropped while this many bytes wait to be
# sent, so that they never hold up results on a slow link.
_REPORT_BACKLOG: Final = 1024 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


class Agent:
    """One node's agent."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        ssl_context: ssl.SSLContext,
        actions: Registry | None = None,
    ) -> None:
        self.config = config
        self.uri = pcp.make_uri(config.certname, AGENT_TYPE)
        self.actions = actions if actions is not None else default_registry()
        self._ssl = ssl_context
        try:
            self.spool = Spool(config.spooldir, ttl=config.spool_ttl)
        except OSError as exc:
            raise ConfigError(
                f"cannot use the spool folder {config.spooldir}: {exc.strerror or exc}"
            ) from exc
        self.cache = FileCache(config.cachedir, self._fetch, ttl=config.cache_ttl)
        self.features: list[str] = []
        self._facts = FactsTracker()
        self._pool = asyncio.Semaphore(config.concurrency)
        # Downloads may block a thread for many seconds: they get threads of their own,
        # so that spool I/O (in the default executor) never waits behind them.
        self._downloads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="agent-fetch")
        # Requests being recorded in the spool (in a worker thread), by transaction id:
        # a re-sent request that arrives meanwhile shares the outcome, never runs twice.
        self._claims: dict[str, asyncio.Future[_Claim]] = {}
        # Spooled transactions in hand, until their outcome is known.
        self._signals: dict[str, StopSignal] = {}
        self._ws: ClientConnection | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()

    def accepting(self, txid: str) -> bool:
        """Whether a request with this id is being recorded in the spool right now."""
        return txid in self._claims

    async def recorded(self, txid: str) -> None:
        """Until a request with this id that is being recorded is recorded or refused."""
        claim = self._claims.get(txid)
        if claim is not None:
            # Never cancels the claim, never raises its error; the claim's own callback
            # registers the transaction before this wakes up.
            await asyncio.wait([claim])

    def stop_signal(self, txid: str) -> StopSignal | None:
        """The stop signal of a spooled transaction in hand; None once it has ended."""
        return self._signals.get(txid)

    def report(self, record: TransactionRecord, message: msg.Message) -> bool:
        """Send a best-effort message about ``record`` to the controller that asked for
        it: dropped when disconnected, when the requester is no controller, or while
        the connection has a backlog."""
        ws = self._ws
        if ws is None or not _is_controller(record.requester):
            return False
        if _backlog(ws) > _REPORT_BACKLOG:
            return False
        return self._send(message, record.requester)

    # -- lifecycle --------------------------------------------------------------------

    async def run(self) -> None:
        """Recover unfinished work, then stay connected until :meth:`stop`."""
        self.features = await asyncio.to_thread(node_features)
        await self._recover()
        self._spawn(self._housekeeping())
        self._spawn(self._watch_facts())
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
        self._downloads.shutdown(wait=False, cancel_futures=True)

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
                try:
                    await self._send_facts()
                except Exception:  # no facts this time: the connection still serves
                    log.exception("could not collect the facts")
                for record in await self._unacknowledged():
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
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent task failed", exc_info=task.exception())

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(3600)
            try:
                removed = await asyncio.to_thread(self.spool.purge, _now())
                await self.cache.purge(_now())
            except OSError as exc:
                log.error("could not purge the spool or the task cache: %s", exc)
                continue
            except Exception:  # a bug here must not end the purges for good
                log.exception("could not purge the spool or the task cache")
                continue
            if removed:
                log.info("purged %d old transactions from the spool", removed)

    async def _recover(self) -> None:
        """After a restart: hand every unfinished transaction back to its action."""
        try:
            records = await asyncio.to_thread(self.spool.running)
        except OSError as exc:
            log.error("cannot read the spool to recover unfinished work: %s", exc)
            return
        for record in records:
            action = self.actions.get(record.module, record.action)
            if isinstance(action, SpooledAction):
                self._signals[record.transaction_id] = StopSignal(record.module, record.action)
                self._spawn(self._resume(action, record))
                continue
            text = (
                f"the agent restarted and no longer offers {record.module}/{record.action}; "
                "the transaction was not followed"
            )
            self._spawn(self._finish(record, False, _error("podium.agent/interrupted", text)))

    # -- sending ----------------------------------------------------------------------

    def _send(self, message: msg.Message, target: str, in_reply_to: str | None = None) -> bool:
        ws = self._ws
        if ws is None:
            return False
        env = msg.encode(message, sender=self.uri, target=target, in_reply_to=in_reply_to)
        ws_send(ws, pcp.serialize(env))
        return True

    def _gather(self) -> dict[str, Any]:
        return gather(
            self.config.certname,
            self.config.facts_file,
            factsdirs=self.config.facts_dirs,
            limit=self.config.max_message_bytes - pcp.ENVELOPE_ROOM,
        )

    async def _send_facts(self, facts: dict[str, Any] | None = None) -> None:
        if facts is None:
            facts = await asyncio.to_thread(self._gather)
        update = msg.FactsUpdate(facts=facts, features=self.features)
        if self._send(update, "pcp://*/server"):
            self._facts.sent(facts)

    async def _watch_facts(self) -> None:
        """Every ``facts_interval``, send the facts again if they changed (the rule is in
        :mod:`podium.agent.facts`)."""
        while True:
            await asyncio.sleep(self.config.facts_interval)
            if self._ws is None:
                continue
            try:
                facts = await asyncio.to_thread(self._gather)
            except Exception:  # a bug in a fact must not stop the checks for good
                log.exception("could not collect the facts")
                continue
            if self._facts.due(facts):
                await self._send_facts(facts)

    async def _unacknowledged(self) -> list[TransactionRecord]:
        try:
            return await asyncio.to_thread(self.spool.unacknowledged)
        except OSError as exc:
            log.error("cannot read the spool for results to send: %s", exc)
            return []

    def _send_result(self, record: TransactionRecord, target: str | None = None) -> None:
        target = target or record.requester
        if not target:  # a damaged record: nobody to send it to until it is asked for
            return
        results = record.results or {}
        self._send(
            msg.NonBlockingResponse(transaction_id=record.transaction_id, results=results), target
        )

    def _refuse(self, env: pcp.Envelope, txid: str, description: str) -> None:
        self._send(msg.RpcError(transaction_id=txid, description=description), env.sender, env.id)

    # -- receiving --------------------------------------------------------------------

    def _receive(self, frame: bytes | str) -> None:
        try:
            self._handle(frame)
        except Exception:  # a bug in handling one message must not end the session
            log.exception("could not handle a message")

    def _handle(self, frame: bytes | str) -> None:
        try:
            env = pcp.parse(frame, max_bytes=self.config.max_message_bytes)
            message = msg.decode(env)
        except ProtocolError as exc:
            log.warning("ignoring an invalid message: %s", exc.msg)
            return
        if isinstance(message, msg.ResultAck):
            self._spawn(self._acknowledge(message.transaction_id))
        elif isinstance(message, msg.BlockingRequest | msg.NonBlockingRequest):
            self._on_request(env, message)
        elif isinstance(message, msg.Error):
            log.warning("broker error: %s", message.description)
        else:
            log.debug("ignoring %s from %s", env.message_type, env.sender)

    def _on_request(self, env: pcp.Envelope, request: msg.Request) -> None:
        action = self.actions.get(request.module, request.action)
        if action is None:
            self._refuse(env, request.transaction_id, self.actions.unknown(*_pair(request)))
        elif isinstance(action, ImmediateAction):
            self._spawn(self._answer(env, request, action))
        elif isinstance(action, SpooledAction):
            txid = request.transaction_id
            claim = self._claims.get(txid)
            owner = claim is None
            if claim is None:
                claim = asyncio.ensure_future(asyncio.to_thread(self._claim, env, request, action))
                self._claims[txid] = claim
                claim.add_done_callback(functools.partial(self._claimed, txid))
            self._spawn(self._accept(env, request, action, claim, owner=owner))

    def _claimed(self, txid: str, claim: asyncio.Future[_Claim]) -> None:
        """A claim is settled: a new transaction is in hand from now on (before anyone
        waiting for the claim wakes up, so a stop that waited for it finds it)."""
        self._claims.pop(txid, None)
        if claim.cancelled() or claim.exception() is not None:
            return
        found = claim.result()
        if found.new:
            self._signals[txid] = StopSignal(found.record.module, found.record.action)

    def _claim(self, env: pcp.Envelope, request: msg.Request, action: SpooledAction[Any]) -> _Claim:
        """Find the transaction in the spool, or check the request and record it
        (blocking: in a worker thread, one at a time per transaction id)."""
        txid = request.transaction_id
        record = self.spool.get(txid)
        if record is not None:
            return _Claim(record)
        parsed = action.parse(request.params)
        try:
            record = self.spool.create(
                txid,
                module=request.module,
                action=request.action,
                params=action.stored(request.params),
                requester=env.sender,
                now=_now(),
            )
        except Conflict:  # taken meanwhile by another process on the same spool
            record = self.spool.get(txid)
            if record is None:
                raise
            return _Claim(record)
        return _Claim(record, new=True, request=parsed)

    async def _accept(
        self,
        env: pcp.Envelope,
        request: msg.Request,
        action: SpooledAction[Any],
        claim: asyncio.Future[_Claim],
        *,
        owner: bool,
    ) -> None:
        txid = request.transaction_id
        try:
            found = await claim
        except PodiumError as exc:
            self._refuse(env, txid, exc.msg)
            return
        except OSError as exc:
            log.error("cannot record %s %s in the spool: %s", action.name, txid, exc)
            self._refuse(env, txid, spool_failure(self.spool.path(txid), exc))
            return
        except Exception as exc:
            log.exception("cannot take %s %s", action.name, txid)
            self._refuse(env, txid, f"the agent failed to take the request: {exc!r}")
            return
        record = found.record
        if record.finished:
            # A re-sent request: answer from the spool, never run twice.
            self._send_result(record, env.sender)
            return
        self._send(msg.ProvisionalResponse(transaction_id=txid), env.sender, env.id)
        if found.new and owner:
            self._spawn(self._run(action, record, found.request))

    async def _answer(
        self, env: pcp.Envelope, request: msg.Request, action: ImmediateAction
    ) -> None:
        txid = request.transaction_id
        try:
            results = await action.answer(self, request.params)
        except PodiumError as exc:
            self._refuse(env, txid, exc.msg)
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self._refuse(env, txid, f"the agent cannot read its spool {self.spool.root}: {reason}")
            return
        except Exception as exc:
            log.exception("%s %s failed", action.name, txid)
            self._refuse(env, txid, f"the agent failed to answer: {exc!r}")
            return
        self._send(msg.BlockingResponse(transaction_id=txid, results=results), env.sender, env.id)

    async def _acknowledge(self, txid: str) -> None:
        try:
            await asyncio.to_thread(self.spool.acknowledge, txid, _now())
        except (PodiumError, OSError) as exc:
            log.warning("cannot record the acknowledgement of %s: %s", txid, exc)

    # -- running ----------------------------------------------------------------------

    async def _run(
        self, action: SpooledAction[Any], record: TransactionRecord, request: Any
    ) -> None:
        signal = self._signals.get(record.transaction_id)
        if await self._place(signal):
            try:
                outcome = await self._outcome(action, record, action.run(self, record, request))
            finally:
                self._pool.release()
        else:
            assert signal is not None
            outcome = action.stopped(record, signal.reason)
        await self._finish(record, *outcome)

    async def _place(self, signal: StopSignal | None) -> bool:
        """A place in the pool (release it), or False if the transaction is stopped
        while it waits for one."""
        if signal is None:
            await self._pool.acquire()
            return True
        if signal.requested:
            return False
        acquiring = asyncio.ensure_future(self._pool.acquire())
        stopping = asyncio.ensure_future(signal.wait())
        try:
            await asyncio.wait([acquiring, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not acquiring.done():
                # Cancelling a waiting acquire gives back a place it was just handed.
                acquiring.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acquiring
        if acquiring.cancelled():
            return False
        acquiring.result()
        return True  # stopped as the place came too: the action sees it at once

    async def _resume(self, action: SpooledAction[Any], record: TransactionRecord) -> None:
        outcome = await self._outcome(action, record, action.resume(self, record))
        await self._finish(record, *outcome)

    async def _outcome(
        self, action: SpooledAction[Any], record: TransactionRecord, running: Awaitable[Outcome]
    ) -> Outcome:
        try:
            ok, results = await running
        except PodiumError as exc:
            return False, {"_error": exc.to_dict()}
        except OSError as exc:  # the spool failed under the running task
            log.error("%s %s: %s", action.name, record.transaction_id, exc)
            where = exc.filename or self.spool.path(record.transaction_id)
            return False, _error(
                "podium.agent/spool-error",
                f"the agent cannot use its spool {where}: {exc.strerror or exc}; {_advice(exc)}",
            )
        except Exception as exc:
            log.exception("%s %s failed unexpectedly", action.name, record.transaction_id)
            return False, _error("podium.agent/internal-error", str(exc) or type(exc).__name__)
        return ok, results

    async def _finish(self, record: TransactionRecord, ok: bool, results: dict[str, Any]) -> None:
        self._signals.pop(record.transaction_id, None)  # the outcome is known: too late
        # Room for the envelope around the results, so the message fits the broker's cap.
        fitted = fit_result(results, self.config.max_message_bytes - pcp.ENVELOPE_ROOM)
        try:
            record = await asyncio.to_thread(
                self.spool.finish,
                record.transaction_id,
                status="success" if ok else "failure",
                results=fitted,
                now=_now(),
            )
        except (OSError, PodiumError) as exc:
            log.error(
                "cannot store the result of %s (%s); sending it once", record.transaction_id, exc
            )
            record = replace(record, status="success" if ok else "failure", results=fitted)
        self._send_result(record)

    async def _fetch(self, path_and_query: str) -> bytes:
        """A task file from the server, retried while the server is away (it may be
        restarting: the job goes on after it is back)."""
        url = self.config.server_url.rstrip("/") + path_and_query
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.fetch_timeout
        attempt = 0
        while True:
            try:
                return await loop.run_in_executor(
                    self._downloads, functools.partial(http.request, url, context=self._ssl)
                )
            except http.HttpError as exc:
                if not exc.transient or loop.time() > deadline:
                    raise
                delay = full_jitter(attempt, base=0.5, cap=8.0)
                log.warning("download of %s failed (%s); retrying in %.1f s", url, exc.msg, delay)
                await self._sleep(delay)
                attempt += 1


@dataclass(frozen=True)
class _Claim:
    """A request's transaction as the spool has it; ``new`` if this request made it."""

    record: TransactionRecord
    new: bool = False
    request: Any = None


def _pair(request: msg.Request) -> tuple[str, str]:
    return request.module, request.action


def spool_failure(path: Path, exc: OSError) -> str:
    """Why a request is refused when the spool cannot take it, and what to do."""
    reason = exc.strerror or str(exc)
    return (
        f"the agent cannot write its spool {path}: {reason}; {_advice(exc)}, "
        "then send the request again (it was not run)"
    )


def _advice(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "fix the folder's permissions"
    return "fix the folder's permissions or free disk space"


def _is_controller(uri: str) -> bool:
    """Whether ``uri`` names one controller: only controllers connect with a client
    type other than ``agent`` (the broker's rule)."""
    try:
        certname, client_type = pcp.split_uri(uri)
    except PodiumError:
        return False
    return bool(certname) and certname != "*" and client_type != AGENT_TYPE


def _backlog(ws: ClientConnection) -> int:
    """Bytes waiting to be sent on the connection."""
    try:
        return ws.transport.get_write_buffer_size()
    except (AttributeError, RuntimeError):
        return 0


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
        # Short blocking work (spool I/O, process starts) needs few threads.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2, thread_name_prefix="agent"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    asyncio.run(main())
    return 0
