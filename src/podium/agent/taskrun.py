"""Running a task on the node: the Bolt result rules, a detached runner, the file cache.

A task runs under a small ``/bin/sh`` wrapper in its own session, with its input and
output in files of the transaction's spool folder; the wrapper writes the exit code to
``exitcode`` (newline-terminated, so a reader knows it is whole) when the task ends.
The task and its recorded outcome thus survive the agent being stopped or killed, and a
restarted agent picks up the result with :func:`wait_task` from the wrapper's pid.

API:

- :func:`task_result` (pure): stdout, stderr, exit code → (succeeded, result).
- :func:`start_task` → pid of the wrapper; :func:`wait_task` → (succeeded, result).
  ``wait_task`` awaits the process (a pidfd in the event loop) when this agent process
  started it, and otherwise polls for the exit code while the pid is alive
  (:func:`wait_orphan`, for tasks left by an earlier agent process).
- :func:`read_outcome` (blocking): the outcome recorded in a transaction folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Final

import orjson

from podium.errors import Conflict, ValidationError

TASK_ERROR: Final = "puppetlabs.tasks/task-error"
# Output kept from each of stdout and stderr; the rest stays in the spool files.
MAX_OUTPUT: Final = 8 * 1024 * 1024

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
# $1 is the transaction folder, the rest the command. The wrapper records its pid
# first, so an agent killed before it could note the pid still finds the task after a
# restart; the exit code ends with a newline, so a reader can tell it is complete.
_WRAPPER: Final = (
    'd=$1; echo "$$ $2" >"$d/pid"; shift 2; "$@" <"$d/stdin" >"$d/stdout" 2>"$d/stderr"; '
    'printf "%s\\n" "$?" >"$d/exitcode"'
)
_LOST: Final = "the agent lost track of the task: no exit code was recorded"


# -- results --------------------------------------------------------------------------


def task_result(stdout: bytes, stderr: bytes, exitcode: int) -> tuple[bool, dict[str, Any]]:
    """(succeeded, result) by the Bolt rules.

    A JSON object on stdout is the result, other output becomes ``{"_output": text}``;
    a failed task gets an ``_error`` (a non-zero exit adds a task-error with the exit
    code) and, when it wrote to stderr, ``_stderr``.
    """
    text = stdout.decode("utf-8", errors="replace")
    result = _json_object(text)
    if result is None:
        result = {"_output": text}
    if "_error" in result:
        result["_error"] = _normalise_error(result["_error"])
    elif exitcode != 0:
        result["_error"] = {
            "kind": TASK_ERROR,
            "msg": f"The task errored with a code {exitcode}",
            "details": {"exitcode": exitcode},
        }
    succeeded = exitcode == 0 and "_error" not in result
    if not succeeded and stderr:
        result.setdefault("_stderr", stderr.decode("utf-8", errors="replace"))
    return succeeded, result


def _read_boot_id() -> str:
    """This boot's id: a pid recorded before a reboot names another process now."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:  # not Linux: pids are trusted as they are
        return "-"


BOOT_ID: Final = _read_boot_id()


def recorded_pid(txdir: Path) -> int | None:
    """The wrapper's pid as it wrote it, if it got that far in this boot of the node."""
    try:
        pid, boot = (txdir / "pid").read_text(encoding="ascii").split()
        return int(pid) if boot == BOOT_ID else None
    except (OSError, ValueError):
        return None


def _exit_code(txdir: Path) -> int | None:
    """The recorded exit code; None until the wrapper has written all of it."""
    try:
        text = (txdir / "exitcode").read_text(encoding="ascii")
    except OSError:
        return None
    return int(text) if text.endswith("\n") else None


def read_outcome(txdir: Path, pid: int | None = None) -> tuple[bool, dict[str, Any]]:
    """The outcome recorded in a transaction folder (blocking; small reads)."""
    stdout = _read_capped(txdir / "stdout")
    stderr = _read_capped(txdir / "stderr")
    try:
        exitcode = _exit_code(txdir)
        if exitcode is None:
            raise ValueError("no complete exit code")
    except (OSError, ValueError):
        result: dict[str, Any] = {
            "_error": {"kind": TASK_ERROR, "msg": _LOST, "details": {"pid": pid}}
        }
        if stdout:
            result["_output"] = stdout.decode("utf-8", errors="replace")
        if stderr:
            result["_stderr"] = stderr.decode("utf-8", errors="replace")
        return False, result
    return task_result(stdout, stderr, exitcode)


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_int64)
        orjson.dumps(value)  # nested deeper than the wire format takes: plain output
    except (ValueError, RecursionError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def fit_result(result: dict[str, Any], limit: int) -> dict[str, Any]:
    """``result``, or a shortened one whose encoding fits in ``limit`` bytes (a message
    must fit the broker's cap); the full output stays in the spool."""
    size = len(orjson.dumps(result))
    if size <= limit:
        return result
    output = result.get("_output")
    text = output if isinstance(output, str) else orjson.dumps(result).decode()
    kept: dict[str, Any] = {}
    error = result.get("_error")
    if error is not None and len(orjson.dumps(error)) < limit // 4:
        kept["_error"] = error
    kept["_truncated"] = (
        f"the result was {size} bytes, over the {limit}-byte message limit; "
        "the full output is in the agent's spool"
    )
    budget = limit // 2
    while True:
        fitted = {**kept, "_output": text[:budget]}
        if len(orjson.dumps(fitted)) <= limit or budget == 0:
            return fitted
        budget //= 2


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _int64(digits: str) -> int | float:
    """Integers beyond 64 bits become floats: the wire format carries no bigger ones."""
    value = int(digits)
    return value if -(2**63) <= value < 2**64 else float(value)


def _normalise_error(error: object) -> dict[str, Any]:
    """A task's own ``_error``, made safe for readers: kind, msg and details present."""
    if isinstance(error, dict) and isinstance(error.get("msg"), str):
        fixed = dict(error)
        if not isinstance(fixed.get("kind"), str):
            fixed["kind"] = TASK_ERROR
        if not isinstance(fixed.get("details"), dict):
            fixed["details"] = {}
        return fixed
    return {
        "kind": TASK_ERROR,
        "msg": "The task returned an invalid _error: it must be an object with a msg",
        "details": {"original_error": error},
    }


def _read_capped(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(MAX_OUTPUT)
    except FileNotFoundError:
        return b""


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
) -> int:
    """Start a task detached from the agent; returns the wrapper's pid.

    The task gets ``params`` plus ``_task``, ``_installdir`` (and ``_noop`` when asked)
    as JSON on stdin and/or as ``PT_<name>`` variables (``input_method``: stdin,
    environment, or both, the default), runs in ``installdir``, and inherits only a
    few harmless environment variables from the agent.
    """
    task_input = {**params, "_task": task_name, "_installdir": str(installdir)}
    if noop:
        task_input["_noop"] = True
    use_stdin, use_env = _input_channels(input_method)
    env = _task_environment(task_input if use_env else {}, stdin_too=use_stdin)
    stdin = json.dumps(task_input) if use_stdin else ""
    popen = await asyncio.to_thread(_spawn, txdir, executable, installdir, stdin, env)
    _children[popen.pid] = (popen, txdir.name)
    return popen.pid


async def wait_task(txdir: Path, pid: int, *, poll: float = 0.05) -> tuple[bool, dict[str, Any]]:
    """Wait for a task started by :func:`start_task`, here or by an earlier agent process.

    A wrapper this process started is awaited through a pidfd (no polling, no thread);
    any other pid is followed by :func:`wait_orphan`.
    """
    child = _children.get(pid)
    if child is None or child[1] != txdir.name:
        return await wait_orphan(txdir, pid, poll=poll)
    await _wait_child(child[0], poll)
    _children.pop(pid, None)
    return await asyncio.to_thread(read_outcome, txdir, pid)


async def wait_orphan(
    txdir: Path, pid: int, *, poll: float = 0.05, max_poll: float = 1.0
) -> tuple[bool, dict[str, Any]]:
    """Wait for a wrapper by polling for ``exitcode`` while ``pid`` is alive.

    For a task left by an earlier agent process. The interval grows from ``poll`` to
    ``max_poll``. If the process is gone without having written an exit code, the task
    failed and the agent lost track of it.
    """
    child = _children.get(pid)
    delay = poll
    while _exit_code(txdir) is None and (child[0].poll() is None if child else _alive(pid)):
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, max(poll, max_poll))
    return await asyncio.to_thread(read_outcome, txdir, pid)


async def _wait_child(popen: subprocess.Popen[bytes], poll: float) -> None:
    """Until our child exits, then reap it."""
    if popen.poll() is not None:
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
    popen.wait()  # it has exited: this only reaps it


def _alive(pid: int) -> bool:
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
    txdir: Path, executable: Path, installdir: Path, stdin: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Write the task's stdin and start the wrapper (blocking: run in a thread)."""
    if not installdir.is_dir():
        raise ValidationError(f"the task's install folder {installdir} does not exist")
    txdir = txdir.absolute()
    if (txdir / "exitcode").exists():
        raise Conflict(f"{txdir} already holds a finished task; a transaction runs once")
    txdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(txdir / "stdin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(stdin)
    argv = _command(executable.absolute())
    try:
        return subprocess.Popen(
            ["/bin/sh", "-c", _WRAPPER, "podium-task", str(txdir), BOOT_ID, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=installdir,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise ValidationError(f"cannot start task {executable.name}: {exc}") from exc


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
