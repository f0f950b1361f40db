"""What the job engine sends to nodes and what it stores of what they send back (pure)."""

from __future__ import annotations

from typing import Any

import orjson

from podium.tasks.metadata import Task

TASK_FILE_PATH = "/puppet/v3/file_content/tasks"
MODULE_FILE_PATH = "/puppet/v3/file_content/modules"
HIDDEN_INPUT = "_input"  # job option holding the unredacted task input
REDACTED = "Sensitive [value redacted]"


def task_request(task: Task, params: dict[str, Any], noop: bool) -> dict[str, Any]:
    """The ``params`` of a ``task``/``run`` request: what the agent needs to run it."""
    env = {"environment": task.environment}
    files = [
        {
            "filename": task.executable.filename,
            "uri": {
                "path": f"{TASK_FILE_PATH}/{task.module}/{task.executable.filename}",
                "params": env,
            },
            "sha256": task.executable.sha256,
            "size_bytes": task.executable.size_bytes,
        }
    ]
    for extra in task.files:
        files.append(
            {
                "filename": extra.filename,
                "uri": {"path": f"{MODULE_FILE_PATH}/{extra.filename}", "params": env},
                "sha256": extra.sha256,
                "size_bytes": extra.size_bytes,
            }
        )
    body: dict[str, Any] = {
        "task": task.name,
        "input": params,
        "files": files,
        "input_method": task.input_method,
    }
    if noop:
        body["noop"] = True
    return body


def redacted(task: Task, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as the job shows them: sensitive values masked."""
    return {
        name: REDACTED if name in task.parameters and task.parameters[name].sensitive else value
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
