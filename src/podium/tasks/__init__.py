"""Tasks: the code directory, task metadata and parameter checks.

``builtin_codedir()`` is the default code directory shipped with Podium: an empty
environment ``production``; the built-in modules (``podium``, ``package``, ``service``)
join every environment's modulepath from ``codedir.BUILTIN_MODULES``.
"""

from __future__ import annotations

from pathlib import Path

from podium.tasks.codedir import UNKNOWN_ENVIRONMENT, UNKNOWN_TASK, CodeDir
from podium.tasks.metadata import MISSING, Task, TaskFile, TaskParameter
from podium.tasks.params import validate_params

__all__ = [
    "MISSING",
    "UNKNOWN_ENVIRONMENT",
    "UNKNOWN_TASK",
    "CodeDir",
    "Task",
    "TaskFile",
    "TaskParameter",
    "builtin_codedir",
    "validate_params",
]


def builtin_codedir() -> Path:
    """The code directory that ships with Podium."""
    return Path(__file__).resolve().parent.parent / "data" / "code"
