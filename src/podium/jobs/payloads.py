"""What the job engine sends to nodes and what it stores of what they send back (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from podium.tasks.metadata import Task, TaskFile, TaskImplementation

TASK_FILE_PATH = "/puppet/v3/file_content/tasks"
MODULE_FILE_PATH = "/puppet/v3/file_content/modules"
SEALED_INPUT = "_sealed_input"  # job option: the task input, sealed, to resume the job
INPUT_PURPOSE = "podium job input"
REDACTED = "Sensitive [value redacted]"


def file_entries(task: Task, files: Iterable[TaskFile]) -> list[dict[str, Any]]:
    """Task files as PE's API and the ``task``/``run`` request list them."""
    env = {"environment": task.environment}
    entries = []
    for f in files:
        # An executable is a bare name served from its own module's tasks/; an extra
        # file is "<module>/<mount>/<path>".
        path = (
            f"{MODULE_FILE_PATH}/{f.filename}"
            if "/" in f.filename
            else f"{TASK_FILE_PATH}/{task.module}/{f.filename}"
        )
        entries.append(
            {
                "filename": f.filename,
                "uri": {"path": path, "params": env},
                "sha256": f.sha256,
                "size_bytes": f.size_bytes,
            }
        )
    return entries


def task_request(
    task: Task,
    implementation: TaskImplementation,
    params: dict[str, Any],
    *,
    noop: bool = False,
    timeout: float | None = None,
) -> dict[str, Any]:
    """The ``params`` of a ``task``/``run`` request: what the agent needs to run it."""
    body: dict[str, Any] = {
        "task": task.name,
        "input": params,
        "files": file_entries(task, (implementation.executable, *implementation.files)),
        "input_method": implementation.input_method,
    }
    if noop:
        body["noop"] = True
    if timeout is not None:
        body["timeout"] = timeout
    return body


def redacted(task: Task, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as the job shows them: sensitive values masked."""
    return {
        name: REDACTED if name in task.parameters and task.parameters[name].is_sensitive else value
        for name, value in params.items()
    }


def storable(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as every database can store it: NUL characters (which PostgreSQL
    refuses in text and JSON) become U+FFFD; what cannot be encoded becomes an error."""
    try:
        raw = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # e.g. nested deeper than JSON columns take
        return {"_error": {"kind": "podium/unstorable", "msg": f"could not be stored: {exc}"}}
    if b"\\u0000" not in raw:
        return value
    cleaned: dict[str, Any] = _without_nul(value)
    return cleaned


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value
