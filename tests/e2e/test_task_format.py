"""The Bolt/PE task format end to end: real agents run the test modules in tests/e2e/code."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.installation import Installation, job_id_in, start_installation, wait_for

pytestmark = pytest.mark.e2e

CODE = Path(__file__).parent / "code"
NODES = ["fmt-01.e2e", "fmt-02.e2e"]
SECRET = "s3cret-Passw0rd-e2e"


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test modules, copied so that a test may change a file (the copy keeps modes)."""
    target = tmp_path_factory.mktemp("code") / "code"
    shutil.copytree(CODE, target)
    return target


@pytest.fixture(scope="module")
def fmt(code: Path) -> Iterator[Installation]:
    with start_installation(NODES, codedir=code) as installation:
        yield installation


def run(fleet: Installation, task: str, params: dict, nodes: list[str] | None = None, **kw):
    job_id = fleet.run_task(task, params, nodes or NODES[:1], **kw)
    job = fleet.wait_job(job_id)
    return job, fleet.nodes(job_id)


def test_every_metadata_key_reaches_the_task_as_bolt_defines_it(fmt: Installation) -> None:
    job, nodes = run(
        fmt,
        "e2e::inspect",
        {"name": "ops", "mode": "safe", "opts": {"retries": 1, "tags": ["a"]}},
    )
    assert job["state"] == "finished", nodes
    result = nodes[NODES[0]]["result"]
    assert result["name"] == "ops"
    assert result["count"] == 2  # the default
    assert result["mode"] == "safe"  # an alias type from the module's types/
    assert result["opts"] == {"retries": 1, "tags": ["a"]}
    assert result["task"] == "e2e::inspect"
    assert result["env_name"] == "ops"  # input_method both: stdin and PT_ variables
    assert result["shout"] == "OPS!"  # a folder of extra files from another module
    assert result["greeting"] == 'greeting="hello from helpers"'
    assert "_installdir" in result["input"]
    assert result["noop"] is False


def test_noop_reaches_a_task_that_supports_it(fmt: Installation) -> None:
    _, nodes = run(fmt, "e2e::inspect", {"name": "x"}, noop=True)
    assert nodes[NODES[0]]["result"]["noop"] is True


def test_input_method_environment_leaves_stdin_empty(fmt: Installation) -> None:
    _, nodes = run(fmt, "e2e::envonly", {"word": "bird"})
    assert nodes[NODES[0]]["result"] == {"_output": "word=bird stdin=[] task=e2e::envonly\n"}


def test_the_nodes_features_choose_the_implementation(fmt: Installation) -> None:
    # The agents here have python3: the python implementation wins over the shell one,
    # and it gets the extra file listed for it alone.
    _, nodes = run(fmt, "e2e::multi", {}, NODES)
    for node in NODES:
        assert nodes[node]["result"] == {"ran": "python", "has_extra_file": True}


def test_plain_output_and_a_failing_exit_code_become_a_task_error(fmt: Installation) -> None:
    job, nodes = run(fmt, "e2e::plain_fail", {"anything": "goes"})
    assert job["state"] == "failed"
    result = nodes[NODES[0]]["result"]
    assert result["_output"] == "not json at all\n"
    assert result["_error"]["kind"] == "puppetlabs.tasks/task-error"
    assert result["_error"]["details"] == {"exitcode": 3}
    assert "something went wrong" in result["_stderr"]


def test_a_tasks_own_error_is_kept(fmt: Installation) -> None:
    _, nodes = run(fmt, "e2e::own_error", {})
    node = nodes[NODES[0]]
    assert node["state"] == "failed"
    assert node["result"]["_error"] == {
        "kind": "e2e/own-error",
        "msg": "the task says no",
        "details": {"why": "testing"},
    }


def test_output_that_is_not_utf8_is_kept_byte_for_byte(fmt: Installation) -> None:
    _, nodes = run(fmt, "e2e::binary", {})
    result = nodes[NODES[0]]["result"]
    assert base64.b64decode(result["_output_base64"]) == b"caf\xe9 \xff\n"
    assert result["_output"].startswith("caf\ufffd")


def test_a_timeout_kills_the_task_and_its_children(fmt: Installation, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    job, nodes = run(fmt, "e2e::slow", {"pidfile": str(pidfile)}, timeout=2)
    assert job["state"] == "failed"
    error = nodes[NODES[0]]["result"]["_error"]
    assert error["kind"] == "puppetlabs.tasks/task-timeout"
    assert error["details"]["timeout"] == 2
    child = int(pidfile.read_text())
    wait_for("the task's child to be killed", lambda: not _alive(child))


def test_a_private_task_is_not_listed_but_runs(fmt: Installation) -> None:
    listing = fmt.cli("task", "show")
    assert listing.returncode == 0, listing.stderr
    assert "e2e::inspect" in listing.stdout
    assert "e2e::internal" not in listing.stdout
    _, nodes = run(fmt, "e2e::internal", {})
    assert nodes[NODES[0]]["result"] == {"_output": "private-ok\n"}


def test_task_show_describes_parameters_types_defaults_and_implementations(
    fmt: Installation,
) -> None:
    shown = fmt.cli("task", "show", "e2e::inspect")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "Report what the task received" in out
    assert "Supports noop: yes" in out
    assert "count" in out and "Integer[1, 10]" in out and "2" in out
    assert "password" in out and "(sensitive)" in out
    multi = fmt.cli("task", "show", "e2e::multi").stdout
    assert "multi.py (python)" in multi
    assert "multi.ps1 (powershell)" in multi


def test_cli_pairs_follow_the_parameter_types(fmt: Installation) -> None:
    ran = fmt.cli(
        "task", "run", "e2e::inspect", "--nodes", NODES[0], "name=007", "count=3",
        'opts={"retries": 0}', "--format", "json",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert '"name": "007"' in ran.stdout  # String[1]: kept a string
    assert '"count": 3' in ran.stdout  # Integer: a number
    wrong = fmt.cli("task", "run", "e2e::inspect", "name=x", "count=11", "--nodes", NODES[0])
    assert wrong.returncode == 1
    assert "count: expected Integer[1, 10], got 11" in wrong.stderr


def test_a_tampered_cached_file_never_runs(fmt: Installation) -> None:
    _, nodes = run(fmt, "e2e::envonly", {"word": "one"})
    cached = [
        p
        for p in (fmt.vardir(NODES[0])).rglob("envonly.sh")
        if p.is_file() and "spool" not in p.parts
    ]
    assert cached, "the task file was not cached"
    for path in cached:
        path.chmod(0o755)
        path.write_text('#!/bin/sh\necho "tampered"\n')
    _, nodes = run(fmt, "e2e::envonly", {"word": "two"})
    result = nodes[NODES[0]]["result"]
    assert "tampered" not in str(result)
    assert result == {"_output": "word=two stdin=[] task=e2e::envonly\n"}


def test_sensitive_values_stay_out_of_logs_database_api_and_cli(fmt: Installation) -> None:
    job, nodes = run(fmt, "e2e::inspect", {"name": "x", "password": SECRET})
    assert nodes[NODES[0]]["result"]["password_length"] == len(SECRET)  # the task got it
    job_id = job["name"]
    shown = fmt.cli("job", "show", job_id)
    listing = fmt.cli("job", "show")
    api = fmt.api.call("GET", f"/jobs/{job_id}")
    assert api["options"]["params"]["password"] == "Sensitive [value redacted]"
    datadir = fmt.fleet.datadir
    server_files = b"".join(p.read_bytes() for p in datadir.rglob("*") if p.is_file())
    spool = b"".join(p.read_bytes() for p in fmt.vardir(NODES[0]).rglob("*") if p.is_file())
    for where, text in [
        ("job show", shown.stdout + shown.stderr),
        ("job list", listing.stdout),
        ("API", str(api)),
        ("server log", fmt.fleet.server_log.read_text()),
        ("agent log", fmt.agent_log(NODES[0])),
    ]:
        assert SECRET not in text, where
    assert SECRET.encode() not in server_files, "the server's data folder"
    assert SECRET.encode() not in spool, "the agent's spool"


def test_the_demo_runs_on_a_code_directory_of_the_users_own(code: Path) -> None:
    demo = _podium("demo", "--nodes", "2", "--codedir", str(code), "--task", "e2e::envonly",
                   "word=hi")  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Job completed. 2/2 nodes succeeded." in demo.stdout
    assert job_id_in(demo.stdout)


def _podium(*args: str):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
