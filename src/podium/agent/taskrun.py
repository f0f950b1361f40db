"""Running a task on the node: a detached wrapper, its outcome, its deadline.

A task runs under a small ``/bin/sh`` wrapper in its own session (its process group is
the wrapper's pid), with its input and output in files of the transaction's spool
folder::

    pid       "<pid> <boot id>", written by the wrapper before anything else
    stdin     the task's input: the wrapper opens it and removes it before the task
              starts, so input that may hold passwords stays on disk for a moment only
    stdout stderr
    exitcode  written by the wrapper when the task ends (newline-terminated, so a
              reader knows it is whole)
    deadline  {"timeout": N, "deadline": <unix time>}, when the task has a timeout

The task and its recorded outcome thus survive the agent being stopped or killed, and a
restarted agent picks up the result with :func:`wait_task` from the wrapper's pid; the
deadline is in the folder too, so a task followed after a restart is still stopped at
the time it was given when it started.

API:

- :func:`start_task` → pid of the wrapper; :func:`wait_task` → (succeeded, result).
  ``wait_task`` awaits the process (a pidfd in the event loop) when this agent process
  started it, and otherwise polls for the exit code while the wrapper is alive (a task
  left by an earlier agent process). Past the deadline, or when it is asked to stop
  (a :class:`StopRequest`), it stops the task's process group: SIGTERM, then SIGKILL
  after a grace of :data:`KILL_GRACE` seconds.
- :func:`start_command` and :func:`wait_ended` do the same for any command that is not
  a task (``puppet apply``): the caller reads how it went (:func:`recorded_exit_code`,
  the ``stdout``/``stderr`` files) by its own rules.
- :func:`read_outcome` (blocking): the outcome recorded in a transaction folder.
- The result rules themselves are in :mod:`podium.agent.results`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import orjson

from podium.agent.results import (
    lost_result,
    stopped_result,
    task_result,
    timeout_result,
    trim_partial_character,
)
from podium.errors import Conflict, ValidationError
from podium.files import write_atomic

Outcome = tuple[bool, dict[str, Any]]
# How a command followed by wait_ended ended: by itself, on request, at its deadline.
Ending = Literal["exited", "stopped", "timed-out"]

# Output kept from each of stdout and stderr; the rest stays in the spool files.
MAX_OUTPUT: Final = 8 * 1024 * 1024
# Seconds a task being stopped has between SIGTERM and SIGKILL.
KILL_GRACE: Final = 5.0

# The only variables a task inherits from the agent (which may hold secrets).
_INHERITED_ENV: Final = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
_DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A PT_ variable larger than this is left out when the value also goes on stdin: the
# kernel refuses to start a process with a single variable over 128 KiB.
_MAX_ENV_VALUE: Final = 64 * 1024
_ENV_NAME: Final = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*\Z")
# Used when a file is not executable and has no #! line.
_INTERPRETERS: Final[dict[str, tuple[str, ...]]] = {
    ".py": ("python3",),
    ".rb": ("ruby",),
    ".sh": ("/bin/sh",),
    ".ps1": ("pwsh", "-NoProfile", "-NonInteractive", "-File"),
}
# $0 names the wrapper, $1 is the transaction folder, $2 the boot id, the rest the
# command. The wrapper records its pid first, so an agent killed before it could note
# the pid still finds the task after a restart. It holds the input open on fd 3 and
# removes the file before the task runs. It traps SIGTERM so that, when the task's
# group is told to stop, it outlives the task and records how it ended: the grace
# period before SIGKILL is then the task's own.
_WRAPPER_NAME: Final = "podium-task"
_WRAPPER: Final = (
    'd=$1; echo "$$ $2" >"$d/pid"; shift 2; '
    'exec 3<"$d/stdin"; rm -f "$d/stdin"; trap : TERM; '
    '"$@" <&3 >"$d/stdout" 2>"$d/stderr" 3<&-; '
    'printf "%s\\n" "$?" >"$d/exitcode"'
)


# -- the spool folder -----------------------------------------------------------------


def _read_boot_id() -> str:
    """This boot's id: a pid recorded before a reboot names another process now."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:  # not Linux: pids are trusted as they are
        return "-"


BOOT_ID: Final = _read_boot_id()


@dataclass(frozen=True)
class Deadline:
    """When a task must have finished: ``timeout`` seconds after it started, at ``at``
    (unix time, so that it means the same to a restarted agent)."""

    timeout: float
    at: float


def recorded_pid(txdir: Path) -> int | None:
    """The wrapper's pid as it wrote it, if it got that far in this boot of the node."""
    try:
        pid, boot = (txdir / "pid").read_text(encoding="ascii").split()
        return int(pid) if boot == BOOT_ID else None
    except (OSError, ValueError):
        return None


def read_deadline(txdir: Path) -> Deadline | None:
    """The task's deadline, if it was given a timeout (blocking; a small read)."""
    try:
        data = json.loads((txdir / "deadline").read_bytes())
        return Deadline(timeout=float(data["timeout"]), at=float(data["deadline"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # Written atomically before the task started: damage means someone else wrote
        # it. Stop the task now rather than let it run for ever.
        return Deadline(timeout=0.0, at=0.0)


def _exit_code(txdir: Path) -> int | None:
    """The recorded exit code; None until the wrapper has written all of it."""
    try:
        text = (txdir / "exitcode").read_text(encoding="ascii")
    except OSError:
        return None
    return int(text) if text.endswith("\n") else None


def recorded_exit_code(txdir: Path) -> int | None:
    """The exit code the wrapper recorded; None if it recorded none (or one that cannot
    be read)."""
    try:
        return _exit_code(txdir)
    except ValueError:
        return None


def _has_ended(txdir: Path) -> bool:
    """Whether the wrapper has recorded how the task ended (even unreadably)."""
    try:
        return _exit_code(txdir) is not None
    except ValueError:
        return True


def read_outcome(txdir: Path, pid: int | None = None) -> Outcome:
    """The outcome recorded in a transaction folder (blocking; small reads)."""
    stdout = _read_capped(txdir / "stdout")
    stderr = _read_capped(txdir / "stderr")
    try:
        exitcode = _exit_code(txdir)
    except ValueError:
        exitcode = None
    if exitcode is None:
        return False, lost_result(stdout, stderr, pid)
    return task_result(stdout, stderr, exitcode)


def read_timed_out(txdir: Path, deadline: Deadline) -> Outcome:
    """The outcome of a task stopped at its deadline: an error, and its output so far."""
    stdout = _read_capped(txdir / "stdout")
    stderr = _read_capped(txdir / "stderr")
    return False, timeout_result(stdout, stderr, deadline.timeout)


def read_stopped(txdir: Path, reason: str | None) -> Outcome:
    """The outcome of a task stopped on request: an error, and its output so far."""
    stdout = _read_capped(txdir / "stdout")
    stderr = _read_capped(txdir / "stderr")
    return False, stopped_result(stdout, stderr, reason)


def _read_capped(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_OUTPUT)
    except FileNotFoundError:
        return b""
    return trim_partial_character(data) if len(data) == MAX_OUTPUT else data


# -- running --------------------------------------------------------------------------


# Wrappers this process started and has not reaped yet, by pid, with their folder's
# name. Popen (unlike an asyncio subprocess transport) never kills its child when it is
# closed or collected, so a task keeps running when the agent shuts down.
_children: dict[int, tuple[subprocess.Popen[bytes], str]] = {}


async def start_task(
    txdir: Path,
    executable: Path,
    *,
    task_name: str,
    params: dict[str, Any],
    input_method: str | None,
    installdir: Path,
    noop: bool = False,
    time_limit: float | None = None,
) -> int:
    """Start a task detached from the agent; returns the wrapper's pid.

    The task gets ``params`` plus ``_task``, ``_installdir`` (and ``_noop`` when asked)
    as JSON on stdin and/or as ``PT_<name>`` variables (``input_method``: stdin,
    environment, or both, the default), runs in ``installdir``, and inherits only a
    few harmless environment variables from the agent. With a ``time_limit`` (seconds),
    :func:`wait_task` stops it that long after it started.
    """
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise ValidationError(f"a task's timeout must be a positive number, not {time_limit!r}")
    task_input = {**params, "_task": task_name, "_installdir": str(installdir)}
    if noop:
        task_input["_noop"] = True
    use_stdin, use_env = _input_channels(input_method)
    env = _task_environment(task_input if use_env else {}, stdin_too=use_stdin)
    stdin = json.dumps(task_input) if use_stdin else ""

    def command() -> list[str]:
        if not installdir.is_dir():
            raise ValidationError(f"the task's install folder {installdir} does not exist")
        return _command(executable.absolute())

    popen = await asyncio.to_thread(
        _spawn, txdir, command, installdir, stdin, env, time_limit, f"task {executable.name}"
    )
    _children[popen.pid] = (popen, txdir.name)
    return popen.pid


async def start_command(
    txdir: Path,
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    time_limit: float | None = None,
) -> int:
    """Start a command that is not a task, detached from the agent as a task is, with
    nothing on its stdin; returns the wrapper's pid, for :func:`wait_ended`.

    ``env`` is the command's whole environment (by default the few harmless variables
    a task inherits). With a ``time_limit`` (seconds), :func:`wait_ended` stops it that
    long after it started.
    """
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise ValidationError(f"a timeout must be a positive number, not {time_limit!r}")
    if not argv:
        raise ValidationError("no command to start")
    if env is None:
        env = _task_environment({}, stdin_too=True)
    popen = await asyncio.to_thread(
        _spawn, txdir, lambda: list(argv), cwd, "", env, time_limit, argv[0]
    )
    _children[popen.pid] = (popen, txdir.name)
    return popen.pid


class StopRequest(Protocol):
    """A request to stop a running task, with why (:class:`podium.agent.actions.StopSignal`)."""

    @property
    def reason(self) -> str | None: ...

    async def wait(self) -> None:
        """Until the task is to stop."""
        ...


async def wait_task(
    txdir: Path,
    pid: int,
    *,
    stop: StopRequest | None = None,
    # Timeouts
    poll: float = 0.05,
    kill_grace: float | None = None,
) -> Outcome:
    """Wait for a task started by :func:`start_task`, here or by an earlier agent
    process, and stop it if it runs past its deadline or when ``stop`` says so.

    A wrapper this process started is awaited through a pidfd (no polling, no thread);
    any other pid is followed by polling, at an interval growing from ``poll`` to 1 s.
    If that process is gone without having written an exit code, the task failed and
    the agent lost track of it. A task being stopped gets SIGTERM, then SIGKILL after
    ``kill_grace`` seconds (:data:`KILL_GRACE` by default).
    """
    ending, deadline = await _wait(txdir, pid, stop, poll, kill_grace)
    if ending == "stopped" and stop is not None:
        return await asyncio.to_thread(read_stopped, txdir, stop.reason)
    if ending == "timed-out":
        assert deadline is not None
        return await asyncio.to_thread(read_timed_out, txdir, deadline)
    return await asyncio.to_thread(read_outcome, txdir, pid)


async def wait_ended(
    txdir: Path,
    pid: int,
    *,
    stop: StopRequest | None = None,
    # Timeouts
    poll: float = 0.05,
    kill_grace: float | None = None,
) -> Ending:
    """Wait for a command started by :func:`start_command` (or a task), here or by an
    earlier agent process, stopping it as :func:`wait_task` does; how it ended.

    ``exited``: it ended by itself (its exit code is recorded, unless the wrapper was
    killed: :func:`recorded_exit_code` is then None); ``stopped``: on ``stop``'s
    request; ``timed-out``: at its deadline.
    """
    ending, _ = await _wait(txdir, pid, stop, poll, kill_grace)
    return ending


async def _wait(
    txdir: Path,
    pid: int,
    stop: StopRequest | None,
    poll: float,
    kill_grace: float | None,
) -> tuple[Ending, Deadline | None]:
    child = _children.get(pid)
    popen = child[0] if child is not None and child[1] == txdir.name else None
    deadline = await asyncio.to_thread(read_deadline, txdir)
    why = await _ending(_ended(txdir, pid, popen, poll), deadline, stop)
    # A task that ended on its own at that very moment keeps its own outcome.
    if why is not None and not await asyncio.to_thread(_has_ended, txdir):
        grace = KILL_GRACE if kill_grace is None else kill_grace
        await _stop(txdir, pid, popen, poll, grace)
        _forget(pid, popen)
        if why == "stop" and stop is not None:
            return "stopped", deadline
        return "timed-out", deadline
    _forget(pid, popen)
    return "exited", deadline


async def _ending(
    ended: Awaitable[None], deadline: Deadline | None, stop: StopRequest | None
) -> Literal["timeout", "stop"] | None:
    """Until the task has ended (None), passed its deadline or is to stop."""
    waiting = asyncio.ensure_future(ended)
    stopping = asyncio.ensure_future(stop.wait()) if stop is not None else None
    timeout = None if deadline is None else max(0.0, deadline.at - time.time())
    try:
        await asyncio.wait(
            [w for w in (waiting, stopping) if w is not None],
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for future in (waiting, stopping):
            if future is not None and not future.done():
                future.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await future
    if waiting.done() and not waiting.cancelled():
        waiting.result()  # a failure to follow the task is raised
        return None
    if stopping is not None and stopping.done() and not stopping.cancelled():
        return "stop"
    return "timeout"


def _forget(pid: int, popen: subprocess.Popen[bytes] | None) -> None:
    if popen is not None:
        popen.poll()  # reaps it once it has exited; never blocks
        _children.pop(pid, None)


async def _ended(txdir: Path, pid: int, popen: subprocess.Popen[bytes] | None, poll: float) -> None:
    """Until the wrapper has exited (our child) or recorded an exit code (an orphan)."""
    if popen is not None:
        await _child_exited(popen, poll)
        return
    await _orphan_ended(txdir, pid, poll, until_exit_code=True)


async def _orphan_ended(txdir: Path, pid: int, poll: float, *, until_exit_code: bool) -> None:
    """Until a wrapper this process did not start has exited (or, if asked, recorded
    its exit code), polling at an interval growing from ``poll`` to 1 s."""
    delay = poll
    while await asyncio.to_thread(_orphan_running, pid, txdir, until_exit_code):
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, max(poll, 1.0))


def _orphan_running(pid: int, txdir: Path, until_exit_code: bool) -> bool:
    """Whether the wrapper still runs (and, if asked, has not recorded an exit code);
    blocking: it reads /proc and the spool."""
    if not _is_wrapper(pid, txdir):
        return False
    return not (until_exit_code and _has_ended(txdir))


async def _stop(
    txdir: Path, pid: int, popen: subprocess.Popen[bytes] | None, poll: float, grace: float
) -> None:
    """Stop the task's process group: SIGTERM, then SIGKILL once the grace is over.

    Processes that left the task's session (daemons it started) are not reached.
    """
    if popen is None and not await asyncio.to_thread(_is_wrapper, pid, txdir):
        return  # the pid is no longer the wrapper's: never signal a stranger
    _signal_group(pid, signal.SIGTERM)
    await _gone(txdir, pid, popen, poll, grace)
    # Then whatever is left of the group: children that ignore SIGTERM, or that were
    # still cleaning up when the wrapper ended.
    _signal_group(pid, signal.SIGKILL)
    await _gone(txdir, pid, popen, poll, grace)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _gone(
    txdir: Path, pid: int, popen: subprocess.Popen[bytes] | None, poll: float, limit: float
) -> None:
    """Until the wrapper has exited, for at most ``limit`` seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            if popen is not None:
                await _child_exited(popen, poll)
            else:
                await _orphan_ended(txdir, pid, poll, until_exit_code=False)


async def _child_exited(popen: subprocess.Popen[bytes], poll: float) -> None:
    """Until our child has exited (it is reaped by :func:`_forget`)."""
    if popen.returncode is not None:
        return
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
        delay = poll
        while popen.poll() is None:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True  # no /proc here: trust kill()
    # "pid (comm) S ...": the state follows the last parenthesis.
    return stat[stat.rfind(b")") + 2 :][:1] != b"Z"


def _is_wrapper(pid: int, txdir: Path) -> bool:
    """Whether ``pid`` is alive and still the wrapper of the task in ``txdir`` (a pid
    recorded by an earlier agent process may since have been given to another)."""
    if not is_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc here: trust the pid
    # /bin/sh -c <script> podium-task <txdir> <boot id> <command...>
    return (
        len(argv) > 4
        and argv[3] == _WRAPPER_NAME.encode()
        and os.path.basename(argv[4]) == os.fsencode(txdir.name)
    )


def _input_channels(input_method: str | None) -> tuple[bool, bool]:
    """(stdin, environment). PowerShell's own input method does not exist on POSIX
    nodes; a .ps1 task there gets both."""
    if input_method in (None, "both", "powershell"):
        return True, True
    if input_method == "stdin":
        return True, False
    if input_method == "environment":
        return False, True
    raise ValidationError(
        f"unknown input_method {input_method!r}: use stdin, environment or both",
        details={"input_method": input_method},
    )


def _task_environment(task_input: dict[str, Any], *, stdin_too: bool) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    for name, value in task_input.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if not _ENV_NAME.match(name) or "\0" in text:
            if stdin_too:
                continue
            raise ValidationError(
                f"parameter {name!r} cannot be passed in an environment variable "
                "(the name must be a valid identifier and the value free of NUL bytes); "
                "use input_method stdin",
                details={"parameter": name},
            )
        if len(text) > _MAX_ENV_VALUE and stdin_too:
            continue
        env[f"PT_{name}"] = text
    return env


def _spawn(
    txdir: Path,
    command: Callable[[], list[str]],
    cwd: Path,
    stdin: str,
    env: dict[str, str],
    time_limit: float | None,
    what: str,
) -> subprocess.Popen[bytes]:
    """Write the stdin and deadline, start the wrapper running ``command()`` (blocking:
    in a thread)."""
    txdir = txdir.absolute()
    if (txdir / "exitcode").exists() or (txdir / "pid").exists():
        raise Conflict(f"{txdir} already holds a task that started; a transaction runs once")
    argv = command()
    txdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(txdir / "stdin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(stdin)
    if time_limit is not None:
        deadline = {"timeout": time_limit, "deadline": time.time() + time_limit}
        write_atomic(txdir / "deadline", orjson.dumps(deadline), mode=0o600)
    try:
        return subprocess.Popen(
            ["/bin/sh", "-c", _WRAPPER, _WRAPPER_NAME, str(txdir), BOOT_ID, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        discard_input(txdir)
        raise ValidationError(f"cannot start {what}: {exc}") from exc


def discard_input(txdir: Path) -> None:
    """Remove a task's input file left behind by a task that never started."""
    with contextlib.suppress(FileNotFoundError):
        (txdir / "stdin").unlink()


def _command(executable: Path) -> list[str]:
    """How to run a task file: its #! line, its extension, or the file itself."""
    try:
        with executable.open("rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise ValidationError(f"cannot read the task file {executable}: {exc.strerror}") from exc
    path = str(executable)
    runnable = os.access(executable, os.X_OK)
    if head.startswith(b"#!"):
        if runnable:
            return [path]
        line = head[2:].split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
        interpreter = line.split(None, 1)
        if interpreter:
            return [*interpreter, path]
    if executable.suffix in _INTERPRETERS:
        return [*_INTERPRETERS[executable.suffix], path]
    if runnable:
        return [path]
    raise ValidationError(
        f"cannot run the task file {executable.name}: it is not executable, has no #! line, "
        f"and its extension is none of {', '.join(_INTERPRETERS)}"
    )
