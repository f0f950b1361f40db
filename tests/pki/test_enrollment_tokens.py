"""Enrollment tokens come from files or the environment, never from a command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from podium.agent import config as agent_config
from podium.agent import daemon
from podium.agent.enroll import enrollment_token
from podium.cli.main import main
from podium.errors import ConfigError
from podium.pki.autosign import parse_tokens, read_token_file
from podium.server import main as server_main
from podium.server.runtime import open_ca
from podium.server.settings import ServerSettings

SECRET = "s3cret-t0ken"


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert SECRET not in err
    return err


# Token files


def test_a_token_file_holds_one_token_a_line() -> None:
    text = "# lab tokens\nalpha\n\n  bravo  \nalpha\n"
    assert parse_tokens(text, source="here") == ("alpha", "bravo")


def test_a_token_file_without_a_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no token"):
        read_token_file(_file(tmp_path / "tokens", "# none yet\n\n"))


def test_a_token_too_long_for_a_request_is_refused() -> None:
    with pytest.raises(ConfigError, match="line 2 of here is 256 characters long"):
        parse_tokens("ok\n" + "x" * 256, source="here")


def test_a_missing_token_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"cannot read the token file {tmp_path / 'none'}"):
        read_token_file(tmp_path / "none")


# The server


@pytest.mark.parametrize(
    "argv",
    [
        ["server", f"--autosign-token={SECRET}"],
        ["server", "--autosign-token", SECRET],
        ["server", "--autosign-token"],
    ],
)
def test_the_server_refuses_a_token_on_its_command_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(argv, capsys)
    assert err.startswith("podium server: --autosign-token is no longer accepted")
    assert "--autosign-token-file FILE" in err and "PODIUM_AUTOSIGN_TOKENS" in err


def test_the_server_takes_token_files_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[ServerSettings] = []
    monkeypatch.setattr(server_main, "serve", lambda settings, **_: started.append(settings))
    monkeypatch.setenv("PODIUM_AUTOSIGN_TOKENS", "from-env-1, from-env-2")
    one, two = _file(tmp_path / "one", "a\n"), _file(tmp_path / "two", "b\nc\n")

    argv = ["server", "--datadir", str(tmp_path / "data")]
    assert main([*argv, "--autosign-token-file", str(one), "--autosign-token-file", str(two)]) == 0

    settings = started[0]
    assert settings.autosign_token_files == (one, two)
    assert settings.autosign_tokens == ("from-env-1", "from-env-2")
    assert "from-env" not in repr(settings)
    ca = open_ca(settings)
    assert ca.autosign.tokens == ("from-env-1", "from-env-2", "a", "b", "c")


def test_a_missing_token_file_stops_the_server_naming_it(tmp_path: Path) -> None:
    settings = ServerSettings(
        datadir=tmp_path / "data", autosign_token_files=(tmp_path / "missing",)
    )
    with pytest.raises(ConfigError, match=r"cannot read the token file .*missing"):
        open_ca(settings)


# podium ca


@pytest.mark.parametrize(
    ("argv", "instead"),
    [
        (["ca", "init", "--autosign-token", SECRET], "--autosign-token-file FILE"),
        (["ca", "autosign", f"--token={SECRET}"], "--token-file FILE"),
    ],
)
def test_podium_ca_refuses_a_token_on_its_command_line(
    argv: list[str], instead: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(argv, capsys)
    assert "is no longer accepted" in err and instead in err


def test_ca_init_takes_tokens_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from podium.pki.ca import CertificateAuthority

    monkeypatch.setenv("PODIUM_AUTOSIGN_TOKENS", "alpha,bravo")
    assert main(["ca", "init", "--cadir", str(tmp_path / "ca")]) == 0
    assert CertificateAuthority.open(tmp_path / "ca").autosign.tokens == ("alpha", "bravo")


def test_ca_autosign_reads_tokens_from_standard_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from podium.pki.ca import CertificateAuthority

    cadir = str(tmp_path / "ca")
    main(["ca", "init", "--cadir", cadir])
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{SECRET}\n"))

    assert main(["ca", "autosign", "--cadir", cadir, "--token-file", "-"]) == 0

    assert CertificateAuthority.open(Path(cadir)).autosign.tokens == (SECRET,)
    assert SECRET not in capsys.readouterr().out


# The agent


@pytest.mark.parametrize(
    "argv",
    [["agent", "--enrollment-token", SECRET], ["agent", f"--enrollment-token={SECRET}"]],
)
def test_the_agent_refuses_a_token_on_its_command_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    err = _refused(argv, capsys)
    assert err.startswith("podium agent: --enrollment-token is no longer accepted")
    assert "--enrollment-token-file FILE" in err and "PODIUM_ENROLLMENT_TOKEN" in err


_AGENT = {"certname": "web-01", "server_url": "https://podium:8143", "brokers": ["wss://b"]}


def test_the_agent_reads_its_token_from_the_file_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[agent_config.AgentConfig] = []
    monkeypatch.setattr(daemon, "run_agent", lambda config: ran.append(config) or 0)
    token_file = _file(tmp_path / "token", f"{SECRET}\n")
    argv = ["agent", "--certname", "web-01", "--server-url", "https://podium:8143"]

    assert main([*argv, "--broker", "wss://b", "--enrollment-token-file", str(token_file)]) == 0

    assert ran[0].enrollment_token_file == token_file
    assert enrollment_token(ran[0]) == SECRET


def test_the_agent_takes_its_token_from_the_environment_without_a_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PODIUM_ENROLLMENT_TOKEN", f" {SECRET}\n")
    config = agent_config.load(None, _AGENT)
    assert enrollment_token(config) == SECRET
    assert SECRET not in repr(config)


def test_the_token_file_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODIUM_ENROLLMENT_TOKEN", "from-env")
    overrides: dict[str, Any] = {**_AGENT, "enrollment_token_file": _file(tmp_path / "t", "file\n")}
    assert enrollment_token(agent_config.load(None, overrides)) == "file"


def test_the_agent_config_file_names_a_token_file(tmp_path: Path) -> None:
    token_file = _file(tmp_path / "token", f"{SECRET}\n")
    settings = tmp_path / "agent.toml"
    settings.write_text(f'enrollment_token_file = "{token_file}"\n')
    config = agent_config.load(settings, _AGENT)
    assert config.enrollment_token_file == token_file
    assert enrollment_token(config) == SECRET


def test_a_token_in_the_agent_config_file_is_refused(tmp_path: Path) -> None:
    settings = tmp_path / "agent.toml"
    settings.write_text(f'enrollment_token = "{SECRET}"\n')
    with pytest.raises(ConfigError, match="enrollment_token_file") as raised:
        agent_config.load(settings, _AGENT)
    assert SECRET not in raised.value.msg


def test_an_agent_token_file_with_several_tokens_is_refused(tmp_path: Path) -> None:
    overrides = {**_AGENT, "enrollment_token_file": _file(tmp_path / "t", "one\ntwo\n")}
    with pytest.raises(ConfigError, match="holds 2 tokens; an agent sends one"):
        enrollment_token(agent_config.load(None, overrides))
