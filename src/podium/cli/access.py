"""``podium access login|show|logout``: the CLI's own token, as PE's ``puppet access``.

``login`` trades a login and password for a token (``POST /rbac-api/v1/auth/token``)
and saves it in :func:`~podium.cli.client.token_file`, readable by this user alone;
every other command sends it. ``show`` says whose it is and until when; ``logout``
revokes it on the server and deletes the file.

The helpers the other access commands share live here too: :func:`connect` (the one
place their API clients are made), looking users and roles up by name, reading a
password, and token lifetimes.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from podium.cli.client import (
    ApiClient,
    add_connection_args,
    clean_line,
    token_file,
)
from podium.cli.durations import parse_duration, parse_timestamp, until_text
from podium.config import env
from podium.errors import NotFound, PodiumError, Unauthenticated, ValidationError

if TYPE_CHECKING:
    import httpx

RBAC = "/rbac-api/v1"
TOKENS = "/rbac-api/v2"
LIFETIME_HELP = "seconds (3600) or a number with s, m, h, d, w or y (30m, 2h, 1d, 2w, 1y)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    access = sub.add_parser(
        "access",
        help="log in, show the saved token, log out",
        description="Get, show and revoke the API token the CLI uses (PE's puppet access).",
    )
    asub = access.add_subparsers(dest="access_command", metavar="SUBCOMMAND", required=True)

    p = asub.add_parser(
        "login",
        help="log in and save a token",
        description="Ask for a password, get a token for it and save it (mode 0600) where "
        "every podium command finds it: $PODIUM_TOKEN_FILE, else ~/.config/podium/token.",
    )
    p.add_argument("--user", metavar="LOGIN", help="who logs in (asked for when not given)")
    p.add_argument(
        "--lifetime",
        type=lifetime_arg,
        metavar="DURATION",
        help=f"how long the token lasts: {LIFETIME_HELP} (default: the server's, 1h)",
    )
    p.add_argument("--label", default="", help="a name for the token, shown with it")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of asking",
    )
    _finish(p, run_login)

    p = asub.add_parser(
        "show",
        help="print the token, whose it is and when it expires",
        description="Print the token the CLI sends (--token, $PODIUM_TOKEN, else the saved "
        "one) and, unless --format json, whose it is and when it expires.",
    )
    _finish(p, run_show)

    p = asub.add_parser(
        "logout",
        help="revoke the saved token and delete it",
        description="Revoke the saved token (or the one --token gives) on the server and "
        "delete the token file; the file goes even when the server no longer knows it.",
    )
    _finish(p, run_logout)


def _finish(p: argparse.ArgumentParser, func: Any) -> None:
    add_connection_args(p)
    p.set_defaults(func=func)


# -- shared by the access commands ----------------------------------------------------


def connect(
    args: argparse.Namespace,
    api: str = RBAC,
    *,
    token: str | None = None,
    client_class: type[ApiClient] = ApiClient,
    transport: httpx.BaseTransport | None = None,
) -> ApiClient:
    """The client of ``api`` for ``args``'s server (tests give a ``transport``)."""
    return client_class(
        args.server_url, args.cacert, token or args.token, api=api, transport=transport
    )


def lifetime_arg(text: str) -> int:
    """An argparse ``type=`` for a token's lifetime, in whole seconds."""
    try:
        seconds = parse_lifetime(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds


_LONG = re.compile(r"([0-9]+)\s*([wy])")
_LONG_UNITS = {"w": 7 * 86400, "y": 365 * 86400}


def parse_lifetime(text: str) -> int:
    """Whole seconds from ``3600``, ``30m``, ``2h``, ``90d``, ``2w`` or ``1y``."""
    long = _LONG.fullmatch(text.strip().lower())
    try:
        seconds = int(long.group(1)) * _LONG_UNITS[long.group(2)] if long else parse_duration(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a lifetime: give {LIFETIME_HELP}") from None
    if seconds < 1:
        raise ValueError("a token lives at least 1 second")
    return seconds


def read_password(
    args: argparse.Namespace, *, confirm: bool = False, prompt: str = "Password: "
) -> str:
    """The password from stdin's first line (``--password-stdin``) or asked for without
    echo, twice when ``confirm``; never from the command line, where anyone sees it."""
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ValidationError("--password-stdin read no password: stdin's first line is empty")
        return password
    try:
        password = getpass.getpass(prompt)
        if confirm:
            from podium.rbac.credentials import check_password_rules

            check_password_rules(password)
            if getpass.getpass("Again: ") != password:
                raise ValidationError("the two passwords differ; nothing was changed")
    except EOFError:
        raise ValidationError(
            "no password given: type it when asked, or pipe it in with --password-stdin"
        ) from None
    if not password:
        raise ValidationError("no password given")
    return password


def all_users(client: ApiClient) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = client.call("GET", "/users")
    return users


def find_user(users: list[dict[str, Any]], login: str) -> dict[str, Any]:
    """The user whose login is ``login`` (logins are what people type; ids are not)."""
    for user in users:
        if user["login"] == login:
            return user
    near = [u["login"] for u in users if u["login"].lower() == login.lower()]
    hint = f" (did you mean {near[0]!r}?)" if near else "; `podium user list` shows them"
    raise NotFound(f"no user has the login {login!r}{hint}", kind="puppetlabs.rbac/not-found")


def all_roles(client: ApiClient) -> list[dict[str, Any]]:
    roles: list[dict[str, Any]] = client.call("GET", "/roles")
    return roles


def find_role(roles: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """The role whose id or display name is ``ref``."""
    for role in roles:
        if str(role["id"]) == ref.strip():
            return role
    for role in roles:
        if role["display_name"] == ref:
            return role
    near = [r["display_name"] for r in roles if r["display_name"].lower() == ref.lower()]
    hint = f" (did you mean {near[0]!r}?)" if near else "; `podium role list` shows them"
    raise NotFound(
        f"no role is named {ref!r} or has that id{hint}", kind="puppetlabs.rbac/not-found"
    )


def write_json(value: Any, out: TextIO) -> None:
    """``value`` as the API's JSON, indented, on ``out``."""
    json.dump(value, out, indent=2)
    out.write("\n")


def time_text(stamp: str | None, now: datetime | None = None) -> str:
    """An API timestamp as ``13:05:01 (in 59m 59s)`` or ``2026-05-08 09:12:00 (1d 4h ago)``
    (local time), or as the server wrote it if it cannot be read."""
    when = parse_timestamp(stamp)
    if when is None:
        return clean_line(stamp or "unknown")
    return until_text(when, now or datetime.now(UTC))


# -- login ----------------------------------------------------------------------------


class _LoginClient(ApiClient):
    """The client of the login call: it sends no token, and a 401 there is a wrong login
    or password, said as the server says it (not "run podium access login")."""

    def __init__(
        self, server_url: str | None, cacert: Path | None, token: str | None, **kwargs: Any
    ) -> None:
        # A placeholder keeps ApiClient from reading the saved token (a first login may
        # have no file yet where PODIUM_TOKEN_FILE points); it is dropped at once.
        super().__init__(server_url, cacert, "none", **kwargs)
        self._http.headers.pop("X-Authentication", None)
        self._has_token = False

    def _unauthenticated(self, body: Any) -> Unauthenticated:
        said = body.get("msg") if isinstance(body, dict) else None
        kind = body.get("kind") if isinstance(body, dict) else None
        return Unauthenticated(f"the server refused the login: {said or 'HTTP 401'}", kind=kind)


def _login_name(args: argparse.Namespace) -> str:
    if args.user:
        return str(args.user)
    if args.password_stdin or not sys.stdin.isatty():
        raise ValidationError("give the login with --user: there is no terminal to ask it on")
    sys.stderr.write("Login: ")
    sys.stderr.flush()
    login = sys.stdin.readline().strip()
    if not login:
        raise ValidationError("no login given: type one when asked, or give --user")
    return login


def save_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path``, readable by this user alone (its folder too, when
    this makes it)."""
    from podium.files import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, token.encode() + b"\n", mode=0o600)
    except OSError as exc:
        raise PodiumError(
            f"cannot save the token in {path}: {exc.strerror}; set PODIUM_TOKEN_FILE to a "
            "file you may write",
            kind="podium/config-error",
        ) from exc


def run_login(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    login = _login_name(args)
    password = read_password(args, prompt=f"Password for {login}: ")
    body: dict[str, Any] = {"login": login, "password": password, "label": args.label}
    if args.lifetime is not None:
        body["lifetime"] = args.lifetime
    with connect(args, RBAC, client_class=_LoginClient) as client:
        answer = client.call("POST", "/auth/token", json=body)
    path = token_file()
    save_token(path, answer["token"])
    if args.format == "json":
        write_json({**answer, "file": str(path)}, out)
        return 0
    out.write(
        f"Logged in as {clean_line(login)}. Token saved in {path}; it expires "
        f"{time_text(answer.get('expires'))}.\n"
    )
    if env("TOKEN") and not args.token:
        out.write("Note: PODIUM_TOKEN is set, and commands send it instead of this token.\n")
    return 0


# -- show -----------------------------------------------------------------------------


def _token_in_use(args: argparse.Namespace) -> tuple[str, str]:
    """The token commands send and where it comes from; :class:`Unauthenticated` when
    there is none."""
    if args.token:
        return args.token.strip(), "--token"
    if env("TOKEN"):
        return str(env("TOKEN")).strip(), "PODIUM_TOKEN"
    path = token_file()
    saved = _saved_token(path)
    if saved is None:
        raise Unauthenticated(f"no token is saved in {path}: log in with `podium access login`")
    return saved, str(path)


def _saved_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PodiumError(f"cannot read the token file {path}: {exc.strerror}") from exc


def run_show(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    token, source = _token_in_use(args)
    with connect(args, RBAC, token=token) as client:
        me = client.call("GET", "/users/current")
    if args.format == "json":
        write_json({"token": token, "source": source, "user": me}, out)
        return 0
    held = me.get("token") or {}
    name = clean_line(me["login"])
    if me.get("display_name") and me["display_name"] != me["login"]:
        name += f" ({clean_line(me['display_name'])})"
    kind = (
        "service account" if me.get("is_service") else "superuser" if me.get("is_superuser") else ""
    )
    lines = [
        clean_line(token),
        f"  User:     {name}" + (f", {kind}" if kind else ""),
        f"  Expires:  {time_text(held.get('expires'))}",
    ]
    if held.get("label"):
        lines.append(f"  Label:    {clean_line(held['label'])}")
    lines.append(f"  From:     {source}")
    out.write("\n".join(lines) + "\n")
    return 0


# -- logout ---------------------------------------------------------------------------


def run_logout(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    path = token_file()
    saved = _saved_token(path)
    token = args.token.strip() if args.token else saved
    if token is None:
        out.write(f"Not logged in: no token is saved in {path}.\n")
        return 0
    status = "revoked"
    try:
        # In the body, not the path: a token in a URL would end up in access logs.
        with connect(args, TOKENS, token=token) as client:
            client.call("POST", "/tokens", json={"revoke_tokens": [token]})
    except Unauthenticated:
        status = "invalid"  # expired or revoked already: nothing left to revoke
    removed = token == saved
    if removed:
        path.unlink(missing_ok=True)
    if args.format == "json":
        write_json({"token": status, "file": str(path) if removed else None}, out)
        return 0
    if status == "revoked":
        said = "Revoked the token" + (f" and removed {path}." if removed else ".")
    else:
        said = "The server no longer accepted the token (expired or revoked already)" + (
            f"; removed {path}." if removed else "."
        )
    out.write(said + "\n")
    return 0
