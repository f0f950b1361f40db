"""What running Puppet on the node takes: command lines, packed environments unpacked,
the node classifier script, and Puppet's own lock files in its state folder.

Command lines are data (pure); the rest touches the disk and blocks (run it in a
thread). Puppet's own folders are its defaults unless the agent's ``puppet_root`` is
set: then every folder lies under it (:func:`puppet_dirs`). Without it, the state folder
and the public folder (where the lock files and ``last_run_summary.yaml`` are) are
Puppet's defaults for the package installed (:func:`statedir`, :func:`publicdir`): a
``puppet.conf`` that moves them is not read, so that no run pays for asking Puppet.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, Final

from podium.agent.taskrun import is_alive
from podium.errors import ValidationError

DISABLED_LOCK: Final = "agent_disabled.lock"
RUN_LOCK: Final = "agent_catalog_run.lock"
SUMMARY: Final = "last_run_summary.yaml"
REPORT: Final = "report.yaml"  # in the transaction's folder
ENC: Final = "enc"
ENC_DATA: Final = "enc.json"
STDOUT: Final = "stdout"  # in the transaction's folder, as a task's (podium.agent.taskrun)
STDERR: Final = "stderr"
LOCK_PID: Final = "lockpid"  # the pid Podium wrote in Puppet's run lock, to remove it
FLAGS: Final = ("debug", "trace", "evaltrace")
_AIO: Final = Path("/opt/puppetlabs/puppet")  # Puppet's own package; else Debian's layout
# What Puppet takes for a live run's process (Puppet::Util::Pidlock): ruby running puppet.
_PUPPET_COMM: Final = re.compile(r"puppet(-.*)?\Z")


def puppet_dirs(root: Path | None) -> list[str]:
    """The folder options of every puppet command: all under ``root``, or none (Puppet's
    own defaults)."""
    if root is None:
        return []
    return [
        f"--confdir={root / 'etc'}",
        f"--vardir={root / 'var'}",
        f"--codedir={root / 'code'}",
        f"--logdir={root / 'log'}",
        f"--rundir={root / 'run'}",
        f"--publicdir={root / 'public'}",
        f"--ssldir={root / 'etc' / 'ssl'}",
    ]


def statedir(root: Path | None) -> Path:
    """Puppet's state folder (``<vardir>/state``), where its lock files are."""
    if root is not None:
        return root / "var" / "state"
    return _default_vardir() / "state"


def publicdir(root: Path | None) -> Path:
    """Puppet's public folder, where it writes ``last_run_summary.yaml``."""
    if root is not None:
        return root / "public"
    aio = _AIO.is_dir()
    if os.geteuid() == 0:
        return _AIO / "public" if aio else Path("/var/cache/puppet/public")
    home = Path.home()
    return home / ".puppetlabs/opt/puppet/public" if aio else home / ".puppet/cache/public"


def summary_file(root: Path | None) -> Path:
    return publicdir(root) / SUMMARY


def _default_vardir() -> Path:
    """Puppet's default vardir: the AIO package's if it is installed, else Debian's."""
    aio = _AIO.is_dir()
    if os.geteuid() == 0:
        return _AIO / "cache" if aio else Path("/var/cache/puppet")
    home = Path.home()
    return home / ".puppetlabs/opt/puppet/cache" if aio else home / ".puppet/cache"


def run_flags(noop: bool | None, flags: dict[str, bool]) -> list[str]:
    """``--noop``/``--no-noop`` (None: the node's own setting) and the debug flags."""
    args = [] if noop is None else ["--noop" if noop else "--no-noop"]
    return args + [f"--{name}" for name in FLAGS if flags.get(name)]


def apply_command(
    puppet: str,
    root: Path | None,
    *,
    environments: Path,
    environment: str,
    certname: str,
    txdir: Path,
    noop: bool | None,
    flags: dict[str, bool],
) -> list[str]:
    """``puppet apply`` of a packed environment, classified by the ENC in ``txdir``."""
    return [
        puppet,
        "apply",
        *puppet_dirs(root),
        "--detailed-exitcodes",
        "--color=false",
        f"--environmentpath={environments}",
        f"--environment={environment}",
        "--node_terminus=exec",
        f"--external_nodes={txdir / ENC}",
        f"--certname={certname}",
        f"--lastrunreport={txdir / REPORT}",
        *run_flags(noop, flags),
        str(environments / environment / "manifests"),
    ]


def agent_command(
    puppet: str,
    root: Path | None,
    *,
    environment: str,
    txdir: Path,
    noop: bool | None,
    flags: dict[str, bool],
    extra: tuple[str, ...] = (),
) -> list[str]:
    """One ``puppet agent`` run against the site's Puppet Server."""
    return [
        puppet,
        "agent",
        *puppet_dirs(root),
        "--onetime",
        "--no-daemonize",
        "--detailed-exitcodes",
        "--logdest=console",
        "--color=false",
        f"--environment={environment}",
        f"--lastrunreport={txdir / REPORT}",
        *run_flags(noop, flags),
        *extra,
    ]


def resource_command(puppet: str, root: Path | None, type_: str, title: str | None) -> list[str]:
    """``puppet resource`` of one type (every resource of it, or one title) as YAML."""
    title_arg = [] if title is None else [title]
    return [puppet, "resource", *puppet_dirs(root), "--color=false", type_, *title_arg, "--to_yaml"]


# -- the packed environment -----------------------------------------------------------


def unpack(tarball: Path, root: Path, sha256: str) -> Path:
    """The packed environment unpacked in ``root/<sha256>`` (once: a later call finds
    it), the folder to give as ``--environmentpath``. A member that is absolute, has
    "..", or is not a plain file or folder is refused and nothing is kept."""
    target = root / sha256
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=root))
    try:
        try:
            with tarfile.open(tarball, "r:gz") as archive:
                for member in archive:
                    _extract(archive, member, staging)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ValidationError(
                f"the packed environment {tarball.name} cannot be unpacked: {exc}"
            ) from exc
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # not a concurrent unpack that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo, staging: Path) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not name.parts or "\0" in member.name:
        raise ValidationError(f"the packed environment has an unsafe member name {member.name!r}")
    path = staging.joinpath(*[p for p in name.parts if p != "."])
    if member.isdir():
        path.mkdir(parents=True, exist_ok=True, mode=0o755)
        return
    if not member.isreg():
        raise ValidationError(
            f"the packed environment has a member that is not a plain file: {member.name!r}"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    source = archive.extractfile(member)
    assert source is not None  # a regular file
    with source, open(path, "xb") as out:
        shutil.copyfileobj(source, out)
    path.chmod(0o755 if member.mode & 0o111 else 0o644)


def environment_names(root: Path) -> list[str]:
    """The environments of an unpacked pack."""
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def prune(root: Path, keep: Path, cutoff: float) -> int:
    """Mark ``keep`` (an unpacked pack) used now and remove the unpacked packs beside it
    not used since ``cutoff`` (unix time), and unpacks left half done; how many went."""
    with contextlib.suppress(OSError):
        os.utime(keep)
    removed = 0
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.path == str(keep):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


# -- the node classifier --------------------------------------------------------------


def write_enc(txdir: Path, environment: str, classification: dict[str, Any]) -> Path:
    """The ENC script Puppet runs for the node's classes and top-scope variables: it
    prints a JSON file (JSON is YAML) whatever node it is asked about."""
    data = txdir / ENC_DATA
    node = {
        "classes": classification.get("classes") or {},
        "parameters": classification.get("parameters") or {},
        "environment": environment,
    }
    # The parameters may hold secrets: readable by the agent's user only, removed after
    # the run (remove_enc).
    fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(node, f, ensure_ascii=False)
    script = txdir / ENC
    script.write_text(f"#!/bin/sh\nexec cat {_quote(str(data))}\n")
    script.chmod(0o700)
    return script


def remove_enc(txdir: Path) -> None:
    """The classification removed once Puppet no longer needs it."""
    for name in (ENC_DATA, ENC):
        with contextlib.suppress(FileNotFoundError):
            (txdir / name).unlink()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# -- lock files -----------------------------------------------------------------------


def disabled_message(state: Path) -> str | None:
    """The reason Puppet is disabled (``""`` if none was given), or None if enabled."""
    try:
        text = (state / DISABLED_LOCK).read_text(errors="replace")
    except FileNotFoundError:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return text.strip()
    message = found.get("disabled_message") if isinstance(found, dict) else None
    return message if isinstance(message, str) else ""


def disable(state: Path, message: str) -> None:
    """Disable Puppet as ``puppet agent --disable`` does (its own JSON lock file)."""
    state.mkdir(parents=True, exist_ok=True, mode=0o750)
    lock = state / DISABLED_LOCK
    temporary = lock.with_name(f".{DISABLED_LOCK}.{os.getpid()}")
    temporary.write_text(json.dumps({"disabled_message": message}))
    temporary.replace(lock)


def enable(state: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state / DISABLED_LOCK).unlink()


def running_pid(state: Path) -> int | None:
    """The pid in Puppet's run lock when it is a live Puppet process (a run is going on);
    a lock left by a run that died, its pid since given to another program, is stale
    (Puppet's own rule)."""
    try:
        pid = int((state / RUN_LOCK).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_puppet(pid) else None


def _is_puppet(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        comm = Path(f"/proc/{pid}/comm").read_text(errors="replace").strip()
        args = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False  # it has just ended
    except OSError:
        return True  # no /proc here: trust kill()
    if stat[stat.rfind(b")") + 2 :][:1] == b"Z":
        return False
    return ("ruby" in comm and b"puppet" in args) or bool(_PUPPET_COMM.search(comm))


def hold_run_lock(
    state: Path, txdir: Path, wrapper: int, program: str, *, wait: float = 2.0
) -> int | None:
    """Write the pid of ``program`` (``puppet apply``, which takes no lock of its own),
    run by the wrapper ``wrapper``, in Puppet's run lock, so that a ``puppet agent`` run
    started meanwhile waits for it; the pid, or None if it is already gone."""
    deadline = time.monotonic() + wait
    pid = None
    while pid is None:
        pid = _running(wrapper, program)
        if pid is None:
            if time.monotonic() > deadline or not is_alive(wrapper):
                return None
            time.sleep(0.005)
    state.mkdir(parents=True, exist_ok=True, mode=0o750)
    lock = state / RUN_LOCK
    temporary = lock.with_name(f".{RUN_LOCK}.{os.getpid()}")
    temporary.write_text(str(pid))
    temporary.replace(lock)
    (txdir / LOCK_PID).write_text(str(pid))
    return pid


def release_run_lock(state: Path, txdir: Path) -> None:
    """Remove the run lock :func:`hold_run_lock` wrote, if it still names that pid."""
    try:
        pid = int((txdir / LOCK_PID).read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(OSError, ValueError):
        if int((state / RUN_LOCK).read_text().strip()) == pid:
            (state / RUN_LOCK).unlink()
    with contextlib.suppress(OSError):
        (txdir / LOCK_PID).unlink()


def _running(wrapper: int, program: str) -> int | None:
    """The child of ``wrapper`` that runs ``program`` (once it has started it: until
    then the child is a copy of the wrapper, and the wrapper has other children)."""
    try:
        own = Path(f"/proc/{wrapper}/cmdline").read_bytes()
        children = Path(f"/proc/{wrapper}/task/{wrapper}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if argv != own and os.fsencode(program) in argv.split(b"\0"):
            return int(child)
    return None
