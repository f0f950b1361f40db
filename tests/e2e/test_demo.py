"""The demo as a newcomer meets it: --keep prints what the CLI needs, --stop ends it all."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.installation import wait_for
from podium.cli.fleet import stop_processes_under

pytestmark = pytest.mark.e2e


def _podium(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def _agent_pids(root: Path) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"agent" in args and any(a.startswith(os.fsencode(root)) for a in args):
            found.append(int(entry.name))
    return found


def test_a_kept_demo_prints_working_commands_and_stops_cleanly() -> None:
    demo = _podium("demo", "--nodes", "2", "--keep")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    exports = dict(re.findall(r"^  export (\w+)=(.+)$", demo.stdout, re.MULTILINE))
    stop = re.search(r"^  (podium demo --stop .+)$", demo.stdout, re.MULTILINE)
    assert stop, demo.stdout
    root = Path(shlex.split(stop.group(1))[-1])
    try:
        assert set(exports) >= {
            "PATH",
            "PODIUM_SERVER_URL",
            "PODIUM_CACERT",
            "PODIUM_TOKEN_FILE",
            "PODIUM_CADIR",
        }
        env = {k: shlex.split(v)[0] for k, v in exports.items() if k != "PATH"}
        # Every example it printed works when pasted.
        for line in re.findall(r"^  (podium (?:task|job|ca) .+)$", demo.stdout, re.MULTILINE):
            ran = _podium(*shlex.split(line)[1:], env=env)
            assert ran.returncode == 0, (line, ran.stdout, ran.stderr)
        listed = _podium("ca", "list", "--all", env=env)
        assert "agent-01.demo" in listed.stdout

        # An agent restarted by hand as the demo says is stopped too.
        restart = re.search(r"after kill (\d+), an agent with\n  sh (\S+) &", demo.stdout)
        assert restart, demo.stdout
        os.kill(int(restart.group(1)), signal.SIGTERM)
        wait_for("the agent to stop", lambda: int(restart.group(1)) not in _agent_pids(root))
        restarted = subprocess.Popen(
            ["sh", restart.group(2)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for("the restarted agent", lambda: len(_agent_pids(root)) == 2)

        stopped = _podium(*shlex.split(stop.group(1))[1:])
        assert stopped.returncode == 0, stopped.stderr
        assert "Stopped" in stopped.stdout
        assert not root.exists()
        assert restarted.wait(timeout=30) is not None
        assert _agent_pids(root) == []
    finally:
        stop_processes_under(root)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_demo_stop_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    ran = _podium("demo", "--stop", str(tmp_path))
    assert ran.returncode == 1
    assert "is not a folder that `podium demo --keep` made" in ran.stderr
    assert tmp_path.exists()


def test_the_demo_runs_any_task_with_its_own_parameters() -> None:
    ran = _podium("demo", "--nodes", "1", "--task", "package", "action=status", "name=dpkg")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "$ podium task run package action=status name=dpkg --nodes agent-01.demo" in ran.stdout
    assert "installed" in ran.stdout
