"""task/run: the request checked, the files laid out as Bolt does, the task run."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from podium.agent.actions import StopSignal
from podium.agent.actions.task import (
    TaskRequest,
    TaskRun,
    TaskStop,
    lay_out,
    parse_request,
    parse_stop,
)
from podium.agent.config import AgentConfig
from podium.agent.filecache import FileCache
from podium.agent.spool import Spool, TransactionRecord
from podium.errors import ProtocolError, ValidationError
from podium.protocol import messages as msg
from waiting import DEADLINE

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
    signals: dict[str, StopSignal] = field(default_factory=dict)
    reported: list[msg.Message] = field(default_factory=list)

    def accepting(self, txid: str) -> bool:
        return False

    async def recorded(self, txid: str) -> None:
        return None

    def stop_signal(self, txid: str) -> StopSignal | None:
        return self.signals.get(txid)

    def report(self, record: TransactionRecord, message: msg.Message) -> bool:
        self.reported.append(message)
        return True


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


async def test_a_task_streams_its_output_while_it_runs(tmp_path: Path) -> None:
    script = b"#!/bin/sh\necho out\necho err >&2\n"
    state = State(
        config=AgentConfig(certname="n", server_url="https://x", brokers=()),
        spool=Spool(tmp_path / "spool"),
        cache=FileCache(tmp_path / "cache", _serve(script)),
    )
    action = TaskRun(output_interval=0.01)
    record = _record(state, "tx-1")
    body = params(files=[spec("t.sh", script)])
    assert await action.run(state, record, action.parse(body)) == (True, {"_output": "out\n"})
    assert set(state.reported) == {
        msg.TaskOutput("tx-1", "stdout", 0, "out\n"),
        msg.TaskOutput("tx-1", "stderr", 0, "err\n"),
    }


async def test_a_task_stopped_while_its_files_download_is_never_started(tmp_path: Path) -> None:
    asked = asyncio.Event()

    async def fetch(path: str) -> bytes:
        asked.set()
        await asyncio.Event().wait()  # a download that never ends
        raise AssertionError("unreachable")

    state = State(
        config=AgentConfig(certname="n", server_url="https://x", brokers=()),
        spool=Spool(tmp_path / "spool"),
        cache=FileCache(tmp_path / "cache", fetch),
    )
    action = TaskRun()
    record = _record(state, "tx-1")
    state.signals["tx-1"] = stop = StopSignal("task", "run")
    running = asyncio.ensure_future(action.run(state, record, action.parse(params())))
    await asyncio.wait_for(asked.wait(), DEADLINE)
    stop.request("wrong host")
    ok, result = await asyncio.wait_for(running, DEADLINE)
    assert (ok, result) == (
        False,
        {
            "_error": {
                "kind": "podium.tasks/task-stopped",
                "msg": "the task was stopped: wrong host",
                "details": {},
            }
        },
    )
    assert not (state.spool.path("tx-1") / "pid").exists()


def _serve(*contents: bytes) -> Any:
    by_hash = {hashlib.sha256(c).hexdigest(): c for c in contents}

    async def fetch(path: str) -> bytes:
        return by_hash[path.rsplit("/", 1)[-1]]

    return fetch


def _record(state: State, txid: str, action: str = "run") -> TransactionRecord:
    return state.spool.create(
        txid, module="task", action=action, params={}, requester="pcp://s/server", now=T0
    )


# -- stopping -------------------------------------------------------------------------


def test_a_stop_request_names_a_transaction_and_may_give_a_reason():
    assert parse_stop({"transaction_id": "tx-1"}) == ("tx-1", None)
    assert parse_stop({"transaction_id": "tx-1", "reason": "oops"}) == ("tx-1", "oops")
    assert parse_stop({"transaction_id": "tx-1", "reason": "x" * 1000})[1] == "x" * 1000


@pytest.mark.parametrize(
    ("stop_params", "message"),
    [
        ({}, "task/stop: invalid transaction_id None"),
        ({"transaction_id": "../x"}, "task/stop: invalid transaction_id '../x'"),
        ({"transaction_id": "tx", "reason": 5}, "'reason' must be a string of at most 1000"),
        ({"transaction_id": "tx", "reason": "x" * 1001}, "'reason' must be a string"),
        ({"transaction_id": "tx", "force": True}, "unknown param.*force.*reason, transaction_id"),
    ],
)
def test_a_stop_request_that_is_not_exactly_understood_is_refused(
    stop_params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_stop(stop_params)


async def test_stop_sets_the_signal_of_a_task_in_hand_and_says_why_it_cannot_otherwise(
    tmp_path: Path,
) -> None:
    state = State(
        config=AgentConfig(certname="n", server_url="https://x", brokers=()),
        spool=Spool(tmp_path / "spool"),
        cache=FileCache(tmp_path / "cache", _serve()),
    )
    state.signals["running"] = signal = StopSignal("task", "run")
    state.signals["other"] = StopSignal("demo", "double")
    _record(state, "done")
    state.spool.finish("done", status="success", results={}, now=T0)
    stop = TaskStop()

    async def answer(txid: str) -> dict[str, Any]:
        return await stop.answer(state, {"transaction_id": txid, "reason": "because"})

    assert await answer("running") == {"stopped": True}
    assert (signal.requested, signal.reason) == (True, "because")
    assert await answer("never") == {
        "stopped": False,
        "message": "no task never is running on this agent",
    }
    assert await answer("done") == {
        "stopped": False,
        "message": "task done has already ended (success)",
    }
    assert (await answer("other"))["stopped"] is False
