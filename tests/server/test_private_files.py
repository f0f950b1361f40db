"""The server keeps its keys, tokens and database to its own user, and will not start
while someone else could read or change them."""

from __future__ import annotations

import dataclasses
import logging
import stat
from pathlib import Path

import pytest

from podium.errors import ConfigError
from podium.server.private import PrivateFile, check_server_files, exposed, server_files
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _file(path: Path, mode: int) -> Path:
    path.write_text("secret\n")
    path.chmod(mode)
    return path


# The check itself


def test_files_open_to_group_or_others_are_reported_with_the_fix(tmp_path: Path) -> None:
    files = [
        PrivateFile(_file(tmp_path / "private", 0o600), "a private one"),
        PrivateFile(_file(tmp_path / "read-only", 0o400), "a read-only one"),
        PrivateFile(_file(tmp_path / "world", 0o644), "the CA key"),
        PrivateFile(_file(tmp_path / "group", 0o660), "a token file"),
        PrivateFile(tmp_path / "missing", "not made yet"),
    ]

    problems = [str(problem) for problem in exposed(files)]

    assert problems == [
        f"{tmp_path / 'world'} (the CA key) can be read by its group and other users (mode 0644): "
        f"run chmod 600 {tmp_path / 'world'}",
        f"{tmp_path / 'group'} (a token file) can be read and written by its group "
        f"(mode 0660): run chmod 600 {tmp_path / 'group'}",
    ]


def test_a_folder_may_be_read_by_others_but_not_written(tmp_path: Path) -> None:
    readable, writable = tmp_path / "readable", tmp_path / "writable"
    readable.mkdir(mode=0o755)
    writable.mkdir()
    writable.chmod(0o777)
    files = [PrivateFile(readable, "a", folder=True), PrivateFile(writable, "b", folder=True)]

    assert [str(problem) for problem in exposed(files)] == [
        f"{writable} (b) can be written by its group and other users (mode 0777): "
        f"run chmod go-w {writable}"
    ]


def test_the_server_checks_its_keys_tokens_and_database(tmp_path: Path) -> None:
    settings = ServerSettings(
        datadir=tmp_path / "data",
        certname="podium-server",
        autosign_token_files=(tmp_path / "tokens",),
        admin_password_file=tmp_path / "admin-password",
    )
    checked = {file.path: file.what for file in server_files(settings)}
    data = tmp_path / "data"
    for path in (
        data / "ca" / "ca_key.pem",
        data / "ca" / "autosign.json",
        data / "ssl" / "podium-server.key.pem",
        data / "sealing.key",
        data / "podium.db",
        data / "podium.db-wal",
        tmp_path / "tokens",
        tmp_path / "admin-password",
    ):
        assert path in checked, path
    postgres = dataclasses.replace(settings, database_url="postgresql://db/podium")
    assert not any(
        path.name.startswith("podium.db") for path in (f.path for f in server_files(postgres))
    )


# The server


async def test_a_new_server_makes_its_folder_and_secrets_private(
    settings: ServerSettings, runtime: Runtime
) -> None:
    assert _mode(settings.datadir) == 0o700
    assert _mode(settings.cadir) == 0o700
    for path in (
        settings.cadir / "ca_key.pem",
        settings.cadir / "autosign.json",
        settings.key_path,
        settings.sealing_key_path,
    ):
        assert _mode(path) == 0o600, path
    if settings.db_url.startswith("sqlite:///"):
        assert _mode(Path(settings.db_url.removeprefix("sqlite:///"))) == 0o600
    check_server_files(settings)  # and what it made passes its own check


@pytest.mark.parametrize(
    ("where", "what"),
    [
        (lambda s: s.cadir / "ca_key.pem", "the CA key"),
        (lambda s: s.key_path, "the server's TLS key"),
        (lambda s: s.sealing_key_path, "the key that seals stored task input"),
        (lambda s: s.cadir / "autosign.json", "the autosign policy, with its tokens"),
    ],
    ids=["ca-key", "tls-key", "sealing-key", "autosign-policy"],
)
async def test_the_server_refuses_to_start_with_a_secret_others_can_read(
    settings: ServerSettings, runtime: Runtime, where, what: str
) -> None:
    path: Path = where(settings)
    path.chmod(0o640)

    with pytest.raises(ConfigError) as refused:
        Runtime(dataclasses.replace(settings))

    assert f"{path} ({what}) can be read by its group (mode 0640): run chmod 600 {path}" in (
        refused.value.msg
    )
    path.chmod(0o600)


def test_the_server_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    tokens = _file(tmp_path / "tokens", 0o644)
    settings = ServerSettings(datadir=tmp_path / "data", autosign_token_files=(tokens,))

    with pytest.raises(ConfigError, match=f"chmod 600 {tokens}") as refused:
        Runtime(settings)

    assert "a file of enrollment tokens" in refused.value.msg
    assert not (tmp_path / "data" / "ca").exists()  # refused before anything was made


def test_a_database_others_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir(mode=0o700)
    database = _file(datadir / "podium.db", 0o644)
    settings = ServerSettings(datadir=datadir)

    with caplog.at_level(logging.WARNING, logger="podium.server.private"):
        check_server_files(settings)

    assert f"{database} (the database) can be read by its group and other users" in caplog.text
    assert f"run chmod 600 {database}" in caplog.text


def test_the_server_refuses_a_data_folder_others_can_write(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    datadir.mkdir()
    datadir.chmod(0o777)

    with pytest.raises(ConfigError, match=f"run chmod go-w {datadir}"):
        Runtime(ServerSettings(datadir=datadir))
