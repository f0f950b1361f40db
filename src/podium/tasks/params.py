"""Task parameters checked against their declared Puppet types, before anything is sent.

Rules (Bolt's and PE's): a task whose metadata declares ``parameters`` takes only those
(parameters named ``_...`` are metaparameters and pass); a parameter that is left out
gets its default, or must be of a type that accepts undef (``Optional[...]``); every
value must be an instance of its type. Each error names the parameter, the element of
the value that failed, the expected type and the value received (never the value of a
sensitive parameter). Values JSON cannot carry (NaN, infinities) are refused outright.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Final

from podium.errors import ValidationError
from podium.tasks.metadata import Task
from podium.types import accepts_undef, check

VALIDATION_ERROR: Final = "puppetlabs.orchestrator/validation-error"
# Deeper values are refused before they are walked (the wire format takes no deeper).
_MAX_DEPTH: Final = 255


def validate_params(task: Task, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters to send: checked against the task's metadata, defaults filled in."""
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ValidationError(
            f"invalid parameters for task {task.name}: params must be a JSON object",
            details={"task": task.name},
        )
    problems: list[dict[str, Any]] = []
    for name in sorted(params):
        where = _not_json(params[name], name, 0)
        if where is not None:
            problems.append({"parameter": name, "problem": where})
    if task.declares_parameters:
        takes = ", ".join(sorted(task.parameters)) or "no parameters"
        for name in sorted(params.keys() - task.parameters.keys()):
            if not name.startswith("_"):
                problems.append(
                    {
                        "parameter": name,
                        "problem": f"unknown parameter {name!r} (the task takes: {takes})",
                    }
                )
    result = dict(params)
    for name, param in task.parameters.items():
        ptype = param.parsed_type
        if name not in params:
            if param.has_default:
                result[name] = copy.deepcopy(param.default)
            elif not accepts_undef(ptype):
                problems.append(
                    {
                        "parameter": name,
                        "expected": param.type,
                        "problem": f"parameter {name!r} ({param.type}) is required "
                        "but was not given",
                    }
                )
            continue
        if any(p["parameter"] == name for p in problems):
            continue  # NaN and the like: already said
        mismatch = check(ptype, params[name])
        if mismatch is not None:
            problems.append(
                {
                    "parameter": name,
                    "expected": mismatch.expected,
                    "path": list(mismatch.path),
                    "problem": mismatch.describe(name, redact=param.is_sensitive),
                }
            )
    if problems:
        raise ValidationError(
            f"invalid parameters for task {task.name}: "
            + "; ".join(p["problem"] for p in problems),
            kind=VALIDATION_ERROR,
            details={"task": task.name, "errors": problems},
        )
    return result


def _not_json(value: object, where: str, depth: int) -> str | None:
    """Where ``value`` holds what JSON cannot carry, as a sentence, or None."""
    if depth > _MAX_DEPTH:
        return f"{where}: nested more than {_MAX_DEPTH} levels deep"
    if isinstance(value, float) and not math.isfinite(value):
        return (
            f"{where}: {value} is not a JSON number (NaN and infinities cannot be sent to a "
            "task); give a finite number"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            found = _not_json(item, f"{where}.{key}", depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _not_json(item, f"{where}[{i}]", depth + 1)
            if found:
                return found
    return None
