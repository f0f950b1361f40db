"""A throw-away local apt repository of tiny packages, for tests that install for real.

No network: the packages are built here with ``dpkg-deb``, indexed in a ``Packages``
file written here, and offered to apt through a ``deb [trusted=yes] file:...`` source
that only this repository's own ``apt-get update`` reads. Needs root, dpkg and apt
(:data:`APT_MISSING` says what is missing, for ``skipif``)::

    with local_repo(tmp_path, packages=[("podium-test-hello", "1.0")]) as repo:
        ...  # apt-get install podium-test-hello now installs 1.0
        repo.add("podium-test-hello", "2.0")  # and now 2.0

The packages must be test packages: a copy already installed is purged on entry, and
on exit the source and its package lists are removed and every package the repository
offered is purged. Tests using this hold a machine-wide
lock while the repository exists, so that two test runs never fight over dpkg.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SOURCES_DIR = Path("/etc/apt/sources.list.d")
# Serialises the test runs on this machine that install packages.
TEST_LOCK = Path("/var/lock/podium-tests-apt.lock")


def _missing() -> str | None:
    needed = ("dpkg-deb", "dpkg-query", "dpkg", "apt-get", "apt-cache")
    tools = [tool for tool in needed if not shutil.which(tool)]
    if tools:
        return f"needs {', '.join(tools)}"
    if os.geteuid() != 0:
        return "needs root to install packages"
    if not SOURCES_DIR.is_dir():
        return f"needs {SOURCES_DIR}"
    return None


# Why real package installs cannot run here, or None when they can.
APT_MISSING = _missing()


def installed_version(name: str) -> str | None:
    """The installed version of package ``name``, or None (removed counts as not installed)."""
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}\t${Version}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    status, _, version = proc.stdout.partition("\t")
    return version if proc.returncode == 0 and status.endswith(" installed") else None


def purge(name: str) -> None:
    """Purge package ``name`` if dpkg knows it at all (installed or leaving config files)."""
    known = subprocess.run(["dpkg-query", "-W", name], capture_output=True, check=False)
    if known.returncode == 0:
        subprocess.run(["dpkg", "--purge", name], capture_output=True, check=True)


def build_deb(workdir: Path, name: str, version: str, *, into: Path) -> Path:
    """Build package ``name`` ``version`` (one file, /usr/share/doc/<name>/hello.txt)."""
    root = workdir / f"{name}_{version}"
    (root / "DEBIAN").mkdir(parents=True)
    doc = root / "usr/share/doc" / name
    doc.mkdir(parents=True)
    (doc / "hello.txt").write_text(f"{name} {version}\n")
    (root / "DEBIAN/control").write_text(_control(name, version))
    deb = into / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
        capture_output=True,
        check=True,
    )
    return deb


def _control(name: str, version: str) -> str:
    return (
        f"Package: {name}\n"
        f"Version: {version}\n"
        "Architecture: all\n"
        "Maintainer: Podium tests <tests@podium.invalid>\n"
        "Section: misc\n"
        "Priority: optional\n"
        "Installed-Size: 1\n"
        f"Description: Podium test package {name}\n"
    )


@dataclass
class LocalRepo:
    """A flat apt repository in ``path``, offered through ``list_file``."""

    path: Path
    list_file: Path
    _work: Path
    _entries: dict[tuple[str, str], str] = field(default_factory=dict)
    _lists: set[Path] = field(default_factory=set)

    @property
    def names(self) -> set[str]:
        """The names of the packages this repository offers."""
        return {name for name, _ in self._entries}

    def add(self, name: str, version: str, *, refresh: bool = True) -> Path:
        """Build and offer ``name`` ``version``; apt sees it at once unless ``refresh=False``."""
        deb = build_deb(self._work, name, version, into=self.path)
        data = deb.read_bytes()
        self._entries[name, version] = (
            _control(name, version)
            + f"Filename: ./{deb.name}\n"
            + f"Size: {len(data)}\n"
            + f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
        if refresh:
            self.refresh()
        return deb

    def refresh(self) -> None:
        """Rewrite the index and make apt read this repository's (and only its) lists."""
        (self.path / "Packages").write_text("\n".join(self._entries.values()))
        only_this_source = [
            "-o",
            f"Dir::Etc::sourcelist={self.list_file}",
            "-o",
            "Dir::Etc::sourceparts=-",
        ]
        update_options = [
            "-o",
            "APT::Get::List-Cleanup=0",  # keep the other sources' lists
            # The folder is pytest's, private to root: apt's _apt user cannot read it.
            "-o",
            "APT::Sandbox::User=root",
        ]
        subprocess.run(
            ["apt-get", "update", "-q", *only_this_source, *update_options],
            capture_output=True,
            check=True,
        )
        targets = subprocess.run(
            ["apt-get", "indextargets", *only_this_source, "--format", "$(FILENAME)"],
            capture_output=True,
            text=True,
            check=True,
        )
        self._lists.update(Path(line) for line in targets.stdout.split() if line)


@contextmanager
def _machine_lock() -> Iterator[None]:
    with TEST_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def local_repo(tmp_path: Path, packages: Iterable[tuple[str, str]] = ()) -> Iterator[LocalRepo]:
    """A local apt repository offering ``packages`` (name, version), for the ``with`` block."""
    repo_dir = tmp_path / "apt-repo"
    repo_dir.mkdir()
    work = tmp_path / "apt-build"
    work.mkdir()
    list_file = SOURCES_DIR / f"podium-test-{secrets.token_hex(4)}.list"
    with _machine_lock():
        repo = LocalRepo(repo_dir, list_file, work)
        try:
            list_file.write_text(f"deb [trusted=yes] file:{repo_dir} ./\n")
            for name, version in packages:
                purge(name)  # left over from an interrupted run
                repo.add(name, version, refresh=False)
            repo.refresh()
            yield repo
        finally:
            for name in sorted(repo.names):
                purge(name)
            list_file.unlink(missing_ok=True)
            for path in repo._lists:
                path.unlink(missing_ok=True)
