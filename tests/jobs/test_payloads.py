import orjson

from podium.jobs.payloads import REDACTED, redacted, storable, task_request
from podium.tasks import CodeDir, builtin_codedir


def echo_task():
    return CodeDir(builtin_codedir()).task("production", "podium::echo")


def test_a_task_request_names_the_task_its_input_and_its_files_with_their_hashes():
    task = echo_task()
    (impl,) = task.implementations
    body = task_request(task, impl, {"message": "hi"})
    assert body["task"] == "podium::echo"
    assert body["input"] == {"message": "hi"}
    assert "noop" not in body
    (file,) = body["files"]
    assert file["uri"] == {
        "path": f"/puppet/v3/file_content/tasks/podium/{impl.executable.filename}",
        "params": {"environment": "production"},
    }
    assert file["sha256"] == impl.executable.sha256
    assert "timeout" not in body
    assert task_request(task, impl, {}, noop=True, timeout=9)["noop"] is True
    assert task_request(task, impl, {}, timeout=9)["timeout"] == 9


def test_only_sensitive_parameters_are_masked(tmp_path):
    tasks = tmp_path / "environments" / "production" / "modules" / "vault" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "init.json").write_text(
        '{"parameters": {"user": {"type": "String"}, "pw": {"type": "String", "sensitive": true}}}'
    )
    (tasks / "init.sh").write_text("echo\n")
    task = CodeDir(tmp_path).task("production", "vault")
    assert redacted(task, {"user": "ops", "pw": "hunter2"}) == {"user": "ops", "pw": REDACTED}


def test_storable_values_lose_their_nul_characters_and_nothing_else():
    assert storable({"_output": "a\x00b", "k\x00": ["\\u0000", 1]}) == {
        "_output": "a\ufffdb",
        "k\ufffd": ["\\u0000", 1],
    }
    clean = {"a": "x"}
    assert storable(clean) is clean


def test_a_value_nested_too_deep_to_store_becomes_an_error():
    deep = orjson.loads(b'{"a":' * 300 + b"1" + b"}" * 300)
    assert "could not be stored" in storable(deep)["_error"]["msg"]
