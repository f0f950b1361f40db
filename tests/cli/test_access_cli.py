"""``podium access login|show|logout`` against a real server in-process: a Runtime on
SQLite whose API the CLI's own client reaches through an ASGI transport.

The user, role and activity tests use :func:`serving` and :func:`runner` too.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import stat
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from access import admin_token
from podium.cli import access as cli_access
from podium.cli.main import main
from podium.server.app import create_app
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings

T = TypeVar("T")

ADMIN_PASSWORD = "first start secret"
CLIENT_ADDRESS = "192.0.2.7"  # where the CLI's requests come from, as the server sees it


class _Bridge(httpx.BaseTransport):
    """The CLI's blocking client served by an ASGI app on another thread's event loop."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._asgi = httpx.ASGITransport(app=app, client=(CLIENT_ADDRESS, 40000))
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()

        async def forward() -> httpx.Response:
            inner = httpx.Request(
                request.method, request.url, headers=request.headers, content=content
            )
            response = await self._asgi.handle_async_request(inner)
            body = await response.aread()
            return httpx.Response(
                response.status_code, headers=response.headers, content=body, request=request
            )

        return asyncio.run_coroutine_threadsafe(forward(), self._loop).result(timeout=60)


@dataclass
class Run:
    code: int
    out: str
    err: str


Podium = Callable[..., Run]


class Server:
    """A started Runtime on its own event loop thread, and the CLI pointed at it."""

    def __init__(self, root: Path) -> None:
        password = root / "admin-password"
        password.write_text(ADMIN_PASSWORD + "\n")
        password.chmod(0o600)
        self.settings = ServerSettings(
            datadir=root / "server",
            database_url=f"sqlite:///{root / 'podium.db'}",
            certname="podium-server",
            broker_port=0,
            admin_password_file=password,
        )
        self.token_file = root / "home" / ".config" / "podium" / "token"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.runtime = self.wait(self._start())
        self.transport = _Bridge(create_app(self.runtime), self._loop)

    async def _start(self) -> Runtime:
        runtime = Runtime(self.settings)
        await runtime.start()
        return runtime

    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def close(self) -> None:
        try:
            self.wait(self.runtime.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()

    @property
    def cacert(self) -> Path:
        return self.settings.datadir / "ca" / "ca_crt.pem"

    def admin_token(self) -> str:
        return admin_token(self.runtime)

    def http(self, token: str | None = None) -> httpx.Client:
        """A plain client of the API, as a script would use it."""
        headers = {"X-Authentication": token} if token else {}
        return httpx.Client(
            transport=self.transport, base_url="https://podium.test", headers=headers
        )


@contextmanager
def serving(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A server, with ``podium`` pointed at it and its token file under ``root``."""
    server = Server(root)
    real = cli_access.connect

    def connect(args: argparse.Namespace, api: str = cli_access.RBAC, **kwargs: Any) -> Any:
        return real(args, api, transport=server.transport, **kwargs)

    monkeypatch.setattr(cli_access, "connect", connect)
    monkeypatch.setenv("PODIUM_SERVER_URL", "https://podium.test")
    monkeypatch.setenv("PODIUM_CACERT", str(server.cacert))
    monkeypatch.setenv("PODIUM_TOKEN_FILE", str(server.token_file))
    monkeypatch.delenv("PODIUM_TOKEN", raising=False)
    try:
        yield server
    finally:
        server.close()


def runner(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Podium:
    """``podium(*argv, stdin=...)``: the CLI run in-process; its code, stdout, stderr."""

    def run(*argv: str, stdin: str = "") -> Run:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exited:  # argparse's refusals
            code = int(exited.code or 0)
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    with serving(tmp_path, monkeypatch) as server:
        yield server


@pytest.fixture
def podium(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Podium:
    return runner(monkeypatch, capsys)


def login(podium: Podium, user: str = "admin", password: str = ADMIN_PASSWORD) -> Run:
    done = podium("access", "login", "--user", user, "--password-stdin", stdin=password + "\n")
    assert done.code == 0, done.err
    return done


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- login ----------------------------------------------------------------------------


def test_login_saves_a_private_token_file_and_show_names_its_user(server: Server, podium: Podium):
    done = login(podium)
    assert done.out.startswith(f"Logged in as admin. Token saved in {server.token_file}; it ")
    assert re.search(r"; it expires \S+ \(in (59m \d+s|1h)\)\.$", done.out)  # the default, 1 h
    assert stat.S_IMODE(server.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.token_file.parent.stat().st_mode) == 0o700
    token = server.token_file.read_text().strip()

    shown = podium("access", "show")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[0] == token
    assert lines[1] == "  User:     admin (Administrator), superuser"
    assert lines[2].startswith("  Expires:  ") and "(in " in lines[2]
    assert lines[-1] == f"  From:     {server.token_file}"

    # The token is the one every other command sends.
    with server.http(token) as http:
        assert http.get("/rbac-api/v1/users/current").json()["login"] == "admin"


def test_login_with_a_lifetime_and_label_and_show_as_json(server: Server, podium: Podium):
    podium_run = podium(
        "access", "login", "--user", "admin", "--password-stdin", "--lifetime", "2h",
        "--label", "laptop", stdin=ADMIN_PASSWORD + "\n",
    )  # fmt: skip
    assert podium_run.code == 0, podium_run.err
    assert re.search(r"\(in (1h 59m|2h)\)", podium_run.out)
    shown = podium("access", "show", "--format", "json")
    data = json.loads(shown.out)
    assert data["token"] == server.token_file.read_text().strip()
    assert data["user"]["login"] == "admin"
    assert data["user"]["token"]["label"] == "laptop"


def test_a_wrong_password_is_refused_with_the_servers_message_and_nothing_is_saved(
    server: Server, podium: Podium
):
    done = podium("access", "login", "--user", "admin", "--password-stdin", stdin="wrong one\n")
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        "podium access: the server refused the login: the login or the password is wrong\n"
    )
    assert not server.token_file.exists()


def test_a_failed_login_keeps_the_token_saved_before(server: Server, podium: Podium):
    login(podium)
    before = server.token_file.read_text()
    assert podium("access", "login", "--user", "admin", "--password-stdin", stdin="x\n").code == 1
    assert server.token_file.read_text() == before


def test_login_asks_for_the_login_and_the_password_on_a_terminal(
    server: Server, podium: Podium, monkeypatch: pytest.MonkeyPatch
):
    asked: list[str] = []

    def getpass(prompt: str = "") -> str:
        asked.append(prompt)
        return ADMIN_PASSWORD

    monkeypatch.setattr("getpass.getpass", getpass)
    monkeypatch.setattr("sys.stdin", Terminal("admin\n"))
    done = main(["access", "login"])
    assert done == 0
    assert asked == ["Password for admin: "]
    assert server.token_file.exists()


def test_login_without_a_user_and_without_a_terminal_asks_for_user(podium: Podium):
    done = podium("access", "login", stdin="admin\n")
    assert done.code == 1
    assert done.err == (
        "podium access: give the login with --user: there is no terminal to ask it on\n"
    )


def test_an_empty_password_on_stdin_is_refused_before_any_request(podium: Podium):
    done = podium("access", "login", "--user", "admin", "--password-stdin", stdin="\n")
    assert done.code == 1
    assert "--password-stdin read no password" in done.err


def test_a_lifetime_that_is_not_a_duration_is_refused(podium: Podium):
    done = podium("access", "login", "--user", "admin", "--lifetime", "soon")
    assert done.code == 1
    assert done.err.startswith("podium access: --lifetime: 'soon' is not a lifetime: give ")


def test_lifetimes_take_weeks_and_years():
    assert cli_access.parse_lifetime("90") == 90
    assert cli_access.parse_lifetime("2h") == 7200
    assert cli_access.parse_lifetime("90d") == 90 * 86400
    assert cli_access.parse_lifetime("2w") == 14 * 86400
    assert cli_access.parse_lifetime("1y") == 365 * 86400
    for bad in ("0", "1x", "-1d", "\u0661d", ""):
        with pytest.raises(ValueError):
            cli_access.parse_lifetime(bad)


def test_a_too_long_lifetime_is_refused_by_the_server_with_its_reason(podium: Podium):
    done = podium(
        "access", "login", "--user", "admin", "--password-stdin", "--lifetime", "30d",
        stdin=ADMIN_PASSWORD + "\n",
    )  # fmt: skip
    assert done.code == 1
    assert "a token lives at most 86400 s here" in done.err


# -- show -----------------------------------------------------------------------------


def test_show_without_a_token_says_to_log_in(server: Server, podium: Podium):
    done = podium("access", "show")
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        f"podium access: no token is saved in {server.token_file}: log in with "
        "`podium access login`\n"
    )


def test_show_with_a_revoked_token_says_so_and_to_log_in(server: Server, podium: Podium):
    login(podium)
    token = server.token_file.read_text().strip()
    with server.http(server.admin_token()) as http:
        assert http.post("/rbac-api/v2/tokens", json={"revoke_tokens": [token]}).status_code == 204
    done = podium("access", "show")
    assert (done.code, done.out) == (1, "")
    assert "the token has been revoked" in done.err
    assert "run `podium access login`" in done.err


def test_show_uses_the_token_given_with_token(server: Server, podium: Podium):
    done = podium("access", "show", "--token", server.admin_token())
    assert done.code == 0, done.err
    assert done.out.splitlines()[-1] == "  From:     --token"


# -- logout ---------------------------------------------------------------------------


def test_logout_revokes_the_token_and_removes_the_file(server: Server, podium: Podium):
    login(podium)
    token = server.token_file.read_text().strip()
    done = podium("access", "logout")
    assert done.code == 0, done.err
    assert done.out == f"Revoked the token and removed {server.token_file}.\n"
    assert not server.token_file.exists()
    with server.http(token) as http:
        refused = http.get("/rbac-api/v1/users/current")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["msg"]
    later = podium("user", "list", "--token", token)
    assert later.code == 1
    assert "refused your token (the token has been revoked)" in later.err


def test_logout_removes_a_token_the_server_no_longer_accepts(server: Server, podium: Podium):
    server.token_file.parent.mkdir(parents=True)
    server.token_file.write_text("expired-or-never-issued\n")
    done = podium("access", "logout")
    assert done.code == 0, done.err
    assert done.out == (
        f"The server no longer accepted the token (expired or revoked already); removed "
        f"{server.token_file}.\n"
    )
    assert not server.token_file.exists()


def test_logout_when_not_logged_in_says_so(server: Server, podium: Podium):
    done = podium("access", "logout")
    assert (done.code, done.out) == (
        0,
        f"Not logged in: no token is saved in {server.token_file}.\n",
    )
