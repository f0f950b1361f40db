"""Task metadata: one case a file under cases/metadata (metadata, files beside it, outcome)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from podium.errors import ValidationError
from podium.tasks.metadata import (
    MISSING,
    choose_implementation,
    load_metadata,
    parse_file_ref,
    parse_metadata,
    split_task_name,
    task_display_name,
    task_implementations,
)

CASES = sorted((Path(__file__).parent / "cases" / "metadata").glob("*.json"))


def _run(case: dict[str, Any]) -> dict[str, Any]:
    module, short = split_task_name(case["task"])
    name = task_display_name(module, short)
    meta = parse_metadata(name, case["metadata"])
    impls = task_implementations(name, short, meta, case["files"])
    impl = choose_implementation(impls, case.get("features", ["shell"]))
    return {
        "executable": impl.name if impl else None,
        "implementations": [i.name for i in impls],
        "description": meta.description,
        "input_method": impl.input_method or meta.input_method if impl else None,
        "supports_noop": meta.supports_noop,
        "private": meta.private,
        "files": [*meta.files, *(impl.files if impl else ())],
        "parameters": {
            p.name: {"type": p.type, "sensitive": p.sensitive}
            | ({} if p.default is MISSING else {"default": p.default})
            for p in meta.parameters.values()
        },
    }


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_metadata_case(path: Path) -> None:
    case = json.loads(path.read_text())
    if "error" in case:
        with pytest.raises(ValidationError) as info:
            _run(case)
        for fragment in case["error"]:
            assert fragment in info.value.msg
        assert info.value.kind == "puppetlabs.orchestrator/validation-error"
        return
    got = _run(case)
    for key, want in case["expected"].items():
        assert got[key] == want, key


def test_there_are_metadata_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mymod", ("mymod", "init")),
        ("mymod::init", ("mymod", "init")),
        ("my_mod2::do_it", ("my_mod2", "do_it")),
    ],
)
def test_task_names_split_into_module_and_task(name: str, expected: tuple[str, str]) -> None:
    assert split_task_name(name) == expected


@pytest.mark.parametrize(
    "name",
    ["", "Mod", "mod::", "::x", "a::b::c", "2mod", "mod::Task", "mod-x", "mod::x/y", "../x", 5],
)
def test_invalid_task_names_are_refused(name: object) -> None:
    with pytest.raises(ValidationError, match="invalid task name"):
        split_task_name(name)


def test_init_task_is_called_by_its_module_name() -> None:
    assert task_display_name("package", "init") == "package"
    assert task_display_name("package", "status") == "package::status"


def test_metadata_that_is_not_json_names_the_task() -> None:
    with pytest.raises(ValidationError, match=r"task mymod::x: the metadata is not valid JSON"):
        load_metadata("mymod::x", b"{ description: nope }")


def test_parameters_keep_json_null_as_a_real_default() -> None:
    meta = parse_metadata("m::t", {"parameters": {"p": {"type": "Any", "default": None}}})
    assert meta.parameters["p"].default is None
    assert meta.parameters["p"].has_default


def test_raw_metadata_is_kept_for_the_api() -> None:
    doc = {"description": "d", "x-extra": {"k": 1}}
    assert parse_metadata("m::t", doc).raw == doc


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("mod/files/a.sh", ("mod", "files", "a.sh", False)),
        ("mod/lib/puppet/", ("mod", "lib", "puppet", True)),
        ("stdlib/scripts/x/y.rb", ("stdlib", "scripts", "x/y.rb", False)),
    ],
)
def test_file_references_split_into_module_mount_and_path(
    ref: str, parts: tuple[str, str, str, bool]
) -> None:
    got = parse_file_ref("m::t", ref)
    assert (got.module, got.mount, got.path, got.is_dir) == parts
    assert str(got) == ref


@pytest.mark.parametrize(
    "ref",
    ["mod/files", "mod/files/", "mod/files//a", "mod/files/./a", "mod\\files\\a", "mod/x/a", 3],
)
def test_bad_file_references_are_refused(ref: object) -> None:
    with pytest.raises(ValidationError, match="'files'"):
        parse_file_ref("m::t", ref)
