"""Running a built-in task's script as the agent runs it: PT_ variables in, JSON out."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.tasks.codedir import BUILTIN_MODULES

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Outcome:
    exitcode: int
    result: dict[str, Any]
    stderr: str = ""

    @property
    def error(self) -> dict[str, Any]:
        """The ``_error`` of a failed run."""
        assert self.exitcode != 0, self.result
        error: dict[str, Any] = self.result["_error"]
        return error

    @property
    def ok(self) -> dict[str, Any]:
        """The result of a run that must succeed."""
        assert self.exitcode == 0, self
        assert "_error" not in self.result
        return self.result


def run_builtin(
    module: str,
    cwd: Path,
    *,
    noop: bool = False,
    path: str = PATH,
    wrapper: tuple[str, ...] = (),
    timeout: float = 120,
    **params: str,
) -> Outcome:
    """Run ``<module>``'s init task with ``params`` as PT_ variables (its helper files
    under ``_installdir``, as the agent lays them out); stdout must be one JSON object."""
    script = BUILTIN_MODULES / module / "tasks" / "init.sh"
    env = {"PATH": path, "PT__task": module, "PT__installdir": str(BUILTIN_MODULES)}
    env.update({f"PT_{key}": value for key, value in params.items()})
    if noop:
        env["PT__noop"] = "true"
    proc = subprocess.run(
        [*wrapper, str(script)],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    result = json.loads(proc.stdout)
    assert isinstance(result, dict), proc.stdout
    return Outcome(proc.returncode, result, proc.stderr)
