"""The built-in ``package`` task, run as the agent runs it: PT_ variables in, JSON out.

The apt tests install real packages from a local repository built in the test (see
``debrepo.py``); the dnf/yum branch runs against stub commands, as no RedHat-family
node is at hand.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from builtin_run import PATH, Outcome, run_builtin
from debrepo import APT_MISSING, LocalRepo, installed_version, local_repo

import podium
from podium.errors import ValidationError
from podium.tasks import CodeDir, builtin_codedir, validate_params

SCRIPT = Path(podium.__file__).resolve().parent / "data/modules/package/tasks/init.sh"
# The agent's PATH when its own has none.
HELLO = "podium-test-hello"

needs_apt = pytest.mark.skipif(APT_MISSING is not None, reason=APT_MISSING or "")
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg-query")


def run_package(tmp_path: Path, **kwargs: Any) -> Outcome:
    """The package task run on this machine (see builtin_run.py)."""
    return run_builtin("package", tmp_path, timeout=120, **kwargs)


def ok(tmp_path: Path, **params: Any) -> dict[str, Any]:
    """The result of a run that must succeed."""
    return run_package(tmp_path, **params).ok


@pytest.fixture
def hello_repo(tmp_path: Path) -> Iterator[LocalRepo]:
    """A local repository offering podium-test-hello 1.0, not installed."""
    with local_repo(tmp_path, packages=[(HELLO, "1.0")]) as repo:
        yield repo


# -- metadata ---------------------------------------------------------------------------


def test_the_task_is_built_in_with_pe_parameters() -> None:
    task = CodeDir(builtin_codedir()).task("production", "package")
    implementation = task.implementation_for({"shell"})
    assert implementation is not None
    assert implementation.executable.path == SCRIPT
    assert implementation.input_method == "environment"
    assert task.supports_noop
    assert {name: p.type for name, p in task.parameters.items()} == {
        "action": "Enum[install, status, uninstall, upgrade]",
        "name": "String[1]",
        "version": "Optional[String[1]]",
        "manager": "Optional[Enum[apt, dnf, yum]]",
    }
    assert validate_params(task, {"action": "status", "name": "vim"}) == {
        "action": "status",
        "name": "vim",
    }
    with pytest.raises(ValidationError, match=r"manager.*zypper"):
        validate_params(task, {"action": "status", "name": "vim", "manager": "zypper"})
    assert SCRIPT.stat().st_mode & 0o777 == 0o755


# -- on this machine's own packages -----------------------------------------------------


@needs_dpkg
def test_status_of_an_installed_package_gives_dpkgs_version(tmp_path: Path) -> None:
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "dpkg"], capture_output=True, text=True, check=True
    ).stdout
    result = ok(tmp_path, action="status", name="dpkg")
    assert result["status"] == "installed"
    assert result["version"] == version
    assert set(result) <= {"status", "version", "latest"}
    assert result.get("latest") != version


@needs_dpkg
def test_status_of_a_package_that_is_not_installed_is_uninstalled(tmp_path: Path) -> None:
    assert ok(tmp_path, action="status", name="podium-no-such-package") == {
        "status": "uninstalled",
        "version": "",
    }


@needs_apt
@pytest.mark.parametrize("noop", [False, True])
def test_installing_an_unknown_package_says_no_source_has_it(tmp_path: Path, noop: bool) -> None:
    # "podium.no.such" is also a regular expression apt would match other names with.
    outcome = run_package(tmp_path, noop=noop, action="install", name="podium.no.such")
    assert outcome.error["kind"] == "podium.package/unknown-package"
    assert "no package named 'podium.no.such'" in outcome.error["msg"]
    assert outcome.error["details"] == {"name": "podium.no.such", "manager": "apt"}


@needs_dpkg
def test_upgrading_a_package_that_is_not_installed_is_refused(tmp_path: Path) -> None:
    outcome = run_package(tmp_path, action="upgrade", name="podium-no-such-package")
    assert outcome.error["kind"] == "podium.package/not-installed"
    assert "use action=install" in outcome.error["msg"]


@needs_dpkg
def test_noop_install_of_an_installed_package_would_do_nothing(tmp_path: Path) -> None:
    result = ok(tmp_path, noop=True, action="install", name="dpkg")
    assert result["status"] == "installed"
    assert result["noop"] is True
    assert result["would"] == "nothing"


SHELL_TRICKS = [
    "x;touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "x|touch {marker}",
    "x&&touch {marker}",
    "x touch",
    "x\ntouch {marker}",
    "-y",
    "--reinstall",
    "../x",
    "x/y",
    "x*",
    "x?",
    "[x]",
    "x'y",
    'x"y',
    "x\\y",
    "x=1",
    "x>{marker}",
    "caf\u00e9",
]


@pytest.mark.parametrize("param", ["name", "version"])
@pytest.mark.parametrize("trick", SHELL_TRICKS)
def test_names_and_versions_a_shell_would_read_are_refused(
    tmp_path: Path, param: str, trick: str
) -> None:
    marker = tmp_path / "marker"
    params = {"action": "install", "name": "podium-test-hello", param: trick.format(marker=marker)}
    outcome = run_package(tmp_path, **params)
    assert outcome.error["kind"] == "podium.package/invalid-parameter"
    assert outcome.error["msg"].startswith(f"{param} must be a package")
    assert outcome.error["details"] == {param: params[param]}
    assert not marker.exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"action": "purge", "name": "x"}, "action must be one of install, status, uninstall"),
        ({"action": "status"}, "name must be a package name"),
        ({"action": "status", "name": "x", "manager": "zypper"}, "manager must be one of apt"),
    ],
)
def test_invalid_parameters_are_refused(
    tmp_path: Path, params: dict[str, str], message: str
) -> None:
    outcome = run_package(tmp_path, **params)
    assert outcome.error["kind"] == "podium.package/invalid-parameter"
    assert message in outcome.error["msg"]


def test_a_manager_the_node_lacks_is_an_error(tmp_path: Path) -> None:
    absent = next((m for m in ("dnf", "yum", "apt") if shutil.which(m) is None), None)
    if absent is None:
        pytest.skip("apt, dnf and yum are all installed here")
    outcome = run_package(tmp_path, action="status", name="x", manager=absent)
    assert outcome.error["kind"] == "podium.package/no-package-manager"
    assert f"{absent} is not installed on this node" in outcome.error["msg"]


def test_a_node_without_any_package_manager_says_what_is_needed(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("awk", "sed", "tr", "tail", "mktemp", "rm", "grep", "head"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    outcome = run_package(tmp_path, path=str(bin_dir), action="status", name="x")
    assert outcome.error["kind"] == "podium.package/no-package-manager"
    assert "needs apt (with dpkg), dnf or yum" in outcome.error["msg"]


# -- real installs from a local repository ----------------------------------------------


@needs_apt
def test_noop_install_reports_the_candidate_and_installs_nothing(
    tmp_path: Path, hello_repo: LocalRepo
) -> None:
    result = ok(tmp_path, noop=True, action="install", name=HELLO)
    assert result == {
        "status": "uninstalled",
        "version": "",
        "noop": True,
        "would": "install",
        "candidate": "1.0",
    }
    assert installed_version(HELLO) is None


@needs_apt
def test_install_upgrade_and_uninstall_a_package(tmp_path: Path, hello_repo: LocalRepo) -> None:
    assert ok(tmp_path, action="install", name=HELLO) == {"status": "installed", "version": "1.0"}
    assert installed_version(HELLO) == "1.0"
    assert Path(f"/usr/share/doc/{HELLO}/hello.txt").read_text() == f"{HELLO} 1.0\n"
    assert ok(tmp_path, action="status", name=HELLO) == {"status": "installed", "version": "1.0"}

    hello_repo.add(HELLO, "2.0")
    assert ok(tmp_path, noop=True, action="upgrade", name=HELLO) == {
        "status": "installed",
        "version": "1.0",
        "latest": "2.0",
        "noop": True,
        "would": "upgrade",
        "candidate": "2.0",
    }
    missing = run_package(tmp_path, action="upgrade", name=HELLO, version="3.0")
    assert missing.error["kind"] == "podium.package/unknown-version"
    assert "version '3.0' of package 'podium-test-hello'" in missing.error["msg"]
    assert missing.error["details"]["available"] == "2.0 1.0"
    assert installed_version(HELLO) == "1.0"
    upgraded = ok(tmp_path, action="upgrade", name=HELLO, version="2.0")
    assert upgraded == {"old_version": "1.0", "version": "2.0"}
    assert installed_version(HELLO) == "2.0"

    assert ok(tmp_path, noop=True, action="uninstall", name=HELLO) == {
        "status": "installed",
        "version": "2.0",
        "noop": True,
        "would": "uninstall",
    }
    assert installed_version(HELLO) == "2.0"
    assert ok(tmp_path, action="uninstall", name=HELLO) == {"status": "uninstalled"}
    assert installed_version(HELLO) is None
    assert ok(tmp_path, action="status", name=HELLO) == {"status": "uninstalled", "version": ""}
    assert ok(tmp_path, action="uninstall", name=HELLO) == {"status": "uninstalled"}


@needs_apt
def test_a_locked_package_database_is_reported(tmp_path: Path, hello_repo: LocalRepo) -> None:
    with open("/var/lib/dpkg/lock-frontend", "a") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what apt itself takes
        try:
            outcome = run_package(tmp_path, action="install", name=HELLO)
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN)
    assert outcome.error["kind"] == "podium.package/locked"
    assert "locked by another process" in outcome.error["msg"]
    assert "try again" in outcome.error["msg"]
    assert outcome.error["details"]["exitcode"] == 100
    assert installed_version(HELLO) is None


# -- the rpm branch, on stubs -----------------------------------------------------------

# rpm and dnf as far as the task uses them, keeping "installed" in a state file.
RPM_STUB = """\
#!/bin/sh
# rpm -q [--whatprovides] --qf FORMAT NAME
for last; do :; done
if [ -f "{state}/$last" ]; then printf '%s\\t%s\\n' "$last" "$(cat "{state}/$last")"; exit 0; fi
echo "package $last is not installed"; exit 1
"""
DNF_STUB = """\
#!/bin/sh
[ "$1" = -y ] || exit 0
echo "$*" >>"{state}/calls"
case $2 in
install|upgrade) name=${{3%%-[0-9]*}}; v=${{3#"$name"-}}
  [ "$name" = nosuch ] && {{ echo "Error: Unable to find a match: $3"; exit 1; }}
  [ "$v" = "$3" ] && v=9.9-1.el9; echo "$v" >"{state}/$name" ;;
remove) rm -f "{state}/$3" ;;
check-update) exit 0 ;;
esac
"""


def test_the_dnf_branch_runs_dnf_and_reads_rpm(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("rpm", RPM_STUB), ("dnf", DNF_STUB)):
        stub = bin_dir / name
        stub.write_text(text.format(state=state))
        stub.chmod(0o755)
    path = f"{bin_dir}:{PATH}"

    def dnf(**params: str) -> Outcome:
        return run_package(tmp_path, path=path, manager="dnf", name="tool", **params)

    assert dnf(action="status").result == {"status": "uninstalled", "version": ""}
    installed = dnf(action="install", version="1.2-3.el9")
    assert installed.result == {"status": "installed", "version": "1.2-3.el9"}
    assert dnf(action="upgrade").result == {"old_version": "1.2-3.el9", "version": "9.9-1.el9"}
    assert dnf(action="uninstall").result == {"status": "uninstalled"}
    assert (state / "calls").read_text().splitlines() == [
        "-y install tool-1.2-3.el9",
        "-y upgrade tool",
        "-y remove tool",
    ]
    unknown = run_package(tmp_path, path=path, manager="dnf", action="install", name="nosuch")
    assert unknown.error["kind"] == "podium.package/unknown-package"
    assert unknown.error["details"]["output"] == "Error: Unable to find a match: nosuch"
