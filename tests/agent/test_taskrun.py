"""Running tasks on the node: real task processes, their input, output and deadline."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import podium
from podium.agent import taskrun
from podium.agent.actions import StopSignal
from podium.agent.taskrun import read_outcome, start_task, wait_task
from podium.errors import Conflict, ValidationError
from waiting import DEADLINE, until

TASK_ERROR = "puppetlabs.tasks/task-error"
TASK_TIMEOUT = "puppetlabs.tasks/task-timeout"


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody reaped is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    return state != b"Z"


# -- running tasks --------------------------------------------------------------------

BUILTIN_TASKS = Path(podium.__file__).parent / "data" / "modules" / "podium" / "tasks"


def _script(folder: Path, name: str, body: str, *, mode: int = 0o755) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    path.chmod(mode)
    return path


async def _run(
    tmp_path: Path,
    executable: Path,
    params: dict[str, Any],
    *,
    input_method: str | None = None,
    noop: bool = False,
    name: str = "mymod::task",
) -> tuple[bool, dict[str, Any]]:
    txdir = tmp_path / "spool" / "tx-1"
    pid = await start_task(
        txdir,
        executable,
        task_name=name,
        params=params,
        input_method=input_method,
        installdir=executable.parent,
        noop=noop,
    )
    return await wait_task(txdir, pid)


async def test_builtin_echo_prints_its_message(tmp_path: Path) -> None:
    ok, result = await _run(
        tmp_path,
        BUILTIN_TASKS / "echo.sh",
        {"message": "hello -n $HOME"},
        input_method="environment",
        name="podium::echo",
    )
    assert (ok, result) == (True, {"_output": "hello -n $HOME\n"})


async def test_builtin_command_runs_a_shell_command(tmp_path: Path) -> None:
    ok, result = await _run(
        tmp_path,
        BUILTIN_TASKS / "command.sh",
        {"command": "echo one; echo two >&2"},
        input_method="environment",
        name="podium::command",
    )
    assert (ok, result) == (True, {"_output": "one\ntwo\n"})


async def test_builtin_command_reports_the_exit_code(tmp_path: Path) -> None:
    ok, result = await _run(
        tmp_path,
        BUILTIN_TASKS / "command.sh",
        {"command": "echo failing; exit 7"},
        input_method="environment",
    )
    assert not ok
    assert result["_output"] == "failing\n"
    assert result["_error"]["details"] == {"exitcode": 7}


async def test_a_python_task_reads_its_parameters_as_json_on_stdin(tmp_path: Path) -> None:
    task = _script(
        tmp_path,
        "params.py",
        f"""
        #!{sys.executable}
        import json, sys
        print(json.dumps({{"got": json.load(sys.stdin)}}))
        """,
        mode=0o644,  # not executable: the #! line says how to run it
    )
    params = {"name": "web", "count": 3, "opts": {"a": [1, None]}}
    ok, result = await _run(tmp_path, task, params, input_method="stdin", noop=True)
    assert ok
    assert result == {
        "got": {
            **params,
            "_task": "mymod::task",
            "_installdir": str(tmp_path),
            "_noop": True,
        }
    }


async def test_parameters_arrive_as_pt_environment_variables(tmp_path: Path) -> None:
    task = _script(
        tmp_path,
        "env.sh",
        """
        printf '%s|%s|%s|%s|%s|%s' "$PT_name" "$PT_count" "$PT_flag" "$PT_list" \
            "$PT__task" "${PT__noop-unset}"
        """,
        mode=0o644,  # no #! line, not executable: run with sh for its extension
    )
    ok, result = await _run(
        tmp_path,
        task,
        {"name": "a b", "count": 3, "flag": True, "list": ["x", 1]},
        input_method="environment",
    )
    assert ok
    assert result == {"_output": 'a b|3|true|["x", 1]|mymod::task|unset'}


async def test_both_input_methods_are_used_by_default(tmp_path: Path) -> None:
    task = _script(
        tmp_path,
        "both.sh",
        """
        #!/bin/sh
        printf '%s ' "$PT_message"; cat
        """,
    )
    ok, result = await _run(tmp_path, task, {"message": "hi"})
    assert ok
    text = result["_output"]
    assert text.startswith("hi {")
    assert json.loads(text[3:])["message"] == "hi"


async def test_huge_values_go_on_stdin_only(tmp_path: Path) -> None:
    task = _script(
        tmp_path,
        "big.sh",
        """
        #!/bin/sh
        printf '%s:' "${PT_blob-absent}"; wc -c
        """,
    )
    ok, result = await _run(tmp_path, task, {"blob": "x" * 200_000})
    assert ok
    assert result["_output"].startswith("absent:")
    assert int(result["_output"].split(":")[1]) > 200_000


async def test_the_agents_environment_is_not_passed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODIUM_TOKEN", "secret")
    monkeypatch.setenv("HOME", "/home/agent")
    task = _script(tmp_path, "env.sh", "#!/bin/sh\nenv\n")
    ok, result = await _run(tmp_path, task, {}, input_method="stdin")
    assert ok
    names = {line.split("=", 1)[0] for line in result["_output"].splitlines()}
    assert "PODIUM_TOKEN" not in names
    assert {"PATH", "HOME"} <= names
    assert "HOME=/home/agent" in result["_output"]


async def test_a_failing_task_reports_its_exit_code_and_stderr(tmp_path: Path) -> None:
    task = _script(tmp_path, "fail.sh", "#!/bin/sh\necho out\necho 'it broke' >&2\nexit 3\n")
    ok, result = await _run(tmp_path, task, {})
    assert not ok
    assert result == {
        "_output": "out\n",
        "_stderr": "it broke\n",
        "_error": {
            "kind": TASK_ERROR,
            "msg": "The task errored with a code 3",
            "details": {"exitcode": 3},
        },
    }
    spool = tmp_path / "spool/tx-1"
    assert (spool / "exitcode").read_text() == "3\n"
    assert (spool / "stderr").read_text() == "it broke\n"


async def test_json_object_output_becomes_the_result(tmp_path: Path) -> None:
    task = _script(tmp_path, "j.sh", '#!/bin/sh\necho \'{"version": "1.2", "ok": true}\'\n')
    assert await _run(tmp_path, task, {}) == (True, {"version": "1.2", "ok": True})


async def test_a_task_outlives_an_agent_restart(tmp_path: Path) -> None:
    go = tmp_path / "go"
    task = _script(
        tmp_path,
        "slow.sh",
        f"""
        #!/bin/sh
        while [ ! -e {go} ]; do sleep 0.01; done
        echo '{{"survived": true}}'
        """,
    )
    txdir = tmp_path / "spool" / "tx-restart"
    # The first agent process starts the task, then goes away.
    agent = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from podium.agent.taskrun import start_task
        pid = asyncio.run(start_task(
            Path({str(txdir)!r}), Path({str(task)!r}), task_name="mymod::slow",
            params={{}}, input_method=None, installdir=Path({str(tmp_path)!r})))
        print(pid)
        """
    )
    started = subprocess.run(
        [sys.executable, "-c", agent], capture_output=True, text=True, check=True, timeout=30
    )
    pid = int(started.stdout)
    assert taskrun.is_alive(pid), "the task should still run after its agent exited"
    assert not (txdir / "exitcode").exists()
    go.touch()
    # The restarted agent only has the pid from its spool.
    ok, result = await asyncio.wait_for(wait_task(txdir, pid, poll=0.02), DEADLINE)
    assert (ok, result) == (True, {"survived": True})


async def test_a_wrapper_killed_before_recording_an_exit_code_is_a_lost_task(
    tmp_path: Path,
) -> None:
    task = _script(tmp_path, "hang.sh", "#!/bin/sh\necho started\nsleep 30\n")
    txdir = tmp_path / "spool" / "tx-1"
    pid = await start_task(
        txdir, task, task_name="m::t", params={}, input_method=None, installdir=tmp_path
    )
    await until(lambda: (txdir / "stdout").read_bytes() == b"started\n")
    os.killpg(pid, signal.SIGKILL)  # the wrapper leads its own session and group
    ok, result = await wait_task(txdir, pid)
    assert not ok
    assert result["_error"]["kind"] == TASK_ERROR
    assert result["_error"]["msg"] == (
        "the agent lost track of the task: no exit code was recorded"
    )
    assert result["_output"] == "started\n"


async def test_an_orphan_whose_process_is_gone_is_a_lost_task(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    txdir = tmp_path / "tx-1"
    txdir.mkdir()
    ok, result = await wait_task(txdir, gone.pid, poll=0.01)
    assert not ok
    assert "no exit code was recorded" in result["_error"]["msg"]
    assert read_outcome(txdir, gone.pid) == (ok, result)


async def test_fifty_tasks_run_concurrently(tmp_path: Path) -> None:
    started = []
    for i in range(50):
        txdir = tmp_path / "spool" / f"tx-{i}"
        pid = await start_task(
            txdir,
            BUILTIN_TASKS / "echo.sh",
            task_name="podium::echo",
            params={"message": f"n{i}"},
            input_method="environment",
            installdir=tmp_path,
        )
        started.append(wait_task(txdir, pid))
    results = await asyncio.wait_for(asyncio.gather(*started), DEADLINE)
    assert results == [(True, {"_output": f"n{i}\n"}) for i in range(50)]


async def test_a_transaction_folder_with_an_outcome_is_never_run_again(tmp_path: Path) -> None:
    task = _script(tmp_path, "t.sh", "#!/bin/sh\necho ran >> ran.log\n")
    await _run(tmp_path, task, {})
    with pytest.raises(Conflict, match="runs once"):
        await _run(tmp_path, task, {})
    assert (tmp_path / "ran.log").read_text() == "ran\n"


async def test_a_file_that_cannot_be_run_is_refused(tmp_path: Path) -> None:
    task = _script(tmp_path, "data.txt", "not a program\n", mode=0o644)
    with pytest.raises(ValidationError, match="not executable, has no #! line"):
        await _run(tmp_path, task, {})


@pytest.mark.parametrize("method", ["argv", "POWERSHELL"])
async def test_unknown_input_methods_are_refused(tmp_path: Path, method: str) -> None:
    task = _script(tmp_path, "t.sh", "#!/bin/sh\n")
    with pytest.raises(ValidationError, match="unknown input_method"):
        await _run(tmp_path, task, {}, input_method=method)


def test_interpreters_are_chosen_by_shebang_then_extension(tmp_path: Path) -> None:
    plain_py = _script(tmp_path, "a.py", "print(1)\n", mode=0o644)
    env_py = _script(tmp_path, "b.py", "#!/usr/bin/env python3 -u\nprint(1)\n", mode=0o644)
    exe_py = _script(tmp_path, "c.py", "#!/usr/bin/env python3\nprint(1)\n")
    rb = _script(tmp_path, "d.rb", "puts 1\n", mode=0o644)
    ps1 = _script(tmp_path, "e.ps1", "Write-Output 1\n", mode=0o644)
    binary = _script(tmp_path, "f", "\x7fELF", mode=0o755)
    assert taskrun._command(plain_py) == ["python3", str(plain_py)]
    assert taskrun._command(env_py) == ["/usr/bin/env", "python3 -u", str(env_py)]
    assert taskrun._command(exe_py) == [str(exe_py)]
    assert taskrun._command(rb) == ["ruby", str(rb)]
    assert taskrun._command(ps1)[0] == "pwsh"
    assert taskrun._command(binary) == [str(binary)]


# -- input ----------------------------------------------------------------------------


async def test_the_input_file_is_removed_once_the_task_has_it_open(tmp_path: Path) -> None:
    task = _script(tmp_path, "read.sh", "#!/bin/sh\ncat\n")
    ok, result = await _run(tmp_path, task, {"password": "hunter2"}, input_method="stdin")
    assert ok
    assert result["password"] == "hunter2"  # it printed its input: a JSON object
    assert not (tmp_path / "spool/tx-1/stdin").exists()


# -- output ---------------------------------------------------------------------------


async def test_output_that_is_not_utf8_is_kept_exactly(tmp_path: Path) -> None:
    task = _script(tmp_path, "bin.sh", "#!/bin/sh\nprintf '\\377\\000ok'\n")
    ok, result = await _run(tmp_path, task, {})
    assert ok
    assert result["_output"] == "\ufffd\x00ok"
    assert base64.b64decode(result["_output_base64"]) == b"\xff\x00ok"


async def test_output_is_kept_up_to_the_cap_without_a_broken_character(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskrun, "MAX_OUTPUT", 10)
    task = _script(tmp_path, "long.sh", "#!/bin/sh\nprintf 'aaaaaaaaa\\342\\234\\223 and more'\n")
    assert await _run(tmp_path, task, {}) == (True, {"_output": "aaaaaaaaa"})
    assert (tmp_path / "spool/tx-1/stdout").read_bytes().endswith(b" and more")


# -- timeout --------------------------------------------------------------------------

# Starts a child that ignores SIGTERM (so only SIGKILL stops it), notes its pid, waits.
STUBBORN = """
    #!/bin/sh
    echo working
    trap '' TERM
    sleep 1000 &
    echo $! > child.pid
    wait
"""


async def test_a_task_past_its_timeout_is_stopped_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskrun, "KILL_GRACE", 0.2)
    task = _script(tmp_path, "stubborn.sh", STUBBORN)
    txdir = tmp_path / "spool" / "tx-1"
    pid = await start_task(
        txdir, task, task_name="m::t", params={}, input_method=None, installdir=tmp_path,
        time_limit=1,
    )  # fmt: skip
    ok, result = await asyncio.wait_for(wait_task(txdir, pid), DEADLINE)
    assert not ok
    assert result == {
        "_error": {
            "kind": TASK_TIMEOUT,
            "msg": "the task did not finish within 1 s and was stopped",
            "details": {"timeout": 1},
        },
        "_output": "working\n",
    }
    child = int((tmp_path / "child.pid").read_text())
    await until(lambda: not running(child))
    await until(lambda: not running(pid))


async def test_a_task_that_ends_on_sigterm_is_not_given_the_whole_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskrun, "KILL_GRACE", 1000.0)  # the test's deadline if waited out
    task = _script(tmp_path, "polite.sh", "#!/bin/sh\nsleep 1000 &\necho $! > child.pid\nwait\n")
    txdir = tmp_path / "spool" / "tx-1"
    pid = await start_task(
        txdir, task, task_name="m::t", params={}, input_method=None, installdir=tmp_path,
        time_limit=0.5,
    )  # fmt: skip
    _, result = await asyncio.wait_for(wait_task(txdir, pid), DEADLINE)
    assert result["_error"]["kind"] == TASK_TIMEOUT
    assert (txdir / "exitcode").read_text() == "143\n"  # the wrapper saw it end
    await until(lambda: not running(int((tmp_path / "child.pid").read_text())))


async def test_a_task_that_finishes_in_time_is_not_stopped(tmp_path: Path) -> None:
    task = _script(tmp_path, "quick.sh", "#!/bin/sh\necho done\n")
    txdir = tmp_path / "spool" / "tx-1"
    pid = await start_task(
        txdir, task, task_name="m::t", params={}, input_method=None, installdir=tmp_path,
        time_limit=60,
    )  # fmt: skip
    assert await wait_task(txdir, pid) == (True, {"_output": "done\n"})
    assert json.loads((txdir / "deadline").read_text())["timeout"] == 60


async def test_the_deadline_outlives_an_agent_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskrun, "KILL_GRACE", 0.2)
    task = _script(tmp_path, "stubborn.sh", STUBBORN)
    txdir = tmp_path / "spool" / "tx-deadline"
    # The first agent process starts the task with a timeout, then goes away.
    agent = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from podium.agent.taskrun import start_task
        pid = asyncio.run(start_task(
            Path({str(txdir)!r}), Path({str(task)!r}), task_name="m::t", params={{}},
            input_method=None, installdir=Path({str(tmp_path)!r}), time_limit=1))
        print(pid)
        """
    )
    started = subprocess.run(
        [sys.executable, "-c", agent], capture_output=True, text=True, check=True, timeout=30
    )
    pid = int(started.stdout)
    # The restarted agent follows the task by its pid, and stops it at the deadline it
    # was given when it started: it would otherwise sleep for 1000 s.
    ok, result = await asyncio.wait_for(wait_task(txdir, pid, poll=0.02), DEADLINE)
    assert not ok
    assert result["_error"]["kind"] == TASK_TIMEOUT
    await until(lambda: not running(int((tmp_path / "child.pid").read_text())))
    await until(lambda: not running(pid))


@pytest.mark.parametrize("limit", [0, -1, float("nan"), float("inf")])
async def test_a_timeout_must_be_a_positive_number(tmp_path: Path, limit: float) -> None:
    task = _script(tmp_path, "t.sh", "#!/bin/sh\n")
    with pytest.raises(ValidationError, match="positive number"):
        await start_task(
            tmp_path / "tx", task, task_name="m::t", params={}, input_method=None,
            installdir=tmp_path, time_limit=limit,
        )  # fmt: skip
    assert not (tmp_path / "tx").exists()


# -- stopping on request --------------------------------------------------------------

TASK_STOPPED = "podium.tasks/task-stopped"


async def test_a_task_asked_to_stop_is_stopped_with_its_children(tmp_path: Path) -> None:
    task = _script(tmp_path, "stubborn.sh", STUBBORN)
    txdir = tmp_path / "spool" / "tx-1"
    pid = await start_task(
        txdir, task, task_name="m::t", params={}, input_method=None, installdir=tmp_path
    )
    stop = StopSignal("task", "run")
    waiting = asyncio.ensure_future(wait_task(txdir, pid, stop=stop, kill_grace=0.2))
    await until(lambda: (tmp_path / "child.pid").read_text().endswith("\n"))
    stop.request("maintenance window")
    ok, result = await asyncio.wait_for(waiting, DEADLINE)
    assert not ok
    assert result == {
        "_error": {
            "kind": TASK_STOPPED,
            "msg": "the task was stopped: maintenance window",
            "details": {},
        },
        "_output": "working\n",
    }
    await until(lambda: not running(int((tmp_path / "child.pid").read_text())))
    await until(lambda: not running(pid))


async def test_a_task_that_ended_before_the_stop_keeps_its_own_outcome(tmp_path: Path) -> None:
    task = _script(tmp_path, "quick.sh", "#!/bin/sh\necho done\n")
    txdir = tmp_path / "spool" / "tx-1"
    pid = await start_task(
        txdir, task, task_name="m::t", params={}, input_method=None, installdir=tmp_path
    )
    await until(lambda: (txdir / "exitcode").read_text() == "0\n")
    stop = StopSignal("task", "run")
    stop.request()
    assert await wait_task(txdir, pid, stop=stop) == (True, {"_output": "done\n"})


async def test_a_task_followed_after_a_restart_can_be_stopped(tmp_path: Path) -> None:
    task = _script(tmp_path, "slow.sh", "#!/bin/sh\necho started\nsleep 1000\n")
    txdir = tmp_path / "spool" / "tx-orphan"
    agent = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from podium.agent.taskrun import start_task
        pid = asyncio.run(start_task(
            Path({str(txdir)!r}), Path({str(task)!r}), task_name="m::t", params={{}},
            input_method=None, installdir=Path({str(tmp_path)!r})))
        print(pid)
        """
    )
    started = subprocess.run(
        [sys.executable, "-c", agent], capture_output=True, text=True, check=True, timeout=30
    )
    pid = int(started.stdout)
    stop = StopSignal("task", "run")
    stop.request()
    ok, result = await asyncio.wait_for(wait_task(txdir, pid, stop=stop, poll=0.02), DEADLINE)
    assert not ok
    assert result["_error"]["msg"] == "the task was stopped: on request"
    await until(lambda: not running(pid))
