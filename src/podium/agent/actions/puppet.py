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

Any other key is refused. One run goes at a time: a run waits for the one before it,
and for a Puppet run Podium did not start (Puppet's own run lock). A disabled node
(``agent_disabled.lock``, as ``puppet agent --disable`` writes it) does not run.

The results are Puppet's report read by :mod:`podium.agent.puppet.report`; a run that
failed (exit code 4 or 6, another code, or no report) also carries an ``_error`` of
kind ``podium.puppet/run-failed`` naming the failed resources. Puppet's output is kept
in the transaction's spool folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

from podium.agent.actions import AgentState, ImmediateAction, Outcome, SpooledAction, StopSignal
from podium.agent.actions.task import parse_stop
from podium.agent.filecache import check_spec
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
_ENVIRONMENT: Final = re.compile(r"\A[a-z0-9_]+\Z")
_CLASS: Final = re.compile(r"\A(?:::)?[a-z][a-z0-9_]*(?:::[a-z][a-z0-9_]*)*\Z")
_VARIABLE: Final = re.compile(r"\A[a-z_][A-Za-z0-9_]*\Z")
_TYPE: Final = re.compile(r"\A[a-z][a-z0-9_]*(?:::[a-z][a-z0-9_]*)*\Z")
_ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")


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
        # For agent mode: extra options of `puppet agent` (a server to use, in tests)
        agent_options: tuple[str, ...] = (),
    ) -> None:
        self.kill_grace = kill_grace
        self.lock_poll = lock_poll
        self.agent_options = agent_options
        self._one_at_a_time = asyncio.Lock()

    @property
    def busy(self) -> bool:
        """Whether a run started by this agent holds the node."""
        return self._one_at_a_time.locked()

    def parse(self, params: dict[str, Any]) -> PuppetRequest:
        return parse_run(params)

    def stopped(self, record: TransactionRecord, reason: str | None) -> Outcome:
        return False, {"_error": stopped_error(reason)}

    async def run(
        self, agent: AgentState, record: TransactionRecord, request: PuppetRequest
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = None if request.timeout is None else loop.time() + request.timeout
        txdir = agent.spool.path(record.transaction_id)
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
            return False, _error(
                TIMEOUT,
                f"another Puppet run held {config.certname} for the whole timeout of "
                f"{request.timeout:g} s; this one was not started",
                {"timeout": request.timeout},
            )
        try:
            refused = await _refusal(agent, state)  # it may have been disabled meanwhile
            if refused is not None:
                return False, refused
            return await self._run(agent, txdir, state, command, request, deadline, stop)
        finally:
            self._one_at_a_time.release()

    async def resume(self, agent: AgentState, record: TransactionRecord) -> Outcome:
        txdir = agent.spool.path(record.transaction_id)
        mode = str(record.params.get("mode", "apply"))
        if await asyncio.to_thread((txdir / runner.REPORT).is_file):
            return await asyncio.to_thread(_outcome, agent, txdir, mode, None)
        return False, _error(
            "podium.agent/interrupted",
            "the agent restarted during the Puppet run; its outcome is unknown",
        )

    async def _prepare(self, agent: AgentState, txdir: Path, request: PuppetRequest) -> Path:
        """The unpacked environments' folder, with the ENC written in ``txdir``."""
        assert request.code is not None
        tarball = await agent.cache.get(request.code)
        root = await asyncio.to_thread(
            runner.unpack,
            tarball,
            agent.cache.root / "environments",
            request.code["sha256"].lower(),
        )
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
        delay = self.lock_poll
        while await asyncio.to_thread(runner.running_pid, state) is not None:
            if deadline is not None and loop.time() + delay > deadline:
                self._one_at_a_time.release()
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        return True

    async def _run(
        self,
        agent: AgentState,
        txdir: Path,
        state: Path,
        command: list[str],
        request: PuppetRequest,
        deadline: float | None,
        stop: StopSignal | None,
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        stdout, stderr = await asyncio.to_thread(_open_output, txdir)
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as exc:
            return False, _error(
                NOT_INSTALLED,
                f"{command[0]} could not be started: {exc.strerror or exc}; "
                "set puppet_bin (--puppet-bin) to the puppet command",
                {"puppet_bin": agent.config.puppet_bin},
            )
        finally:
            stdout.close()
            stderr.close()
        lock = state / runner.RUN_LOCK
        if request.mode == "apply":  # puppet apply takes no lock; puppet agent runs wait
            await asyncio.to_thread(_write_lock, lock, process.pid)
        try:
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(process.wait())]
            if stop is not None:
                waits.append(asyncio.ensure_future(stop.wait()))
            left = None if deadline is None else max(deadline - loop.time(), 0)
            await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for future in waits[1:]:
                future.cancel()
            if process.returncode is None:
                await self._kill(process)
                if stop is not None and stop.requested:
                    return False, {"_error": stopped_error(stop.reason)}
                return False, _error(
                    TIMEOUT,
                    f"puppet {request.mode} did not finish within {request.timeout:g} s "
                    "and was stopped",
                    {"timeout": request.timeout},
                )
        finally:
            if request.mode == "apply":
                await asyncio.to_thread(_remove_lock, lock, process.pid)
        return await asyncio.to_thread(_outcome, agent, txdir, request.mode, process.returncode)

    async def _kill(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM to the run's process group, SIGKILL after the grace period."""
        for sig, wait in ((signal.SIGTERM, self.kill_grace), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                await asyncio.wait_for(process.wait(), wait)
                return
            except TimeoutError:
                continue


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


def _open_output(txdir: Path) -> tuple[BinaryIO, BinaryIO]:
    """Puppet's stdout and stderr files in ``txdir``; an earlier report is removed."""
    with contextlib.suppress(FileNotFoundError):
        (txdir / runner.REPORT).unlink()
    stdout = open(txdir / runner.STDOUT, "wb")  # noqa: SIM115 (closed by the caller)
    try:
        return stdout, open(txdir / runner.STDERR, "wb")
    except BaseException:
        stdout.close()
        raise


def _write_lock(lock: Path, pid: int) -> None:
    lock.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    lock.write_text(str(pid))


def _remove_lock(lock: Path, pid: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        if int(lock.read_text().strip()) == pid:
            lock.unlink()


async def _refusal(agent: AgentState, state: Path) -> dict[str, Any] | None:
    """The ``_error`` of a run on a node where Puppet is disabled, else None."""
    message = await asyncio.to_thread(runner.disabled_message, state)
    if message is None:
        return None
    return _error(
        DISABLED,
        f"Puppet is disabled on {agent.config.certname}: {message or 'no reason given'}; "
        "enable it with podium puppet enable",
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
        _status, runner.statedir(agent.config.puppet_root), runs is not None and runs.busy
    )


def _status(state: Path, busy: bool) -> dict[str, Any]:
    message = runner.disabled_message(state)
    last_run: dict[str, Any] | None = None
    since: float | None = None
    try:
        text = (state / runner.SUMMARY).read_bytes()
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
