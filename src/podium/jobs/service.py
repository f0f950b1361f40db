"""The job engine: turns commands into PXP requests and results into stored states.

A job's nodes are tracked in memory by transaction id while they run; every state
change is queued and written in batches (one worker-thread call per flush), and a
final result is acknowledged to its agent only once it is stored. After a restart the
engine rebuilds that memory from the database and re-sends the requests of unfinished
nodes: agents answer a known transaction id from their spool and never run it twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from podium.errors import PodiumError, StoreError, Unavailable, ValidationError
from podium.jobs import states
from podium.jobs.link import ControllerLink
from podium.jobs.payloads import (
    INPUT_PURPOSE,
    SEALED_INPUT,
    redacted,
    storable,
    task_request,
)
from podium.pki.sealing import Sealer
from podium.protocol import envelope as pcp
from podium.protocol import messages as msg
from podium.protocol.names import validate_certname
from podium.store import NewEvent, NodeUpdate, Store
from podium.tasks.codedir import CodeDir
from podium.tasks.metadata import Task
from podium.tasks.params import validate_params

log = logging.getLogger(__name__)

_MAX_TIMEOUT = 7 * 24 * 3600
_GIVEN_UP_KEPT = 100_000  # nodes given up on whose late results are still welcome
# Stores (certname, facts, when) items and each agent's features, in one transaction.
FactsSink = Callable[
    [Sequence[tuple[str, dict[str, Any], datetime]], Mapping[str, Sequence[str] | None]], None
]
# What a node whose agent never listed its features is assumed to run.
DEFAULT_FEATURES = ("shell",)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class _Pending:
    job_id: int
    certname: str
    request: msg.NonBlockingRequest
    state: str = "new"
    grace: asyncio.TimerHandle | None = None
    sent_id: str | None = None  # envelope id of the last request sent, for broker errors

    @property
    def transaction_id(self) -> str:
        return self.request.transaction_id


@dataclass(eq=False)
class _ActiveJob:
    id: int
    remaining: int
    node_states: list[str] = field(default_factory=list)


@dataclass
class _Batch:
    updates: list[NodeUpdate] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    job_states: list[tuple[int, str, datetime]] = field(default_factory=list)
    # certname → (facts, when, the agent's features)
    facts: dict[str, tuple[dict[str, Any], datetime, list[str] | None]] = field(
        default_factory=dict
    )
    acks: list[tuple[str, str]] = field(default_factory=list)  # (agent uri, transaction id)
    rejudge: set[int] = field(default_factory=set)  # finished jobs whose nodes changed

    def __bool__(self) -> bool:
        return bool(
            self.updates or self.events or self.job_states or self.facts or self.acks
        ) or bool(self.rejudge)


class JobService:
    """Runs jobs over a :class:`ControllerLink` and records them in a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        link: ControllerLink,
        codedir: CodeDir,
        *,
        sealer: Sealer,
        record_facts: FactsSink | None = None,
        # Timeouts
        flush_interval: float = 0.005,
        reconnect_grace: float = 300.0,
        stop_timeout: float = 10.0,
        # Limits
        max_message_bytes: int = pcp.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.store = store
        self.link = link
        self.codedir = codedir
        self.sealer = sealer
        # Where the facts agents send go (the inventory); the store's own table by default.
        self._record_facts: FactsSink = record_facts or store.record_facts_many
        self.flush_interval = flush_interval
        self.reconnect_grace = reconnect_grace
        self.stop_timeout = stop_timeout
        self.max_message_bytes = max_message_bytes
        self._pending: dict[str, _Pending] = {}
        self._by_node: dict[str, set[str]] = defaultdict(set)
        self._jobs: dict[int, _ActiveJob] = {}
        self._sent: dict[str, str] = {}  # message id → transaction id, for broker errors
        self._given_up: dict[str, _Pending] = {}  # failed by the grace period, oldest first
        self._batch = _Batch()
        self._flusher: asyncio.Task[None] | None = None
        self._finished: dict[int, asyncio.Event] = {}
        # Round trips under way: transaction id → (certname, answer)
        self._features: dict[str, list[str] | None] = {}  # certname → its agent's features
        self._probes: dict[str, tuple[str, asyncio.Future[tuple[str | None, float]]]] = {}
        link.on_message = self._on_message
        link.on_change = self._on_change

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, *, inventory_timeout: float = 5.0) -> None:
        """Resume unfinished jobs, then connect: no result can arrive before the engine
        knows which transactions it is waiting for."""
        await self._recover()
        await self.link.start()
        try:
            await asyncio.wait_for(self.link.ready.wait(), inventory_timeout)
        except TimeoutError:
            log.warning("no broker inventory after %.0f s; starting without it", inventory_timeout)

    async def stop(self) -> None:
        for pending in self._pending.values():
            if pending.grace is not None:
                pending.grace.cancel()
        try:
            await asyncio.wait_for(self.flush(), self.stop_timeout)
        except TimeoutError:
            log.error(
                "could not store the last job updates within %.0f s; agents will send "
                "their unacknowledged results again",
                self.stop_timeout,
            )
        await self.link.stop()

    async def flush(self) -> None:
        """Write everything queued so far (and wait for a flush under way)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self._batch:
            self._flusher = asyncio.ensure_future(self._flush_now())
            await asyncio.shield(self._flusher)

    async def wait(self, job_id: int) -> None:
        """Until the job is finished and stored (for the CLI's in-process callers)."""
        event = self._finished.get(job_id)
        if event is not None:
            await event.wait()

    # -- commands ---------------------------------------------------------------------

    async def run_task(
        self,
        *,
        task: str,
        params: dict[str, Any],
        nodes: Sequence[str],
        environment: str = "production",
        description: str = "",
        owner: str = "anonymous",
        noop: bool = False,
        run_timeout: float | None = None,
        scope: dict[str, Any] | None = None,
    ) -> int:
        """Start a task job on ``nodes``; returns the job id. ``run_timeout``: seconds a
        node's run may take before its agent stops it; ``scope``: what the nodes were
        resolved from, as the job shows it (default: the node list)."""
        timeout = run_timeout
        if not self.link.ready.is_set():
            raise Unavailable(
                "the server has no connection to a broker right now, so no node can be "
                "reached; check the broker and the server's log, then try again"
            )
        found = await asyncio.to_thread(self.codedir.task, environment, task)
        checked = validate_params(found, params)
        if noop and not found.supports_noop:
            raise ValidationError(
                f"task {found.name} does not support noop (its metadata has no "
                "'supports_noop': true); run it without noop",
                kind="puppetlabs.orchestrator/task-not-noop",
                details={"task": found.name},
            )
        if timeout is not None and not 0 < timeout <= _MAX_TIMEOUT:
            raise ValidationError(
                f"timeout must be a number of seconds from 1 to {_MAX_TIMEOUT}, got {timeout}",
                details={"timeout": timeout},
            )
        certnames = list(dict.fromkeys(validate_certname(n, "node") for n in nodes))
        if not certnames:
            raise ValidationError(
                "the job targets no nodes; give at least one node name",
                kind="puppetlabs.orchestrator/empty-target",
            )
        known = await asyncio.to_thread(self.store.known_certnames, certnames)
        # Connected agents said what they run when they connected; ask the database only
        # about those that did before this server started.
        features: dict[str, list[str] | None] = {c: self._features.get(c) for c in certnames}
        unheard = [c for c in certnames if c in self.link.connected and c not in self._features]
        if unheard:
            features.update(await asyncio.to_thread(self.store.node_features, unheard))
        requests = self._task_requests(found, checked, features, noop=noop, timeout=timeout)
        txids = {c: uuid.uuid4().hex for c in certnames}
        options: dict[str, Any] = {
            "task": found.name,
            "params": redacted(found, checked),
            "noop": noop,
            "environment": environment,
            "scope": scope or {"nodes": certnames},
            # What the nodes get, kept to resume the job after a restart; never shown.
            SEALED_INPUT: self.sealer.seal(checked, purpose=INPUT_PURPOSE),
        }
        if timeout is not None:
            options["timeout"] = timeout
        now = _now()
        job_id = await asyncio.to_thread(
            self.store.create_job,
            type="task",
            owner=owner,
            environment=environment,
            description=description,
            options=options,
            nodes=[(c, txids[c]) for c in certnames],
            at=now,
        )
        job = _ActiveJob(job_id, remaining=len(certnames))
        self._jobs[job_id] = job
        self._finished[job_id] = asyncio.Event()
        self._batch.job_states.append((job_id, "running", now))
        for certname in certnames:
            request = requests[certname]
            pending = self._track(
                job_id, certname, txids[certname], request if isinstance(request, dict) else {}
            )
            if certname in self.link.connected:
                if isinstance(request, str):  # no implementation fits this node
                    self._settle(pending, "failed", {}, request)
                else:
                    self._send_request(pending)
            elif certname in known:
                self._settle(
                    pending, "failed", {}, f"node {certname} is not connected to the broker"
                )
            else:
                self._settle(
                    pending,
                    "failed",
                    {},
                    f"unknown node {certname}: it has never connected; "
                    "check the name or enroll the node",
                )
        self._flush_soon()
        return job_id

    def _task_requests(
        self,
        task: Task,
        params: dict[str, Any],
        features: dict[str, list[str] | None],
        *,
        noop: bool,
        timeout: float | None,
        check_size: bool = True,
    ) -> dict[str, dict[str, Any] | str]:
        """Each known node's request (one per implementation, shared), or why none fits."""
        by_impl: dict[str, dict[str, Any]] = {}
        out: dict[str, dict[str, Any] | str] = {}
        for certname, have in features.items():
            have = have if have is not None else list(DEFAULT_FEATURES)
            impl = task.implementation_for(have)
            if impl is None:
                needs = "; ".join(
                    f"{i.name} needs {', '.join(i.requirements) or 'nothing'}"
                    for i in task.implementations
                )
                out[certname] = (
                    f"task {task.name} has no implementation that node {certname} can run: "
                    f"its agent offers {', '.join(sorted(have)) or 'no features'} ({needs})"
                )
                continue
            request = by_impl.get(impl.name)
            if request is None:
                request = task_request(task, impl, params, noop=noop, timeout=timeout)
                if check_size:
                    self._check_size(task, request)
                by_impl[impl.name] = request
            out[certname] = request
        return out

    def _check_size(self, task: Task, request: dict[str, Any]) -> None:
        try:
            size = len(orjson.dumps(request)) + pcp.ENVELOPE_ROOM
        except orjson.JSONEncodeError as exc:
            raise ValidationError(f"the task's parameters cannot be sent: {exc}") from exc
        if size > self.max_message_bytes:
            raise ValidationError(
                f"the request for task {task.name} would be {size} bytes, over the "
                f"{self.max_message_bytes}-byte message limit; pass large data as a file "
                "the task reads, not as a parameter",
                details={"size": size, "limit": self.max_message_bytes},
            )

    def _track(self, job_id: int, certname: str, txid: str, params: dict[str, Any]) -> _Pending:
        request = msg.NonBlockingRequest(
            transaction_id=txid, module="task", action="run", params=params
        )
        pending = _Pending(job_id, certname, request)
        self._pending[txid] = pending
        self._by_node[certname].add(txid)
        return pending

    def _send_request(self, pending: _Pending) -> None:
        env = self.link.make(pending.request, pcp.make_uri(pending.certname, "agent"))
        self._sent.pop(pending.sent_id or "", None)
        pending.sent_id = env.id
        self._sent[env.id] = pending.transaction_id
        if not self.link.send(env):
            self._start_grace(pending)

    async def round_trip(
        self, certnames: Sequence[str], *, wait: float = 5.0
    ) -> dict[str, float | str]:
        """Ask each node's agent at once for a status (PXP ``status``/``query``): the
        seconds each took to answer, or why it did not."""
        loop = asyncio.get_running_loop()
        out: dict[str, float | str] = {}
        asked: dict[str, tuple[str, asyncio.Future[tuple[str | None, float]]]] = {}
        started = loop.time()
        for certname in certnames:
            if certname not in self.link.connected:
                out[certname] = "not connected to the broker"
                continue
            txid = uuid.uuid4().hex
            self._probes[txid] = asked[txid] = (certname, loop.create_future())
            query = {"transaction_id": txid}
            request = msg.BlockingRequest(txid, module="status", action="query", params=query)
            self.link.send(self.link.make(request, pcp.make_uri(certname, "agent")))
        try:
            if asked:
                await asyncio.wait([f for _, f in asked.values()], timeout=wait)
        finally:
            for txid, (certname, answer) in asked.items():
                self._probes.pop(txid, None)
                if not answer.done():
                    answer.cancel()
                    out[certname] = f"no answer within {wait:g} s"
                    continue
                error, at = answer.result()
                out[certname] = at - started if error is None else f"the agent refused: {error}"
        return {c: out[c] for c in certnames}

    # -- results ----------------------------------------------------------------------

    def _on_message(self, env: pcp.Envelope) -> None:
        try:
            message = msg.decode(env)
        except PodiumError as exc:
            log.warning("ignoring a message from %s: %s", env.sender, exc.msg)
            return
        sender = pcp.split_uri(env.sender)[0]
        probe = self._probes.get(getattr(message, "transaction_id", ""))
        if probe is not None and isinstance(message, msg.BlockingResponse | msg.RpcError):
            if probe[0] == sender and not probe[1].done():
                error = message.description if isinstance(message, msg.RpcError) else None
                probe[1].set_result((error, asyncio.get_running_loop().time()))
            return
        if isinstance(message, msg.FactsUpdate):
            self._batch.facts[sender] = (storable(message.facts), _now(), message.features)
            self._features[sender] = message.features
            self._flush_soon()
        elif isinstance(message, msg.Error):
            self._on_broker_error(message)
        elif isinstance(message, msg.ProvisionalResponse | msg.NonBlockingResponse | msg.RpcError):
            txid = message.transaction_id
            pending = self._pending.get(txid)
            if pending is not None and pending.certname != sender:
                log.warning(
                    "%s answered for %s's transaction %s; ignored", sender, pending.certname, txid
                )
                return
            if isinstance(message, msg.ProvisionalResponse):
                if pending is not None and states.can_move(pending.state, "running"):
                    pending.state = "running"
                    self._record(pending, "running", None, None)
            elif isinstance(message, msg.NonBlockingResponse):
                if pending is not None:
                    results = storable(message.results)
                    self._settle(pending, states.state_for_results(results), results, None)
                else:
                    self._late_result(sender, txid, storable(message.results))
                # Acknowledge even a duplicate, once what we hold is stored.
                self._batch.acks.append((env.sender, txid))
                self._flush_soon()
            elif pending is not None:
                self._settle(pending, "errored", {}, message.description.replace("\x00", "\ufffd"))

    def _on_broker_error(self, error: msg.Error) -> None:
        txid = self._sent.get(error.id or "")
        pending = self._pending.get(txid or "")
        if pending is not None:
            log.info("request for %s bounced: %s", pending.certname, error.description)
            self._start_grace(pending)

    def _on_change(self, certname: str, up: bool) -> None:
        for txid in list(self._by_node.get(certname, ())):
            pending = self._pending[txid]
            if up:
                if pending.grace is not None:
                    pending.grace.cancel()
                    pending.grace = None
                self._send_request(pending)
            else:
                self._start_grace(pending)

    def _start_grace(self, pending: _Pending) -> None:
        if pending.grace is not None:
            return
        loop = asyncio.get_running_loop()
        pending.grace = loop.call_later(self.reconnect_grace, self._give_up, pending)

    def _give_up(self, pending: _Pending) -> None:
        pending.grace = None
        if self._pending.get(pending.transaction_id) is pending:
            self._settle(
                pending,
                "failed",
                {},
                f"node {pending.certname} disconnected from the broker and did not come back "
                f"within {self.reconnect_grace:.0f} s",
            )
            self._given_up[pending.transaction_id] = pending
            while len(self._given_up) > _GIVEN_UP_KEPT:
                self._given_up.pop(next(iter(self._given_up)))
            self._flush_soon()

    def _late_result(self, sender: str, txid: str, results: dict[str, Any]) -> None:
        """The result of a node given up on after the grace period: it ran after all,
        so its row (and its job's state) shows what really happened."""
        pending = self._given_up.get(txid)
        if pending is None or pending.certname != sender:
            return
        del self._given_up[txid]
        state = states.state_for_results(results)
        self._record(pending, state, results, "the result arrived after the node was given up on")
        job = self._jobs.get(pending.job_id)
        if job is not None:  # still running: count the node as it ended
            job.node_states.remove("failed")
            job.node_states.append(state)
        else:
            self._batch.rejudge.add(pending.job_id)

    def _record(
        self, pending: _Pending, state: str, results: dict[str, Any] | None, message: str | None
    ) -> None:
        now = _now()
        self._batch.updates.append(
            NodeUpdate(pending.transaction_id, state, now, result=results, message=message)
        )
        detail: dict[str, Any] = {
            "node": pending.certname,
            "transaction_id": pending.transaction_id,
        }
        if message:
            detail["message"] = message
        if results is not None and state in states.TERMINAL_NODE_STATES:
            detail["result"] = results  # as PE's events do: a watcher needs nothing else
        self._batch.events.append(
            NewEvent(
                pending.job_id,
                states.NODE_EVENTS[state],
                now,
                certname=pending.certname,
                message=message or f"{pending.certname}: {state}",
                details=detail,
            )
        )
        self._flush_soon()

    def _settle(
        self, pending: _Pending, state: str, results: dict[str, Any], message: str | None
    ) -> None:
        """A node's final state."""
        self._pending.pop(pending.transaction_id, None)
        self._sent.pop(pending.sent_id or "", None)
        txids = self._by_node.get(pending.certname)
        if txids is not None:
            txids.discard(pending.transaction_id)
            if not txids:
                del self._by_node[pending.certname]
        if pending.grace is not None:
            pending.grace.cancel()
            pending.grace = None
        self._record(pending, state, results, message)
        job = self._jobs.get(pending.job_id)
        if job is None:
            return
        job.remaining -= 1
        job.node_states.append(state)
        if job.remaining == 0:
            del self._jobs[job.id]
            outcome = states.job_outcome(job.node_states)
            now = _now()
            self._batch.job_states.append((job.id, outcome, now))
            self._batch.events.append(
                NewEvent(
                    job.id,
                    "job_finished",
                    now,
                    message=f"job {job.id} {outcome}",
                    details={"state": outcome},
                )
            )

    # -- writing ----------------------------------------------------------------------

    def _flush_soon(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_interval)
        await self._flush_now()

    async def _flush_now(self) -> None:
        while self._batch:
            batch, self._batch = self._batch, _Batch()
            try:
                await asyncio.to_thread(self._write, batch)
            except StoreError as exc:  # the database is away: keep everything, try again
                log.error("could not store job updates (%s); retrying in 1 s", exc.msg)
                self._requeue(batch)
                await asyncio.sleep(1.0)
                continue
            except Exception:
                # A bug, or a value the database refuses: retrying would wedge every later
                # update. Nothing in it was acknowledged, so agents will send it again.
                log.exception("dropped a batch of job updates that could not be stored")
                continue
            for uri, txid in batch.acks:
                self.link.send(self.link.make(msg.ResultAck(transaction_id=txid), uri))
            for job_id, state, _ in batch.job_states:
                if state in states.TERMINAL_JOB_STATES:
                    done = self._finished.pop(job_id, None)
                    if done is not None:
                        done.set()

    def _requeue(self, batch: _Batch) -> None:
        self._batch.updates[:0] = batch.updates
        self._batch.events[:0] = batch.events
        self._batch.job_states[:0] = batch.job_states
        self._batch.acks[:0] = batch.acks
        self._batch.rejudge |= batch.rejudge
        for certname, value in batch.facts.items():
            self._batch.facts.setdefault(certname, value)

    def _write(self, batch: _Batch) -> None:
        if batch.facts:
            self._record_facts(
                [(c, f, at) for c, (f, at, _) in batch.facts.items()],
                {c: features for c, (_, _, features) in batch.facts.items()},
            )
        if batch.updates:
            self.store.apply_node_updates(batch.updates)
        if batch.events:
            self.store.add_events(batch.events)
        for job_id, state, at in batch.job_states:
            self.store.set_job_state(job_id, state, at)
        for job_id in batch.rejudge:
            job = self.store.get_job(job_id)
            counted = [s for s, n in job.node_states.items() for _ in range(n)]
            outcome = states.job_outcome(counted)
            if job.state in states.TERMINAL_JOB_STATES and outcome != job.state:
                self.store.set_job_state(job_id, outcome, job.finished_at or _now())

    # -- recovery ---------------------------------------------------------------------

    async def _resume_requests(
        self, environment: str, options: dict[str, Any], nodes: Sequence[Any]
    ) -> dict[str, dict[str, Any] | str]:
        task = await asyncio.to_thread(self.codedir.task, environment, options["task"])
        sealed = options.get(SEALED_INPUT)
        params = (
            self.sealer.open(sealed, purpose=INPUT_PURPOSE)
            if sealed is not None
            else options.get("params", {})
        )
        certnames = [n.certname for n in nodes]
        features = await asyncio.to_thread(self.store.node_features, certnames)
        features = {c: features.get(c) for c in certnames}
        return self._task_requests(
            task,
            params,
            features,
            noop=bool(options.get("noop")),
            timeout=options.get("timeout"),
            check_size=False,
        )

    async def _recover(self) -> None:
        jobs = await asyncio.to_thread(self.store.unfinished_jobs)
        for job in jobs:
            nodes = await asyncio.to_thread(self.store.unfinished_nodes, job.id)
            active = _ActiveJob(job.id, remaining=len(nodes))
            self._jobs[job.id] = active
            self._finished[job.id] = asyncio.Event()
            done_states = [
                s
                for s, n in job.node_states.items()
                if s in states.TERMINAL_NODE_STATES
                for _ in range(n)
            ]
            active.node_states.extend(done_states)
            if not nodes:  # every node had settled; only the job's own state was lost
                del self._jobs[job.id]
                self._batch.job_states.append((job.id, states.job_outcome(done_states), _now()))
                continue
            try:
                requests = await self._resume_requests(job.environment, job.options, nodes)
            except PodiumError as exc:
                requests = {n.certname: f"cannot resume after a restart: {exc.msg}" for n in nodes}
            for node in nodes:
                request = requests.get(node.certname, "cannot resume after a restart")
                if isinstance(request, str):
                    pending = self._track(job.id, node.certname, node.transaction_id, {})
                    self._settle(pending, "errored", {}, request)
                    continue
                pending = self._track(job.id, node.certname, node.transaction_id, request)
                pending.state = node.state
                self._start_grace(pending)  # the link's inventory will bring it back
            log.info("resumed job %d with %d unfinished nodes", job.id, len(nodes))
        self._flush_soon()
