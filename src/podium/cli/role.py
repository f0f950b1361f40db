"""``podium role``: roles, their permissions and who holds them (``/rbac-api/v1``).

A role is named by display name or id; a permission in its string form
(``tasks:run:package@node_group=<id>``, see :mod:`podium.rbac.permissions`), read
here so that a typo is refused before anything is sent. The server replaces a role
whole (``PUT /roles/:id``), so changes read the role, change it and send it back.
Directory groups get roles through their mapping (``/groups``), made when missing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from podium.cli import access
from podium.cli.client import ApiClient, add_connection_args, clean_line, table
from podium.errors import NotFound, ValidationError
from podium.rbac.permissions import Permission

PERMISSION_HELP = (
    "type:action[:instance][@node_group=ID|@query=PQL], e.g. tasks:run:package, "
    "puppet_agent:run@node_group=<id>, 'tasks:run:*@query=nodes { certname ~ \"web\" }'"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    role = sub.add_parser(
        "role",
        help="roles: list, show, create, grant and revoke permissions, assign to users",
        description="Manage roles. A role is named by display name or id; a permission is "
        f"written {PERMISSION_HELP}.",
    )
    rsub = role.add_subparsers(dest="role_command", metavar="SUBCOMMAND", required=True)

    p = rsub.add_parser("list", help="every role", description="List the roles.")
    _finish(p)

    p = rsub.add_parser(
        "show",
        help="one role: permissions and members",
        description="Show a role's permissions and its members by login.",
    )
    p.add_argument("role", metavar="ROLE", help="the role's name or id")
    _finish(p)

    p = rsub.add_parser("create", help="create a role", description="Create a role.")
    p.add_argument("name", metavar="NAME", help="the new role's name (unique)")
    p.add_argument("--description", default="", help="what the role is for")
    p.add_argument(
        "--permission",
        dest="permissions",
        action="append",
        default=[],
        type=permission_arg,
        metavar="PERM",
        help=f"a permission to grant (repeatable): {PERMISSION_HELP}",
    )
    _finish(p)

    p = rsub.add_parser("delete", help="delete a role", description="Delete a role.")
    p.add_argument("role", metavar="ROLE", help="the role's name or id")
    _finish(p)

    for verb, text in (
        ("grant", "add permissions to a role"),
        ("revoke", "take permissions from a role"),
    ):
        p = rsub.add_parser(verb, help=text, description=text.capitalize() + ".")
        p.add_argument("role", metavar="ROLE", help="the role's name or id")
        p.add_argument(
            "permissions", nargs="+", type=permission_arg, metavar="PERM", help=PERMISSION_HELP
        )
        _finish(p)

    for verb, text in (
        ("assign", "give a role to users and directory groups"),
        ("unassign", "take a role from users and directory groups"),
    ):
        p = rsub.add_parser(verb, help=text, description=text.capitalize() + ".")
        p.add_argument("role", metavar="ROLE", help="the role's name or id")
        p.add_argument(
            "--user",
            dest="users",
            action="append",
            default=[],
            metavar="LOGIN",
            help="a user, by login (repeatable)",
        )
        p.add_argument(
            "--directory-group",
            dest="groups",
            action="append",
            default=[],
            metavar="GROUP",
            help="a directory group, by its name in the directory (repeatable)"
            + ("; its mapping is made when missing" if verb == "assign" else ""),
        )
        _finish(p)


def _finish(p: argparse.ArgumentParser) -> None:
    add_connection_args(p)
    p.set_defaults(func=run)


def permission_arg(text: str) -> Permission:
    """An argparse ``type=`` for a permission in its string form."""
    try:
        return Permission.parse(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.msg) from None


def run(args: argparse.Namespace) -> int:
    if args.role_command in ("assign", "unassign") and not args.users and not args.groups:
        raise ValidationError(
            f"name whom to {args.role_command}: --user LOGIN or --directory-group GROUP"
        )
    with access.connect(args) as client:
        return dispatch(client, args, sys.stdout)


def dispatch(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    """Run ``podium role <subcommand>`` against ``client``; returns the exit code."""
    handlers = {
        "list": _list,
        "show": _show,
        "create": _create,
        "delete": _delete,
        "grant": _grant,
        "revoke": _grant,
        "assign": _assign,
        "unassign": _assign,
    }
    return handlers[args.role_command](client, args, out)


# -- printing -------------------------------------------------------------------------


def permission_text(data: dict[str, Any]) -> str:
    """A permission of the API in its string form (as JSON if it cannot be read)."""
    try:
        return clean_line(str(Permission.from_dict(data)))
    except ValidationError:
        return clean_line(repr(data))


def show_lines(
    role: dict[str, Any], users: list[dict[str, Any]], groups: list[dict[str, Any]]
) -> list[str]:
    """What ``role show`` prints: permissions one a line, members by login."""
    logins = {u["id"]: u["login"] for u in users}
    group_logins = {g["id"]: g["login"] for g in groups}
    members = [clean_line(logins.get(i, i)) for i in role["user_ids"]]
    mapped = [clean_line(group_logins.get(i, i)) for i in role["group_ids"]]
    lines = [f"Role {clean_line(role['display_name'])} ({role['id']})"]
    if role.get("description"):
        lines.append(f"  Description:       {clean_line(role['description'])}")
    if role["permissions"]:
        lines.append("  Permissions:")
        lines.extend(f"    {permission_text(p)}" for p in role["permissions"])
    else:
        lines.append("  Permissions:       none")
    lines.append(f"  Users:             {', '.join(sorted(members)) or 'none'}")
    lines.append(f"  Directory groups:  {', '.join(sorted(mapped)) or 'none'}")
    return lines


def _body(role: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The whole role as ``PUT /roles/:id`` takes it, with ``changes``."""
    keys = ("id", "display_name", "description", "permissions", "user_ids", "group_ids")
    return {**{k: role[k] for k in keys}, **changes}


# -- commands -------------------------------------------------------------------------


def _list(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    roles = access.all_roles(client)
    if args.format == "json":
        access.write_json(roles, out)
        return 0
    rows = [
        [
            str(r["id"]),
            r["display_name"],
            str(len(r["permissions"])),
            str(len(r["user_ids"])),
            str(len(r["group_ids"])),
            r.get("description") or "",
        ]
        for r in roles
    ]
    headers = ["ID", "NAME", "PERMISSIONS", "USERS", "GROUPS", "DESCRIPTION"]
    out.write(table(rows, headers) + "\n")
    return 0


def _show(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    role = access.find_role(access.all_roles(client), args.role)
    users = access.all_users(client) if role["user_ids"] else []
    groups = client.call("GET", "/groups") if role["group_ids"] else []
    if args.format == "json":
        logins = {u["id"]: u["login"] for u in users}
        group_logins = {g["id"]: g["login"] for g in groups}
        access.write_json(
            {
                **role,
                "users": [logins.get(i) for i in role["user_ids"]],
                "directory_groups": [group_logins.get(i) for i in role["group_ids"]],
            },
            out,
        )
        return 0
    out.write("\n".join(show_lines(role, users, groups)) + "\n")
    return 0


def _create(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    permissions: list[Permission] = list(dict.fromkeys(args.permissions))
    body = {
        "display_name": args.name,
        "description": args.description,
        "permissions": [p.to_dict() for p in permissions],
    }
    role = client.call("POST", "/roles", json=body)
    if args.format == "json":
        access.write_json(role, out)
        return 0
    granted = ", ".join(permission_text(p) for p in role["permissions"]) or "none yet"
    out.write(
        f"Created role {clean_line(role['display_name'])} ({role['id']}); it grants: {granted}.\n"
    )
    return 0


def _delete(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    role = access.find_role(access.all_roles(client), args.role)
    client.call("DELETE", f"/roles/{role['id']}")
    if args.format == "json":
        access.write_json({"deleted": role["id"], "display_name": role["display_name"]}, out)
        return 0
    out.write(f"Deleted role {clean_line(role['display_name'])} ({role['id']}).\n")
    return 0


def _held(role: dict[str, Any]) -> list[Permission | dict[str, Any]]:
    """The role's permissions, read (one the CLI cannot read is kept as it came)."""
    held: list[Permission | dict[str, Any]] = []
    for data in role["permissions"]:
        try:
            held.append(Permission.from_dict(data))
        except ValidationError:
            held.append(data)
    return held


def _grant(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    role = access.find_role(access.all_roles(client), args.role)
    held = _held(role)
    asked: list[Permission] = list(dict.fromkeys(args.permissions))
    granting = args.role_command == "grant"
    if granting:
        untouched = [p for p in asked if p in held]
        after = held + [p for p in asked if p not in held]
    else:
        untouched = [p for p in asked if p not in held]
        after = [p for p in held if p not in asked]
    name = clean_line(role["display_name"])
    if len(after) != len(held):
        permissions = [p.to_dict() if isinstance(p, Permission) else p for p in after]
        role = client.call("PUT", f"/roles/{role['id']}", json=_body(role, permissions=permissions))
    if args.format == "json":
        access.write_json(role, out)
        return 0
    if untouched:
        state = "already grants" if granting else "did not grant"
        out.write(f"{name} {state} {', '.join(clean_line(str(p)) for p in untouched)}.\n")
    granted = ", ".join(permission_text(p) for p in role["permissions"]) or "nothing"
    out.write(f"Role {name} grants: {granted}.\n")
    return 0


def _assign(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    role = access.find_role(access.all_roles(client), args.role)
    adding = args.role_command == "assign"
    # Every name is looked up before anything changes.
    logins = list(dict.fromkeys(args.users))
    users = access.all_users(client) if logins else []
    ids = [access.find_user(users, login)["id"] for login in logins]
    names = list(dict.fromkeys(args.groups))
    mapped: dict[str, dict[str, Any]] = {}
    if names:
        mapped = {g["login"]: g for g in client.call("GET", "/groups")}
        missing = [n for n in names if n not in mapped]
        if missing and not adding:
            raise NotFound(
                f"no directory group {', '.join(map(repr, missing))} is mapped to roles here",
                kind="puppetlabs.rbac/not-found",
            )
    if ids:
        held = list(role["user_ids"])
        if adding:
            after = held + [i for i in ids if i not in held]
        else:
            after = [i for i in held if i not in ids]
        if after != held:
            role = client.call("PUT", f"/roles/{role['id']}", json=_body(role, user_ids=after))
    groups = [_map_group(client, role["id"], n, mapped.get(n), adding) for n in names]
    if groups:
        role = client.call("GET", f"/roles/{role['id']}")
    if args.format == "json":
        access.write_json({"role": role, "groups": groups}, out)
        return 0
    said = [_names("user", logins), _names("directory group", names)]
    verb, to = ("Assigned", "to") if adding else ("Unassigned", "from")
    whom = " and ".join(s for s in said if s)
    out.write(f"{verb} role {clean_line(role['display_name'])} {to} {whom}.\n")
    return 0


def _names(what: str, names: list[str]) -> str:
    if not names:
        return ""
    return f"{what}{'s' if len(names) > 1 else ''} {', '.join(clean_line(n) for n in names)}"


def _map_group(
    client: ApiClient, role_id: int, login: str, group: dict[str, Any] | None, adding: bool
) -> dict[str, Any]:
    """Give (or take) ``role_id`` to the directory group ``login``, whose mapping is
    ``group``; made when it has none."""
    if group is None:
        created: dict[str, Any] = client.call(
            "POST", "/groups", json={"login": login, "role_ids": [role_id]}
        )
        return created
    held = list(group["role_ids"])
    if adding:
        after = held if role_id in held else [*held, role_id]
    else:
        after = [i for i in held if i != role_id]
    if after == held:
        return group
    # The whole mapping: a display name left out would be reset to the login.
    body = {"login": group["login"], "display_name": group["display_name"], "role_ids": after}
    updated: dict[str, Any] = client.call("PUT", f"/groups/{group['id']}", json=body)
    return updated
