"""The built-in ``service`` task, run as the agent runs it: PT_ variables in, JSON out.

The init-script branch drives a throw-away LSB script in /etc/init.d whose daemon is a
``sleep``; the systemd branch runs only where systemd runs the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from builtin_run import PATH, Outcome, run_builtin

import podium
from podium.errors import ValidationError
from podium.tasks import CodeDir, builtin_codedir, validate_params
from waiting import wait_for

SCRIPT = Path(podium.__file__).resolve().parent / "data/modules/service/tasks/init.sh"
INIT_D = Path("/etc/init.d")
SYSTEMD_RUNNING = Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None
BOOT_TOOL = shutil.which("update-rc.d") or shutil.which("chkconfig")

needs_init_d = pytest.mark.skipif(
    not (INIT_D.is_dir() and os.access(INIT_D, os.W_OK)), reason="needs a writable /etc/init.d"
)

# An LSB init script: a `sleep` as its daemon, its pid in PIDFILE; "start" fails
# printing FAILFILE when that file exists.
INIT_SCRIPT = """\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: Podium test service
### END INIT INFO
pidfile={pidfile}
running() {{
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -r "/proc/$pid/stat" ] && ! sed 's/.*) //' "/proc/$pid/stat" | grep -q '^Z'
}}
start() {{
    if [ -f {failfile} ]; then cat {failfile}; exit 1; fi
    running && return 0
    sleep 1000 </dev/null >/dev/null 2>&1 &
    echo $! >"$pidfile"
}}
stop() {{
    running && kill "$(cat "$pidfile")"
    rm -f "$pidfile"
}}
case $1 in
start) start ;;
stop) stop ;;
restart) stop; start ;;
status) running && exit 0; exit 3 ;;
*) echo "usage: $0 start|stop|restart|status"; exit 2 ;;
esac
"""


@dataclass
class InitService:
    """A throw-away /etc/init.d service."""

    name: str
    pidfile: Path
    failfile: Path

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text())
        except FileNotFoundError:
            return None


def run_service(tmp_path: Path, **kwargs: Any) -> Outcome:
    """The service task run on this machine (see builtin_run.py)."""
    return run_builtin("service", tmp_path, timeout=60, **kwargs)


def ok(tmp_path: Path, **params: Any) -> dict[str, Any]:
    """The result of a run that must succeed."""
    return run_service(tmp_path, **params).ok


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2 :][:1] != "Z"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[InitService]:
    """A stopped, disabled init-script service; removed (daemon killed) afterwards."""
    svc = InitService(
        f"podium-test-{secrets.token_hex(4)}", tmp_path / "svc.pid", tmp_path / "svc.fail"
    )
    script = INIT_D / svc.name
    script.write_text(INIT_SCRIPT.format(name=svc.name, pidfile=svc.pidfile, failfile=svc.failfile))
    script.chmod(0o755)
    try:
        yield svc
    finally:
        pid = svc.pid()
        if pid is not None and alive(pid):
            os.kill(pid, 9)
        if shutil.which("update-rc.d"):
            subprocess.run(["update-rc.d", "-f", svc.name, "remove"], capture_output=True)
        elif shutil.which("chkconfig"):
            subprocess.run(["chkconfig", "--del", svc.name], capture_output=True)
        script.unlink(missing_ok=True)


def init(tmp_path: Path, svc: InitService, action: str, **params: Any) -> dict[str, Any]:
    """Run ``action`` on the init-script service and return the result."""
    return ok(tmp_path, action=action, name=svc.name, manager="init", **params)


# -- metadata ---------------------------------------------------------------------------


def test_the_task_is_built_in_with_pe_parameters() -> None:
    task = CodeDir(builtin_codedir()).task("production", "service")
    implementation = task.implementation_for({"shell"})
    assert implementation is not None
    assert implementation.executable.path == SCRIPT
    assert implementation.input_method == "environment"
    assert task.supports_noop
    assert {name: p.type for name, p in task.parameters.items()} == {
        "action": "Enum[start, stop, restart, status, enable, disable]",
        "name": "String[1]",
        "manager": "Optional[Enum[systemd, init]]",
    }
    assert validate_params(task, {"action": "restart", "name": "cron"}) == {
        "action": "restart",
        "name": "cron",
    }
    with pytest.raises(ValidationError, match=r"action.*reload"):
        validate_params(task, {"action": "reload", "name": "cron"})
    assert SCRIPT.stat().st_mode & 0o777 == 0o755


# -- init scripts -----------------------------------------------------------------------


@needs_init_d
def test_start_status_stop_status_through_the_init_script(
    tmp_path: Path, service: InitService
) -> None:
    assert init(tmp_path, service, "status")["status"] == "stopped"

    started = init(tmp_path, service, "start")
    assert started["status"] == "running"
    assert started["manager"] == "init"
    pid = service.pid()
    assert pid is not None
    assert alive(pid)
    assert init(tmp_path, service, "status")["status"] == "running"

    assert init(tmp_path, service, "stop")["status"] == "stopped"
    wait_for("the daemon to stop", lambda: not alive(pid))
    assert init(tmp_path, service, "status")["status"] == "stopped"


@needs_init_d
@pytest.mark.skipif(SYSTEMD_RUNNING, reason="systemd runs this machine: it is the default")
def test_without_systemd_init_scripts_are_the_default(tmp_path: Path, service: InitService) -> None:
    result = ok(tmp_path, action="status", name=service.name)
    assert result == {"status": "stopped", "enabled": "disabled", "manager": "init"}


@needs_init_d
def test_start_of_a_running_service_leaves_it_alone(tmp_path: Path, service: InitService) -> None:
    init(tmp_path, service, "start")
    pid = service.pid()
    assert init(tmp_path, service, "start")["status"] == "running"
    assert service.pid() == pid


@needs_init_d
def test_restart_runs_a_new_daemon(tmp_path: Path, service: InitService) -> None:
    init(tmp_path, service, "start")
    first = service.pid()
    assert first is not None
    assert init(tmp_path, service, "restart")["status"] == "running"
    second = service.pid()
    assert second is not None
    assert second != first
    assert alive(second)
    wait_for("the first daemon to stop", lambda: not alive(first))


@needs_init_d
def test_noop_says_what_would_happen_and_changes_nothing(
    tmp_path: Path, service: InitService
) -> None:
    assert init(tmp_path, service, "start", noop=True) == {
        "status": "stopped",
        "enabled": "disabled",
        "manager": "init",
        "noop": True,
        "would": "start",
    }
    assert service.pid() is None
    assert init(tmp_path, service, "stop", noop=True)["would"] == "nothing"
    assert init(tmp_path, service, "restart", noop=True)["would"] == "restart"
    assert init(tmp_path, service, "status", noop=True)["noop"] is True
    assert init(tmp_path, service, "status")["status"] == "stopped"


@needs_init_d
@pytest.mark.skipif(BOOT_TOOL is None, reason="needs update-rc.d or chkconfig")
def test_enable_and_disable_change_what_starts_at_boot(
    tmp_path: Path, service: InitService
) -> None:
    assert init(tmp_path, service, "enable", noop=True)["would"] == "enable"
    assert init(tmp_path, service, "status")["enabled"] == "disabled"
    assert init(tmp_path, service, "enable")["enabled"] == "enabled"
    assert init(tmp_path, service, "status")["enabled"] == "enabled"
    assert init(tmp_path, service, "disable")["enabled"] == "disabled"
    assert init(tmp_path, service, "status")["enabled"] == "disabled"
    # Neither starts or stops the service.
    assert init(tmp_path, service, "status")["status"] == "stopped"


@needs_init_d
def test_a_failing_init_script_is_reported_with_its_output_intact(
    tmp_path: Path, service: InitService
) -> None:
    # Every character JSON must escape, and some it must not.
    output = 'cannot "start": \\path\\ \ttab \r\x01\x1b[31m\x7f caf\u00e9 \u2603\nsecond line'
    service.failfile.write_text(output + "\n")
    outcome = run_service(tmp_path, action="start", name=service.name, manager="init")
    error = outcome.error
    assert error["kind"] == "podium.service/action-failed"
    assert error["msg"] == (
        f"/etc/init.d/{service.name} start exited with code 1: " + output.split("\n")[0]
    )
    assert error["details"] == {
        "name": service.name,
        "manager": "init",
        "exitcode": 1,
        "output": output,
    }


@needs_init_d
def test_an_unknown_service_is_an_error(tmp_path: Path) -> None:
    name = f"podium-test-missing-{secrets.token_hex(4)}"
    outcome = run_service(tmp_path, action="status", name=name, manager="init")
    assert outcome.error["kind"] == "podium.service/unknown-service"
    assert f"no service named '{name}'" in outcome.error["msg"]
    assert f"/etc/init.d/{name}" in outcome.error["msg"]


@pytest.mark.parametrize(
    "name",
    [
        "../../bin/sh",
        "x/y",
        ".hidden",
        "-h",
        "x;touch {marker}",
        "$(touch {marker})",
        "`touch {marker}`",
        "x touch",
        "x\ntouch",
        "x*",
        "x'y",
    ],
)
def test_names_a_shell_or_a_path_would_read_are_refused(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "marker"
    name = name.format(marker=marker)
    outcome = run_service(tmp_path, action="start", name=name)
    assert outcome.error["kind"] == "podium.service/invalid-parameter"
    assert outcome.error["details"] == {"name": name}
    assert not marker.exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"action": "reload", "name": "x"}, "action must be one of start, stop, restart"),
        ({"action": "status"}, "name must be a service name"),
        ({"action": "status", "name": "x", "manager": "upstart"}, "manager must be systemd"),
    ],
)
def test_invalid_parameters_are_refused(
    tmp_path: Path, params: dict[str, str], message: str
) -> None:
    outcome = run_service(tmp_path, **params)
    assert outcome.error["kind"] == "podium.service/invalid-parameter"
    assert message in outcome.error["msg"]


# -- systemd ----------------------------------------------------------------------------


@pytest.mark.skipif(SYSTEMD_RUNNING, reason="systemd runs this machine")
def test_asking_for_systemd_where_it_does_not_run_is_an_error(tmp_path: Path) -> None:
    outcome = run_service(tmp_path, action="status", name="cron", manager="systemd")
    assert outcome.error["kind"] == "podium.service/no-service-manager"
    assert "systemd is not running on this node" in outcome.error["msg"]


# -- the systemd branch, on a stub -------------------------------------------------------

# systemctl as far as the task uses it, keeping each unit's state in a file.
SYSTEMCTL_STUB = r"""#!/bin/sh
echo "$*" >>"STATE/calls"
for unit; do :; done
case $1 in
show)
  if [ -f "STATE/$unit" ]; then
    active=$(cat "STATE/$unit")
    sub=dead; [ "$active" = active ] && sub=running
    printf 'LoadState=loaded\nActiveState=%s\nSubState=%s\nUnitFileState=enabled\n' "$active" "$sub"
  else
    printf 'LoadState=not-found\nActiveState=inactive\nSubState=dead\nUnitFileState=\n'
  fi ;;
is-enabled) if [ -f "STATE/$unit" ]; then echo enabled; else echo not-found; exit 1; fi ;;
--no-ask-password)
  case $2 in
  start|restart) echo active >"STATE/$unit" ;;
  stop) echo inactive >"STATE/$unit" ;;
  esac ;;
esac
"""

needs_unshare = pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs root and unshare to fake a running systemd in a mount namespace",
)


@pytest.fixture
def fake_systemd(tmp_path: Path) -> tuple[Path, str, tuple[str, ...]]:
    """(state folder, PATH with a stub systemctl, a wrapper that runs the task in a mount
    namespace where /run/systemd/system exists, as on a node that systemd runs)."""
    state = tmp_path / "units"
    state.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "systemctl"
    stub.write_text(SYSTEMCTL_STUB.replace("STATE", str(state)))
    stub.chmod(0o755)
    (state / "nginx.service").write_text("inactive\n")
    (state / "nginx").write_text("inactive\n")
    wrapper = (
        "unshare", "--mount", "sh", "-c",
        'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec "$@"', "sh",
    )  # fmt: skip
    return state, f"{bin_dir}:{PATH}", wrapper


@needs_unshare
def test_where_systemd_runs_services_are_driven_through_systemctl(
    tmp_path: Path, fake_systemd: tuple[Path, str, tuple[str, ...]]
) -> None:
    state, path, wrapper = fake_systemd

    def systemd(**params: str) -> Outcome:
        return run_service(tmp_path, path=path, wrapper=wrapper, name="nginx", **params)

    status = systemd(action="status").result
    assert status == {
        "status": "stopped",
        "enabled": "enabled",
        "manager": "systemd",
        "active_state": "inactive",
        "sub_state": "dead",
    }
    started = systemd(action="start").result
    assert started["status"] == "running"
    assert started["active_state"] == "active"
    assert systemd(action="start", noop=True).result["would"] == "nothing"
    assert systemd(action="stop").result["status"] == "stopped"
    calls = (state / "calls").read_text()
    assert "--no-ask-password start -- nginx" in calls
    assert "--no-ask-password stop -- nginx" in calls


@needs_unshare
def test_systemd_unknown_unit_is_an_error(
    tmp_path: Path, fake_systemd: tuple[Path, str, tuple[str, ...]]
) -> None:
    _, path, wrapper = fake_systemd
    name = f"podium-no-{secrets.token_hex(4)}"
    outcome = run_service(tmp_path, path=path, wrapper=wrapper, action="status", name=name)
    assert outcome.error["kind"] == "podium.service/unknown-service"
    assert f"systemd has no unit {name}" in outcome.error["msg"]
