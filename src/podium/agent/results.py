"""What a task's run becomes on the wire: the Bolt result rules (pure).

- :func:`task_result`: stdout, stderr, exit code → (succeeded, result).
- :func:`timeout_result`: the failure of a task stopped at its deadline.
- :func:`stopped_result`: the failure of a task stopped on request (``task``/``stop``).
- :func:`lost_result`: the failure of a task whose exit code was never recorded.
- :func:`fit_result`: a result cut to fit in one message.

Output is text. Bytes that are not UTF-8 are kept as well: ``_output`` then holds the
text with U+FFFD in place of each bad sequence and ``_output_base64`` the exact bytes
(``_stderr`` and ``_stderr_base64`` likewise).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

import orjson

TASK_ERROR: Final = "puppetlabs.tasks/task-error"
# Bolt's namespace for errors of a task on its target; bolt-server says "task-timeout"
# for a task it stopped.
TASK_TIMEOUT: Final = "puppetlabs.tasks/task-timeout"
# Podium's own: a task a controller asked the agent to stop.
TASK_STOPPED: Final = "podium.tasks/task-stopped"
LOST: Final = "the agent lost track of the task: no exit code was recorded"


def task_result(stdout: bytes, stderr: bytes, exitcode: int) -> tuple[bool, dict[str, Any]]:
    """(succeeded, result) by the Bolt rules.

    A JSON object on stdout is the result, other output becomes ``{"_output": text}``;
    a failed task gets an ``_error`` (a non-zero exit adds a task-error with the exit
    code) and, when it wrote to stderr, ``_stderr``.
    """
    result: dict[str, Any] = _json_object(stdout) or output_fields("_output", stdout)
    if "_error" in result:
        result["_error"] = _normalise_error(result["_error"])
    elif exitcode != 0:
        result["_error"] = {
            "kind": TASK_ERROR,
            "msg": f"The task errored with a code {exitcode}",
            "details": {"exitcode": exitcode},
        }
    succeeded = exitcode == 0 and "_error" not in result
    if not succeeded and stderr and "_stderr" not in result:
        result.update(output_fields("_stderr", stderr))
    return succeeded, result


def timeout_result(stdout: bytes, stderr: bytes, timeout: float) -> dict[str, Any]:
    """The result of a task stopped because it ran longer than ``timeout`` seconds:
    an error and whatever it had written so far."""
    return _failure(
        {
            "kind": TASK_TIMEOUT,
            "msg": f"the task did not finish within {timeout:g} s and was stopped",
            "details": {"timeout": timeout},
        },
        stdout,
        stderr,
    )


def stopped_result(stdout: bytes, stderr: bytes, reason: str | None) -> dict[str, Any]:
    """The result of a task stopped on request: an error giving the reason, and whatever
    it had written so far."""
    return _failure(stopped_error(reason), stdout, stderr)


def stopped_error(reason: str | None) -> dict[str, Any]:
    """The ``_error`` of a task stopped on request (with or without a reason)."""
    return {
        "kind": TASK_STOPPED,
        "msg": f"the task was stopped: {reason or 'on request'}",
        "details": {},
    }


def lost_result(stdout: bytes, stderr: bytes, pid: int | None) -> dict[str, Any]:
    """The result of a task whose wrapper ended without recording an exit code."""
    return _failure({"kind": TASK_ERROR, "msg": LOST, "details": {"pid": pid}}, stdout, stderr)


def output_fields(name: str, data: bytes) -> dict[str, str]:
    """``{name: text}``, plus ``{name}_base64`` with the exact bytes if they are not UTF-8."""
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            name: data.decode("utf-8", errors="replace"),
            f"{name}_base64": base64.b64encode(data).decode("ascii"),
        }


def trim_partial_character(data: bytes) -> bytes:
    """``data`` without a UTF-8 sequence cut short at its end (output read up to a cap
    may end in the middle of a character, which does not make it binary)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the last sequence starts here
            expected = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            if 0xC2 <= byte <= 0xF4 and back < expected:
                return data[:-back]
            return data
    return data


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


def _failure(error: dict[str, Any], stdout: bytes, stderr: bytes) -> dict[str, Any]:
    result: dict[str, Any] = {"_error": error}
    if stdout:
        result.update(output_fields("_output", stdout))
    if stderr:
        result.update(output_fields("_stderr", stderr))
    return result


def _json_object(stdout: bytes) -> dict[str, Any] | None:
    """The JSON object on stdout, if that is all there is (JSON text is UTF-8)."""
    if not stdout.lstrip().startswith(b"{"):
        return None
    try:
        text = stdout.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant, parse_int=_int64)
        orjson.dumps(value)  # nested deeper than the wire format takes: plain output
    except (ValueError, RecursionError, TypeError):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


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
