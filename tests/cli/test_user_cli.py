"""``podium user`` and ``podium role`` against a real server in-process (see
test_access_cli.py): users made, given passwords and roles, logging in as them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_access_cli import Podium, Server, login, runner, serving

from podium.cli import access as cli_access
from podium.cli import role as cli_role
from podium.rbac.permissions import Permission

GROUP_ID = "7d6c7b0e-2a43-4c55-9a87-0d3e1f2b9c11"
SCOPED = f"tasks:run:package@node_group={GROUP_ID}"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    with serving(tmp_path, monkeypatch) as server:
        yield server


@pytest.fixture
def podium(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Podium:
    return runner(monkeypatch, capsys)


@pytest.fixture
def admin(podium: Podium) -> Podium:
    """``podium`` with the admin logged in."""
    login(podium)
    return podium


def add_user(podium: Podium, name: str, password: str, *flags: str) -> None:
    created = podium("user", "create", name, *flags)
    assert created.code == 0, created.err
    changed = podium("user", "password", name, "--password-stdin", stdin=password + "\n")
    assert changed.code == 0, changed.err


def as_user(server: Server, podium: Podium, name: str, password: str) -> str:
    """Log in as ``name`` (the saved token becomes theirs); their token."""
    login(podium, name, password)
    return server.token_file.read_text().strip()


# -- users ----------------------------------------------------------------------------


def test_a_new_user_gets_a_password_and_logs_in_with_it(server: Server, admin: Podium):
    created = admin(
        "user", "create", "alice", "--display-name", "Alice Arden", "--email", "alice@example.com",
        "--role", "Viewers",
    )  # fmt: skip
    assert created.code == 0, created.err
    assert created.out.startswith("Created user alice (")
    assert "Set their password with `podium user password alice`." in created.out

    changed = admin("user", "password", "alice", "--password-stdin", stdin="alice's secret\n")
    assert changed.out == "Changed the password of alice.\n"

    shown = admin("user", "show", "alice")
    assert "  Display name:  Alice Arden" in shown.out
    assert "  Email:         alice@example.com" in shown.out
    assert "  Kind:          local" in shown.out
    assert "  Roles:         Viewers" in shown.out
    assert "  Last login:    never" in shown.out

    login(admin, "alice", "alice's secret")
    me = admin("access", "show")
    assert me.out.splitlines()[1] == "  User:     alice (Alice Arden)"
    listed = admin("user", "list", "--token", server.admin_token())
    rows = {line.split()[0]: line for line in listed.out.splitlines()[1:]}
    assert listed.out.splitlines()[0].split() == [
        "LOGIN", "NAME", "KIND", "ROLES", "STATE", "LAST", "LOGIN",
    ]  # fmt: skip
    assert "Viewers" in rows["alice"] and "active" in rows["alice"] and "ago)" in rows["alice"]
    assert "local, superuser" in rows["admin"] and "Administrators" in rows["admin"]
    as_json = json.loads(
        admin("user", "list", "--format", "json", "--token", server.admin_token()).out
    )
    assert [u["login"] for u in as_json] == ["admin", "alice"]


def test_password_asks_twice_and_a_mismatch_changes_nothing(
    admin: Podium, monkeypatch: pytest.MonkeyPatch
):
    assert admin("user", "create", "bob").code == 0
    typed = iter(["first secret", "second secret"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    done = admin("user", "password", "bob")
    assert (done.code, done.err) == (
        1,
        "podium user: the two passwords differ; nothing was changed\n",
    )
    assert (
        admin("access", "login", "--user", "bob", "--password-stdin", stdin="first secret\n").code
        == 1
    )

    typed = iter(["bob's secret", "bob's secret"])
    assert admin("user", "password", "bob").code == 0
    assert (
        admin("access", "login", "--user", "bob", "--password-stdin", stdin="bob's secret\n").code
        == 0
    )


def test_a_short_password_is_refused_before_it_is_asked_again(
    admin: Podium, monkeypatch: pytest.MonkeyPatch
):
    assert admin("user", "create", "bob").code == 0
    asked: list[str] = []
    monkeypatch.setattr("getpass.getpass", lambda prompt="": asked.append(prompt) or "short")
    done = admin("user", "password", "bob")
    assert done.err == "podium user: a password has at least 8 characters\n"
    assert asked == ["New password for bob: "]


def test_a_user_without_permissions_is_refused_user_list_with_the_servers_403(
    server: Server, admin: Podium
):
    add_user(admin, "bob", "bob's secret")
    as_user(server, admin, "bob", "bob's secret")
    done = admin("user", "list")
    assert (done.code, done.out) == (1, "")
    assert done.err == (
        "podium user: bob may not do this: it needs the permission users:view; ask an "
        "administrator for a role that grants it\n"
    )
    assert admin("role", "list").code == 1
    assert admin("activity").err.startswith("podium activity: bob may not do this: it needs ")


def test_revoke_locks_a_user_out_and_reinstate_lets_them_in_again(server: Server, admin: Podium):
    add_user(admin, "carol", "carol's secret", "--role", "Viewers")
    admin_token = server.token_file.read_text().strip()
    carol = as_user(server, admin, "carol", "carol's secret")

    revoked = admin("user", "revoke", "carol", "--token", admin_token)
    assert revoked.out == "Revoked carol and their tokens: they cannot log in or use the API.\n"
    assert "(the token has been revoked)" in admin("access", "show", "--token", carol).err
    refused = admin(
        "access", "login", "--user", "carol", "--password-stdin", stdin="carol's secret\n"
    )
    assert refused.err == (
        "podium access: the server refused the login: the login or the password is wrong\n"
    )
    shown = admin("user", "show", "carol", "--token", admin_token)
    assert "  State:         revoked" in shown.out

    reinstated = admin("user", "reinstate", "carol", "--token", admin_token)
    assert reinstated.out == "Reinstated carol: they may log in again (for a new token).\n"
    assert "(the token has been revoked)" in admin("access", "show", "--token", carol).err
    login(admin, "carol", "carol's secret")
    assert admin("access", "show").out.splitlines()[1] == "  User:     carol"


def test_a_service_account_gets_a_token_printed_once_and_only_it_on_stdout(
    server: Server, admin: Podium
):
    created = admin("user", "create", "ci", "--service", "--role", "Operators")
    assert "Created service account ci (" in created.out
    assert "`podium user token ci`" in created.out

    issued = admin("user", "token", "ci", "--lifetime", "90d", "--label", "deploys")
    assert issued.code == 0, issued.err
    token = issued.out.strip()
    assert issued.out == token + "\n"
    assert "shown only this once" in issued.err and "(in 90d)" in issued.err

    shown = admin("access", "show", "--token", token)
    assert shown.out.splitlines()[1] == "  User:     ci, service account"
    assert "  Label:    deploys" in shown.out

    with server.http(token) as http:  # Operators may see jobs, not users
        assert http.get("/orchestrator/v1/jobs").status_code == 200
        assert http.get("/rbac-api/v1/users").status_code == 403

    refused = admin("user", "password", "ci", "--password-stdin", stdin="a password\n")
    assert (
        refused.err == "podium user: ci is a service account: it uses tokens, not a password here\n"
    )
    too_long = admin("user", "token", "ci", "--lifetime", "2y")
    assert too_long.code == 1 and "at most" in too_long.err


def test_only_service_accounts_get_tokens_from_user_token(admin: Podium):
    done = admin("user", "token", "admin")
    assert done.err == (
        "podium user: admin is not a service account; users get tokens with `podium access login`\n"
    )


def test_roles_set_replaces_a_users_roles(admin: Podium):
    assert admin("user", "create", "dan", "--role", "Viewers").code == 0
    done = admin("user", "roles", "dan", "--set", "Operators", "1")
    assert done.out == "Roles of dan: Administrators, Operators.\n"
    assert admin("user", "roles", "dan", "--set").out == "Roles of dan: none.\n"
    shown = json.loads(admin("user", "show", "dan", "--format", "json").out)
    assert shown["role_ids"] == []


def test_users_are_named_by_login_and_a_near_miss_is_suggested(admin: Podium):
    assert admin("user", "create", "Erin").code == 0
    done = admin("user", "delete", "erin")
    assert done.err == "podium user: no user has the login 'erin' (did you mean 'Erin'?)\n"
    assert admin("user", "delete", "Erin").out == "Deleted user Erin.\n"
    assert "`podium user list` shows them" in admin("user", "show", "Erin").err


def test_creating_a_login_that_exists_gives_the_servers_conflict(admin: Podium):
    done = admin("user", "create", "admin")
    assert done.code == 1
    assert done.err.startswith("podium user: ") and "admin" in done.err


# -- roles ----------------------------------------------------------------------------


def test_a_role_with_a_scoped_permission_is_created_assigned_and_shown(
    server: Server, admin: Podium
):
    add_user(admin, "dave", "dave's secret")
    created = admin(
        "role", "create", "Package runners", "--description", "package task on web nodes",
        "--permission", SCOPED, "--permission", "orchestrator:view",
    )  # fmt: skip
    assert created.code == 0, created.err
    assert created.out.startswith("Created role Package runners (")
    assert created.out.endswith(f"it grants: {SCOPED}, orchestrator:view:*.\n")

    assigned = admin(
        "role", "assign", "Package runners", "--user", "dave", "--directory-group", "web-ops"
    )
    assert assigned.out == (
        "Assigned role Package runners to user dave and directory group web-ops.\n"
    )
    shown = admin("role", "show", "Package runners")
    assert shown.out.splitlines()[1:] == [
        "  Description:       package task on web nodes",
        "  Permissions:",
        f"    {SCOPED}",
        "    orchestrator:view:*",
        "  Users:             dave",
        "  Directory groups:  web-ops",
    ]

    data = json.loads(admin("role", "show", "Package runners", "--format", "json").out)
    assert (data["users"], data["directory_groups"]) == (["dave"], ["web-ops"])
    assert data["permissions"][0] == Permission.parse(SCOPED).to_dict()

    as_user(server, admin, "dave", "dave's secret")
    me = json.loads(admin("access", "show", "--format", "json").out)["user"]
    assert Permission.parse(SCOPED).to_dict() in me["permissions"]
    with server.http(server.admin_token()) as http:
        groups = http.get("/rbac-api/v1/groups").json()
    assert [(g["login"], len(g["role_ids"])) for g in groups] == [("web-ops", 1)]


def test_assigning_to_a_mapped_directory_group_adds_the_role_to_its_others(
    server: Server, admin: Podium
):
    assert admin("role", "assign", "Viewers", "--directory-group", "ops").code == 0
    assert admin("role", "assign", "Operators", "--directory-group", "ops").code == 0
    with server.http(server.admin_token()) as http:
        (ops,) = http.get("/rbac-api/v1/groups").json()
        roles = {r["display_name"]: r["id"] for r in http.get("/rbac-api/v1/roles").json()}
    assert sorted(ops["role_ids"]) == sorted([roles["Viewers"], roles["Operators"]])
    assert ops["display_name"] == "ops"

    done = admin("role", "unassign", "Viewers", "--directory-group", "ops")
    assert done.out == "Unassigned role Viewers from directory group ops.\n"
    assert "  Directory groups:  ops" in admin("role", "show", "Operators").out
    assert "  Directory groups:  none" in admin("role", "show", "Viewers").out


def test_unassign_checks_every_name_before_changing_anything(admin: Podium):
    add_user(admin, "dave", "dave's secret", "--role", "Viewers")
    done = admin("role", "unassign", "Viewers", "--user", "dave", "--directory-group", "nobody")
    assert done.err == "podium role: no directory group 'nobody' is mapped to roles here\n"
    assert "  Users:             dave" in admin("role", "show", "Viewers").out
    assert admin("role", "unassign", "Viewers", "--user", "dave").out == (
        "Unassigned role Viewers from user dave.\n"
    )
    assert "  Users:             none" in admin("role", "show", "Viewers").out


def test_grant_and_revoke_change_a_roles_permissions(admin: Podium):
    assert admin("role", "create", "Deployers").out.endswith("it grants: none yet.\n")
    query = 'tasks:run:*@query=inventory[certname] { facts.os.family = "Debian" }'
    done = admin("role", "grant", "Deployers", "puppet_agent:run", query)
    assert done.out == f"Role Deployers grants: puppet_agent:run:*, {query}.\n"
    again = admin("role", "grant", "Deployers", "puppet_agent:run:*")
    assert again.out == (
        "Deployers already grants puppet_agent:run:*.\n"
        f"Role Deployers grants: puppet_agent:run:*, {query}.\n"
    )
    done = admin("role", "revoke", "Deployers", "puppet_agent:run", "nodes:view_data")
    assert done.out == (
        f"Deployers did not grant nodes:view_data:*.\nRole Deployers grants: {query}.\n"
    )


def test_a_bad_permission_is_refused_before_any_request(
    admin: Podium, monkeypatch: pytest.MonkeyPatch
):
    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a bad permission must be refused before any request")

    monkeypatch.setattr(cli_access, "connect", unreachable)
    done = admin("role", "create", "X", "--permission", "tasks:fly")
    assert done.code == 1
    assert done.err.startswith("podium role: --permission: unknown permission tasks:fly; known: ")
    done = admin("role", "grant", "Viewers", "users:view:alice")
    assert done.err == (
        "podium role: users:view applies to every instance: use * instead of 'alice'\n"
    )
    done = admin("role", "grant", "Viewers", "tasks:run@nodes=web")
    assert done.err == (
        "podium role: a node limit is node_group=<id> or query=<PQL>, not nodes='web'\n"
    )
    done = admin("role", "assign", "Viewers")
    assert done.err == "podium role: name whom to assign: --user LOGIN or --directory-group GROUP\n"


def test_roles_are_listed_and_found_by_name_or_id_and_deleted(admin: Podium):
    listed = admin("role", "list")
    assert listed.out.splitlines()[0].split() == [
        "ID", "NAME", "PERMISSIONS", "USERS", "GROUPS", "DESCRIPTION",
    ]  # fmt: skip
    assert [line.split()[1] for line in listed.out.splitlines()[1:]] == [
        "Administrators", "Operators", "Viewers",
    ]  # fmt: skip
    assert admin("role", "show", "1").out.startswith("Role Administrators (1)\n")
    assert "    *:*:*" in admin("role", "show", "Administrators").out
    created = json.loads(admin("role", "create", "Temp", "--format", "json").out)
    assert admin("role", "delete", "Temp").out == f"Deleted role Temp ({created['id']}).\n"
    assert admin("role", "show", "viewers").err == (
        "podium role: no role is named 'viewers' or has that id (did you mean 'Viewers'?)\n"
    )


def test_permission_text_reads_what_the_api_sends():
    assert cli_role.permission_text(Permission.parse(SCOPED).to_dict()) == SCOPED
    assert cli_role.permission_text({"object_type": "x", "action": "y"}) == (
        "{'object_type': 'x', 'action': 'y'}"
    )
