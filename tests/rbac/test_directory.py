"""Directory users from a real OpenLDAP server (see ``conftest.py`` and ``slapd.py``),
and the settings files that point Podium at one."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from slapd import (
    DANA_DN,
    GROUPS,
    PASSWORDS,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    UNIX_GROUPS,
    SlapdServer,
)

from podium.errors import ConfigError, Unavailable
from podium.rbac.directory import (
    Directory,
    DirectoryUser,
    LdapDirectory,
    LdapSettings,
    load_ldap_settings,
)


def settings_for(url: str, **changes: Any) -> LdapSettings:
    values: dict[str, Any] = {
        "url": url,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "user_base": PEOPLE,
        "group_base": GROUPS,
        **changes,
    }
    return LdapSettings(**values)


@pytest.fixture
def directory(slapd: SlapdServer) -> Directory:
    return LdapDirectory(settings_for(slapd.url))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# Who the directory vouches for


def test_right_password_gives_the_user_with_their_groups(directory: Directory) -> None:
    user = directory.authenticate("alice", PASSWORDS["alice"])
    assert user == DirectoryUser(
        login="alice",
        display_name="Alice Liddell",
        email="alice@example.test",
        groups=("ops",),
    )


def test_groups_are_every_group_that_lists_the_user_sorted(directory: Directory) -> None:
    user = directory.authenticate("bob", PASSWORDS["bob"])
    assert user is not None
    assert user.groups == ("dev", "ops")


def test_user_without_email_or_groups_has_empty_ones(directory: Directory) -> None:
    assert directory.authenticate("carol", PASSWORDS["carol"]) == DirectoryUser(
        login="carol", display_name="Carol", email="", groups=()
    )


def test_login_is_spelled_as_the_directory_spells_it(directory: Directory) -> None:
    user = directory.authenticate("ALICE", PASSWORDS["alice"])
    assert user is not None
    assert user.login == "alice"


def test_groups_of_a_user_whose_dn_has_filter_characters(directory: Directory) -> None:
    # The DN is put in the group filter: its parentheses must be escaped there.
    assert DANA_DN.count("(") == 1
    user = directory.authenticate("dana", PASSWORDS["dana"])
    assert user is not None
    assert user.groups == ("contractors",)


def test_groups_that_list_members_by_login(slapd: SlapdServer) -> None:
    directory = LdapDirectory(
        settings_for(
            slapd.url,
            group_base=UNIX_GROUPS,
            group_filter="(objectClass=posixGroup)",
            group_member_attribute="memberUid",
            group_member_is_dn=False,
        )
    )
    user = directory.authenticate("alice", PASSWORDS["alice"])
    assert user is not None
    assert user.groups == ("wheel",)


def test_users_outside_the_user_filter_are_unknown(slapd: SlapdServer) -> None:
    directory = LdapDirectory(settings_for(slapd.url, user_filter="(mail=*)"))
    assert directory.authenticate("alice", PASSWORDS["alice"]) is not None
    assert directory.authenticate("carol", PASSWORDS["carol"]) is None  # carol has no mail


def test_calls_from_many_threads_at_once_each_get_their_own_answer(
    directory: Directory,
) -> None:
    attempts = [("alice", PASSWORDS["alice"]), ("bob", PASSWORDS["bob"]), ("bob", "wrong")] * 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        users = list(pool.map(lambda attempt: directory.authenticate(*attempt), attempts))
    logins = [user.login if user else None for user in users]
    assert logins == ["alice", "bob", None] * 8


# Who it does not


def test_wrong_password_gives_none(directory: Directory) -> None:
    assert directory.authenticate("alice", PASSWORDS["bob"]) is None


def test_unknown_user_gives_none(directory: Directory) -> None:
    assert directory.authenticate("mallory", PASSWORDS["alice"]) is None


def test_a_login_that_matches_several_entries_gives_none(directory: Directory) -> None:
    assert directory.authenticate("twin", PASSWORDS["twin"]) is None


@pytest.mark.parametrize("login", ["alice", ""])
def test_empty_password_is_refused_before_asking_the_directory(login: str) -> None:
    # LDAP takes a bind with an empty password for an anonymous bind, which succeeds.
    # Nothing listens at this URL: an attempt to bind would raise Unavailable.
    directory = LdapDirectory(settings_for(f"ldap://127.0.0.1:{closed_port()}"))
    assert directory.authenticate(login, "") is None


def test_empty_login_gives_none(directory: Directory) -> None:
    assert directory.authenticate("", PASSWORDS["alice"]) is None


@pytest.mark.parametrize(
    "login",
    [
        "*",
        "ali*",
        "alice)(uid=alice",
        "alice)(|(uid=*",
        "*)(uid=alice",
        "\\61lice",  # \61 is "a" in a filter
        "alice\x00",
    ],
)
def test_a_login_is_never_read_as_a_filter(directory: Directory, login: str) -> None:
    # With alice's password: read as filters, several of these would find her.
    assert directory.authenticate(login, PASSWORDS["alice"]) is None


# When the directory cannot answer


def test_unreachable_directory_is_unavailable_naming_its_url() -> None:
    url = f"ldap://127.0.0.1:{closed_port()}"
    with pytest.raises(Unavailable) as caught:
        LdapDirectory(settings_for(url)).authenticate("alice", PASSWORDS["alice"])
    assert url in str(caught.value)
    assert caught.value.status == 503
    assert caught.value.details == {"directory": url}


@pytest.fixture
def silent_server() -> Iterator[str]:
    """The URL of a server that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"ldap://127.0.0.1:{listener.getsockname()[1]}"


def test_a_directory_that_does_not_answer_is_unavailable_after_the_timeout(
    silent_server: str,
) -> None:
    directory = LdapDirectory(settings_for(silent_server, timeout=0.2))
    with pytest.raises(Unavailable, match="timed out") as caught:
        directory.authenticate("alice", PASSWORDS["alice"])
    assert silent_server in str(caught.value)


def test_a_refused_service_account_is_unavailable_naming_it(slapd: SlapdServer) -> None:
    directory = LdapDirectory(settings_for(slapd.url, bind_password="not-the-password"))
    with pytest.raises(Unavailable, match="invalidCredentials") as caught:
        directory.authenticate("alice", PASSWORDS["alice"])
    assert SERVICE_DN in str(caught.value)
    assert slapd.url in str(caught.value)


def test_a_user_base_the_directory_lacks_is_unavailable_naming_it(slapd: SlapdServer) -> None:
    base = f"ou=nobody,{SUFFIX}"
    directory = LdapDirectory(settings_for(slapd.url, user_base=base))
    with pytest.raises(Unavailable, match="noSuchObject") as caught:
        directory.authenticate("alice", PASSWORDS["alice"])
    assert base in str(caught.value)


# TLS


def test_ldaps_with_the_directory_ca(slapd: SlapdServer) -> None:
    assert slapd.tls is not None
    directory = LdapDirectory(settings_for(slapd.ldaps_url, ca_file=slapd.tls.ca))
    user = directory.authenticate("alice", PASSWORDS["alice"])
    assert user is not None
    assert user.groups == ("ops",)


def test_start_tls_with_the_directory_ca(slapd: SlapdServer) -> None:
    assert slapd.tls is not None
    url = slapd.url.replace("127.0.0.1", "localhost")  # the name in slapd's certificate
    directory = LdapDirectory(settings_for(url, start_tls=True, ca_file=slapd.tls.ca))
    assert directory.authenticate("alice", PASSWORDS["alice"]) is not None


def test_a_certificate_from_an_untrusted_ca_is_refused(slapd: SlapdServer) -> None:
    directory = LdapDirectory(settings_for(slapd.ldaps_url))  # the system's CAs only
    with pytest.raises(Unavailable, match="certificate verify failed"):
        directory.authenticate("alice", PASSWORDS["alice"])


def test_a_certificate_for_another_name_is_refused(slapd: SlapdServer) -> None:
    assert slapd.tls is not None
    url = slapd.ldaps_url.replace("localhost", "127.0.0.1")  # not a name in the certificate
    directory = LdapDirectory(settings_for(url, ca_file=slapd.tls.ca))
    with pytest.raises(Unavailable, match=r"127\.0\.0\.1"):
        directory.authenticate("alice", PASSWORDS["alice"])


def test_a_ca_file_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    settings = settings_for("ldaps://ldap.example.test", ca_file=tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match="ca_file"):
        LdapDirectory(settings)


# Settings


def test_the_service_password_is_not_in_reprs() -> None:
    settings = settings_for("ldap://ldap.example.test")
    assert SERVICE_PASSWORD not in repr(settings)
    assert SERVICE_PASSWORD not in repr(LdapDirectory(settings))


MINIMAL: dict[str, Any] = {
    "url": "ldaps://ldap.example.test",
    "bind_dn": SERVICE_DN,
    "bind_password_file": "ldap-password",
    "user_base": PEOPLE,
    "group_base": GROUPS,
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "ldap-password").write_text(SERVICE_PASSWORD + "\n")
    (tmp_path / "ldap-password").chmod(0o600)
    (tmp_path / "open-password").write_text(SERVICE_PASSWORD + "\n")
    (tmp_path / "open-password").chmod(0o644)
    (tmp_path / "ca.pem").write_text("a CA certificate\n")
    return tmp_path


def test_settings_from_yaml_with_the_password_in_a_file(folder: Path) -> None:
    path = folder / "ldap.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "ca_file": "ca.pem", "timeout": 3}))
    assert load_ldap_settings(path) == LdapSettings(
        url="ldaps://ldap.example.test",
        bind_dn=SERVICE_DN,
        bind_password=SERVICE_PASSWORD,  # without the file's line end
        user_base=PEOPLE,
        group_base=GROUPS,
        ca_file=folder / "ca.pem",  # relative to the settings file
        timeout=3,
    )


def test_settings_from_json_with_the_password_in_the_environment(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LDAP_BIND_PASSWORD", "from-the-environment")
    values: dict[str, Any] = {
        **MINIMAL,
        "bind_password_env": "LDAP_BIND_PASSWORD",
        "group_member_attribute": "memberUid",
        "group_member_is_dn": False,
    }
    del values["bind_password_file"]
    path = folder / "ldap.json"
    path.write_text(json.dumps(values))
    settings = load_ldap_settings(path)
    assert settings.bind_password == "from-the-environment"
    assert (settings.group_member_attribute, settings.group_member_is_dn) == ("memberUid", False)
    assert settings.user_attribute == "uid"


# (what to change in MINIMAL: a key set to a value, or None to remove it; the key the
# error must name)
BAD_SETTINGS: dict[str, tuple[dict[str, Any], str]] = {
    "missing url": ({"url": None}, "url"),
    "missing user_base": ({"user_base": None}, "user_base"),
    "missing group_base": ({"group_base": None}, "group_base"),
    "unknown key": ({"user_atribute": "uid"}, "user_atribute"),
    "inline password": ({"bind_password": "secret"}, "bind_password"),
    "no password source": ({"bind_password_file": None}, "bind_password_file"),
    "two password sources": ({"bind_password_env": "LDAP_PW"}, "bind_password_env"),
    "password file missing": ({"bind_password_file": "nowhere"}, "bind_password_file"),
    "password file empty": ({"bind_password_file": "empty"}, "bind_password_file"),
    "password file open to others": ({"bind_password_file": "open-password"}, "bind_password_file"),
    "password variable unset": (
        {"bind_password_file": None, "bind_password_env": "PODIUM_TEST_UNSET_VARIABLE"},
        "bind_password_env",
    ),
    "http url": ({"url": "https://ldap.example.test"}, "url"),
    "url without host": ({"url": "ldap://"}, "url"),
    "url with a bad port": ({"url": "ldap://ldap.example.test:99999"}, "url"),
    "url with a base dn": ({"url": f"ldap://ldap.example.test/{SUFFIX}"}, "url"),
    "start_tls on ldaps": ({"start_tls": True}, "start_tls"),
    "start_tls not a boolean": ({"start_tls": "yes"}, "start_tls"),
    "filter without parentheses": ({"user_filter": "objectClass=person"}, "user_filter"),
    "unbalanced filter": ({"group_filter": "(&(objectClass=groupOfNames)"}, "group_filter"),
    "two filters": ({"user_filter": "(a=b)(c=d)"}, "user_filter"),
    "empty bind_dn": ({"bind_dn": ""}, "bind_dn"),
    "number as a base": ({"user_base": 42}, "user_base"),
    "zero timeout": ({"timeout": 0}, "timeout"),
    "timeout as text": ({"timeout": "10s"}, "timeout"),
    "missing ca_file": ({"ca_file": "missing.pem"}, "ca_file"),
}


@pytest.mark.parametrize(("changes", "key"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_bad_settings_name_the_file_and_the_key(
    folder: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], key: str
) -> None:
    monkeypatch.delenv("PODIUM_TEST_UNSET_VARIABLE", raising=False)
    (folder / "empty").write_text("\n")
    values = {**MINIMAL, **changes}
    path = folder / "ldap.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in values.items() if v is not None}))
    with pytest.raises(ConfigError) as caught:
        load_ldap_settings(path)
    assert str(path) in str(caught.value)
    assert key in str(caught.value)
    assert SERVICE_PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("ldap.yaml", "url: [unclosed", "not valid YAML"),
        ("ldap.json", '{"url": ', "not valid JSON"),
        ("ldap.yaml", "- a list\n- of things\n", "must hold a mapping"),
        ("ldap.toml", 'url = "ldap://x"', r"\*\.json, \*\.yaml or \*\.yml"),
    ],
)
def test_unreadable_settings_files_are_named(
    tmp_path: Path, name: str, text: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as caught:
        load_ldap_settings(path)
    assert str(path) in str(caught.value)


def test_a_missing_settings_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ldap.yaml"
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_ldap_settings(path)
    assert str(path) in str(caught.value)
