"""``puppet``/``run``: one Puppet run on the node; ``stop``, ``status``, ``enable``,
``disable`` and ``resource`` beside it.

``run`` ``params``::

    mode            "apply" (default): ``puppet apply`` of the packed environment in
                    ``code``, classified by ``classification``; "agent": one
                    ``puppet agent`` run against the site's Puppet Server
    environment     the environment's name
    noop            true (--noop) | false (--no-noop) | null (the node's own setting)
    debug, trace, evaltrace   booleans, optional
    code            apply mode only, required: the pack's file entry, fetched through
                    the agent's file cache and unpacked once per SHA-256
    classification  apply mode only, optional: {"classes": {class: {param: value}},
                    "parameters": {variable: value}}, given to Puppet by an ENC script
    timeout         seconds, optional: the run is stopped then

Any other key is refused; the classification is not written to the spool (its
parameters may hold secrets), and the copy Puppet reads is removed after the run. One
run goes at a time: a run waits for the one before it, and for a Puppet run Podium did
not start (Puppet's own run lock), up to its timeout. A disabled node
(``agent_disabled.lock``, as ``puppet agent --disable`` writes it) does not run.

Puppet runs as a task does (:mod:`podium.agent.taskrun`): under a detached wrapper, its
output in the transaction's ``stdout`` and ``stderr`` and streamed to the controller
that asked (:mod:`podium.agent.output`), its deadline in the spool folder. It thus
outlives an agent restart, and the restarted agent follows it to its end (and stops it
at its deadline).

The results are Puppet's report read by :mod:`podium.agent.puppet.report`; a run that
failed (exit code 4 or 6, another code, or no report) also carries an ``_error`` of
kind ``podium.puppet/run-failed`` naming the failed resources.
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
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from podium.agent import taskrun
from podium.agent.actions import AgentState, ImmediateAction, Outcome, SpooledAction, StopSignal
from podium.agent.actions.task import parse_stop
from podium.agent.filecache import check_spec
from podium.agent.output import OUTPUT_INTERVAL, OUTPUT_LIMIT, OutputFollower, streamed
from podium.agent.puppet import report as reports
from podium.agent.puppet import runner
from podium.agent.results import stopped_error
from podium.agent.spool import TransactionRecord
from podium.errors import PodiumError, ProtocolError, ValidationError

RUN_FAILED: Final = "podium.puppet/run-failed"
DISABLED: Final = "podium.puppet/agent_disabled"
NOT_INSTALLED: Final = "podium.puppet/not-installed"
TIMEOUT: Final = "podium.puppet/timeout"
RESOURCE_FAILED: Final = "podium.puppet/resource-failed"
MODES: Final = ("apply", "agent")
MAX_DISABLE_MESSAGE: Final = 1000
MAX_TITLE: Final = 4096
KILL_GRACE: Final = 5.0  # seconds between SIGTERM and SIGKILL
RESOURCE_TIMEOUT: Final = 120.0
STDERR_LINES: Final = 10
_PARAMS: Final = frozenset(
    {"mode", "environment", "noop", "code", "classification", "timeout", *runner.FLAGS}
)
_NOT_STORED: Final = "classification"  # its parameters may hold secrets
_ENVIRONMENT: Final = re.compile(r"\A[a-z0-9_]+\Z")
_CLASS: Final = re.compile(r"\A(?:::)?[a-z][a-z0-9_]*(?:::[a-z][a-z0-9_]*)*\Z")
_VARIABLE: Final = re.compile(r"\A[a-z_][A-Za-z0-9_]*\Z")
_TYPE: Final = re.compile(r"\A[a-z][a-z0-9_]*(?:::[a-z][a-z0-9_]*)*\Z")
_ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PuppetRequest:
    """A checked ``puppet``/``run`` request."""

    mode: str
    environment: str
    noop: bool | None
    flags: dict[str, bool] = field(default_factory=dict)
    code: dict[str, Any] | None = None
    classification: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None


def parse_run(params: dict[str, Any]) -> PuppetRequest:
    """The request in ``params``; :class:`ProtocolError` names what is wrong."""
    extra = params.keys() - _PARAMS
    if extra:
        raise _invalid(
            f"unknown param(s) {', '.join(sorted(extra))}; it takes {', '.join(sorted(_PARAMS))}"
        )
    mode = params.get("mode", "apply")
    if mode not in MODES:
        raise _invalid(f"'mode' must be {' or '.join(MODES)}, not {mode!r}")
    environment = params.get("environment")
    if not isinstance(environment, str) or not _ENVIRONMENT.match(environment):
        raise _invalid(
            f"'environment' must be an environment name (a-z, 0-9, _), not {environment!r}"
        )
    noop = params.get("noop")
    if noop is not None and not isinstance(noop, bool):
        raise _invalid("'noop' must be true, false or null")
    flags = {}
    for name in runner.FLAGS:
        value = params.get(name, False)
        if not isinstance(value, bool):
            raise _invalid(f"'{name}' must be true or false")
        flags[name] = value
    timeout = params.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise _invalid(f"'timeout' must be a positive number of seconds, not {timeout!r}")
    code = params.get("code")
    classification = params.get("classification")
    if mode == "agent":
        for name, value in (("code", code), ("classification", classification)):
            if value is not None:
                raise _invalid(f"'{name}' is for apply mode; in agent mode the server has it")
        return PuppetRequest(mode, environment, noop, flags, timeout=timeout)
    if code is None:
        raise _invalid("apply mode needs 'code', the packed environment's file entry")
    try:
        check_spec(code)
    except ValidationError as exc:
        raise _invalid(f"'code': {exc.msg}") from exc
    return PuppetRequest(
        mode, environment, noop, flags, dict(code), _classification(classification), timeout
    )


def _classification(value: object) -> dict[str, Any]:
    if value is None:
        return {"classes": {}, "parameters": {}}
    if not isinstance(value, dict) or value.keys() - {"classes", "parameters"}:
        raise _invalid("'classification' must be an object with 'classes' and 'parameters'")
    classes = value.get("classes") or {}
    parameters = value.get("parameters") or {}
    if not isinstance(classes, dict) or not isinstance(parameters, dict):
        raise _invalid("'classification': 'classes' and 'parameters' must be objects")
    for name, class_params in classes.items():
        if not _CLASS.match(name):
            raise _invalid(f"'classification': {name!r} is not a class name")
        if class_params is not None and not isinstance(class_params, dict):
            raise _invalid(f"'classification': the parameters of class {name} must be an object")
    for name in parameters:
        if not _VARIABLE.match(name):
            raise _invalid(f"'classification': {name!r} is not a variable name")
    return {
        "classes": {name: params or {} for name, params in classes.items()},
        "parameters": parameters,
    }


class PuppetRun(SpooledAction[PuppetRequest]):
    """``puppet``/``run``; the keyword options are for tests and tuning."""

    module = "puppet"
    action = "run"

    def __init__(
        self,
        *,
        # Timeouts
        kill_grace: float = KILL_GRACE,
        lock_poll: float = 0.1,
        output_interval: float = OUTPUT_INTERVAL,
        # Limits
        output_limit: int = OUTPUT_LIMIT,
        # For agent mode: extra options of `puppet agent` (a server to use, in tests)
        agent_options: tuple[str, ...] = (),
    ) -> None:
        self.kill_grace = kill_grace
        self.lock_poll = lock_poll
        self.output_interval = output_interval
        self.output_limit = output_limit
        self.agent_options = agent_options
        self._one_at_a_time = asyncio.Lock()

    @property
    def busy(self) -> bool:
        """Whether a run started by this agent holds the node."""
        return self._one_at_a_time.locked()

    def parse(self, params: dict[str, Any]) -> PuppetRequest:
        return parse_run(params)

    def stored(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k != _NOT_STORED}

    def stopped(self, record: TransactionRecord, reason: str | None) -> Outcome:
        return False, {"_error": stopped_error(reason)}

    async def run(
        self, agent: AgentState, record: TransactionRecord, request: PuppetRequest
    ) -> Outcome:
        txdir = agent.spool.path(record.transaction_id)
        started: list[int] = []
        try:
            return await self._run(agent, record, request, txdir, started)
        finally:
            if not started:  # the classification is removed once the run has ended
                await asyncio.to_thread(runner.remove_enc, txdir)

    async def _run(
        self,
        agent: AgentState,
        record: TransactionRecord,
        request: PuppetRequest,
        txdir: Path,
        started: list[int],
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = None if request.timeout is None else loop.time() + request.timeout
        stop = agent.stop_signal(record.transaction_id)
        config = agent.config
        state = runner.statedir(config.puppet_root)
        try:
            puppet = _find_puppet(config.puppet_bin)
            await asyncio.to_thread(txdir.mkdir, parents=True, exist_ok=True)
            refused = await _refusal(agent, state)
            if refused is not None:
                return False, refused
            command: list[str]
            if request.mode == "apply":
                prepared = await _until_stopped(self._prepare(agent, txdir, request), stop)
                if prepared is None:
                    return self.stopped(record, stop.reason if stop else None)
                command = runner.apply_command(
                    puppet,
                    config.puppet_root,
                    environments=prepared,
                    environment=request.environment,
                    certname=config.certname,
                    txdir=txdir,
                    noop=request.noop,
                    flags=request.flags,
                )
            else:
                command = runner.agent_command(
                    puppet,
                    config.puppet_root,
                    environment=request.environment,
                    txdir=txdir,
                    noop=request.noop,
                    flags=request.flags,
                    extra=self.agent_options,
                )
        except PodiumError as exc:
            kind = exc.kind if exc.kind.startswith("podium.") else RUN_FAILED
            return False, _error(kind, exc.msg, exc.details)
        except OSError as exc:
            return False, _error(
                "podium.agent/spool-error",
                f"the Puppet run could not be prepared: the agent cannot write "
                f"{exc.filename or txdir}: {exc.strerror or exc}",
            )
        turn = await _until_stopped(self._take_turn(state, deadline), stop)
        if turn is None:
            return self.stopped(record, stop.reason if stop else None)
        if not turn:
            return False, _held_up(config.certname, request.timeout)
        try:
            if stop is not None and stop.requested:  # as its turn came
                return self.stopped(record, stop.reason)
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False, _held_up(config.certname, request.timeout)
            refused = await _refusal(agent, state)  # it may have been disabled meanwhile
            if refused is not None:
                return False, refused
            try:
                pid = await taskrun.start_command(
                    txdir, command, cwd=txdir, env=_environment(), time_limit=left
                )
            except ValidationError as exc:  # the command could not be started
                return False, _error(
                    NOT_INSTALLED,
                    f"{exc.msg}; set puppet_bin (--puppet-bin) to the puppet command",
                    {"puppet_bin": config.puppet_bin},
                )
            started.append(pid)
            if request.mode == "apply":  # puppet apply takes no lock; puppet agent runs wait
                await asyncio.to_thread(runner.hold_run_lock, state, txdir, pid, puppet)
            return await self._follow(agent, record, txdir, pid, stop, resume=False)
        finally:
            self._one_at_a_time.release()

    async def resume(self, agent: AgentState, record: TransactionRecord) -> Outcome:
        txdir = agent.spool.path(record.transaction_id)
        left, pid = await asyncio.to_thread(_left_behind, txdir)
        if left == "running" and pid is not None:
            stop = agent.stop_signal(record.transaction_id)
            async with self._one_at_a_time:  # a new run waits for this one
                return await self._follow(agent, record, txdir, pid, stop, resume=True)
        mode = str(record.params.get("mode", "apply"))
        if left == "ended":
            exit_code = await asyncio.to_thread(taskrun.recorded_exit_code, txdir)
            return await asyncio.to_thread(_ended, agent, txdir, mode, exit_code)
        if await asyncio.to_thread((txdir / runner.REPORT).is_file):
            # The node restarted after Puppet wrote its report (a run that rebooted it).
            return await asyncio.to_thread(_ended, agent, txdir, mode, None)
        if left == "lost":
            return False, _error(
                "podium.agent/lost",
                "the node restarted while Puppet ran and Puppet wrote no report; "
                "the run's outcome is unknown: run it again",
            )
        return False, _error(
            "podium.agent/interrupted",
            "the agent stopped before the Puppet run started; it was not run",
        )

    async def _prepare(self, agent: AgentState, txdir: Path, request: PuppetRequest) -> Path:
        """The unpacked environments' folder, with the ENC written in ``txdir``."""
        assert request.code is not None
        tarball = await agent.cache.get(request.code)
        environments = agent.cache.root / "environments"
        root = await asyncio.to_thread(
            runner.unpack, tarball, environments, request.code["sha256"].lower()
        )
        cutoff = time.time() - agent.config.cache_ttl.total_seconds()
        await asyncio.to_thread(runner.prune, environments, root, cutoff)
        if not await asyncio.to_thread((root / request.environment / "manifests").is_dir):
            names = await asyncio.to_thread(runner.environment_names, root)
            raise ValidationError(
                f"the packed environment has no {request.environment}/manifests folder "
                f"(it holds {', '.join(names) or 'nothing'})",
                kind=RUN_FAILED,
            )
        await asyncio.to_thread(
            runner.write_enc, txdir, request.environment, request.classification
        )
        return root

    async def _take_turn(self, state: Path, deadline: float | None) -> bool:
        """Hold the node for one run (True), waiting for any run before it; False (and
        not held) when the deadline came first."""
        loop = asyncio.get_running_loop()
        try:
            left = None if deadline is None else max(deadline - loop.time(), 0.001)
            await asyncio.wait_for(self._one_at_a_time.acquire(), left)
        except TimeoutError:
            return False
        try:
            delay = self.lock_poll
            while await asyncio.to_thread(runner.running_pid, state) is not None:
                if deadline is not None and loop.time() + delay > deadline:
                    self._one_at_a_time.release()
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        except BaseException:  # stopped while it waited: the node is not held
            self._one_at_a_time.release()
            raise
        return True

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
        """The run's outcome, its output streamed meanwhile and flushed before it."""
        follower = OutputFollower(
            txdir,
            record.transaction_id,
            functools.partial(agent.report, record),
            resume=resume,
            interval=self.output_interval,
            limit=self.output_limit,
        )
        ending = await streamed(
            follower,
            taskrun.wait_ended(txdir, pid, stop=stop, kill_grace=self.kill_grace),
            what=record.transaction_id,
        )
        await asyncio.to_thread(_clean_up, agent, txdir)
        mode = str(record.params.get("mode", "apply"))
        if ending == "stopped":
            return False, {"_error": stopped_error(stop.reason if stop is not None else None)}
        if ending == "timed-out":
            timeout = record.params.get("timeout")
            deadline = await asyncio.to_thread(taskrun.read_deadline, txdir)
            shown = timeout if isinstance(timeout, int | float) else None
            if shown is None and deadline is not None:
                shown = deadline.timeout
            return False, _error(
                TIMEOUT,
                f"puppet {mode} did not finish within {shown or 0:g} s and was stopped: "
                f"{_last_lines(txdir) or 'it printed nothing'}",
                {"timeout": shown},
            )
        exit_code = await asyncio.to_thread(taskrun.recorded_exit_code, txdir)
        return await asyncio.to_thread(_outcome, agent, txdir, mode, exit_code)


def _held_up(certname: str, timeout: float | None) -> dict[str, Any]:
    return _error(
        TIMEOUT,
        f"another Puppet run held {certname} for the whole timeout of {timeout or 0:g} s; "
        "this one was not started",
        {"timeout": timeout},
    )


def _left_behind(txdir: Path) -> tuple[str, int | None]:
    """How an earlier agent process left a run (blocking): ``running`` (the wrapper's
    pid), ``ended``, ``lost`` (it ran before the node rebooted) or ``unstarted``."""
    pid = taskrun.recorded_pid(txdir)
    if pid is not None:
        return "running", pid
    if (txdir / "exitcode").exists():
        return "ended", None
    if (txdir / "pid").exists():
        return "lost", None
    return "unstarted", None


def _clean_up(agent: AgentState, txdir: Path) -> None:
    """After a run (blocking): its classification removed, Puppet's run lock given back."""
    runner.remove_enc(txdir)
    runner.release_run_lock(runner.statedir(agent.config.puppet_root), txdir)


def _ended(agent: AgentState, txdir: Path, mode: str, exit_code: int | None) -> Outcome:
    """The outcome of a run an earlier agent process followed (blocking)."""
    _clean_up(agent, txdir)
    return _outcome(agent, txdir, mode, exit_code)


def _environment() -> dict[str, str]:
    """Puppet's environment: the agent's, without Podium's own settings (the enrollment
    token may be among them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}


def _outcome(agent: AgentState, txdir: Path, mode: str, exit_code: int | None) -> Outcome:
    """The outcome of a run that ended (blocking): from its report, or its stderr."""
    try:
        text = (txdir / runner.REPORT).read_bytes()
    except FileNotFoundError:
        text = None
    if text is None:
        return False, _error(
            RUN_FAILED,
            f"puppet {mode} exited with code {exit_code} and wrote no report: "
            f"{_last_lines(txdir) or 'it printed nothing'}",
            {"exit_code": exit_code},
        )
    try:
        report = reports.parse_report(text)
    except ValidationError as exc:
        return False, _error(RUN_FAILED, f"puppet {mode} exited with code {exit_code}: {exc.msg}")
    results = reports.run_results(report, mode=mode, exit_code=exit_code, now=datetime.now(UTC))
    failed = report["status"] == "failed" or exit_code not in (0, 2, None)
    if failed:
        why = reports.failure_message(report) or (
            f"puppet {mode} exited with code {exit_code}: {_last_lines(txdir) or 'no output'}"
        )
        results["_error"] = {
            "kind": RUN_FAILED,
            "msg": why,
            "details": {"exit_code": exit_code, "status": report["status"]},
        }
    return not failed, reports.fit(results, agent.config.max_message_bytes)


def _last_lines(txdir: Path) -> str:
    for name in (runner.STDERR, runner.STDOUT):
        try:
            text = (txdir / name).read_text(errors="replace")
        except OSError:
            continue
        lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
        lines = [line for line in lines if line]
        if lines:
            return " | ".join(lines[-STDERR_LINES:])[-2000:]
    return ""


async def _refusal(agent: AgentState, state: Path) -> dict[str, Any] | None:
    """The ``_error`` of a run on a node where Puppet is disabled, else None."""
    message = await asyncio.to_thread(runner.disabled_message, state)
    if message is None:
        return None
    return _error(
        DISABLED,
        f"Puppet is disabled on {agent.config.certname}: {message or 'no reason given'}; "
        f"enable it with: podium puppet enable --nodes {agent.config.certname}",
        {"disabled_message": message},
    )


async def _until_stopped(work: Any, stop: StopSignal | None) -> Any:
    """What ``work`` gives, or None if ``stop`` is set first (``work`` is cancelled)."""
    doing = asyncio.ensure_future(work)
    if stop is None:
        return await doing
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([doing, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not doing.done():
        doing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await doing
        return None
    return doing.result()


def _find_puppet(setting: str) -> str:
    found = shutil.which(setting)
    if found is None:
        raise PodiumError(
            f"Puppet is not installed here: no {setting!r} command was found "
            "(set puppet_bin, --puppet-bin, to the puppet command)",
            kind=NOT_INSTALLED,
            details={"puppet_bin": setting},
        )
    return found


class PuppetStop(ImmediateAction):
    """``puppet``/``stop``: stop a ``puppet``/``run`` the agent has in hand; params
    ``{transaction_id, reason?}`` as ``task``/``stop``'s."""

    module = "puppet"
    action = "stop"

    async def answer(self, agent: AgentState, params: dict[str, Any]) -> dict[str, Any]:
        try:
            txid, reason = parse_stop(params)
        except ProtocolError as exc:
            raise ProtocolError(exc.msg.replace("task/stop", "puppet/stop", 1)) from exc
        await agent.recorded(txid)
        signal_ = agent.stop_signal(txid)
        if signal_ is not None and (signal_.module, signal_.action) == ("puppet", "run"):
            signal_.request(reason)
            return {"stopped": True}
        return {"stopped": False, "message": f"no Puppet run {txid} is running on this agent"}


class PuppetStatus(ImmediateAction):
    """``puppet``/``status``: whether Puppet is enabled, running, and its last run."""

    module = "puppet"
    action = "status"

    def __init__(self, runs: PuppetRun | None = None) -> None:
        self.runs = runs

    async def answer(self, agent: AgentState, params: dict[str, Any]) -> dict[str, Any]:
        _no_params(self.name, params)
        return await status(agent, self.runs)


class PuppetEnable(PuppetStatus):
    """``puppet``/``enable``: remove the disable lock; answers the status after it."""

    action = "enable"

    async def answer(self, agent: AgentState, params: dict[str, Any]) -> dict[str, Any]:
        _no_params(self.name, params)
        await asyncio.to_thread(runner.enable, runner.statedir(agent.config.puppet_root))
        return await status(agent, self.runs)


class PuppetDisable(PuppetStatus):
    """``puppet``/``disable``: write Puppet's own disable lock (``{message?}``)."""

    action = "disable"

    async def answer(self, agent: AgentState, params: dict[str, Any]) -> dict[str, Any]:
        extra = params.keys() - {"message"}
        if extra:
            raise ProtocolError(f"puppet/disable: unknown param(s) {', '.join(sorted(extra))}")
        message = params.get("message")
        if message is not None and (
            not isinstance(message, str) or len(message) > MAX_DISABLE_MESSAGE
        ):
            raise ProtocolError(
                f"puppet/disable: 'message' must be a string of at most "
                f"{MAX_DISABLE_MESSAGE} characters"
            )
        reason = message or "disabled by Podium"
        await asyncio.to_thread(runner.disable, runner.statedir(agent.config.puppet_root), reason)
        return await status(agent, self.runs)


async def status(agent: AgentState, runs: PuppetRun | None) -> dict[str, Any]:
    """What ``puppet``/``status`` answers."""
    return await asyncio.to_thread(
        _status, agent.config.puppet_root, runs is not None and runs.busy
    )


def _status(root: Path | None, busy: bool) -> dict[str, Any]:
    state = runner.statedir(root)
    message = runner.disabled_message(state)
    last_run: dict[str, Any] | None = None
    since: float | None = None
    try:
        text = runner.summary_file(root).read_bytes()
    except OSError:
        text = None
    if text is not None:
        with contextlib.suppress(ValidationError):
            last_run, since = reports.parse_summary(text, datetime.now(UTC))
    return {
        "enabled": message is None,
        "disabled_message": message,
        "running": busy or runner.running_pid(state) is not None,
        "last_run": last_run,
        "since_last_run": since,
    }


class PuppetResource(ImmediateAction):
    """``puppet``/``resource``: the resources of a type (or one), read by Puppet."""

    module = "puppet"
    action = "resource"

    def __init__(self, *, timeout: float = RESOURCE_TIMEOUT) -> None:
        self.timeout = timeout

    async def answer(self, agent: AgentState, params: dict[str, Any]) -> dict[str, Any]:
        type_, title = parse_resource(params)
        puppet = _find_puppet(agent.config.puppet_bin)
        command = runner.resource_command(puppet, agent.config.puppet_root, type_, title)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise PodiumError(
                f"puppet resource {type_} did not answer within {self.timeout:g} s",
                kind=RESOURCE_FAILED,
            ) from None
        if process.returncode != 0:
            lines = [
                _ANSI.sub("", line).strip() for line in err.decode(errors="replace").splitlines()
            ]
            why = " | ".join(line for line in lines if line)[-2000:] or "no message"
            raise PodiumError(
                f"puppet resource {type_} failed (exit code {process.returncode}): {why}",
                kind=RESOURCE_FAILED,
                details={"exit_code": process.returncode},
            )
        return {"resources": resources_of(out)}


def parse_resource(params: dict[str, Any]) -> tuple[str, str | None]:
    """(type, title) of a ``puppet``/``resource`` request."""
    extra = params.keys() - {"type", "title"}
    if extra:
        raise ProtocolError(f"puppet/resource: unknown param(s) {', '.join(sorted(extra))}")
    type_ = params.get("type")
    if not isinstance(type_, str) or not _TYPE.match(type_):
        raise ProtocolError(f"puppet/resource: 'type' must be a resource type, not {type_!r}")
    title = params.get("title")
    if title is not None and (
        not isinstance(title, str)
        or not title
        or len(title) > MAX_TITLE
        or "\0" in title
        or title.startswith("-")
    ):
        raise ProtocolError(
            f"puppet/resource: 'title' must be a non-empty string of at most {MAX_TITLE} "
            "characters, without NUL, not starting with '-'"
        )
    return type_, title


def resources_of(text: bytes | str) -> list[dict[str, Any]]:
    """``puppet resource --to_yaml`` output ({type: {title: {param: value}}}) as a list."""
    found = reports.load_yaml(text, "the output of puppet resource")
    if found is None:
        return []
    if not isinstance(found, dict):
        raise ValidationError("the output of puppet resource is not a mapping of types")
    resources = []
    for type_, titles in found.items():
        if not isinstance(titles, dict):
            continue
        for title, parameters in titles.items():
            resources.append(
                {
                    "type": str(type_),
                    "title": str(title),
                    "parameters": reports.plain(parameters if isinstance(parameters, dict) else {}),
                }
            )
    return resources


def _no_params(name: str, params: dict[str, Any]) -> None:
    if params:
        raise ProtocolError(f"{name}: takes no params, got {', '.join(sorted(params))}")


def _invalid(text: str) -> ProtocolError:
    return ProtocolError(f"puppet/run: {text}")


def _error(kind: str, text: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"_error": {"kind": kind, "msg": text, "details": details or {}}}
