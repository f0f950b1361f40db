"""``task``/``run``: run a task in the Bolt/PE format; ``task``/``stop``: stop one.

``params``::

    task          "<module>::<name>", or "<module>" for its init task
    input         object: the task's parameters (never written to the spool)
    files         [{filename, uri: {path, params}, sha256, size_bytes}, ...]: the first
                  is the executable (a base name), the others extra files named
                  "<module>/<files|lib|scripts|tasks>/<path>"
    input_method  "stdin" | "environment" | "both" | "powershell" | null (both)
    noop          bool, optional
    timeout       seconds (a positive number), optional: the task is stopped then

Any other key is refused, so a request this agent cannot honour in full (a timeout it
would not know of) is never run in part. The files are laid out as Bolt does, under
``<transaction>/install`` (``_installdir``): the executable at
``<module>/tasks/<filename>``, each extra file at its ``filename``.

While the task runs, its output is streamed to the controller that asked for it
(:mod:`podium.agent.output`), when the agent is connected.

``task``/``stop`` ``params``::

    transaction_id  the task/run transaction to stop
    reason          string of at most 1000 characters, optional: given in the error

It sets the transaction's stop signal and answers ``{"stopped": true}`` at once, or
``{"stopped": false, "message": ...}`` when no such task is in hand; the task's own
final result then fails with a ``podium.tasks/task-stopped`` error. A task stopped
before it started (still downloading its files, or waiting for a place) is never run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import re
import shutil
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from podium.agent import taskrun
from podium.agent.actions import AgentState, ImmediateAction, Outcome, SpooledAction, StopSignal
from podium.agent.filecache import check_spec
from podium.agent.output import OUTPUT_INTERVAL, OUTPUT_LIMIT, OutputFollower, streamed
from podium.agent.results import TASK_ERROR, stopped_error
from podium.agent.spool import TransactionRecord
from podium.errors import PodiumError, ProtocolError, ValidationError
from podium.protocol.names import validate_transaction_id

T = TypeVar("T")
log = logging.getLogger(__name__)

_TASK_NAME: Final = re.compile(r"\A([a-z][a-z0-9_]*)(?:::[a-z][a-z0-9_]*)?\Z")
_MODULE_NAME: Final = re.compile(r"\A[a-z][a-z0-9_]*\Z")
# The module folders a task's extra files may come from (Bolt's rule).
MOUNTS: Final = ("files", "lib", "scripts", "tasks")
INPUT_METHODS: Final = ("stdin", "environment", "both", "powershell")
_PARAMS: Final = frozenset({"task", "input", "files", "input_method", "noop", "timeout"})
_NOT_STORED: Final = "input"  # may hold passwords
_STOP_PARAMS: Final = frozenset({"transaction_id", "reason"})
MAX_STOP_REASON: Final = 1000


@dataclass(frozen=True)
class TaskRequest:
    """A checked ``task``/``run`` request."""

    task: str
    input: dict[str, Any]
    files: tuple[dict[str, Any], ...]
    input_method: str | None
    noop: bool
    timeout: float | None

    @property
    def module(self) -> str:
        return self.task.partition("::")[0]


def parse_request(params: dict[str, Any]) -> TaskRequest:
    """The request in ``params``; :class:`ProtocolError` names what is wrong."""
    extra = params.keys() - _PARAMS
    if extra:
        raise _invalid(
            f"unknown param(s) {', '.join(sorted(extra))}; it takes {', '.join(sorted(_PARAMS))}"
        )
    task = params.get("task")
    if not isinstance(task, str) or not _TASK_NAME.match(task):
        raise _invalid(f"'task' must be a task name like 'mymodule::mytask', not {task!r}")
    task_input = params.get("input")
    if task_input is None:
        task_input = {}
    if not isinstance(task_input, dict):
        raise _invalid("'input' must be an object")
    files = params.get("files")
    if not isinstance(files, list) or not files:
        raise _invalid("'files' must be a non-empty list, the executable first")
    for spec in files:
        try:
            check_spec(spec)
        except ValidationError as exc:
            raise _invalid(exc.msg) from exc
    if "/" in files[0]["filename"]:
        raise _invalid(f"the executable's filename must be a base name: {files[0]['filename']}")
    seen = set()
    for spec in files[1:]:
        name = spec["filename"]
        parts = name.split("/")
        if len(parts) < 3 or not _MODULE_NAME.match(parts[0]) or parts[1] not in MOUNTS:
            raise _invalid(
                f"extra file {name!r} must be named <module>/<{'|'.join(MOUNTS)}>/<path>"
            )
        if name in seen:
            raise _invalid(f"extra file {name!r} is listed twice")
        seen.add(name)
    input_method = params.get("input_method")
    if input_method is not None and input_method not in INPUT_METHODS:
        raise _invalid(
            f"unknown input_method {input_method!r}: use {', '.join(INPUT_METHODS)} or null"
        )
    noop = params.get("noop", False)
    if not isinstance(noop, bool):
        raise _invalid("'noop' must be true or false")
    timeout = params.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise _invalid(f"'timeout' must be a positive number of seconds, not {timeout!r}")
    return TaskRequest(
        task=task,
        input=task_input,
        files=tuple(files),
        input_method=input_method,
        noop=noop,
        timeout=timeout,
    )


def lay_out(root: Path, module: str, files: Sequence[tuple[str, Path]]) -> Path:
    """Place a task's files under ``root`` as Bolt does; returns the executable's path.

    ``files`` are (filename, cached copy), the executable first: it goes to
    ``<root>/<module>/tasks/<filename>``, the others to ``<root>/<filename>``. Each is a
    hard link to the cached copy (a copy across file systems), so that the task sees a
    real tree: a script that finds its helpers beside itself finds them.
    """
    (name, _), *extras = files
    placed = [(f"{module}/tasks/{name}", files[0][1]), *extras]
    for relative, source in placed:
        target = root / relative
        try:
            if target.exists():
                if target.samefile(source):  # the executable also listed as a file
                    continue
                raise ValidationError(f"two different task files want the place {relative}")
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
        except OSError as exc:
            raise ValidationError(
                f"cannot place task file {relative}: {exc.strerror or exc}",
                details={"filename": relative},
            ) from exc
    return root / placed[0][0]


class TaskRun(SpooledAction[TaskRequest]):
    """``task``/``run``; the keyword options are for tests and tuning."""

    module = "task"
    action = "run"

    def __init__(
        self,
        *,
        # Timeouts
        output_interval: float = OUTPUT_INTERVAL,
        kill_grace: float | None = None,  # taskrun.KILL_GRACE
        # Limits
        output_limit: int = OUTPUT_LIMIT,
    ) -> None:
        self.output_interval = output_interval
        self.kill_grace = kill_grace
        self.output_limit = output_limit

    def parse(self, params: dict[str, Any]) -> TaskRequest:
        return parse_request(params)

    def stored(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k != _NOT_STORED}

    def stopped(self, record: TransactionRecord, reason: str | None) -> Outcome:
        return False, {"_error": stopped_error(reason)}

    async def run(
        self, agent: AgentState, record: TransactionRecord, request: TaskRequest
    ) -> Outcome:
        txdir = agent.spool.path(record.transaction_id)
        stop = agent.stop_signal(record.transaction_id)
        try:
            installed = await _unless_stopped(_install(agent, txdir, request), stop)
            if installed is None or (stop is not None and stop.requested):
                return self.stopped(record, stop.reason if stop is not None else None)
            executable, installdir = installed
            pid = await taskrun.start_task(
                txdir,
                executable,
                task_name=request.task,
                params=request.input,
                input_method=request.input_method,
                installdir=installdir,
                noop=request.noop,
                time_limit=request.timeout,
            )
        except PodiumError as exc:
            return False, _error(TASK_ERROR, exc.msg, exc.details)
        except OSError as exc:  # the spool folder cannot take the task's files
            with contextlib.suppress(OSError):
                await asyncio.to_thread(taskrun.discard_input, txdir)
            where = exc.filename or txdir
            return False, _error(
                "podium.agent/spool-error",
                f"the task could not be started: the agent cannot write {where}: "
                f"{exc.strerror or exc}",
            )
        # No spool write here: the wrapper has recorded its pid for recovery already.
        return await self._follow(agent, record, txdir, pid, stop, resume=False)

    async def resume(self, agent: AgentState, record: TransactionRecord) -> Outcome:
        txdir = agent.spool.path(record.transaction_id)
        state, pid = await asyncio.to_thread(_left_behind, txdir)
        if state == "running" and pid is not None:
            stop = agent.stop_signal(record.transaction_id)
            return await self._follow(agent, record, txdir, pid, stop, resume=True)
        if state == "ended":
            return await asyncio.to_thread(taskrun.read_outcome, txdir)
        if state == "lost":
            return False, _error(
                "podium.agent/lost",
                "the node restarted while the task ran; its outcome is unknown",
            )
        return False, _error(
            "podium.agent/interrupted",
            "the agent stopped before the task started; it was not run",
        )

    async def _follow(
        self,
        agent: AgentState,
        record: TransactionRecord,
        txdir: Path,
        pid: int,
        stop: StopSignal | None,
        *,
        resume: bool,
    ) -> Outcome:
        """The task's outcome, its output streamed meanwhile and flushed before it."""
        follower = OutputFollower(
            txdir,
            record.transaction_id,
            functools.partial(agent.report, record),
            resume=resume,
            interval=self.output_interval,
            limit=self.output_limit,
        )
        outcome = await streamed(
            follower,
            taskrun.wait_task(txdir, pid, stop=stop, kill_grace=self.kill_grace),
            what=record.transaction_id,
        )
        return outcome


class TaskStop(ImmediateAction):
    """``task``/``stop``: stop a task/run transaction the agent has in hand."""

    module = "task"
    action = "stop"

    async def answer(self, agent: AgentState, params: dict[str, Any]) -> dict[str, Any]:
        txid, reason = parse_stop(params)
        await agent.recorded(txid)  # a request for it may be in the spool in a moment
        signal = agent.stop_signal(txid)
        if signal is not None and (signal.module, signal.action) == (
            TaskRun.module,
            TaskRun.action,
        ):
            signal.request(reason)
            return {"stopped": True}
        return {"stopped": False, "message": await _not_stoppable(agent, txid)}


def parse_stop(params: dict[str, Any]) -> tuple[str, str | None]:
    """(transaction_id, reason) of a ``task``/``stop`` request; :class:`ProtocolError`
    names what is wrong."""
    extra = params.keys() - _STOP_PARAMS
    if extra:
        raise ProtocolError(
            f"task/stop: unknown param(s) {', '.join(sorted(extra))}; "
            f"it takes {', '.join(sorted(_STOP_PARAMS))}"
        )
    try:
        txid = validate_transaction_id(params.get("transaction_id"))
    except ProtocolError as exc:
        raise ProtocolError(f"task/stop: {exc.msg}") from exc
    reason = params.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_STOP_REASON):
        raise ProtocolError(
            f"task/stop: 'reason' must be a string of at most {MAX_STOP_REASON} characters"
        )
    return txid, reason or None


async def _not_stoppable(agent: AgentState, txid: str) -> str:
    """Why ``txid`` cannot be stopped, as the spool knows it."""
    try:
        record = await asyncio.to_thread(agent.spool.get, txid)
    except OSError:
        record = None
    if record is None:
        return f"no task {txid} is running on this agent"
    if (record.module, record.action) != (TaskRun.module, TaskRun.action):
        return f"transaction {txid} is a {record.module}/{record.action}, not a task"
    if record.finished:
        return f"task {txid} has already ended ({record.status})"
    return f"task {txid} is not running on this agent"


async def _install(agent: AgentState, txdir: Path, request: TaskRequest) -> tuple[Path, Path]:
    """(executable, installdir): the task's files fetched and laid out."""
    paths = await asyncio.gather(*(agent.cache.get(spec) for spec in request.files))
    names = [spec["filename"] for spec in request.files]
    installdir = txdir / "install"
    executable = await asyncio.to_thread(
        lay_out, installdir, request.module, list(zip(names, paths, strict=True))
    )
    return executable, installdir


async def _unless_stopped(work: Awaitable[T], stop: StopSignal | None) -> T | None:
    """What ``work`` gives, or None if ``stop`` is set first (``work`` is cancelled:
    downloads shared with other tasks go on)."""
    doing = asyncio.ensure_future(work)
    if stop is None:
        return await doing
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([doing, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (doing, stopping):
            if not future.done():
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await future
    if doing.cancelled():
        return None
    return doing.result()


def _left_behind(txdir: Path) -> tuple[str, int | None]:
    """How an earlier agent process left a task (blocking): ``running`` (its pid),
    ``ended``, ``lost`` (it ran before the node rebooted) or ``unstarted``."""
    pid = taskrun.recorded_pid(txdir)
    if pid is not None:
        return "running", pid
    if (txdir / "exitcode").exists():
        return "ended", None
    if (txdir / "pid").exists():
        return "lost", None
    with contextlib.suppress(OSError):
        taskrun.discard_input(txdir)
    return "unstarted", None


def _invalid(text: str) -> ProtocolError:
    return ProtocolError(f"task/run: {text}")


def _error(kind: str, text: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"_error": {"kind": kind, "msg": text, "details": details or {}}}
