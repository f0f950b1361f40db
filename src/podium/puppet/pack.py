"""An environment packed for ``puppet apply`` on the nodes: one gzipped tar, by SHA-256.

What goes in, under ``<environment>/``: the environment's ``manifests/``, ``data/`` and
``hiera.yaml`` as they are, every module of its modulepath under ``modules/`` (the first
folder on the path that has a module of a name wins, as Puppet's own lookup does, so the
node needs no other folder), and an ``environment.conf`` of its own that says so. The
archive is deterministic (members sorted, times, owners and modes normalized), so that
the same code always gives the same SHA-256 and agents fetch it once.

:class:`Packer` keeps the packs in a folder of the server's and packs an environment
again only when one of its files changed (a walk of ``stat`` calls: milliseconds for a
few thousand files). Only regular files and folders go in; a symbolic link is followed
when it stays inside its module or environment folder and left out otherwise, and
version-control folders are left out.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from podium.errors import ValidationError
from podium.files import write_atomic
from podium.tasks.codedir import CodeDir

log = logging.getLogger(__name__)

PACK_PATH: Final = "/puppet/v3/file_content/packs"
MAX_PACK_BYTES: Final = 512 * 1024 * 1024  # the files of one environment, before packing
KEPT: Final = 8  # packs kept per environment (older ones go once a newer one is made)
_TOP: Final = ("manifests", "data", "hiera.yaml")  # of the environment folder itself
_SKIPPED: Final = frozenset({".git", ".svn", ".hg", "__pycache__"})
_CONF: Final = (
    b"# Written by Podium: the modules are packed beside the manifests.\n"
    b"modulepath = modules\nmanifest = manifests\n"
)


@dataclass(frozen=True)
class Pack:
    """A packed environment: what a ``puppet``/``run`` request names as its ``code``."""

    environment: str
    sha256: str
    size_bytes: int
    path: Path

    @property
    def filename(self) -> str:
        return f"{self.environment}.tar.gz"

    def spec(self) -> dict[str, object]:
        """The file entry agents fetch it by (as task files are listed)."""
        return {
            "filename": self.filename,
            "uri": {"path": f"{PACK_PATH}/{self.sha256}", "params": {}},
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
        }


# (path in the archive, file on disk, executable); sorted by path
Members = list[tuple[str, Path, bool]]


def members(codedir: CodeDir, env: str) -> Members:
    """What the pack of ``env`` holds (blocking: walks the folders)."""
    envdir = codedir.root / "environments" / env
    modules = codedir.modules(env)  # NotFound for an unknown environment
    found: dict[str, tuple[Path, bool]] = {}
    for name in _TOP:
        _add(found, envdir / name, f"{env}/{name}", envdir)
    for name, folder in modules.items():
        _add(found, folder, f"{env}/modules/{name}", folder)
    return sorted((arc, path, ex) for arc, (path, ex) in found.items())


def signature(entries: Members) -> str:
    """A digest of what the files are now (names, sizes, modification times)."""
    digest = hashlib.sha256()
    for arc, path, _ in entries:
        st = path.stat()
        digest.update(f"{arc}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode())
    return digest.hexdigest()


def build(env: str, entries: Members) -> bytes:
    """The gzipped tar of ``entries`` (blocking), the same bytes for the same files."""
    total = 0
    raw = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        folders: set[str] = set()
        conf = f"{env}/environment.conf"
        # Always there, if empty: classes from node groups need no manifest of their own.
        for folder in (env, f"{env}/manifests"):
            folders.add(folder)
            tar.addfile(_info(folder, tarfile.DIRTYPE, 0o755))
        for arc, path, executable in [(conf, Path(), False), *entries]:
            for folder in _parents(arc):
                if folder not in folders:
                    folders.add(folder)
                    tar.addfile(_info(folder, tarfile.DIRTYPE, 0o755))
            if arc == conf:
                tar.addfile(_info(arc, tarfile.REGTYPE, 0o644, len(_CONF)), io.BytesIO(_CONF))
                continue
            data = path.read_bytes()
            total += len(data)
            if total > MAX_PACK_BYTES:
                raise ValidationError(
                    f"environment {env} holds more than {MAX_PACK_BYTES // 2**20} MiB of "
                    "manifests, data and modules; remove large files from its modules "
                    "(serve them from elsewhere) to run it in apply mode",
                    details={"environment": env},
                )
            mode = 0o755 if executable else 0o644
            tar.addfile(_info(arc, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    return raw.getvalue()


class Packer:
    """The packs of a code directory's environments, in ``folder``; thread-safe."""

    def __init__(self, codedir: CodeDir, folder: Path) -> None:
        self.codedir = codedir
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._known: dict[str, tuple[str, Pack]] = {}  # env → (signature, pack)

    def pack(self, env: str) -> Pack:
        """The pack of ``env`` as its files are now (blocking)."""
        entries = members(self.codedir, env)
        now = signature(entries)
        with self._lock:
            known = self._known.get(env)
            if known is not None and known[0] == now and known[1].path.exists():
                return known[1]
            data = build(env, entries)
            sha256 = hashlib.sha256(data).hexdigest()
            path = self.folder / f"{sha256}.tar.gz"
            if not path.exists():
                self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_atomic(path, data, mode=0o600)
            pack = Pack(env, sha256, len(data), path)
            self._known[env] = (now, pack)
            self._prune(env, keep=path)
            log.info("packed environment %s: %d files, %d bytes", env, len(entries), len(data))
            return pack

    def path(self, sha256: str) -> Path | None:
        """The file of a pack made here, by its SHA-256 (None if there is none)."""
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            return None
        path = self.folder / f"{sha256}.tar.gz"
        return path if path.is_file() else None

    def _prune(self, env: str, *, keep: Path) -> None:
        """Keep the newest :data:`KEPT` packs of ``env``: a job still running on an older
        one finds it, a long-lived server does not fill its disk."""
        record = self.folder / f"{env}.packs"
        try:
            names = record.read_text().split()
        except FileNotFoundError:
            names = []
        names = [n for n in names if n != keep.name] + [keep.name]
        for old in names[:-KEPT]:
            (self.folder / old).unlink(missing_ok=True)
        write_atomic(record, ("\n".join(names[-KEPT:]) + "\n").encode(), mode=0o600)


def _add(found: dict[str, tuple[Path, bool]], top: Path, arc: str, within: Path) -> None:
    """Every regular file under ``top`` (a file or a folder), first one of a name wins."""
    for path, relative in _walk(top, within):
        name = f"{arc}/{relative}" if relative else arc
        if name not in found:
            mode = path.stat().st_mode
            found[name] = (path, bool(mode & stat.S_IXUSR))


def _walk(top: Path, within: Path) -> Iterator[tuple[Path, str]]:
    if top.is_file():
        if _inside(top, within):
            yield top, ""
        return
    if not top.is_dir():
        return
    for folder, dirs, files in os.walk(top, followlinks=False):
        base = Path(folder)
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED and not (base / d).is_symlink())
        for name in sorted(files):
            path = base / name
            if path.is_file() and _inside(path, within):
                yield path, path.relative_to(top).as_posix()


def _inside(path: Path, within: Path) -> bool:
    """A file, or the target of a link, that stays inside ``within``."""
    if not path.is_symlink():
        return True
    try:
        path.resolve(strict=True).relative_to(within.resolve())
    except (OSError, ValueError):
        log.warning("left %s out of the pack: it links outside %s", path, within)
        return False
    return True


def _parents(arc: str) -> list[str]:
    parts = arc.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
