"""What running Puppet on the node takes: command lines, packed environments unpacked,
the node classifier script, and Puppet's own lock files in its state folder.

Command lines are data (pure); the rest touches the disk and blocks (run it in a
thread). Puppet's own folders are its defaults unless the agent's ``puppet_root`` is
set: then every folder lies under it (:func:`puppet_dirs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Final

from podium.errors import ValidationError

DISABLED_LOCK: Final = "agent_disabled.lock"
RUN_LOCK: Final = "agent_catalog_run.lock"
SUMMARY: Final = "last_run_summary.yaml"
REPORT: Final = "report.yaml"  # in the transaction's folder
ENC: Final = "enc"
ENC_DATA: Final = "enc.json"
STDOUT: Final = "puppet.out"
STDERR: Final = "puppet.err"
FLAGS: Final = ("debug", "trace", "evaltrace")


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
    """Puppet's state folder (``<vardir>/state``), where its lock files and run summary
    are. Without ``root``, Puppet's default vardir: the AIO package's, else Debian's, as
    root; ``~/.puppetlabs/opt/puppet/cache`` otherwise."""
    if root is not None:
        return root / "var" / "state"
    if os.geteuid() != 0:
        return Path.home() / ".puppetlabs" / "opt" / "puppet" / "cache" / "state"
    aio = Path("/opt/puppetlabs/puppet/cache")
    return (aio if aio.is_dir() else Path("/var/cache/puppet")) / "state"


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
        f"--lastrunfile={statedir(root) / SUMMARY}",
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


# -- the node classifier --------------------------------------------------------------


def write_enc(txdir: Path, environment: str, classification: dict[str, Any]) -> Path:
    """The ENC script Puppet runs for the node's classes and top-scope variables: it
    prints a JSON file (JSON is YAML) whatever node it is asked about."""
    data = txdir / ENC_DATA
    data.write_text(
        json.dumps(
            {
                "classes": classification.get("classes") or {},
                "parameters": classification.get("parameters") or {},
                "environment": environment,
            }
        )
    )
    script = txdir / ENC
    script.write_text(f"#!/bin/sh\nexec cat {_quote(str(data))}\n")
    script.chmod(0o700)
    return script


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
    """The pid in Puppet's run lock when that process lives (a Puppet run is going on)."""
    try:
        pid = int((state / RUN_LOCK).read_text().strip())
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
