"""Parameter checks: one row a (type, value, accepted) case, then whole-task behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.errors import ValidationError
from podium.tasks import Task, TaskFile, TaskParameter, validate_params
from podium.tasks.params import accepts, is_optional

ACCEPTS = [
    # type, value, accepted
    ("String", "", True),
    ("String", "x", True),
    ("String", 1, False),
    ("String", None, False),
    ("String[1]", "", False),
    ("String[1]", "a", True),
    ("String[2, 3]", "abcd", False),
    ("String[2, 3]", "abc", True),
    ("String[1, default]", "a" * 1000, True),
    ("Integer", 3, True),
    ("Integer", -3, True),
    ("Integer", 3.0, False),
    ("Integer", True, False),
    ("Integer", "3", False),
    ("Integer[0, 10]", 11, False),
    ("Integer[0, 10]", 10, True),
    ("Integer[-5]", -6, False),
    ("Float", 1.5, True),
    ("Float", 1, False),
    ("Float[0.0, 1.0]", 1.5, False),
    ("Numeric", 1, True),
    ("Numeric", 1.5, True),
    ("Numeric", False, False),
    ("Boolean", False, True),
    ("Boolean", "false", False),
    ("Boolean", 0, False),
    ("Optional[String[1]]", None, True),
    ("Optional[String[1]]", "", False),
    ("Optional[Integer]", 2, True),
    ("Optional", None, True),
    ("Array", [1, "a"], True),
    ("Array", {"a": 1}, False),
    ("Array[String]", ["a", "b"], True),
    ("Array[String]", ["a", 2], False),
    ("Array[String, 1]", [], False),
    ("Array[Integer, 1, 2]", [1, 2, 3], False),
    ("Array[Optional[Integer]]", [1, None], True),
    ("Hash", {"a": 1}, True),
    ("Hash", [1], False),
    ("Hash[String, Integer]", {"a": 1}, True),
    ("Hash[String, Integer]", {"a": "1"}, False),
    ("Hash[String[2], Any]", {"a": 1}, False),
    ("Enum[start, stop]", "start", True),
    ("Enum[start, stop]", "restart", False),
    ("Enum['a b', \"c\"]", "a b", True),
    ("Enum[start, stop]", 1, False),
    ("Variant[Integer, Enum[all]]", "all", True),
    ("Variant[Integer, Enum[all]]", 5, True),
    ("Variant[Integer, Enum[all]]", "some", False),
    ("Any", None, True),
    ("Any", {"deep": [1, {"x": None}]}, True),
    ("Data", [1, "a", None], True),
    ("Undef", None, True),
    ("Undef", 1, False),
    ("ScalarData", 1.5, True),
    ("ScalarData", [1], False),
    # Not known here yet: accepted as Any.
    ("Pattern[/^\\d+$/]", "abc", True),
    ("Stdlib::Absolutepath", "relative", True),
    ("Struct[{a => Integer, Optional[b] => String}]", {"a": "x"}, True),
    ("Tuple[String, Integer]", 5, True),
    ("Optional[Pattern[/x/]]", None, True),
    ("String[", "anything", True),
    ("Enum[a,,b]", 5, True),
    ("", 1, True),
]


@pytest.mark.parametrize(("type_text", "value", "ok"), ACCEPTS)
def test_type_accepts_value(type_text: str, value: Any, ok: bool) -> None:
    assert accepts(type_text, value) is ok


@pytest.mark.parametrize(
    ("type_text", "optional"),
    [
        ("Optional[String]", True),
        ("Any", True),
        ("Data", True),
        ("Undef", True),
        ("Variant[String, Undef]", True),
        ("String", False),
        ("Integer[1]", False),
        ("Array", False),
        ("Enum[a]", False),
        ("Stdlib::Absolutepath", False),
        ("Pattern[/x/]", False),
    ],
)
def test_a_parameter_may_be_left_out_when_its_type_accepts_undef(
    type_text: str, optional: bool
) -> None:
    assert is_optional(type_text) is optional


@given(
    st.text(max_size=60),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=3), children, max_size=3)
        ),
        max_leaves=10,
    ),
)
def test_type_checks_never_raise(type_text: str, value: Any) -> None:
    assert accepts(type_text, value) in (True, False)
    assert is_optional(type_text) in (True, False)


def _task(parameters: dict[str, TaskParameter] | None, **kwargs: Any) -> Task:
    exe = TaskFile(filename="t.sh", path=Path("/nonexistent/t.sh"), sha256="0" * 64, size_bytes=0)
    return Task(
        name="mymod::deploy",
        module="mymod",
        description="",
        parameters=parameters or {},
        input_method=None,
        supports_noop=False,
        private=False,
        executable=exe,
        files=(),
        environment="production",
        metadata={} if parameters is None else {"parameters": {}},
        **kwargs,
    )


DEPLOY = _task(
    {
        "version": TaskParameter("version", "String[1]"),
        "count": TaskParameter("count", "Integer[1, 10]", default=1),
        "tags": TaskParameter("tags", "Array[String]", default=["a"]),
        "note": TaskParameter("note", "Optional[String]"),
        "token": TaskParameter("token", "Optional[String[8]]", sensitive=True),
    }
)


def test_defaults_are_filled_in_and_optional_parameters_left_out() -> None:
    assert validate_params(DEPLOY, {"version": "1.2"}) == {
        "version": "1.2",
        "count": 1,
        "tags": ["a"],
    }


def test_given_values_win_over_defaults() -> None:
    got = validate_params(DEPLOY, {"version": "1.2", "count": 3, "note": None})
    assert got == {"version": "1.2", "count": 3, "tags": ["a"], "note": None}


def test_defaults_are_copies() -> None:
    validate_params(DEPLOY, {"version": "1"})["tags"].append("changed")
    assert DEPLOY.parameters["tags"].default == ["a"]


def test_a_required_parameter_must_be_given() -> None:
    with pytest.raises(ValidationError) as info:
        validate_params(DEPLOY, {})
    assert info.value.kind == "puppetlabs.orchestrator/validation-error"
    assert info.value.msg == (
        "invalid parameters for task mymod::deploy: "
        "parameter 'version' (String[1]) is required but was not given"
    )


def test_a_wrong_value_names_task_parameter_type_and_value() -> None:
    with pytest.raises(ValidationError) as info:
        validate_params(DEPLOY, {"version": "1", "count": 42})
    assert info.value.msg == (
        "invalid parameters for task mymod::deploy: "
        "parameter 'count' expects a value of type Integer[1, 10], got Integer 42"
    )
    assert info.value.details == {
        "task": "mymod::deploy",
        "errors": [
            {
                "parameter": "count",
                "expected": "Integer[1, 10]",
                "got": "Integer 42",
                "problem": "parameter 'count' expects a value of type Integer[1, 10], "
                "got Integer 42",
            }
        ],
    }


def test_sensitive_values_are_never_shown() -> None:
    with pytest.raises(ValidationError) as info:
        validate_params(DEPLOY, {"version": "1", "token": "hunter2"})
    assert "hunter2" not in str(info.value.to_dict())
    assert "String [value redacted" in info.value.msg


def test_undeclared_parameters_are_refused_with_the_declared_ones_listed() -> None:
    with pytest.raises(ValidationError) as info:
        validate_params(DEPLOY, {"version": "1", "verison": "2"})
    assert "unknown parameter 'verison'" in info.value.msg
    assert "count, note, tags, token, version" in info.value.msg


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        validate_params(DEPLOY, {"count": "3", "extra": 1})
    assert [e["parameter"] for e in info.value.details["errors"]] == ["extra", "version", "count"]


def test_a_task_without_parameters_metadata_takes_anything() -> None:
    anything = _task(None)
    assert validate_params(anything, {"x": 1, "y": [2]}) == {"x": 1, "y": [2]}


def test_a_task_declaring_no_parameters_takes_none() -> None:
    with pytest.raises(
        ValidationError, match=r"unknown parameter 'x' \(the task takes: no parameters\)"
    ):
        validate_params(_task({}), {"x": 1})


@pytest.mark.parametrize("params", [[], "x", None, {1: "a"}])
def test_params_must_be_an_object(params: Any) -> None:
    with pytest.raises(ValidationError, match="params must be a JSON object"):
        validate_params(DEPLOY, params)
