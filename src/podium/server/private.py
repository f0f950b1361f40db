"""Files only the server's user may touch: keys, tokens, passwords and the database.

The server creates them so (its data folder 0700, the files 0600); this module checks
what it finds at start, since a copied backup or a hand-written token file easily
comes out readable by everyone. :func:`exposed` is the check over given paths;
:func:`check_server_files` applies it to a server's settings and refuses to start
while a key, a token or a password is exposed. An exposed database is only warned
about: it holds no key, and what it holds that is secret is sealed or hashed.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from podium.errors import ConfigError
from podium.server.settings import ServerSettings

log = logging.getLogger(__name__)

_SQLITE = "sqlite:///"


@dataclass(frozen=True)
class PrivateFile:
    """A path that must be kept from other users; ``what`` names it in a message.

    A folder (``folder=True``) may be readable by others, but never writable: whoever
    may write to it may replace the files in it. A file that is not ``secret`` is only
    warned about.
    """

    path: Path
    what: str
    folder: bool = False
    secret: bool = True


@dataclass(frozen=True)
class Exposure:
    """A private file that group or others may read or write."""

    file: PrivateFile
    mode: int

    def __str__(self) -> str:
        who = _who(self.mode)
        path = self.file.path
        if self.file.folder:
            return (
                f"{path} ({self.file.what}) can be written by {who} (mode {self.mode:04o}): "
                f"run chmod go-w {path}"
            )
        how = " and ".join(
            verb for verb, bits in (("read", 0o044), ("written", 0o022)) if self.mode & bits
        )
        return (
            f"{path} ({self.file.what}) can be {how or 'used'} by {who} "
            f"(mode {self.mode:04o}): run chmod 600 {path}"
        )


def exposed(files: Iterable[PrivateFile]) -> list[Exposure]:
    """The ``files`` that exist and are open to other users, in the order given."""
    found: list[Exposure] = []
    for file in files:
        try:
            mode = stat.S_IMODE(os.stat(file.path).st_mode)
        except FileNotFoundError:
            continue  # not made yet: the server makes it private
        except OSError as exc:
            raise ConfigError(f"cannot check {file.path} ({file.what}): {exc.strerror}") from exc
        loose = mode & (0o022 if file.folder else 0o077)
        if loose:
            found.append(Exposure(file, mode))
    return found


def server_files(settings: ServerSettings) -> list[PrivateFile]:
    """What a server with ``settings`` keeps private, made or to be made."""
    files = [
        PrivateFile(settings.datadir, "the server's data folder", folder=True),
        PrivateFile(settings.cadir, "the CA folder", folder=True),
        PrivateFile(settings.cadir / "ca_key.pem", "the CA key"),
        PrivateFile(settings.cadir / "autosign.json", "the autosign policy, with its tokens"),
        PrivateFile(settings.key_path, "the server's TLS key"),
        PrivateFile(settings.sealing_key_path, "the key that seals stored task input"),
    ]
    files += [
        PrivateFile(path, "a file of enrollment tokens") for path in settings.autosign_token_files
    ]
    if settings.admin_password_file is not None:
        files.append(PrivateFile(settings.admin_password_file, "the admin's password"))
    url = settings.db_url
    if url.startswith(_SQLITE) and ":memory:" not in url:
        database = Path(url.removeprefix(_SQLITE).partition("?")[0])
        files += [
            PrivateFile(database.with_name(database.name + suffix), "the database", secret=False)
            for suffix in ("", "-wal", "-shm")
        ]
    return files


def check_server_files(settings: ServerSettings) -> None:
    """Refuse to start (:class:`ConfigError`) while a secret is open to others; warn
    about the other private files."""
    problems = []
    for problem in exposed(server_files(settings)):
        if problem.file.secret:
            problems.append(problem)
        else:
            log.warning("%s; other users can read what the server stores", problem)
    if not problems:
        return
    raise ConfigError(
        "the server will not start while other users may read or change its secrets: "
        + "; ".join(str(problem) for problem in problems),
        kind="podium/exposed-file",
        details={"files": [str(problem.file.path) for problem in problems]},
    )


def _who(mode: int) -> str:
    group, others = bool(mode & 0o070), bool(mode & 0o007)
    if group and others:
        return "its group and other users"
    return "its group" if group else "other users"
