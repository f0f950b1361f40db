"""The code directory: environments, modulepath, task lookup and safe file serving."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.errors import ConfigError, NotFound, ValidationError
from podium.tasks import (
    UNKNOWN_ENVIRONMENT,
    UNKNOWN_TASK,
    CodeDir,
    builtin_codedir,
    validate_params,
)
from podium.tasks import codedir as codedir_module
from podium.tasks.codedir import BUILTIN_MODULES

Tree = Mapping[str, "str | bytes"]
ENV = "environments/production"
SH = "#!/bin/sh\necho hi\n"


def test_builtin_code_has_the_echo_and_command_tasks() -> None:
    code = CodeDir(builtin_codedir())
    assert code.environments() == ["production"]
    tasks = {t.name: t for t in code.list_tasks("production")}
    assert list(tasks) == ["package", "podium::command", "podium::echo", "service"]
    echo = tasks["podium::echo"]
    assert echo.module == "podium"
    assert echo.environment == "production"
    assert echo.parameters["message"].type == "String"
    assert tasks["podium::command"].parameters["command"].type == "String[1]"
    content = echo.implementations[0].executable.path.read_bytes()
    assert echo.implementations[0].executable.filename == "echo.sh"
    assert echo.implementations[0].executable.sha256 == hashlib.sha256(content).hexdigest()
    assert echo.implementations[0].executable.size_bytes == len(content)


def test_builtin_scripts_are_plain_posix_sh() -> None:
    scripts = list(BUILTIN_MODULES.glob("*/tasks/*.sh"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert text.startswith("#!/bin/sh\n")
        for bashism in ("[[", "function ", "$'", "echo -e", "source ", "local "):
            assert bashism not in text, (script.name, bashism)


def test_default_modulepath_is_the_environment_then_the_base(
    make_tree: Callable[[Tree], Path],
) -> None:
    root = make_tree({f"{ENV}/modules/.keep": ""})
    assert CodeDir(root).modulepath("production") == [
        root / ENV / "modules",
        root / "modules",
        BUILTIN_MODULES,
    ]


def test_environment_conf_sets_the_modulepath(make_tree: Callable[[Tree], Path]) -> None:
    root = make_tree(
        {
            f"{ENV}/environment.conf": "# comment\nmanifest = site.pp\n"
            "modulepath = site:modules:$basemodulepath\n",
            f"{ENV}/site/app/tasks/deploy.sh": SH,
            f"{ENV}/modules/app/tasks/other.sh": SH,
            "modules/base/tasks/init.sh": SH,
        }
    )
    code = CodeDir(root)
    assert code.modulepath("production") == [
        root / ENV / "site",
        root / ENV / "modules",
        root / "modules",
        BUILTIN_MODULES,
    ]
    # The first folder holding "app" wins: app::other from modules/ is hidden.
    assert [t.name for t in code.list_tasks("production")] == [
        "app::deploy",
        "base",
        "package",
        "podium::command",
        "podium::echo",
        "service",
    ]


def test_environment_modules_shadow_base_modules(make_tree: Callable[[Tree], Path]) -> None:
    root = make_tree(
        {
            f"{ENV}/modules/tool/tasks/run.sh": "#!/bin/sh\necho env\n",
            "modules/tool/tasks/run.sh": "#!/bin/sh\necho base\n",
            "modules/tool/tasks/base_only.sh": SH,
        }
    )
    task = CodeDir(root).task("production", "tool::run")
    assert (
        task.implementations[0].executable.path
        == (root / ENV / "modules/tool/tasks/run.sh").resolve()
    )
    with pytest.raises(NotFound):
        CodeDir(root).task("production", "tool::base_only")


def test_unsupported_modulepath_variables_are_a_config_error(
    make_tree: Callable[[Tree], Path],
) -> None:
    root = make_tree({f"{ENV}/environment.conf": "modulepath = $codedir/modules\n"})
    with pytest.raises(ConfigError, match=r"\$codedir/modules"):
        CodeDir(root).modulepath("production")


@pytest.mark.parametrize("env", ["staging", "../environments/production", "Production", ""])
def test_unknown_environment_says_which_exist(make_tree: Callable[[Tree], Path], env: str) -> None:
    root = make_tree({f"{ENV}/modules/.keep": "", "environments/dev/modules/.keep": ""})
    with pytest.raises(NotFound) as info:
        CodeDir(root).list_tasks(env)
    assert info.value.kind == UNKNOWN_ENVIRONMENT
    assert "environments: dev, production" in info.value.msg


def test_unknown_task_says_which_tasks_the_module_has(make_tree: Callable[[Tree], Path]) -> None:
    root = make_tree(
        {f"{ENV}/modules/svc/tasks/start.sh": SH, f"{ENV}/modules/svc/tasks/init.sh": SH}
    )
    with pytest.raises(NotFound) as info:
        CodeDir(root).task("production", "svc::stop")
    assert info.value.kind == UNKNOWN_TASK
    assert "module svc has the tasks svc, svc::start" in info.value.msg


def test_unknown_module_says_which_modules_exist(make_tree: Callable[[Tree], Path]) -> None:
    root = make_tree({f"{ENV}/modules/svc/tasks/start.sh": SH})
    with pytest.raises(NotFound) as info:
        CodeDir(root).task("production", "nginx::reload")
    assert info.value.kind == UNKNOWN_TASK
    assert "no module 'nginx'" in info.value.msg
    assert "modules: package, podium, service, svc" in info.value.msg


def test_module_name_alone_means_its_init_task(make_tree: Callable[[Tree], Path]) -> None:
    root = make_tree(
        {
            f"{ENV}/modules/package/tasks/init.json": '{"description": "Manage packages"}',
            f"{ENV}/modules/package/tasks/init.rb": "#!/usr/bin/env ruby\n",
        }
    )
    code = CodeDir(root)
    assert code.task("production", "package") == code.task("production", "package::init")
    assert code.task("production", "package").name == "package"
    assert code.task("production", "package").description == "Manage packages"


def test_task_files_include_single_files_and_folders(make_tree: Callable[[Tree], Path]) -> None:
    root = make_tree(
        {
            f"{ENV}/modules/app/tasks/deploy.json": """{
                "files": ["app/files/common.sh", "helpers/lib/helpers/", "app/files/common.sh"],
                "implementations": [
                    {"name": "deploy.sh", "requirements": ["shell"], "files": ["app/scripts/x.sh"]}
                ]}""",
            f"{ENV}/modules/app/tasks/deploy.sh": SH,
            f"{ENV}/modules/app/files/common.sh": "common\n",
            f"{ENV}/modules/app/scripts/x.sh": "x\n",
            "modules/helpers/lib/helpers/a.rb": "a\n",
            "modules/helpers/lib/helpers/sub/b.rb": "b\n",
        }
    )
    task = CodeDir(root).task("production", "app::deploy")
    (impl,) = task.implementations
    assert [f.filename for f in impl.files] == [
        "app/files/common.sh",
        "helpers/lib/helpers/a.rb",
        "helpers/lib/helpers/sub/b.rb",
        "app/scripts/x.sh",
    ]
    assert impl.files[1].sha256 == hashlib.sha256(b"a\n").hexdigest()
    assert impl.files[1].size_bytes == 2


def test_a_task_missing_one_of_its_files_is_invalid(make_tree: Callable[[Tree], Path]) -> None:
    root = make_tree(
        {
            f"{ENV}/modules/app/tasks/deploy.json": '{"files": ["app/files/missing.sh"]}',
            f"{ENV}/modules/app/tasks/deploy.sh": SH,
        }
    )
    with pytest.raises(ValidationError, match=r"app::deploy needs app/files/missing.sh"):
        CodeDir(root).task("production", "app::deploy")


def test_a_task_needing_a_module_not_installed_is_invalid(
    make_tree: Callable[[Tree], Path],
) -> None:
    root = make_tree(
        {
            f"{ENV}/modules/app/tasks/deploy.json": '{"files": ["ruby_task_helper/files/h.rb"]}',
            f"{ENV}/modules/app/tasks/deploy.sh": SH,
        }
    )
    with pytest.raises(ValidationError, match="module 'ruby_task_helper' is not on the modulepath"):
        CodeDir(root).task("production", "app::deploy")


def test_tasks_without_metadata_are_listed(make_tree: Callable[[Tree], Path]) -> None:
    root = make_tree({f"{ENV}/modules/ops/tasks/uptime.sh": SH, f"{ENV}/modules/ops/README.md": ""})
    task = CodeDir(root).task("production", "ops::uptime")
    assert task.parameters == {}
    assert not task.declares_parameters
    assert [t.name for t in CodeDir(root, builtin=None).list_tasks("production")] == ["ops::uptime"]


def test_a_broken_task_is_left_out_of_the_list_but_explained_on_lookup(
    make_tree: Callable[[Tree], Path], caplog: pytest.LogCaptureFixture
) -> None:
    root = make_tree(
        {
            f"{ENV}/modules/ops/tasks/good.sh": SH,
            f"{ENV}/modules/ops/tasks/bad.json": '{"supports_noop": "yes"}',
            f"{ENV}/modules/ops/tasks/bad.sh": SH,
            f"{ENV}/modules/ops/tasks/nothing.json": "{}",
        }
    )
    code = CodeDir(root, builtin=None)
    assert [t.name for t in code.list_tasks("production")] == ["ops::good"]
    assert "ops::bad" in caplog.text
    with pytest.raises(ValidationError, match="'supports_noop'"):
        code.task("production", "ops::bad")
    with pytest.raises(ValidationError, match=r"expected a file named nothing\.<ext>"):
        code.task("production", "ops::nothing")


def test_an_executable_symlinked_out_of_the_module_is_refused(
    make_tree: Callable[[Tree], Path],
) -> None:
    root = make_tree({f"{ENV}/modules/ops/tasks/.keep": "", "outside/evil.sh": SH})
    (root / ENV / "modules/ops/tasks/evil.sh").symlink_to(root / "outside/evil.sh")
    with pytest.raises(ValidationError, match="not a file inside its module"):
        CodeDir(root).task("production", "ops::evil")


# -- serving files ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, write_tree: Callable[[Path, Tree], Path]
) -> tuple[CodeDir, Path]:
    """A module with files in every mount, a secret outside, and symlinks both ways."""
    root = write_tree(
        tmp_path_factory.mktemp("served"),
        {
            f"{ENV}/modules/app/files/a.txt": "a",
            f"{ENV}/modules/app/files/sub/b.txt": "b",
            f"{ENV}/modules/app/lib/l.rb": "l",
            f"{ENV}/modules/app/tasks/t.sh": SH,
            f"{ENV}/modules/app/scripts/s.sh": SH,
            f"{ENV}/modules/app/manifests/init.pp": "class app {}",
            f"{ENV}/modules/other/files/o.txt": "o",
            "secret.txt": "secret",
        },
    )
    files = root / ENV / "modules/app/files"
    (files / "escape").symlink_to(root / "secret.txt")
    (files / "escape_dir").symlink_to(root)
    (files / "to_other").symlink_to(root / ENV / "modules/other/files/o.txt")
    (files / "to_manifest").symlink_to(root / ENV / "modules/app/manifests/init.pp")
    (files / "inside").symlink_to(root / ENV / "modules/app/lib/l.rb")
    return CodeDir(root), root / ENV / "modules/app"


@pytest.mark.parametrize(
    ("relative", "content"),
    [
        ("files/a.txt", "a"),
        ("files/sub/b.txt", "b"),
        ("lib/l.rb", "l"),
        ("tasks/t.sh", SH),
        ("scripts/s.sh", SH),
        ("files/inside", "l"),
    ],
)
def test_module_files_are_served(served: tuple[CodeDir, Path], relative: str, content: str) -> None:
    code, _ = served
    assert code.file_path("production", "app", relative).read_text() == content


@pytest.mark.parametrize(
    "relative",
    [
        "files/../manifests/init.pp",
        "../other/files/o.txt",
        "/etc/passwd",
        "files//a.txt",
        "files/./a.txt",
        "files\\..\\secret",
        "manifests/init.pp",
        "files",
        "files/a.txt\0",
        "",
    ],
)
def test_malformed_file_paths_are_refused(served: tuple[CodeDir, Path], relative: str) -> None:
    code, _ = served
    with pytest.raises(ValidationError, match="invalid module file path"):
        code.file_path("production", "app", relative)


@pytest.mark.parametrize(
    "relative",
    [
        "files/escape",
        "files/escape_dir/secret.txt",
        "files/to_other",
        "files/to_manifest",
        "files/missing.txt",
        "files/sub",
    ],
)
def test_files_leading_outside_the_module_are_not_found(
    served: tuple[CodeDir, Path], relative: str
) -> None:
    code, _ = served
    with pytest.raises(NotFound):
        code.file_path("production", "app", relative)


@pytest.mark.parametrize(("module", "error"), [("nope", NotFound), ("../app", ValidationError)])
def test_files_of_unknown_or_invalid_modules_are_refused(
    served: tuple[CodeDir, Path], module: str, error: type[Exception]
) -> None:
    code, _ = served
    with pytest.raises(error):
        code.file_path("production", module, "files/a.txt")


_SEGMENTS = st.sampled_from(
    [
        "files",
        "lib",
        "tasks",
        "scripts",
        "manifests",
        "..",
        ".",
        "",
        "a.txt",
        "sub",
        "b.txt",
        "escape",
        "escape_dir",
        "secret.txt",
        "inside",
        "to_other",
        "t.sh",
        "\\",
        "\0",
        "app",
    ]
)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    relative=st.one_of(
        st.lists(_SEGMENTS, min_size=0, max_size=6).map("/".join),
        st.text(max_size=40),
    )
)
def test_served_paths_never_leave_the_module_mounts(
    served: tuple[CodeDir, Path], relative: str
) -> None:
    code, moddir = served
    try:
        path = code.file_path("production", "app", relative)
    except (NotFound, ValidationError):
        return
    real = moddir.resolve()
    assert path.is_file()
    assert any(path.is_relative_to(real / m) for m in ("files", "lib", "tasks", "scripts"))
    assert path.read_text() != "secret"


def test_hashes_are_cached_until_the_file_changes(
    make_tree: Callable[[Tree], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree({f"{ENV}/modules/ops/tasks/run.sh": SH})
    calls: list[Any] = []
    real_digest = hashlib.file_digest

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real_digest(*args, **kwargs)

    monkeypatch.setattr(codedir_module.hashlib, "file_digest", counting)
    code = CodeDir(root, builtin=None)
    first = code.task("production", "ops::run")
    for _ in range(5):
        code.list_tasks("production")
        code.task("production", "ops::run")
    assert len(calls) == 1
    script = root / ENV / "modules/ops/tasks/run.sh"
    script.write_text("#!/bin/sh\necho changed\n")
    os.utime(script, ns=(1, 1))  # even with an older mtime the change is seen
    changed = code.task("production", "ops::run")
    assert len(calls) == 2
    assert (
        changed.implementations[0].executable.sha256 != first.implementations[0].executable.sha256
    )
    assert (
        changed.implementations[0].executable.sha256
        == hashlib.sha256(script.read_bytes()).hexdigest()
    )


# -- built-in modules, modulepath, type aliases, implementations ------------------------


def test_builtin_modules_are_in_every_environment_even_an_empty_one(
    make_tree: Callable[[Tree], Path],
) -> None:
    root = make_tree({f"{ENV}/environment.conf": "", "environments/staging/modules/.keep": ""})
    code = CodeDir(root)
    for env in ("production", "staging"):
        names = [t.name for t in code.list_tasks(env)]
        assert {"podium::echo", "podium::command", "package", "service"} <= set(names)
        assert code.modulepath(env)[-1] == BUILTIN_MODULES


def test_a_users_module_of_a_builtin_name_wins(make_tree: Callable[[Tree], Path]) -> None:
    root = make_tree(
        {
            f"{ENV}/modules/package/tasks/init.json": '{"description": "our own"}',
            f"{ENV}/modules/package/tasks/init.sh": SH,
        }
    )
    task = CodeDir(root).task("production", "package")
    assert task.description == "our own"
    assert task.source == root / ENV / "modules/package/tasks/init.json"


def test_a_modulepath_may_name_an_absolute_shared_folder(
    make_tree: Callable[[Tree], Path], tmp_path: Path
) -> None:
    shared = tmp_path / "usr-share-puppet-modules"
    (shared / "ntp/tasks").mkdir(parents=True)
    (shared / "ntp/tasks/sync.sh").write_text(SH)
    root = make_tree(
        {f"{ENV}/environment.conf": f"modulepath = modules:{shared}:$basemodulepath\n"}
    )
    code = CodeDir(root, basemodulepath=[tmp_path / "base1", tmp_path / "base2"])
    assert code.modulepath("production") == [
        root / ENV / "modules",
        shared,
        tmp_path / "base1",
        tmp_path / "base2",
        BUILTIN_MODULES,
    ]
    assert code.task("production", "ntp::sync").module == "ntp"


def test_type_aliases_come_from_the_modules_types_folders(
    make_tree: Callable[[Tree], Path],
) -> None:
    root = make_tree(
        {
            f"{ENV}/modules/net/types/port.pp": "type Net::Port = Integer[1, 65535]\n",
            f"{ENV}/modules/app/tasks/run.json": (
                '{"parameters": {"port": {"type": "Net::Port"}, '
                '"ports": {"type": "Optional[Array[Net::Port]]"}}}'
            ),
            f"{ENV}/modules/app/tasks/run.sh": SH,
        }
    )
    code = CodeDir(root)
    task = code.task("production", "app::run")
    assert validate_params(task, {"port": 80}) == {"port": 80}
    with pytest.raises(ValidationError, match="port: expected"):
        validate_params(task, {"port": 70000})


def test_an_unknown_type_names_the_task_file_and_key(make_tree: Callable[[Tree], Path]) -> None:
    root = make_tree(
        {
            f"{ENV}/modules/app/tasks/run.json": '{"parameters": {"path": {"type": "Strng"}}}',
            f"{ENV}/modules/app/tasks/run.sh": SH,
        }
    )
    with pytest.raises(ValidationError) as info:
        CodeDir(root).task("production", "app::run")
    msg = info.value.msg
    assert "task app::run" in msg
    assert "'parameters.path.type'" in msg
    assert "Strng" in msg
    assert str(root / ENV / "modules/app/tasks/run.json") in msg


def test_an_implementation_is_chosen_by_the_nodes_features(
    make_tree: Callable[[Tree], Path],
) -> None:
    root = make_tree(
        {
            f"{ENV}/modules/app/tasks/info.json": json.dumps(
                {
                    "files": ["app/files/common.sh"],
                    "implementations": [
                        {"name": "info.ps1", "requirements": ["powershell"]},
                        {
                            "name": "info.py",
                            "requirements": ["python"],
                            "files": ["app/lib/helper.py"],
                            "input_method": "stdin",
                        },
                        {"name": "info.sh", "requirements": ["shell"]},
                    ],
                }
            ),
            f"{ENV}/modules/app/tasks/info.ps1": "Write-Output hi\n",
            f"{ENV}/modules/app/tasks/info.py": "print('hi')\n",
            f"{ENV}/modules/app/tasks/info.sh": SH,
            f"{ENV}/modules/app/files/common.sh": "x=1\n",
            f"{ENV}/modules/app/lib/helper.py": "y = 2\n",
        }
    )
    task = CodeDir(root).task("production", "app::info")
    assert [i.name for i in task.implementations] == ["info.ps1", "info.py", "info.sh"]
    chosen = task.implementation_for(["shell", "python"])
    assert chosen is not None
    assert chosen.name == "info.py"
    assert chosen.input_method == "stdin"
    assert [f.filename for f in chosen.files] == ["app/files/common.sh", "app/lib/helper.py"]
    shell = task.implementation_for(["shell"])
    assert shell is not None
    assert shell.name == "info.sh"
    assert [f.filename for f in shell.files] == ["app/files/common.sh"]
    assert task.implementation_for(["puppet-agent"]) is None
    assert [f.filename for f in task.files] == [
        "info.ps1",
        "info.py",
        "info.sh",
        "app/files/common.sh",
        "app/lib/helper.py",
    ]


def test_a_powershell_script_beside_a_posix_one_serves_windows_nodes(
    make_tree: Callable[[Tree], Path],
) -> None:
    root = make_tree(
        {f"{ENV}/modules/app/tasks/up.sh": SH, f"{ENV}/modules/app/tasks/up.ps1": "exit 0\n"}
    )
    task = CodeDir(root).task("production", "app::up")
    assert task.implementation_for(["shell"]).name == "up.sh"  # type: ignore[union-attr]
    assert task.implementation_for(["powershell"]).name == "up.ps1"  # type: ignore[union-attr]
