"""Task parameters checked as a whole: declared, required, defaults, types, secrets.

The type system itself is tested case by case in tests/types.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podium.errors import ValidationError
from podium.tasks import Task, TaskFile, TaskParameter, validate_params
from podium.tasks.metadata import TaskImplementation


def _task(parameters: dict[str, TaskParameter] | None, **kwargs: Any) -> Task:
    exe = TaskFile(filename="t.sh", path=Path("/nonexistent/t.sh"), sha256="0" * 64, size_bytes=0)
    return Task(
        name="mymod::deploy",
        module="mymod",
        description="",
        parameters=parameters or {},
        supports_noop=False,
        private=False,
        implementations=(TaskImplementation("t.sh", (), exe, (), None),),
        environment="production",
        source=exe.path,
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
        "invalid parameters for task mymod::deploy: count: expected Integer[1, 10], got 42"
    )
    assert info.value.details == {
        "task": "mymod::deploy",
        "errors": [
            {
                "parameter": "count",
                "expected": "Integer[1, 10]",
                "path": [],
                "problem": "count: expected Integer[1, 10], got 42",
            }
        ],
    }


def test_a_wrong_element_deep_in_a_value_is_named_by_its_path() -> None:
    task = _task(
        {
            "opts": TaskParameter(
                "opts", "Struct[{retries => Integer[0, 5], hosts => Array[String]}]"
            )
        }
    )
    with pytest.raises(ValidationError) as info:
        validate_params(task, {"opts": {"retries": "two", "hosts": []}})
    assert 'opts.retries: expected Integer[0, 5], got "two"' in info.value.msg
    with pytest.raises(ValidationError) as info:
        validate_params(task, {"opts": {"retries": 1, "hosts": ["a", 2]}})
    assert "opts.hosts[1]: expected String, got 2" in info.value.msg


def test_sensitive_values_are_never_shown() -> None:
    with pytest.raises(ValidationError) as info:
        validate_params(DEPLOY, {"version": "1", "token": "hunter2"})
    assert "hunter2" not in str(info.value.to_dict())
    assert "redacted" in info.value.msg


def test_a_sensitive_type_is_as_secret_as_the_sensitive_flag() -> None:
    task = _task({"pw": TaskParameter("pw", "Sensitive[String[8]]")})
    assert task.parameters["pw"].is_sensitive
    with pytest.raises(ValidationError) as info:
        validate_params(task, {"pw": "short"})
    assert "short" not in str(info.value.to_dict())
    assert validate_params(task, {"pw": "long enough"}) == {"pw": "long enough"}


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), [1, float("-inf")], {"a": float("nan")}]
)
def test_values_json_cannot_carry_are_refused(bad: Any) -> None:
    task = _task({"x": TaskParameter("x", "Any")})
    with pytest.raises(ValidationError, match="not a JSON number"):
        validate_params(task, {"x": bad})
    with pytest.raises(ValidationError, match="not a JSON number"):
        validate_params(_task(None), {"y": bad})


def test_metaparameters_pass_even_when_parameters_are_declared() -> None:
    assert validate_params(DEPLOY, {"version": "1", "_run_as": "root"})["_run_as"] == "root"


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
