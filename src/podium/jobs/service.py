"""The job service: drives the pure :class:`~podium.jobs.core.JobCore` with asyncio.

It turns API commands into core commands (loading the task, storing the new job), feeds
the core every message and connection change from the :class:`ControllerLink` and the
time (one timer, for the core's next deadline), sends what the core says to send, and
writes what it says to write: one transaction per flush, acknowledgements sent only once
that is stored. After a restart it rebuilds the core's jobs from the database; agents
answer a re-sent transaction from their spool and never run it twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from podium.errors import PodiumError, StoreError, Unavailable, ValidationError
from podium.jobs.core import Changes, JobCore, JobKind, Limits, ResumedNode
from podium.jobs.kinds import (
    PACE_OPTIONS,
    PuppetRun,
    TaskRun,
    Unrunnable,
    pace_of,
    puppet_flags,
)
from podium.jobs.link import ControllerLink
from podium.jobs.payloads import INPUT_PURPOSE, SEALED_INPUT, redacted, storable
from podium.jobs.states import TERMINAL_NODE_STATES
from podium.pki.sealing import Sealer
from podium.protocol import envelope as pcp
from podium.protocol import messages as msg
from podium.protocol.names import validate_certname
from podium.puppet.apps import applications_of, run_order
from podium.puppet.pack import Packer
from podium.store import JobRecord, NodeUpdate, Store
from podium.tasks.codedir import CodeDir
from podium.tasks.metadata import Task
from podium.tasks.params import validate_params

log = logging.getLogger(__name__)

_MAX_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Answer:
    """A node's answer to :meth:`JobService.ask`: its results, or why there are none."""

    results: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0  # from the request to the answer


# Stores (certname, facts, when) items and each agent's features, in one transaction.
FactsSink = Callable[
    [Sequence[tuple[str, dict[str, Any], datetime]], Mapping[str, Sequence[str] | None]], None
]
# Each certname's classification (environment, classes, parameters) or why it has none.
Classifier = Callable[[Sequence[str]], Mapping[str, Mapping[str, Any] | str]]
# Stores Puppet run reports (store_report wire format) in the inventory.
ReportsSink = Callable[[Sequence[dict[str, Any]]], None]
DEPLOY_OPTIONS = (
    "mode",
    "noop",
    "no_noop",
    "debug",
    "trace",
    "evaltrace",
    "enforce_environment",
)


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
        packer: Packer | None = None,
        classify: Classifier | None = None,
        record_reports: ReportsSink | None = None,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
        # Timeouts
        flush_interval: float = 0.005,
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
        self.packer = packer
        self._classify = classify
        self._record_reports = record_reports
        # Puppet runs whose reports are still to come: transaction id → job id
        self._reporting: dict[str, int] = {}
        self._reports: list[dict[str, Any]] = []  # reports to store at the next flush
        self.core = JobCore(limits, link_up=False)
        self.clock = clock
        self.flush_interval = flush_interval
        self.stop_timeout = stop_timeout
        self.max_message_bytes = max_message_bytes
        self._changes = Changes()
        # certname → (facts, when, the agent's features): written apart from job changes
        self._facts: dict[str, tuple[dict[str, Any], datetime, list[str] | None]] = {}
        self._features: dict[str, list[str] | None] = {}  # certname → its agent's features
        self._flusher: asyncio.Task[None] | None = None
        self._lookups: set[asyncio.Future[None]] = set()  # strays being looked up
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._finished: dict[int, asyncio.Event] = {}
        # job → the streams' wake-ups, set when new events of it are stored
        self._stored: dict[int, set[asyncio.Event]] = {}
        # Round trips under way: transaction id → (certname, answer)
        self._probes: dict[str, tuple[str, asyncio.Future[tuple[msg.Message, float]]]] = {}
        link.on_message = self._on_message
        link.on_change = self._on_change
        link.on_link = self._on_link

    @property
    def limits(self) -> Limits:
        return self.core.limits

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
        if self._timer is not None:
            self._timer.cancel()
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
        if self._changes or self._facts or self._reports:
            self._flusher = asyncio.ensure_future(self._flush_now())
            await asyncio.shield(self._flusher)

    async def wait(self, job_id: int) -> None:
        """Until the job is finished and stored (for in-process callers)."""
        event = self._finished.get(job_id)
        if event is not None:
            await event.wait()

    def events_stored(self, job_id: int) -> asyncio.Event:
        """A wake-up set once new events of the job are stored (for a stream to wait on;
        take a fresh one after each, and :meth:`forget` the last)."""
        stored = asyncio.Event()
        self._stored.setdefault(job_id, set()).add(stored)
        return stored

    def forget(self, job_id: int, stored: asyncio.Event) -> None:
        """A stream stopped waiting on ``stored``."""
        waiting = self._stored.get(job_id)
        if waiting is not None:
            waiting.discard(stored)
            if not waiting:
                del self._stored[job_id]

    # -- commands ---------------------------------------------------------------------

    async def run_task(
        self,
        *,
        task: str,
        params: dict[str, Any],
        nodes: Sequence[str],
        environment: str = "production",
        description: str = "",
        owner: str = "admin",
        noop: bool = False,
        scope: dict[str, Any] | None = None,
        pace: Mapping[str, Any] | None = None,
    ) -> int:
        """Start a task job on ``nodes``, in that order; returns the job id. ``scope``:
        what the nodes were resolved from, as the job shows it (default: the node list);
        ``pace``: the options of :data:`~podium.jobs.kinds.PACE_OPTIONS` that are set."""
        self._check_link()
        paced = _checked_pace(pace or {})
        found = await asyncio.to_thread(self.codedir.task, environment, task)
        checked = validate_params(found, params)
        if noop and not found.supports_noop:
            raise ValidationError(
                f"task {found.name} does not support noop (its metadata has no "
                "'supports_noop': true); run it without noop",
                kind="puppetlabs.orchestrator/task-not-noop",
                details={"task": found.name},
            )
        certnames = _certnames(nodes)
        kind = self._task_run(found, checked, noop=noop, timeout=paced.get("timeout"))
        kind.check_size(self.max_message_bytes)
        options: dict[str, Any] = {
            "task": found.name,
            "params": redacted(found, checked),
            "noop": noop,
            "environment": environment,
            "scope": scope or {"nodes": certnames},
            **paced,
            # What the nodes get, kept to resume the job after a restart; never shown.
            SEALED_INPUT: self.sealer.seal(checked, purpose=INPUT_PURPOSE),
        }
        return await self._create(
            "task", kind, certnames, options, owner=owner, description=description
        )

    def _check_link(self) -> None:
        if not self.link.ready.is_set():
            raise Unavailable(
                "the server has no connection to a broker right now, so no node can be "
                "reached; check the broker and the server's log, then try again"
            )

    async def _create(
        self,
        type: str,
        kind: JobKind,
        certnames: list[str],
        options: dict[str, Any],
        *,
        owner: str,
        description: str,
        after: Mapping[str, Sequence[str]] | None = None,
    ) -> int:
        """Store a new job and hand it to the core; ``after``: the nodes each waits for."""
        known = await asyncio.to_thread(self.store.known_certnames, certnames)
        # Connected agents said what they run when they connected; ask the database only
        # about those that did before this server started.
        unheard = [c for c in certnames if c not in self._features]
        if unheard:
            stored = await asyncio.to_thread(self.store.node_features, unheard)
            for certname, features in stored.items():
                self._features.setdefault(certname, features)
        txids = [(c, uuid.uuid4().hex) for c in certnames]
        now = self.clock()
        job_id = await asyncio.to_thread(
            self.store.create_job,
            type=type,
            owner=owner,
            environment=options["environment"],
            description=description,
            options=options,
            nodes=txids,
            at=datetime.fromtimestamp(now, UTC),
        )
        self._finished[job_id] = asyncio.Event()
        if isinstance(kind, PuppetRun):
            self._reporting.update((txid, job_id) for _, txid in txids)
        self.core.add_job(
            job_id,
            kind,
            txids,
            self.clock(),
            pace=pace_of(options, len(certnames)),
            owner=owner,
            # With an offline TTL, a node not seen yet may be one being set up: it waits.
            unknown=(
                []
                if options.get("offline_ttl")
                else [c for c in certnames if c not in known and c not in self.link.connected]
            ),
            after=after,
        )
        self._drive()
        return job_id

    async def run_puppet(
        self,
        *,
        nodes: Sequence[str],
        environment: str = "production",
        mode: str = "apply",
        noop: bool = False,
        no_noop: bool = False,
        debug: bool = False,
        trace: bool = False,
        evaltrace: bool = False,
        enforce_environment: bool = True,
        description: str = "",
        owner: str = "admin",
        scope: dict[str, Any] | None = None,
        pace: Mapping[str, Any] | None = None,
    ) -> int:
        """Start a Puppet run (a ``deploy`` job) on ``nodes``; returns the job id."""
        self._check_link()
        paced = _checked_pace(pace or {})
        if mode not in ("apply", "agent"):
            raise ValidationError(f"mode is apply or agent, not {mode!r}")
        if noop and no_noop:
            raise ValidationError(
                "noop and no_noop exclude each other: give one, or neither to let each "
                "node keep its own setting"
            )
        certnames = _certnames(nodes)
        options: dict[str, Any] = {
            "environment": environment,
            "mode": mode,
            "noop": noop,
            "no_noop": no_noop,
            "debug": debug,
            "trace": trace,
            "evaltrace": evaltrace,
            "enforce_environment": enforce_environment,
            "scope": scope or {"nodes": certnames},
            **paced,
        }
        kind = await self._puppet_run(options, certnames)
        # The run order of the environment's applications (dependency-cycle: 400).
        found = await asyncio.to_thread(applications_of, self.codedir, environment)
        after = {c: list(a) for c, a in run_order(found, certnames).after.items() if a}
        if after:
            options["after"] = after
        return await self._create(
            "deploy", kind, certnames, options, owner=owner, description=description, after=after
        )

    async def _puppet_run(self, options: Mapping[str, Any], certnames: Sequence[str]) -> PuppetRun:
        """The kind of a deploy job: its environments packed and its nodes classified
        (apply mode), as they are now."""
        environment = options["environment"]
        mode = options.get("mode", "apply")
        enforce = bool(options.get("enforce_environment", True))
        packs: dict[str, dict[str, Any]] = {}
        classified: Mapping[str, Mapping[str, Any] | str] = {}
        if mode == "apply":
            if self.packer is None or self._classify is None:
                raise Unavailable("this server cannot pack environments for apply mode")
            packer = self.packer
            classified = await asyncio.to_thread(self._classify, certnames)
            wanted = {environment}
            if not enforce:
                wanted |= {
                    str(c.get("environment") or environment)
                    for c in classified.values()
                    if not isinstance(c, str)
                }
            for env in sorted(wanted):
                try:
                    pack = await asyncio.to_thread(packer.pack, env)
                except PodiumError:
                    if env == environment:
                        raise  # the job's own environment: say so before the job exists
                    continue  # a node's own one: that node fails, saying so
                packs[env] = pack.spec()
        return PuppetRun(
            mode=mode,
            environment=environment,
            flags=puppet_flags(options),
            enforce_environment=enforce,
            packs=packs,
            classified=classified,
            timeout=options.get("timeout") or self.limits.default_node_timeout,
        )

    async def stop_job(self, job_id: int, *, by: str, force: bool = False) -> JobRecord:
        """Stop a job (idempotent); returns it as stored once the stop is."""
        if not self.core.stop(job_id, self.clock(), by=by, force=force):
            # not running here: it has ended (or is unknown: 404); nothing to write
            return await asyncio.to_thread(self.store.get_job, job_id)
        self._drive()
        await self.flush()
        return await asyncio.to_thread(self.store.get_job, job_id)

    async def rerun(
        self,
        job_id: int,
        *,
        owner: str,
        only_failed: bool = False,
        check: Callable[[str, list[str]], Awaitable[None]] | None = None,
    ) -> int:
        """A new job with the command and options of ``job_id``, on all its nodes or only
        on those that did not succeed; ``check(task, nodes)`` may refuse it first."""
        job = await asyncio.to_thread(self.store.get_job, job_id)
        if job.type not in ("task", "deploy"):
            raise ValidationError(
                f"job {job_id} is a {job.type} job; only task and deploy jobs run again"
            )
        states = ("failed", "errored", "skipped") if only_failed else None
        nodes: list[str] = []
        for state in states or (None,):
            found, _ = await asyncio.to_thread(self.store.job_nodes, job_id, state=state)
            nodes += [n.certname for n in found]
        if not nodes:
            raise ValidationError(
                f"job {job_id} has no failed, errored or skipped node to run again",
                kind="puppetlabs.orchestrator/empty-target",
            )
        options = job.options
        # In the first job's order where it was a node list (it decides who goes first).
        given = options.get("scope", {}).get("nodes") or []
        order = {c: i for i, c in enumerate(given) if isinstance(c, str)}
        nodes.sort(key=lambda c: (order.get(c, len(order)), c))
        if check is not None:
            await check(options.get("task", ""), nodes)
        scope = {"nodes": nodes} if only_failed else options.get("scope")
        pace = {k: options[k] for k in PACE_OPTIONS if k in options}
        if job.type == "deploy":
            return await self.run_puppet(
                nodes=nodes,
                environment=job.environment,
                description=job.description,
                owner=owner,
                scope=scope,
                pace=pace,
                **{k: options[k] for k in DEPLOY_OPTIONS if k in options},
            )
        return await self.run_task(
            task=options["task"],
            params=self._input(options),
            nodes=nodes,
            environment=job.environment,
            description=job.description,
            owner=owner,
            noop=bool(options.get("noop")),
            scope=scope,
            pace=pace,
        )

    async def round_trip(
        self, certnames: Sequence[str], *, wait: float = 5.0
    ) -> dict[str, float | str]:
        """Ask each node's agent at once for a status (PXP ``status``/``query``): the
        seconds each took to answer, or why it did not."""
        answers = await self.ask(certnames, "status", "query", None, wait=wait)
        return {c: a.seconds if a.error is None else a.error for c, a in answers.items()}

    async def ask(
        self,
        certnames: Sequence[str],
        module: str,
        action: str,
        params: dict[str, Any] | None,
        *,
        wait: float = 5.0,
    ) -> dict[str, Answer]:
        """Send each node's agent a blocking ``module``/``action`` request at once and
        collect the answers within ``wait`` seconds, in the order of ``certnames``.
        ``params`` None: ``{"transaction_id": <the request's own>}`` (``status``/``query``)."""
        loop = asyncio.get_running_loop()
        out: dict[str, Answer] = {}
        asked: dict[str, tuple[str, asyncio.Future[tuple[msg.Message, float]]]] = {}
        started = loop.time()
        for certname in certnames:
            if certname not in self.link.connected:
                out[certname] = Answer(error="not connected to the broker")
                continue
            txid = uuid.uuid4().hex
            self._probes[txid] = asked[txid] = (certname, loop.create_future())
            body = {"transaction_id": txid} if params is None else params
            request = msg.BlockingRequest(txid, module=module, action=action, params=body)
            self.link.send(self.link.make(request, pcp.make_uri(certname, "agent")))
        try:
            if asked:
                await asyncio.wait([f for _, f in asked.values()], timeout=wait)
        finally:
            for txid, (certname, answer) in asked.items():
                self._probes.pop(txid, None)
                if not answer.done():
                    answer.cancel()
                    out[certname] = Answer(error=f"no answer within {wait:g} s")
                    continue
                message, at = answer.result()
                if isinstance(message, msg.BlockingResponse):
                    results = storable(message.results)
                    out[certname] = Answer(results=results, seconds=at - started)
                else:
                    text = getattr(message, "description", "no description")
                    out[certname] = Answer(error=f"the agent refused: {text}")
        return {c: out[c] for c in certnames}

    def _task_run(
        self, task: Task, params: dict[str, Any], *, noop: bool, timeout: float | None
    ) -> TaskRun:
        return TaskRun(
            task,
            params,
            features=self._features.get,
            noop=noop,
            timeout=timeout or self.limits.default_node_timeout,
        )

    def _input(self, options: Mapping[str, Any]) -> dict[str, Any]:
        sealed = options.get(SEALED_INPUT)
        if sealed is None:
            params: dict[str, Any] = options.get("params", {})
            return params
        opened: dict[str, Any] = self.sealer.open(sealed, purpose=INPUT_PURPOSE)
        return opened

    # -- what the link brings ---------------------------------------------------------

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
                probe[1].set_result((message, asyncio.get_running_loop().time()))
            return
        if isinstance(message, msg.FactsUpdate):
            when = datetime.fromtimestamp(self.clock(), UTC)
            self._facts[sender] = (storable(message.facts), when, message.features)
            self._features[sender] = message.features
            self._flush_soon()
            return
        if isinstance(message, msg.Error):
            self.core.bounced(message.id or "", self.clock())
        elif isinstance(message, msg.NonBlockingResponse):
            results = storable(message.results)
            if self._reporting:
                results = self._take_report(sender, message.transaction_id, results)
            clean = msg.NonBlockingResponse(message.transaction_id, results)
            self.core.receive(sender, clean, self.clock())
        elif isinstance(message, msg.RpcError):
            text = message.description.replace("\x00", "\ufffd")
            self.core.receive(sender, msg.RpcError(message.transaction_id, text), self.clock())
        elif isinstance(message, msg.ProvisionalResponse | msg.TaskOutput):
            self.core.receive(sender, message, self.clock())
        else:
            return
        self._drive()

    def _take_report(self, sender: str, txid: str, results: dict[str, Any]) -> dict[str, Any]:
        """A Puppet run's results without its report, which goes to the inventory (with
        the job's id) at the next flush; the job keeps the summary."""
        report = results.get("report")
        job_id = self._reporting.get(txid)
        if job_id is None or not isinstance(report, dict):
            return results
        del self._reporting[txid]
        if self._record_reports is not None and report.get("certname") == sender:
            self._reports.append({**report, "job_id": str(job_id)})
            self._flush_soon()
        return {k: v for k, v in results.items() if k != "report"}

    def _on_change(self, certname: str, up: bool) -> None:
        if up:
            self.core.connected(certname, self.clock())
        else:
            self.core.disconnected(certname, self.clock())
        self._drive()

    def _on_link(self, up: bool) -> None:
        self.core.link(up, self.clock())
        self._drive()

    def _drive(self) -> None:
        """Send what the core says, queue what it writes, set its next timer."""
        sends = self.core.sends()
        while sends:
            for out in sends:
                env = self.link.make(out.message, pcp.make_uri(out.certname, "agent"), id=out.id)
                if not self.link.send(env):
                    self.core.bounced(out.id, self.clock())
            sends = self.core.sends()
        for stray in self.core.strays():
            looking = asyncio.ensure_future(self._stray(*stray))
            self._lookups.add(looking)
            looking.add_done_callback(self._lookups.discard)
        changes = self.core.changes()
        if changes:
            self._changes.extend(changes)
            self._flush_soon()
        self._set_timer(self.core.next_timer())

    def _set_timer(self, when: float | None) -> None:
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            delay = max(0.0, when - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.core.tick(self.clock())
        self._drive()

    # -- writing ----------------------------------------------------------------------

    def _flush_soon(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_interval)
        await self._flush_now()

    async def _flush_now(self) -> None:
        while self._changes or self._facts or self._reports:
            if self._reports and self._record_reports is not None:
                reports, self._reports = self._reports, []
                try:
                    await asyncio.to_thread(self._record_reports, reports)
                except PodiumError as exc:
                    log.error("could not store %d Puppet reports: %s", len(reports), exc.msg)
                except Exception:
                    log.exception("dropped Puppet reports that could not be stored")
            if self._facts:
                facts, self._facts = self._facts, {}
                try:
                    await asyncio.to_thread(self._write_facts, facts)
                except PodiumError as exc:
                    log.error("could not store facts (%s); agents send them again", exc.msg)
                except Exception:
                    log.exception("dropped facts that could not be stored")
            if not self._changes:
                continue
            changes, self._changes = self._changes, Changes()
            try:
                await asyncio.to_thread(
                    self.store.write_job_changes, changes.nodes, changes.events, changes.jobs
                )
            except StoreError as exc:  # the database is away: keep everything, try again
                log.error("could not store job updates (%s); retrying in 1 s", exc.msg)
                self._changes.prepend(changes)
                await asyncio.sleep(1.0)
                continue
            except Exception:
                # A bug, or a value the database refuses: retrying would wedge every later
                # update. Nothing in it was acknowledged, so agents will send it again.
                log.exception("dropped a batch of job updates that could not be stored")
                continue
            for certname, txid in changes.acks:
                ack = msg.ResultAck(transaction_id=txid)
                self.link.send(self.link.make(ack, pcp.make_uri(certname, "agent")))
            for job_id in {e.job_id for e in changes.events}:
                for stored in self._stored.pop(job_id, ()):
                    stored.set()
            for job_id in changes.ended_jobs:
                done = self._finished.pop(job_id, None)
                if done is not None:
                    done.set()

    async def _stray(self, certname: str, txid: str, results: dict[str, Any]) -> None:
        """A result the core does not remember: kept on its node's row if that has none
        (the job ended before a restart), then acknowledged so the agent may forget it."""
        try:
            row = await asyncio.to_thread(self.store.node_by_transaction, txid)
            if row is not None and row.certname == certname and row.result is None:
                late = NodeUpdate(
                    txid,
                    row.state,
                    result=results,
                    message="the result arrived after the job had ended",
                    finished_at=row.finished_at,
                )
                await asyncio.to_thread(self.store.write_job_changes, [late])
        except PodiumError as exc:
            log.error("could not store a late result of %s (%s)", certname, exc.msg)
            return
        ack = msg.ResultAck(transaction_id=txid)
        self.link.send(self.link.make(ack, pcp.make_uri(certname, "agent")))

    def _write_facts(
        self, facts: Mapping[str, tuple[dict[str, Any], datetime, list[str] | None]]
    ) -> None:
        self._record_facts(
            [(c, f, at) for c, (f, at, _) in facts.items()],
            {c: features for c, (_, _, features) in facts.items()},
        )

    # -- recovery ---------------------------------------------------------------------

    def _ended_nodes(self, job_id: int) -> dict[str, str]:
        """certname → final state of the job's nodes that have ended (blocking)."""
        ended: dict[str, str] = {}
        for state in TERMINAL_NODE_STATES:
            found, _ = self.store.job_nodes(job_id, state=state)
            ended.update((n.certname, n.state) for n in found)
        return ended

    async def _recover(self) -> None:
        jobs = await asyncio.to_thread(self.store.unfinished_jobs)
        for job in jobs:
            nodes = await asyncio.to_thread(self.store.unfinished_nodes, job.id)
            certnames = [n.certname for n in nodes]
            stored = await asyncio.to_thread(self.store.node_features, certnames)
            for certname, features in stored.items():
                self._features.setdefault(certname, features)
            failures: dict[str, str] = {}
            after: dict[str, list[str]] = job.options.get("after") or {}
            ended_nodes: dict[str, str] = {}
            if after:  # whether the nodes waited for finished decides who still runs
                ended_nodes = await asyncio.to_thread(self._ended_nodes, job.id)
            kind: JobKind
            try:
                if job.type == "deploy":
                    kind = await self._puppet_run(job.options, certnames)
                    self._reporting.update((n.transaction_id, job.id) for n in nodes)
                else:
                    task = await asyncio.to_thread(
                        self.codedir.task, job.environment, job.options["task"]
                    )
                    kind = self._task_run(
                        task,
                        self._input(job.options),
                        noop=bool(job.options.get("noop")),
                        timeout=job.options.get("timeout"),
                    )
            except PodiumError as exc:
                why = f"cannot resume after a restart: {exc.msg}"
                kind = Unrunnable(why)
                failures = dict.fromkeys(certnames, why)
            self._finished[job.id] = asyncio.Event()
            self.core.resume_job(
                job.id,
                kind,
                [
                    ResumedNode(
                        n.certname,
                        n.transaction_id,
                        n.state,
                        n.started_at.timestamp() if n.started_at else None,
                    )
                    for n in nodes
                ],
                self.clock(),
                state=job.state,
                created=job.created_at.timestamp(),
                started=job.started_at.timestamp() if job.started_at else None,
                ended=job.node_states,
                pace=pace_of(job.options, job.node_count),
                owner=job.owner,
                failures=failures,
                after=after,
                ended_nodes=ended_nodes,
            )
            log.info("resumed job %d with %d unfinished nodes", job.id, len(nodes))
        self._drive()


def _certnames(nodes: Sequence[str]) -> list[str]:
    certnames: list[str] = list(dict.fromkeys(validate_certname(n, "node") for n in nodes))
    if not certnames:
        raise ValidationError(
            "the job targets no nodes; give at least one node name",
            kind="puppetlabs.orchestrator/empty-target",
        )
    return certnames


def _checked_pace(pace: Mapping[str, Any]) -> dict[str, Any]:
    """The pace options that are set, checked (for callers other than the API, which
    checks them first)."""
    unknown = set(pace) - set(PACE_OPTIONS)
    if unknown:
        raise ValidationError(f"unknown job option(s): {', '.join(sorted(unknown))}")
    out = {k: v for k, v in pace.items() if v is not None and v is not False}
    for name in ("concurrency", "timeout", "job_timeout", "offline_ttl"):
        value = out.get(name)
        if value is not None and not (
            isinstance(value, int | float) and not isinstance(value, bool) and value >= 1
        ):
            raise ValidationError(f"{name} must be a number of at least 1, got {value!r}")
        if name != "concurrency" and value is not None and value > _MAX_SECONDS:
            raise ValidationError(f"{name} must be at most {_MAX_SECONDS} seconds (7 days)")
    batch = out.get("batch")
    if batch is not None:
        text = str(batch)
        percent = (
            text.endswith("%")
            and text[:-1].isascii()
            and text[:-1].isdigit()
            and 1 <= int(text[:-1]) <= 100
        )
        whole = isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1
        if not (percent or whole):
            raise ValidationError(
                f"batch must be a number of nodes (at least 1) or a percentage such as "
                f'"10%" (1% to 100%), got {batch!r}'
            )
    sleep = out.get("batch_sleep")
    if sleep is not None and not (isinstance(sleep, int | float) and 0 <= sleep <= 86400):
        raise ValidationError(f"batch_sleep must be 0 to 86400 seconds, got {sleep!r}")
    return out
