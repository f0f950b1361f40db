"""Running tasks on the node: Bolt result rules, real task processes, the file cache."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.agent import taskrun
from podium.agent.taskrun import (
    read_outcome,
    start_task,
    task_result,
    wait_orphan,
    wait_task,
)
from podium.errors import Conflict, ValidationError
from podium.tasks import CodeDir, builtin_codedir

TASK_ERROR = "puppetlabs.tasks/task-error"

# -- task_result ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout", "stderr", "code", "ok", "result"),
    [
        (b'{"status": "up"}', b"", 0, True, {"status": "up"}),
        (b'  {"a": [1, 2]}\n', b"noise", 0, True, {"a": [1, 2]}),
        (b"hello\n", b"", 0, True, {"_output": "hello\n"}),
        (b"[1, 2]", b"", 0, True, {"_output": "[1, 2]"}),
        (b'"text"', b"", 0, True, {"_output": '"text"'}),
        (b"", b"", 0, True, {"_output": ""}),
        (b'{"a": NaN}', b"", 0, True, {"_output": '{"a": NaN}'}),
        (b"\xff\xfeok", b"", 0, True, {"_output": "\ufffd\ufffdok"}),
        (b"warn only", b"to stderr", 0, True, {"_output": "warn only"}),
        (
            b"partial",
            b"boom\n",
            3,
            False,
            {
                "_output": "partial",
                "_stderr": "boom\n",
                "_error": {
                    "kind": TASK_ERROR,
                    "msg": "The task errored with a code 3",
                    "details": {"exitcode": 3},
                },
            },
        ),
        (
            b'{"_error": {"kind": "mymod/broken", "msg": "no disk", "details": {"d": 1}}}',
            b"",
            1,
            False,
            {"_error": {"kind": "mymod/broken", "msg": "no disk", "details": {"d": 1}}},
        ),
        (
            b'{"_error": {"msg": "said so"}}',
            b"",
            0,
            False,
            {"_error": {"kind": TASK_ERROR, "msg": "said so", "details": {}}},
        ),
        (
            b'{"_error": "just a string"}',
            b"",
            2,
            False,
            {
                "_error": {
                    "kind": TASK_ERROR,
                    "msg": "The task returned an invalid _error: it must be an object with a msg",
                    "details": {"original_error": "just a string"},
                }
            },
        ),
        (
            b'{"x": 1}',
            b"",
            -9,
            False,
            {
                "x": 1,
                "_error": {
                    "kind": TASK_ERROR,
                    "msg": "The task errored with a code -9",
                    "details": {"exitcode": -9},
                },
            },
        ),
    ],
)
def test_task_result_follows_the_bolt_rules(
    stdout: bytes, stderr: bytes, code: int, ok: bool, result: dict[str, Any]
) -> None:
    assert task_result(stdout, stderr, code) == (ok, result)


@given(st.binary(max_size=300), st.binary(max_size=50), st.integers(-(2**31), 2**31))
def test_task_result_never_raises_and_a_nonzero_exit_always_errors(
    stdout: bytes, stderr: bytes, code: int
) -> None:
    ok, result = task_result(stdout, stderr, code)
    json.dumps(result, allow_nan=False)  # always sendable
    if code != 0:
        assert not ok
        assert isinstance(result["_error"], dict)
        assert isinstance(result["_error"]["msg"], str)
    assert ok == (code == 0 and "_error" not in result)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
        max_leaves=12,
    ).map(lambda v: {"value": v}),
    st.integers(-300, 300),
)
def test_a_json_object_on_stdout_is_the_result(obj: dict[str, Any], code: int) -> None:
    ok, result = task_result(json.dumps(obj).encode(), b"", code)
    assert result["value"] == obj["value"]
    assert ok == (code == 0)


def test_deeply_nested_output_is_text() -> None:
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    ok, result = task_result(deep, b"", 0)
    assert ok and result == {"_output": deep.decode()}


# -- running tasks --------------------------------------------------------------------

BUILTIN = CodeDir(builtin_codedir())


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
    echo = BUILTIN.task("production", "podium::echo")
    ok, result = await _run(
        tmp_path,
        echo.executable.path,
        {"message": "hello -n $HOME"},
        input_method=echo.input_method,
        name=echo.name,
    )
    assert (ok, result) == (True, {"_output": "hello -n $HOME\n"})


async def test_builtin_command_runs_a_shell_command(tmp_path: Path) -> None:
    command = BUILTIN.task("production", "podium::command")
    ok, result = await _run(
        tmp_path,
        command.executable.path,
        {"command": "echo one; echo two >&2"},
        input_method=command.input_method,
        name=command.name,
    )
    assert (ok, result) == (True, {"_output": "one\ntwo\n"})


async def test_builtin_command_reports_the_exit_code(tmp_path: Path) -> None:
    command = BUILTIN.task("production", "podium::command")
    ok, result = await _run(
        tmp_path,
        command.executable.path,
        {"command": "echo failing; exit 7"},
        input_method=command.input_method,
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
    assert (tmp_path / "spool/tx-1/stdin").read_bytes() == b""


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
    task = _script(
        tmp_path,
        "slow.sh",
        """
        #!/bin/sh
        sleep 1
        echo '{"survived": true}'
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
    assert taskrun._alive(pid), "the task should still run after its agent exited"
    assert not (txdir / "exitcode").exists()
    # The restarted agent only has the pid from its spool.
    ok, result = await wait_task(txdir, pid, poll=0.02)
    assert (ok, result) == (True, {"survived": True})


async def test_a_child_can_also_be_followed_as_an_orphan(tmp_path: Path) -> None:
    task = _script(tmp_path, "quick.sh", "#!/bin/sh\nsleep 0.2\necho done\n")
    txdir = tmp_path / "spool" / "tx-1"
    pid = await start_task(
        txdir, task, task_name="m::t", params={}, input_method=None, installdir=tmp_path
    )
    assert await wait_orphan(txdir, pid, poll=0.01) == (True, {"_output": "done\n"})
    assert await wait_task(txdir, pid) == (True, {"_output": "done\n"})


async def test_a_wrapper_killed_before_recording_an_exit_code_is_a_lost_task(
    tmp_path: Path,
) -> None:
    task = _script(tmp_path, "hang.sh", "#!/bin/sh\necho started\nsleep 30\n")
    txdir = tmp_path / "spool" / "tx-1"
    pid = await start_task(
        txdir, task, task_name="m::t", params={}, input_method=None, installdir=tmp_path
    )
    await asyncio.sleep(0.2)
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
    ok, result = await wait_orphan(txdir, gone.pid, poll=0.01)
    assert not ok
    assert "no exit code was recorded" in result["_error"]["msg"]
    assert read_outcome(txdir, gone.pid) == (ok, result)


async def test_fifty_tasks_run_concurrently(tmp_path: Path) -> None:
    echo = BUILTIN.task("production", "podium::echo")
    started = []
    for i in range(50):
        txdir = tmp_path / "spool" / f"tx-{i}"
        pid = await start_task(
            txdir,
            echo.executable.path,
            task_name=echo.name,
            params={"message": f"n{i}"},
            input_method=echo.input_method,
            installdir=tmp_path,
        )
        started.append(wait_task(txdir, pid))
    results = await asyncio.wait_for(asyncio.gather(*started), timeout=30)
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


def test_integers_too_big_for_the_wire_become_floats():
    ok, result = task_result(b'{"big": 123456789012345678901234567890, "small": 7}', b"", 0)
    assert ok
    assert result == {"big": 1.2345678901234568e29, "small": 7}
    assert orjson.dumps(result)  # what the agent sends must serialize


def test_a_result_too_big_for_a_message_is_cut_to_fit_with_a_note():
    big = {"_output": "x" * 50_000, "_error": {"kind": "k", "msg": "m", "details": {}}}
    fitted = taskrun.fit_result(big, 10_000)
    assert len(orjson.dumps(fitted)) <= 10_000
    assert fitted["_error"] == big["_error"]
    assert fitted["_output"] == "x" * len(fitted["_output"])
    assert "over the 10000-byte message limit" in fitted["_truncated"]
    small = {"_output": "fine"}
    assert taskrun.fit_result(small, 10_000) is small


def test_json_nested_deeper_than_the_wire_takes_is_plain_output():
    text = '{"a":' * 300 + "1" + "}" * 300
    ok, result = task_result(text.encode(), b"", 0)
    assert ok
    assert result == {"_output": text}
