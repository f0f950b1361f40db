"""The Bolt result rules: what a task's output, errors and exit code become."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.agent.results import (
    fit_result,
    lost_result,
    output_fields,
    task_result,
    timeout_result,
    trim_partial_character,
)

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
        (b"\xff\xfeok", b"", 0, True, {"_output": "\ufffd\ufffdok", "_output_base64": "//5vaw=="}),
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


def test_integers_too_big_for_the_wire_become_floats():
    ok, result = task_result(b'{"big": 123456789012345678901234567890, "small": 7}', b"", 0)
    assert ok
    assert result == {"big": 1.2345678901234568e29, "small": 7}
    assert orjson.dumps(result)  # what the agent sends must serialize


def test_a_result_too_big_for_a_message_is_cut_to_fit_with_a_note():
    big = {"_output": "x" * 50_000, "_error": {"kind": "k", "msg": "m", "details": {}}}
    fitted = fit_result(big, 10_000)
    assert len(orjson.dumps(fitted)) <= 10_000
    assert fitted["_error"] == big["_error"]
    assert fitted["_output"] == "x" * len(fitted["_output"])
    assert "over the 10000-byte message limit" in fitted["_truncated"]
    small = {"_output": "fine"}
    assert fit_result(small, 10_000) is small


def test_json_nested_deeper_than_the_wire_takes_is_plain_output():
    text = '{"a":' * 300 + "1" + "}" * 300
    ok, result = task_result(text.encode(), b"", 0)
    assert ok
    assert result == {"_output": text}


def test_non_utf8_stdout_is_kept_as_text_and_as_exact_bytes():
    ok, result = task_result(b"caf\xe9 \x00\xff", b"", 0)
    assert ok
    assert result["_output"] == "caf\ufffd \x00\ufffd"
    assert base64.b64decode(result["_output_base64"]) == b"caf\xe9 \x00\xff"


def test_utf8_output_has_no_base64_copy():
    assert task_result("grüße ✓\n".encode(), b"", 0) == (True, {"_output": "grüße ✓\n"})


def test_non_utf8_stderr_of_a_failed_task_is_kept_as_exact_bytes_too():
    ok, result = task_result(b"", b"bad \xfe\n", 1)
    assert not ok
    assert result["_stderr"] == "bad \ufffd\n"
    assert base64.b64decode(result["_stderr_base64"]) == b"bad \xfe\n"


def test_a_json_object_that_is_not_utf8_is_plain_output():
    ok, result = task_result(b'{"name": "\xff"}', b"", 0)
    assert ok
    assert result["_output"] == '{"name": "\ufffd"}'
    assert "_output_base64" in result


@given(st.binary(max_size=64))
def test_output_fields_always_keep_the_exact_bytes(data: bytes) -> None:
    fields = output_fields("_output", data)
    exact = base64.b64decode(fields["_output_base64"]) if "_output_base64" in fields else None
    assert (exact or fields["_output"].encode()) == data


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b"abc", b"abc"),
        ("ab✓".encode(), "ab✓".encode()),
        ("ab✓".encode()[:-1], b"ab"),
        ("ab✓".encode()[:-2], b"ab"),
        ("a😀".encode()[:-1], b"a"),
        ("a€".encode(), "a€".encode()),
        (b"ab\xff", b"ab\xff"),  # not a cut character: binary stays binary
        (b"\x80\x80\x80\x80", b"\x80\x80\x80\x80"),
        (b"", b""),
    ],
)
def test_a_character_cut_by_the_output_cap_is_dropped(data: bytes, kept: bytes) -> None:
    assert trim_partial_character(data) == kept


def test_a_timeout_is_an_error_with_the_output_so_far():
    result = timeout_result(b"step 1\n", b"warn\n", 30)
    assert result == {
        "_error": {
            "kind": "puppetlabs.tasks/task-timeout",
            "msg": "the task did not finish within 30 s and was stopped",
            "details": {"timeout": 30},
        },
        "_output": "step 1\n",
        "_stderr": "warn\n",
    }
    assert timeout_result(b"", b"", 0.5)["_error"]["msg"] == (
        "the task did not finish within 0.5 s and was stopped"
    )
    assert "_output" not in timeout_result(b"", b"", 1)


def test_a_lost_task_keeps_its_output():
    result = lost_result(b"half", b"", 42)
    assert result == {
        "_error": {
            "kind": TASK_ERROR,
            "msg": "the agent lost track of the task: no exit code was recorded",
            "details": {"pid": 42},
        },
        "_output": "half",
    }
