"""The job core: every job's and node's state, the pace rules, resends and acks (pure).

Sans-I/O, as websockets' protocol core is for frames: the driver feeds it commands
(:meth:`JobCore.add_job`, :meth:`~JobCore.stop`), PXP messages
(:meth:`~JobCore.receive`), connection changes (:meth:`~JobCore.connected`,
:meth:`~JobCore.disconnected`, :meth:`~JobCore.bounced`) and the time
(:meth:`~JobCore.tick`), always with ``now`` in seconds since the epoch; it takes out what
to send (:meth:`~JobCore.sends`), what to write in one transaction
(:meth:`~JobCore.changes`, acknowledgements included, to be sent only once that is
stored) and when to call :meth:`~JobCore.tick` next (:meth:`~JobCore.next_timer`).

A job kind (:class:`JobKind`: a task run now, Puppet runs and plan steps later) supplies
the request for a node and the node state for a result; everything else is here.

Node phases: ``held`` (waiting for the nodes it runs after), ``queued`` (not started),
``waiting`` (offline, waiting to connect within the job's ``offline_ttl``), ``ready``
(connected since, waiting for its turn), ``sent`` (request sent, not yet accepted),
``running`` (accepted), ``ended``. A node given up on (its agent gone past the grace
period, or silent past its deadline) ends ``errored``; should its result arrive later, it
replaces that.

Run order: a job may say which of its nodes run after which (``after``, certname → the
certnames it waits for; an application's components, see :mod:`podium.puppet.apps`). A
node with prerequisites is ``held``, outside the queue, so it never blocks the nodes that
may start: the pace rules (concurrency, batches) apply to the queued ones only. Each
node counts the prerequisites it still waits for and lists its dependants; when a node
ends ``finished``, each dependant's count drops and one at zero joins the end of the
queue. When it ends in any other state, its held dependants end ``skipped``
(``node_skipped``, the message naming the node waited for and its state), and theirs in
turn, saying what the first one was. Each edge is looked at once: O(nodes + edges) for
a job, and nothing scans the job's nodes when one ends. A late result that replaces a
given-up node's ``errored`` does not bring its skipped dependants back. A cycle in
``after`` is refused (:class:`ValueError`): the planner refuses it first, naming it.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, OrderedDict, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from podium.jobs.states import NODE_EVENTS, TERMINAL_NODE_STATES
from podium.protocol import envelope as pcp
from podium.protocol import messages as msg
from podium.store.records import JobUpdate, NewEvent, NodeUpdate

# Live output kept per node in the event log; the final result carries the task's own
# (capped) output in full.
OUTPUT_KEPT = 64 * 1024
_ENDED_KEPT = 100_000  # ended nodes remembered, for duplicate and late results


class JobKind(Protocol):
    """What a kind of job supplies: the PXP action, each node's request, each result's state."""

    module: str
    action: str
    stop_action: str | None  # the action of the same module that kills a run, if any

    def request(self, certname: str) -> dict[str, Any] | str:
        """The request's params for ``certname``, or why it cannot run there."""
        ...

    def node_state(self, results: dict[str, Any]) -> str:
        """The final node state for a run's results."""
        ...


@dataclass(frozen=True, slots=True)
class Pace:
    """A job's own pace and safety options (seconds where a time)."""

    concurrency: int | None = None  # nodes running at once
    batch: int | None = None  # nodes per batch; the next starts when one has ended
    batch_sleep: float = 0.0
    fail_fast: bool = False
    node_timeout: float | None = None  # the agent stops a run after this
    job_timeout: float | None = None
    offline_ttl: float | None = None  # offline nodes wait this long from the job's start


@dataclass(frozen=True, slots=True)
class Limits:
    """Server-wide settings of the core."""

    max_running: int = 250  # nodes running at once across all jobs (PE's task concurrency)
    reconnect_grace: float = 300.0  # a node whose agent dropped is given up after this
    answer_timeout: float = 60.0  # for an agent to accept a request (it is sent twice)
    default_node_timeout: float = 2400.0  # a run's timeout when the job sets none


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message for ``certname``'s agent; ``id`` is the envelope id to use, so that a
    broker's bounce of it can be told back with :meth:`JobCore.bounced`."""

    id: str
    certname: str
    message: msg.Message


@dataclass
class Changes:
    """What one flush writes, in one transaction; ``acks`` are sent once it is stored."""

    nodes: list[NodeUpdate] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    jobs: list[JobUpdate] = field(default_factory=list)
    acks: list[tuple[str, str]] = field(default_factory=list)  # (certname, transaction id)
    ended_jobs: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.nodes or self.events or self.jobs or self.acks)

    def extend(self, other: Changes) -> None:
        self.nodes += other.nodes
        self.events += other.events
        self.jobs += other.jobs
        self.acks += other.acks
        self.ended_jobs += other.ended_jobs

    def prepend(self, earlier: Changes) -> None:
        """Put ``earlier`` (a flush that failed) back in front, to be written again."""
        self.nodes[:0] = earlier.nodes
        self.events[:0] = earlier.events
        self.jobs[:0] = earlier.jobs
        self.acks[:0] = earlier.acks
        self.ended_jobs[:0] = earlier.ended_jobs


@dataclass(frozen=True, slots=True)
class ResumedNode:
    """An unfinished node of a job being resumed after a restart, as stored."""

    certname: str
    transaction_id: str
    state: str  # "new" or "running"
    started: float | None = None


def _stamp(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


class _Node:
    __slots__ = (
        "attempts",
        "cause",
        "certname",
        "dependants",
        "due",
        "give_up_at",
        "given_up",
        "job",
        "output",
        "phase",
        "sent_at",
        "sent_id",
        "started",
        "state",
        "stopped",
        "txid",
        "waits",
    )

    def __init__(self, job: _Job, certname: str, txid: str) -> None:
        self.job = job
        self.certname = certname
        self.txid = txid
        self.state = "new"  # as stored
        self.phase = "queued"
        self.sent_id: str | None = None
        self.sent_at = 0.0
        self.attempts = 0
        self.started: float | None = None
        self.give_up_at: float | None = None
        self.due: float | None = None  # the deadline armed in the timer heap
        self.output = 0  # characters of live output logged
        self.given_up = False  # ended errored by the core: a late result replaces that
        self.stopped = False  # killed by a forced stop: a late result keeps "errored"
        self.waits = 0  # prerequisites not ended yet (run order)
        self.dependants: list[_Node] = []  # held nodes that wait for this one
        self.cause: str | None = None  # skipped for a prerequisite: "<node> <state>" at the root


class _Job:
    __slots__ = (
        "aborted",
        "active",
        "batch_at",
        "batch_left",
        "batch_open",
        "counts",
        "created",
        "force",
        "halted",
        "held",
        "id",
        "kind",
        "owner",
        "pace",
        "queue",
        "ready_now",
        "remaining",
        "resumed_wait",
        "started",
        "state",
        "stop_by",
        "timeout_at",
        "ttl_at",
        "waiting",
    )

    def __init__(self, id: int, kind: JobKind, pace: Pace, owner: str, created: float) -> None:
        self.id = id
        self.kind = kind
        self.pace = pace
        self.owner = owner
        self.created = created
        self.state = "new"
        self.started: float | None = None
        self.queue: deque[_Node] = deque()
        self.waiting: dict[str, _Node] = {}  # offline nodes that may still connect
        self.ready_now: deque[_Node] = deque()  # waiting nodes that connected
        self.held: dict[str, _Node] = {}  # transaction id → a node waiting for prerequisites
        self.active = 0  # nodes sent or running
        self.counts: Counter[str] = Counter()  # ended nodes by state
        self.remaining = 0
        self.batch_left = pace.batch if pace.batch else -1  # -1: no batches
        self.batch_open = 0  # nodes of the current batch taken from the queue, not ended
        self.batch_at: float | None = None  # when the next batch opens (batch_sleep)
        self.stop_by: str | None = None
        self.force = False
        self.halted = False  # fail-fast: a node failed, nothing new starts
        self.aborted: str | None = None  # why the job was cut short (its timeout)
        self.timeout_at: float | None = None
        self.ttl_at: float | None = None  # offline nodes may wait until then
        self.resumed_wait = False  # ttl_at is the grace after a restart

    @property
    def done(self) -> bool:
        return self.state in ("stopped", "finished", "failed")


class JobCore:
    """Every running job's state; see the module docstring for how it is driven."""

    def __init__(
        self, limits: Limits | None = None, *, connected: Iterable[str] = (), link_up: bool = True
    ) -> None:
        self.limits = limits or Limits()
        self._connected: set[str] = set(connected)
        self._jobs: dict[int, _Job] = {}  # unfinished jobs, oldest first: the order of work
        self._nodes: dict[str, _Node] = {}  # transaction id → a node not ended
        self._by_node: dict[str, set[_Node]] = {}  # certname → its sent/running/waiting nodes
        self._sent: dict[str, _Node] = {}  # envelope id → node, for broker bounces
        self._ended: OrderedDict[str, _Node] = OrderedDict()
        self._running = 0  # nodes sent or running, all jobs
        self._timers: list[tuple[float, int, _Node | _Job]] = []
        self._seq = itertools.count()
        self._out: list[Outgoing] = []
        self._changes = Changes()
        self._strays: list[tuple[str, str, dict[str, Any]]] = []
        # Whether the broker's inventory is known: until it is, nothing starts (a node
        # not yet listed would look offline).
        self._link_up = link_up

    # -- what the driver takes out ------------------------------------------------------

    def sends(self) -> list[Outgoing]:
        out, self._out = self._out, []
        return out

    def changes(self) -> Changes:
        out, self._changes = self._changes, Changes()
        return out

    def strays(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Results ``(certname, transaction id, results)`` for transactions the core does
        not remember (a job that ended before a restart): the driver looks them up."""
        out, self._strays = self._strays, []
        return out

    def next_timer(self) -> float | None:
        """When :meth:`tick` should next be called (None: no timer is set)."""
        while self._timers:
            when, _, target = self._timers[0]
            if self._armed(target, when):
                return when
            heapq.heappop(self._timers)
        return None

    @property
    def running_count(self) -> int:
        return self._running

    def job_state(self, job_id: int) -> str | None:
        job = self._jobs.get(job_id)
        return job.state if job is not None else None

    # -- commands -----------------------------------------------------------------------

    def add_job(
        self,
        job_id: int,
        kind: JobKind,
        nodes: Sequence[tuple[str, str]],
        now: float,
        *,
        pace: Pace = Pace(),
        owner: str = "",
        unknown: Iterable[str] = (),
        after: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """A job just stored with ``nodes`` ``(certname, transaction id)``, all ``new``, in
        the order they are to run; ``unknown`` nodes never connected and fail at once.
        ``after``: certname → the certnames it runs after (names not in the job are
        ignored); a cycle in it is a :class:`ValueError`."""
        _check_acyclic(after or {}, {certname for certname, _ in nodes})
        job = self._new_job(job_id, kind, pace, owner, now)
        job.remaining = len(nodes)
        never = set(unknown)
        made = [_Node(job, certname, txid) for certname, txid in nodes]
        for node in made:
            self._nodes[node.txid] = node
        self._order(job, made, after or {}, {})
        for node in made:
            if node.certname in never:
                self._unhold(node)
                self._take(job, node, now)
                self._end(
                    node,
                    "failed",
                    now,
                    message=f"unknown node {node.certname}: it has never connected; "
                    "check the name or enroll the node",
                )
            elif node.phase == "queued":
                job.queue.append(node)
        self._arm_job(job)
        self._pump(now)
        if job.state == "new":
            self._set_job(job, "ready", now)

    def resume_job(
        self,
        job_id: int,
        kind: JobKind,
        nodes: Sequence[ResumedNode],
        now: float,
        *,
        state: str,
        created: float,
        started: float | None,
        ended: Mapping[str, int],
        pace: Pace = Pace(),
        owner: str = "",
        failures: Mapping[str, str] | None = None,
        after: Mapping[str, Collection[str]] | None = None,
        ended_nodes: Mapping[str, str] | None = None,
    ) -> None:
        """A job found unfinished after a restart, with its unfinished ``nodes`` and how
        many ended in each state; ``failures`` (certname → why) end errored at once.
        ``after`` is the job's run order as given to :meth:`add_job`; ``ended_nodes``
        (certname → final state) says how the nodes it names that already ended did: a
        node waiting for one that did not finish ends skipped at once."""
        unfinished = {n.certname for n in nodes}
        _check_acyclic(after or {}, unfinished)
        job = self._new_job(job_id, kind, pace, owner, created)
        job.state = state
        job.started = started
        job.counts.update({s: n for s, n in ended.items() if s in TERMINAL_NODE_STATES})
        job.remaining = len(nodes)
        if state == "stopping":
            job.stop_by = "a server restart"  # the stop was decided before it
        made = [_Node(job, n.certname, n.transaction_id) for n in nodes]
        for node in made:
            self._nodes[node.txid] = node
        # A node sent before the restart is under way: whatever it waited for, finished.
        waiting = [node for node, n in zip(made, nodes, strict=True) if n.state != "running"]
        doomed = self._order(job, waiting, after or {}, ended_nodes or {}, under_way=made)
        for node, stored in zip(made, nodes, strict=True):
            why = (failures or {}).get(stored.certname)
            if why is not None:
                self._unhold(node)
                self._take(job, node, now)
                self._end(node, "errored", now, message=why)
            elif stored.state == "running":
                # Sent before the restart: the agent answers a re-sent request from its
                # spool. Until it is back, it has the grace period.
                node.state, node.phase = "running", "running"
                node.started = stored.started if stored.started is not None else now
                job.active += 1
                self._running += 1
                job.batch_open += 1
                self._watch(node)
                if stored.certname in self._connected:
                    self._send_request(node, now)
                elif self._link_up:
                    self._lost(node, now)
                # else: the broker's inventory, once known, says who is away (see link())
                self._arm(node)
            elif node.phase == "queued":
                job.queue.append(node)
        for node, name, ended_as in doomed:
            if node.phase == "held":
                node.cause = f"{name} {ended_as}"
                self._end(node, "skipped", now, message=_after_failed(name, ended_as, None))
        if job.batch_left > 0:
            job.batch_left = max(0, job.batch_left - job.batch_open)
        if job.stop_by is not None:
            self._skip_unstarted(job, now, f"not started: the job was stopped by {job.stop_by}")
        self._arm_job(job)
        # Agents reconnect after a restart at their own pace: nodes not started yet wait
        # for them as long as a running node's agent may take to come back.
        grace_until = now + self.limits.reconnect_grace
        if job.ttl_at is None or job.ttl_at < grace_until:
            job.ttl_at = grace_until
            job.resumed_wait = True
            self._push(grace_until, job)
        if job.remaining == 0:
            self._finish(job, now)
        self._pump(now)
        if job.state == "new":
            self._set_job(job, "ready", now)

    def stop(self, job_id: int, now: float, *, by: str, force: bool = False) -> bool:
        """Stop a job: nothing new starts, nodes not started end ``skipped``; with
        ``force``, running nodes are killed and end ``errored``. False: not running here."""
        job = self._jobs.get(job_id)
        if job is None:
            return False
        if job.stop_by is not None and (job.force or not force):
            return True  # idempotent
        first = job.stop_by is None
        job.stop_by = job.stop_by or by
        job.force = job.force or force
        if first:
            self._event(
                job.id,
                "job_stopping",
                now,
                f"job {job.id} stopping: stopped by {by}",
                {"by": by, "force": force},
            )
            self._skip_unstarted(job, now, f"not started: the job was stopped by {by}")
        if force:
            self._kill_running(job, now, f"stopped by {by}")
        if job.remaining == 0:
            self._finish(job, now)
        elif not job.done and job.state != "stopping":
            self._set_job(job, "stopping", now)
        return True

    # -- what happens ---------------------------------------------------------------------

    def link(self, up: bool, now: float) -> None:
        """The broker connection is up (its inventory known) or down: nothing starts while
        it is down, and nodes waiting for it start once it is back."""
        self._link_up = up
        if up:  # the inventory is known: who was running and is not listed is away
            for node in list(self._nodes.values()):
                if node.phase in ("sent", "running") and node.certname not in self._connected:
                    self._lost(node, now)
        self._pump(now)

    def connected(self, certname: str, now: float) -> None:
        self._connected.add(certname)
        for node in list(self._by_node.get(certname, ())):
            if node.phase == "waiting":
                del node.job.waiting[certname]
                node.phase = "ready"
                node.job.ready_now.append(node)
            elif node.phase in ("sent", "running"):
                node.attempts = 0
                if node.give_up_at is not None:
                    node.give_up_at = None
                    self._write_node(node, now)
                    self._event(
                        node.job.id,
                        "node_reconnected",
                        now,
                        f"{certname} reconnected",
                        {"node": certname},
                        certname=certname,
                    )
                self._send_request(node, now)
                self._arm(node)
        self._pump(now)

    def disconnected(self, certname: str, now: float) -> None:
        self._connected.discard(certname)
        for node in list(self._by_node.get(certname, ())):
            if node.phase in ("sent", "running"):
                self._lost(node, now)
            elif node.phase == "ready":  # gone again before its turn came
                node.job.ready_now.remove(node)
                node.phase = "waiting"
                node.job.waiting[certname] = node

    def bounced(self, envelope_id: str, now: float) -> None:
        """The broker could not deliver the message sent with this envelope id."""
        node = self._sent.pop(envelope_id, None)
        if node is not None and node.phase in ("sent", "running"):
            self._lost(node, now)

    def receive(self, sender: str, message: msg.Message, now: float) -> None:
        """A PXP message from ``sender``'s agent (``sender`` is the broker-checked certname)."""
        txid = getattr(message, "transaction_id", None)
        if txid is None:
            return
        node = self._nodes.get(txid)
        if node is not None and node.certname != sender:
            return  # an agent answering for another's transaction: not believed
        if (
            node is not None
            and node.phase in ("queued", "held")
            and not isinstance(message, msg.TaskOutput)
        ):
            # Sent before a restart, queued again since: it is under way after all.
            if node.phase == "queued":
                node.job.queue.remove(node)
            self._unhold(node)
            self._take(node.job, node, now)
            self._under_way(node)
        if isinstance(message, msg.ProvisionalResponse):
            if node is not None and node.phase == "sent":
                node.phase = node.state = "running"
                node.started = now
                self._write_node(node, now)
                self._event(
                    node.job.id,
                    "node_running",
                    now,
                    f"{sender}: running",
                    {"node": sender, "transaction_id": txid},
                    certname=sender,
                )
                self._arm(node)
        elif isinstance(message, msg.NonBlockingResponse):
            if node is not None:
                state = node.job.kind.node_state(message.results)
                self._end(node, state, now, result=message.results)
                self._changes.acks.append((sender, txid))
            elif self._late(sender, txid, message.results, now):
                self._changes.acks.append((sender, txid))  # a duplicate too, once stored
        elif isinstance(message, msg.RpcError):
            if node is not None:
                self._end(node, "errored", now, message=message.description)
            # an error for a stop request: the run ends by itself or by its deadline
        elif (
            isinstance(message, msg.TaskOutput)
            and node is not None
            and node.phase in ("sent", "running")
        ):
            self._output(node, message, now)
        self._pump(now)

    def tick(self, now: float) -> None:
        """Act on every timer due by ``now``."""
        while self._timers and self._timers[0][0] <= now:
            when, _, target = heapq.heappop(self._timers)
            if not self._armed(target, when):
                continue
            if isinstance(target, _Node):
                target.due = None
                self._node_due(target, now)
            else:
                self._job_due(target, now)
        self._pump(now)

    # -- starting nodes -------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        """Start what the pace rules allow, oldest job first."""
        if not self._link_up:
            return
        for job in list(self._jobs.values()):
            if self._running >= self.limits.max_running:
                return
            if job.stop_by is None and not job.halted:
                self._start_nodes(job, now)

    def _start_nodes(self, job: _Job, now: float) -> None:
        limit = job.pace.concurrency
        while job.ready_now or job.queue:
            if self._running >= self.limits.max_running:
                return
            if limit is not None and job.active >= limit:
                return
            if job.ready_now:
                self._send_new(job.ready_now.popleft(), now)
                continue
            if job.batch_left == 0:
                if job.batch_open or job.batch_at is not None:
                    return  # the current batch is not over, or the next one is sleeping
                if job.pace.batch_sleep > 0:
                    job.batch_at = now + job.pace.batch_sleep
                    self._push(job.batch_at, job)
                    return
                job.batch_left = job.pace.batch or -1
            node = job.queue.popleft()
            self._take(job, node, now)
            if node.certname in self._connected:
                self._send_new(node, now)
            elif job.ttl_at is not None and now < job.ttl_at:
                node.phase = "waiting"
                job.waiting[node.certname] = node
                self._watch(node)
            else:
                self._end(
                    node,
                    "failed",
                    now,
                    message=f"node {node.certname} is not connected to the broker",
                )

    def _take(self, job: _Job, node: _Node, now: float) -> None:
        """A node leaves the job's queue (it starts, waits or ends at once)."""
        node.phase = "taken"
        if job.batch_left > 0:
            job.batch_left -= 1
        job.batch_open += 1
        if job.state in ("new", "ready"):
            job.started = job.started or now
            self._set_job(job, "running", now)
            self._arm_job(job)

    def _send_new(self, node: _Node, now: float) -> None:
        request = node.job.kind.request(node.certname)
        if isinstance(request, str):
            self._end(node, "failed", now, message=request)
            return
        self._under_way(node)
        self._send_request(node, now, request)
        self._arm(node)

    def _under_way(self, node: _Node) -> None:
        node.phase = "sent"
        node.job.active += 1
        self._running += 1
        self._watch(node)

    def _send_request(self, node: _Node, now: float, params: dict[str, Any] | None = None) -> None:
        kind = node.job.kind
        if params is None:  # a re-send: the request is built again, not kept per node
            built = kind.request(node.certname)
            params = built if isinstance(built, dict) else {}
        request = msg.NonBlockingRequest(
            transaction_id=node.txid, module=kind.module, action=kind.action, params=params
        )
        if node.sent_id is not None:
            self._sent.pop(node.sent_id, None)
        node.sent_id = pcp.new_id()
        node.sent_at = now
        node.attempts += 1
        self._sent[node.sent_id] = node
        self._out.append(Outgoing(node.sent_id, node.certname, request))

    # -- ending nodes ---------------------------------------------------------------------

    def _end(
        self,
        node: _Node,
        state: str,
        now: float,
        *,
        result: dict[str, Any] | None = None,
        message: str | None = None,
        cascade: bool = True,
    ) -> None:
        """A node's final state (once: a node that ended is out of every table). With
        ``cascade``, the nodes that run after it are released or skipped."""
        job = node.job
        self._nodes.pop(node.txid, None)
        self._unhold(node)
        if node.sent_id is not None:
            self._sent.pop(node.sent_id, None)
        self._unwatch(node)
        if node.phase in ("sent", "running"):
            job.active -= 1
            self._running -= 1
        if node.phase not in ("queued", "held"):
            job.batch_open -= 1
        node.phase = "ended"
        node.state = state
        node.give_up_at = None
        node.due = None
        self._remember(node)
        self._write_node(node, now, result=result, message=message, final=True)
        detail: dict[str, Any] = {"node": node.certname, "transaction_id": node.txid}
        if message:
            detail["message"] = message
        if result is not None:
            detail["result"] = result  # as PE's events do: a watcher needs nothing else
        self._event(
            job.id,
            NODE_EVENTS[state],
            now,
            message or f"{node.certname}: {state}",
            detail,
            certname=node.certname,
        )
        job.counts[state] += 1
        job.remaining -= 1
        if cascade and node.dependants:
            self._release(node, now)
        if (
            state in ("failed", "errored")
            and job.pace.fail_fast
            and not job.halted
            and job.stop_by is None
        ):
            job.halted = True
            self._skip_unstarted(
                job, now, f"not started: node {node.certname} {state} and the job is fail-fast"
            )
        if job.remaining == 0:
            self._finish(job, now)

    def _skip_unstarted(self, job: _Job, now: float, why: str) -> None:
        # Held nodes wait only for nodes of their own job: all of them end here, so
        # there is nothing to cascade, and each says the one reason.
        for node in [*job.queue, *job.waiting.values(), *job.ready_now, *job.held.values()]:
            self._end(node, "skipped", now, message=why, cascade=False)
        job.queue.clear()
        job.waiting.clear()
        job.ready_now.clear()
        job.held.clear()

    # -- run order ------------------------------------------------------------------------

    def _order(
        self,
        job: _Job,
        nodes: Sequence[_Node],
        after: Mapping[str, Collection[str]],
        ended: Mapping[str, str],
        *,
        under_way: Sequence[_Node] = (),
    ) -> list[tuple[_Node, str, str]]:
        """Hold each of ``nodes`` that runs after another node of the job not ended yet
        (of ``nodes`` or ``under_way``). Returns those waiting for a node that ``ended``
        other than finished, with its name and state: they end skipped."""
        by_name = {n.certname: n for n in (*nodes, *under_way)}
        doomed: list[tuple[_Node, str, str]] = []
        for node in nodes:
            failed_before = None
            for name in dict.fromkeys(after.get(node.certname, ())):
                before = by_name.get(name)
                if before is not None and before is not node:
                    node.waits += 1
                    before.dependants.append(node)
                elif before is None and name in ended and ended[name] != "finished":
                    failed_before = failed_before or (name, ended[name])
            if failed_before is not None:
                doomed.append((node, *failed_before))
            if node.waits or failed_before is not None:
                node.phase = "held"
                job.held[node.txid] = node
        return doomed

    def _release(self, first: _Node, now: float) -> None:
        """``first`` ended: the nodes that wait for it go on waiting for the others, join
        the queue, or end skipped when it did not finish (and those that wait for them).
        A work list, not recursion: a chain may be as long as the job."""
        ended = [first]
        while ended:
            node = ended.pop()
            dependants, node.dependants = node.dependants, []
            for waiting in dependants:
                if waiting.phase != "held":
                    continue  # it ended, or was under way after a restart
                if node.state == "finished":
                    waiting.waits -= 1
                    if waiting.waits == 0:
                        self._unhold(waiting)
                        waiting.job.queue.append(waiting)
                    continue
                waiting.cause = node.cause or f"{node.certname} {node.state}"
                message = _after_failed(node.certname, node.state, node.cause)
                self._end(waiting, "skipped", now, message=message, cascade=False)
                ended.append(waiting)

    @staticmethod
    def _unhold(node: _Node) -> None:
        """Out of its job's held nodes, into the queue's phase (for the caller to place)."""
        if node.phase == "held":
            del node.job.held[node.txid]
            node.phase = "queued"

    def _kill_running(self, job: _Job, now: float, why: str) -> None:
        kind = job.kind
        for node in [
            n for n in self._nodes.values() if n.job is job and n.phase not in ("queued", "held")
        ]:
            running = node.phase in ("sent", "running") and node.certname in self._connected
            if running and kind.stop_action is not None:
                kill = msg.BlockingRequest(
                    transaction_id=pcp.new_id(),
                    module=kind.module,
                    action=kind.stop_action,
                    params={"transaction_id": node.txid, "reason": why},
                )
                self._out.append(Outgoing(pcp.new_id(), node.certname, kill))
            node.stopped = True
            self._end(node, "errored", now, message=why)

    def _lost(self, node: _Node, now: float) -> None:
        """A sent or running node's agent is gone: give it the grace period."""
        if node.give_up_at is not None:
            return
        node.give_up_at = now + self.limits.reconnect_grace
        self._write_node(node, now)
        self._event(
            node.job.id,
            "node_disconnected",
            now,
            f"{node.certname} disconnected; given up at "
            f"{_stamp(node.give_up_at).isoformat(timespec='seconds')} unless it reconnects",
            {"node": node.certname, "give_up_at": _iso(node.give_up_at)},
            certname=node.certname,
        )
        self._arm(node)

    def _give_up(self, node: _Node, now: float, why: str) -> None:
        node.given_up = True
        self._end(node, "errored", now, message=why)

    def _late(self, sender: str, txid: str, results: dict[str, Any], now: float) -> bool:
        """A result for a node that already ended: recorded, never dropped. False: one
        the core does not remember, left to the driver (see :meth:`strays`)."""
        node = self._ended.get(txid)
        if node is None:
            self._strays.append((sender, txid, results))
            return False
        if node.certname != sender or not (node.given_up or node.stopped):
            return True  # a duplicate of what is stored
        job = node.job
        if node.stopped:  # killed on request: the result is kept, the state stays
            self._write_node(node, now, result=results, final=True)
            return True
        node.given_up = False
        state = job.kind.node_state(results)
        job.counts[node.state] -= 1
        job.counts[state] += 1
        node.state = state
        note = "the result arrived after the node was given up on"
        self._write_node(node, now, result=results, message=note, final=True)
        self._event(
            job.id,
            NODE_EVENTS[state],
            now,
            f"{sender}: {state} ({note})",
            {"node": sender, "transaction_id": txid, "result": results, "late": True},
            certname=sender,
        )
        if job.done and not job.aborted and job.stop_by is None:
            outcome = self._outcome(job)
            if outcome != job.state:
                job.state = outcome
                self._changes.jobs.append(JobUpdate(job.id, outcome))
        return True

    def _output(self, node: _Node, chunk: msg.TaskOutput, now: float) -> None:
        if node.output >= OUTPUT_KEPT:
            return
        data = chunk.data[: OUTPUT_KEPT - node.output]
        node.output += len(data)
        detail: dict[str, Any] = {
            "node": node.certname,
            "stream": chunk.stream,
            "data": data,
            "offset": chunk.offset,
        }
        if node.output >= OUTPUT_KEPT:
            detail["truncated"] = True  # live output stops here; the result has it all
        self._event(
            node.job.id,
            "node_output",
            now,
            f"{node.certname}: {chunk.stream}",
            detail,
            certname=node.certname,
        )

    # -- jobs -------------------------------------------------------------------------------

    def _new_job(self, job_id: int, kind: JobKind, pace: Pace, owner: str, now: float) -> _Job:
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} is already running")
        job = _Job(job_id, kind, pace, owner, now)
        self._jobs[job_id] = job
        return job

    def _finish(self, job: _Job, now: float) -> None:
        if job.done:
            return
        outcome = self._outcome(job)
        self._jobs.pop(job.id, None)
        self._set_job(job, outcome, now)
        self._event(job.id, "job_finished", now, f"job {job.id} {outcome}", {"state": outcome})
        self._changes.ended_jobs.append(job.id)

    @staticmethod
    def _outcome(job: _Job) -> str:
        if job.aborted:
            return "failed"
        if job.stop_by is not None:
            return "stopped"
        if job.counts["failed"] or job.counts["errored"]:
            return "failed"
        return "finished"

    def _set_job(self, job: _Job, state: str, now: float) -> None:
        job.state = state
        at = _stamp(now)
        ended = state in ("stopped", "finished", "failed")
        self._changes.jobs.append(
            JobUpdate(
                job.id,
                state,
                started_at=at if state == "running" else None,
                finished_at=at if ended else None,
            )
        )
        if state in ("ready", "running"):
            self._event(job.id, f"job_{state}", now, f"job {job.id} {state}", {})

    def _arm_job(self, job: _Job) -> None:
        if job.started is None:
            return
        pace = job.pace
        if pace.job_timeout is not None and job.timeout_at is None:
            job.timeout_at = job.started + pace.job_timeout
            self._push(job.timeout_at, job)
        if pace.offline_ttl is not None and job.ttl_at is None:
            job.ttl_at = job.started + pace.offline_ttl
            self._push(job.ttl_at, job)

    def _job_due(self, job: _Job, now: float) -> None:
        if job.timeout_at is not None and now >= job.timeout_at and not job.aborted:
            why = f"the job did not finish within its timeout of {_seconds(job.pace.job_timeout)}"
            job.aborted = why
            self._event(job.id, "job_aborted", now, f"job {job.id} aborted: {why}", {"reason": why})
            self._skip_unstarted(job, now, f"not started: {why}")
            self._kill_running(job, now, why)
            self._finish(job, now)
            return
        if job.ttl_at is not None and now >= job.ttl_at and job.waiting:
            if job.resumed_wait:
                why = f"within {_seconds(self.limits.reconnect_grace)} of a server restart"
            else:
                why = f"within the job's offline TTL of {_seconds(job.pace.offline_ttl)}"
            for node in list(job.waiting.values()):
                if job.waiting.pop(node.certname, None) is None:
                    continue  # skipped meanwhile (fail-fast)
                self._end(
                    node, "failed", now, message=f"node {node.certname} did not connect {why}"
                )
        if job.batch_at is not None and now >= job.batch_at:
            job.batch_at = None
            job.batch_left = job.pace.batch or -1

    # -- nodes' deadlines -------------------------------------------------------------------

    def _deadline(self, node: _Node) -> float | None:
        if node.phase not in ("sent", "running"):
            return None
        if node.phase == "sent":
            due = node.sent_at + self.limits.answer_timeout
        else:
            timeout = node.job.pace.node_timeout or self.limits.default_node_timeout
            due = (node.started or node.sent_at) + timeout + self.limits.answer_timeout
        return due if node.give_up_at is None else min(due, node.give_up_at)

    def _arm(self, node: _Node) -> None:
        due = self._deadline(node)
        node.due = due
        if due is not None:
            self._push(due, node)

    def _node_due(self, node: _Node, now: float) -> None:
        name = node.certname
        if node.give_up_at is not None and now >= node.give_up_at:
            self._give_up(
                node,
                now,
                f"node {name} disconnected from the broker and did not come back within "
                f"{_seconds(self.limits.reconnect_grace)}",
            )
        elif node.phase == "sent":
            if node.attempts < 2 and name in self._connected:
                self._send_request(node, now)
                self._arm(node)
            else:
                self._give_up(
                    node,
                    now,
                    f"the agent of {name} did not accept the request within "
                    f"{_seconds(self.limits.answer_timeout)} (sent {node.attempts} times)",
                )
        else:
            timeout = node.job.pace.node_timeout or self.limits.default_node_timeout
            self._give_up(
                node,
                now,
                f"the agent of {name} reported no result within "
                f"{_seconds(timeout + self.limits.answer_timeout)} of starting the run",
            )

    # -- bookkeeping ------------------------------------------------------------------------

    def _push(self, when: float, target: _Node | _Job) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), target))

    @staticmethod
    def _armed(target: _Node | _Job, when: float) -> bool:
        if isinstance(target, _Node):
            return target.due == when and target.phase in ("sent", "running")
        if target.done:
            return False
        return when in (target.timeout_at, target.ttl_at, target.batch_at)

    def _watch(self, node: _Node) -> None:
        self._by_node.setdefault(node.certname, set()).add(node)

    def _unwatch(self, node: _Node) -> None:
        mine = self._by_node.get(node.certname)
        if mine is not None:
            mine.discard(node)
            if not mine:
                del self._by_node[node.certname]

    def _remember(self, node: _Node) -> None:
        self._ended[node.txid] = node
        while len(self._ended) > _ENDED_KEPT:
            self._ended.popitem(last=False)

    def _write_node(
        self,
        node: _Node,
        now: float,
        *,
        result: dict[str, Any] | None = None,
        message: str | None = None,
        final: bool = False,
    ) -> None:
        at = _stamp(now)
        self._changes.nodes.append(
            NodeUpdate(
                node.txid,
                node.state,
                started_at=_stamp(node.started) if node.started is not None else None,
                finished_at=at if final else None,
                result=result,
                message=message,
                give_up_at=_stamp(node.give_up_at) if node.give_up_at is not None else None,
            )
        )

    def _event(
        self,
        job_id: int,
        type: str,
        now: float,
        message: str,
        details: dict[str, Any],
        *,
        certname: str | None = None,
    ) -> None:
        self._changes.events.append(
            NewEvent(job_id, type, _stamp(now), certname=certname, message=message, details=details)
        )


def _after_failed(name: str, state: str, cause: str | None) -> str:
    """Why a node did not start: the node it runs after did not finish."""
    if state == "skipped":
        why = f"was skipped because {cause}" if cause else "was skipped"
        return f"not started: it runs after {name}, which {why}"
    return f"not started: it runs after {name}, which {state}"


def _check_acyclic(after: Mapping[str, Collection[str]], names: Collection[str]) -> None:
    """A :class:`ValueError` naming a cycle of ``after`` among ``names``, if it has one
    (Kahn's algorithm: O(nodes + edges))."""
    edges: dict[str, list[str]] = {}
    waits: Counter[str] = Counter()
    for name, before in after.items():
        if isinstance(before, str):  # a str is a collection too: of letters
            raise TypeError(f"the run order of {name} must be a collection of certnames")
        if name not in names:
            continue
        for prerequisite in dict.fromkeys(before):
            if prerequisite in names and prerequisite != name:
                edges.setdefault(prerequisite, []).append(name)
                waits[name] += 1
    free = [n for n in names if not waits[n]]
    placed = 0
    while free:
        name = free.pop()
        placed += 1
        for dependant in edges.get(name, ()):
            waits[dependant] -= 1
            if not waits[dependant]:
                free.append(dependant)
    if placed < len(names):
        stuck = sorted(n for n in names if waits[n] > 0)
        shown = ", ".join(stuck[:10]) + (" ..." if len(stuck) > 10 else "")
        raise ValueError(f"the run order has a cycle among {shown}")


def _iso(when: float) -> str:
    return _stamp(when).isoformat().replace("+00:00", "Z")


def _seconds(value: float | None) -> str:
    seconds = int(value or 0)
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"
