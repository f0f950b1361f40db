"""``podium user``: local users, directory users and service accounts (``/rbac-api/v1``).

Users are named by login, roles by display name or id; the commands look their ids up.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from podium.cli import access
from podium.cli.access import LIFETIME_HELP, lifetime_arg
from podium.cli.client import ApiClient, add_connection_args, clean_line, table
from podium.errors import ValidationError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = sub.add_parser(
        "user",
        help="users and service accounts: list, create, password, revoke, tokens, roles",
        description="Manage users and service accounts. A user is named by login.",
    )
    usub = user.add_subparsers(dest="user_command", metavar="SUBCOMMAND", required=True)

    p = usub.add_parser("list", help="every user, with roles", description="List the users.")
    _finish(p)

    p = usub.add_parser("show", help="one user in full", description="Show one user.")
    p.add_argument("login", metavar="LOGIN")
    _finish(p)

    p = usub.add_parser(
        "create",
        help="create a local user or a service account",
        description="Create a local user (give it a password with `podium user password`) "
        "or, with --service, a service account (give it a token with `podium user token`).",
    )
    p.add_argument("login", metavar="LOGIN")
    p.add_argument("--display-name", default="", help="the name shown (default the login)")
    p.add_argument("--email", default="")
    p.add_argument(
        "--role",
        dest="roles",
        action="append",
        default=[],
        metavar="ROLE",
        help="a role to give, by name or id (repeatable)",
    )
    p.add_argument(
        "--service", action="store_true", help="a service account: tokens only, no password"
    )
    _finish(p)

    p = usub.add_parser("delete", help="delete a user", description="Delete a user.")
    p.add_argument("login", metavar="LOGIN")
    _finish(p)

    p = usub.add_parser(
        "password",
        help="set a local user's password",
        description="Set a local user's password: asked for twice, or read from stdin.",
    )
    p.add_argument("login", metavar="LOGIN")
    p.add_argument(
        "--password-stdin", action="store_true", help="read it from the first line of stdin"
    )
    _finish(p)

    p = usub.add_parser(
        "revoke",
        help="lock a user out",
        description="Revoke a user: their tokens stop working and they cannot log in.",
    )
    p.add_argument("login", metavar="LOGIN")
    _finish(p)

    p = usub.add_parser("reinstate", help="undo revoke", description="Let a revoked user in again.")
    p.add_argument("login", metavar="LOGIN")
    _finish(p)

    p = usub.add_parser(
        "token",
        help="a long-lived token for a service account (printed once)",
        description="Issue a token for a service account and print it: it is shown this "
        "once. Only the token goes to stdout.",
    )
    p.add_argument("login", metavar="LOGIN")
    p.add_argument(
        "--lifetime",
        type=lifetime_arg,
        metavar="DURATION",
        help=f"how long it lasts: {LIFETIME_HELP} (default: the server's)",
    )
    p.add_argument("--label", default="", help="a name for the token")
    _finish(p)

    p = usub.add_parser(
        "roles",
        help="set a user's roles",
        description="Replace the roles given to a user directly (`--set` alone removes "
        "them all); roles from directory groups stay.",
    )
    p.add_argument("login", metavar="LOGIN")
    p.add_argument(
        "--set", dest="roles", nargs="*", required=True, metavar="ROLE", help="names or ids"
    )
    _finish(p)


def _finish(p: argparse.ArgumentParser) -> None:
    add_connection_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with access.connect(args) as client:
        return dispatch(client, args, sys.stdout)


def dispatch(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    """Run ``podium user <subcommand>`` against ``client``; returns the exit code."""
    handlers = {
        "list": _list,
        "show": _show,
        "create": _create,
        "delete": _delete,
        "password": _password,
        "revoke": _revoke,
        "reinstate": _revoke,
        "token": _token,
        "roles": _roles,
    }
    return handlers[args.user_command](client, args, out)


# -- printing -------------------------------------------------------------------------


def kind_text(user: dict[str, Any]) -> str:
    kind = (
        "service account"
        if user.get("is_service")
        else "directory"
        if user.get("is_remote")
        else "local"
    )
    return kind + (", superuser" if user.get("is_superuser") else "")


def role_names(role_ids: list[int], roles: list[dict[str, Any]]) -> list[str]:
    """Display names of ``role_ids`` (an id the server no longer has stays a number)."""
    by_id = {r["id"]: r["display_name"] for r in roles}
    return [clean_line(by_id.get(i, str(i))) for i in role_ids]


def list_rows(users: list[dict[str, Any]], roles: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for u in users:
        names = role_names(u["role_ids"], roles)
        inherited = [f"{n} (group)" for n in role_names(_inherited(u), roles)]
        rows.append(
            [
                u["login"],
                u.get("display_name") or "",
                kind_text(u),
                ", ".join([*names, *inherited]) or "none",
                "revoked" if u.get("is_revoked") else "active",
                access.time_text(u["last_login"]) if u.get("last_login") else "never",
            ]
        )
    return rows


def _inherited(user: dict[str, Any]) -> list[int]:
    own = set(user["role_ids"])
    return [i for i in user.get("inherited_role_ids") or [] if i not in own]


def show_lines(
    user: dict[str, Any], roles: list[dict[str, Any]], groups: list[dict[str, Any]]
) -> list[str]:
    """What ``user show`` prints."""
    group_names = {g["id"]: g["login"] for g in groups}
    lines = [
        f"User {clean_line(user['login'])}",
        f"  Id:            {user['id']}",
        f"  Display name:  {clean_line(user.get('display_name') or '')}",
        f"  Email:         {clean_line(user.get('email') or '') or 'none'}",
        f"  Kind:          {kind_text(user)}",
        f"  State:         {'revoked' if user.get('is_revoked') else 'active'}",
        f"  Roles:         {', '.join(role_names(user['role_ids'], roles)) or 'none'}",
    ]
    if user.get("group_ids"):
        names = [clean_line(group_names.get(g, g)) for g in user["group_ids"]]
        lines.append(f"  Groups:        {', '.join(names)}")
        lines.append(f"  From groups:   {', '.join(role_names(_inherited(user), roles)) or 'none'}")
    last = user.get("last_login")
    lines.append(f"  Last login:    {access.time_text(last) if last else 'never'}")
    return lines


# -- commands -------------------------------------------------------------------------


def _list(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    users = access.all_users(client)
    if args.format == "json":
        access.write_json(users, out)
        return 0
    rows = list_rows(users, access.all_roles(client))
    out.write(table(rows, ["LOGIN", "NAME", "KIND", "ROLES", "STATE", "LAST LOGIN"]) + "\n")
    return 0


def _show(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    user = access.find_user(access.all_users(client), args.login)
    if args.format == "json":
        access.write_json(user, out)
        return 0
    groups = client.call("GET", "/groups") if user.get("group_ids") else []
    out.write("\n".join(show_lines(user, access.all_roles(client), groups)) + "\n")
    return 0


def _role_ids(client: ApiClient, refs: list[str]) -> list[int]:
    if not refs:
        return []
    roles = access.all_roles(client)
    return list(dict.fromkeys(int(access.find_role(roles, r)["id"]) for r in refs))


def _create(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    body = {
        "login": args.login,
        "display_name": args.display_name,
        "email": args.email,
        "role_ids": _role_ids(client, args.roles),
        "is_service": args.service,
    }
    user = client.call("POST", "/users", json=body)
    if args.format == "json":
        access.write_json(user, out)
        return 0
    login = clean_line(user["login"])
    if args.service:
        out.write(
            f"Created service account {login} ({user['id']}). Give it a token with "
            f"`podium user token {login}`.\n"
        )
    else:
        out.write(
            f"Created user {login} ({user['id']}). Set their password with "
            f"`podium user password {login}`.\n"
        )
    return 0


def _delete(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    user = access.find_user(access.all_users(client), args.login)
    client.call("DELETE", f"/users/{user['id']}")
    if args.format == "json":
        access.write_json({"deleted": user["id"], "login": user["login"]}, out)
        return 0
    out.write(f"Deleted user {clean_line(user['login'])}.\n")
    return 0


def _password(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    user = access.find_user(access.all_users(client), args.login)
    if user.get("is_service") or user.get("is_remote"):
        what = (
            "a service account: it uses tokens"
            if user.get("is_service")
            else ("a directory user: the directory keeps their password")
        )
        raise ValidationError(f"{user['login']} is {what}, not a password here")
    password = access.read_password(
        args, confirm=True, prompt=f"New password for {user['login']}: "
    )
    changed = client.call("PUT", f"/users/{user['id']}", json={"password": password})
    if args.format == "json":
        access.write_json(changed, out)
        return 0
    out.write(f"Changed the password of {clean_line(user['login'])}.\n")
    return 0


def _revoke(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    user = access.find_user(access.all_users(client), args.login)
    revoke = args.user_command == "revoke"
    # The server revokes a revoked user's tokens too: reinstating brings none back.
    changed = client.call("PUT", f"/users/{user['id']}", json={"is_revoked": revoke})
    if args.format == "json":
        access.write_json(changed, out)
        return 0
    login = clean_line(user["login"])
    if revoke:
        out.write(f"Revoked {login} and their tokens: they cannot log in or use the API.\n")
    else:
        out.write(f"Reinstated {login}: they may log in again (for a new token).\n")
    return 0


def _token(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    user = access.find_user(access.all_users(client), args.login)
    if not user.get("is_service"):
        raise ValidationError(
            f"{user['login']} is not a service account; users get tokens with `podium access login`"
        )
    body: dict[str, Any] = {"label": args.label}
    if args.lifetime is not None:
        body["lifetime"] = args.lifetime
    issued = client.call("POST", f"/users/{user['id']}/tokens", json=body)
    if args.format == "json":
        access.write_json(issued, out)
        return 0
    # Only the token on stdout, so that TOKEN=$(podium user token ci) works.
    out.write(issued["token"] + "\n")
    sys.stderr.write(
        f"A token for {clean_line(user['login'])}, expiring "
        f"{access.time_text(issued.get('expires'))}. It is shown only this once: keep it "
        "in a file readable by its user alone (PODIUM_TOKEN_FILE).\n"
    )
    return 0


def _roles(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    user = access.find_user(access.all_users(client), args.login)
    roles = access.all_roles(client)
    ids = list(dict.fromkeys(int(access.find_role(roles, r)["id"]) for r in args.roles))
    changed = client.call("PUT", f"/users/{user['id']}", json={"role_ids": ids})
    if args.format == "json":
        access.write_json(changed, out)
        return 0
    names = ", ".join(role_names(changed["role_ids"], roles)) or "none"
    out.write(f"Roles of {clean_line(user['login'])}: {names}.\n")
    return 0
