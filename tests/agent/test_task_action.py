"""task/run: the request checked, the files laid out as Bolt does, the task run."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from podium.agent.actions.task import TaskRequest, TaskRun, lay_out, parse_request
from podium.agent.config import AgentConfig
from podium.agent.filecache import FileCache
from podium.agent.spool import Spool
from podium.errors import ProtocolError, ValidationError

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def spec(filename: str, content: bytes = b"#!/bin/sh\n") -> dict[str, Any]:
    sha256 = hashlib.sha256(content).hexdigest()
    return {
        "filename": filename,
        "uri": {"path": f"/files/{sha256}", "params": {}},
        "sha256": sha256,
        "size_bytes": len(content),
    }


def params(**overrides: Any) -> dict[str, Any]:
    body = {
        "task": "mymod::deploy",
        "input": {"version": "1.2"},
        "files": [spec("deploy.sh")],
        "input_method": None,
    }
    body.update(overrides)
    return body


# -- the request ----------------------------------------------------------------------


def test_a_request_as_todays_server_sends_it_is_taken():
    request = parse_request(params())
    assert request == TaskRequest(
        task="mymod::deploy",
        input={"version": "1.2"},
        files=(spec("deploy.sh"),),
        input_method=None,
        noop=False,
        timeout=None,
    )
    assert request.module == "mymod"


def test_a_request_with_every_param_is_taken():
    request = parse_request(
        params(
            task="mymod",
            files=[spec("init.sh"), spec("mymod/files/lib.sh"), spec("stdlib/lib/x/y.rb")],
            input_method="stdin",
            noop=True,
            timeout=90,
        )
    )
    assert (request.module, request.noop, request.timeout) == ("mymod", True, 90)
    assert parse_request(params(input=None)).input == {}
    assert parse_request(params(timeout=0.25)).timeout == 0.25


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "My Task"}, "'task' must be a task name"),
        ({"task": "mymod::"}, "'task' must be a task name"),
        ({"input": ["a"]}, "'input' must be an object"),
        ({"files": []}, "'files' must be a non-empty list"),
        ({"files": "deploy.sh"}, "'files' must be a non-empty list"),
        ({"files": [spec("../deploy.sh")]}, "invalid task file name"),
        ({"files": [{**spec("deploy.sh"), "sha256": "abc"}]}, "sha256 must be 64 hex digits"),
        ({"files": [spec("mymod/tasks/deploy.sh")]}, "the executable's filename must be a base"),
        ({"files": [spec("deploy.sh"), spec("lib.sh")]}, "must be named <module>/<files|"),
        ({"files": [spec("deploy.sh"), spec("mymod/data/x")]}, "must be named <module>/<files|"),
        ({"files": [spec("deploy.sh"), spec("Mod/files/x")]}, "must be named <module>/<files|"),
        (
            {"files": [spec("deploy.sh"), spec("mymod/files/x"), spec("mymod/files/x")]},
            "listed twice",
        ),
        ({"input_method": "argv"}, "unknown input_method 'argv'"),
        ({"noop": "yes"}, "'noop' must be true or false"),
        ({"timeout": 0}, "'timeout' must be a positive number"),
        ({"timeout": -1}, "'timeout' must be a positive number"),
        ({"timeout": True}, "'timeout' must be a positive number"),
        ({"timeout": "60"}, "'timeout' must be a positive number"),
        ({"timeout": float("inf")}, "'timeout' must be a positive number"),
        ({"run_as": "root"}, "unknown param.*run_as.*it takes files, input"),
    ],
)
def test_a_request_that_cannot_be_run_as_asked_is_refused(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_request(params(**overrides))


def test_the_input_is_not_stored():
    assert "input" not in TaskRun().stored(params())
    assert TaskRun().stored(params())["task"] == "mymod::deploy"


# -- the layout -----------------------------------------------------------------------


def test_files_are_laid_out_as_bolt_does(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    exe, lib, helper = cache / "a", cache / "b", cache / "c"
    for path, text in ((exe, "exe"), (lib, "lib"), (helper, "helper")):
        path.write_text(text)
    root = tmp_path / "install"
    placed = lay_out(
        root,
        "mymod",
        [("deploy.sh", exe), ("mymod/files/lib/common.sh", lib), ("other/tasks/h.py", helper)],
    )
    assert placed == root / "mymod" / "tasks" / "deploy.sh"
    assert placed.read_text() == "exe"
    assert (root / "mymod/files/lib/common.sh").read_text() == "lib"
    assert (root / "other/tasks/h.py").read_text() == "helper"
    assert not placed.is_symlink()  # a real tree: helpers are found beside the script


def test_the_executable_may_also_be_listed_among_the_files(tmp_path: Path) -> None:
    exe = tmp_path / "exe"
    exe.write_text("x")
    root = tmp_path / "install"
    placed = lay_out(root, "mymod", [("t.sh", exe), ("mymod/tasks/t.sh", exe)])
    assert placed.read_text() == "x"
    other = tmp_path / "other"
    other.write_text("y")
    with pytest.raises(ValidationError, match="two different task files"):
        lay_out(tmp_path / "again", "mymod", [("t.sh", exe), ("mymod/tasks/t.sh", other)])


# -- running --------------------------------------------------------------------------


@dataclass
class State:
    config: AgentConfig
    spool: Spool
    cache: FileCache

    def accepting(self, txid: str) -> bool:
        return False


async def test_a_task_finds_its_files_under_its_installdir(tmp_path: Path) -> None:
    script = (
        b'#!/bin/sh\n. "$PT__installdir/mymod/files/greet.sh"\n'
        b'greet "$PT_name"\n[ "$0" = "$PT__installdir/mymod/tasks/hello.sh" ] && echo same\n'
    )
    library = b'greet() { echo "hello $1"; }\n'
    content = {hashlib.sha256(c).hexdigest(): c for c in (script, library)}

    async def fetch(path: str) -> bytes:
        return content[path.rsplit("/", 1)[-1]]

    state = State(
        config=AgentConfig(certname="n", server_url="https://x", brokers=()),
        spool=Spool(tmp_path / "spool"),
        cache=FileCache(tmp_path / "cache", fetch),
    )
    body = params(
        task="mymod::hello",
        input={"name": "world"},
        files=[spec("hello.sh", script), spec("mymod/files/greet.sh", library)],
    )
    action = TaskRun()
    record = state.spool.create(
        "tx-1",
        module="task",
        action="run",
        params=action.stored(body),
        requester="pcp://s/server",
        now=T0,
    )
    ok, result = await action.run(state, record, action.parse(body))
    assert (ok, result) == (True, {"_output": "hello world\nsame\n"})
    installdir = state.spool.path("tx-1") / "install"
    assert os.path.samefile(
        installdir / "mymod/tasks/hello.sh", next(tmp_path.glob("cache/*/hello.sh"))
    )


async def test_a_file_that_cannot_be_fetched_fails_the_task(tmp_path: Path) -> None:
    async def fetch(path: str) -> bytes:
        return b"something else"

    state = State(
        config=AgentConfig(certname="n", server_url="https://x", brokers=()),
        spool=Spool(tmp_path / "spool"),
        cache=FileCache(tmp_path / "cache", fetch),
    )
    action = TaskRun()
    record = state.spool.create(
        "tx-1", module="task", action="run", params={}, requester="pcp://s/server", now=T0
    )
    ok, result = await action.run(state, record, action.parse(params()))
    assert not ok
    assert result["_error"]["kind"] == "puppetlabs.tasks/task-error"
    assert "changed on the server or in transit" in result["_error"]["msg"]
    assert not (state.spool.path("tx-1") / "pid").exists()
