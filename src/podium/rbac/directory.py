"""Directory users: people who log in with an account kept in LDAP, not in Podium.

A :class:`Directory` answers one question, "who is this, if the password is right?",
with a :class:`DirectoryUser` whose ``groups`` the role mappings are matched against.
:class:`LdapDirectory` answers it from an LDAP server by the usual search, then bind:

1. bind as the service account and search ``user_base`` for exactly one entry whose
   ``user_attribute`` is the login (escaped: a login is never a filter);
2. bind as that entry's DN with the password, on a connection of its own;
3. search ``group_base`` for the groups that list the user as a member.

Each call opens its own connections, so calls from several worker threads never share
one. An unknown login and a wrong password look the same to the caller; a directory
that cannot be reached raises :class:`~podium.errors.Unavailable` naming its URL.

The settings come from a JSON or YAML file (:func:`load_ldap_settings`); the service
account's password is never written in it, but read from a file or an environment
variable that it names.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import math
import os
import ssl
import stat
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from podium.errors import ConfigError, Unavailable

with warnings.catch_warnings():
    # ldap3 2.9.1, its latest release, imports names that pyasn1 0.6.1 deprecated.
    warnings.filterwarnings("ignore", r"(tagMap|typeMap) is deprecated", DeprecationWarning)
    import ldap3
    from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPStartTLSError
    from ldap3.utils.conv import escape_filter_chars

log = logging.getLogger(__name__)

_SUCCESS, _SIZE_LIMIT_EXCEEDED = 0, 4  # LDAP result codes
_DIRECTORY_DOWN = {51, 52}  # busy, unavailable: the server did not judge the bind


@dataclass(frozen=True)
class DirectoryUser:
    """A person the directory vouched for."""

    login: str  # as the directory spells it, which may differ in case from what was typed
    display_name: str
    email: str  # "" when the directory has none
    groups: tuple[str, ...]  # the names of the directory groups the user is in, sorted


class Directory(Protocol):
    """Where users who are not local come from: LDAP today; SAML/OIDC fit the same seam."""

    def authenticate(self, login: str, password: str) -> DirectoryUser | None:
        """The user, if ``password`` is theirs; None for an unknown login or a wrong
        password, never saying which. Raises :class:`~podium.errors.Unavailable` when
        the directory cannot answer."""
        ...


@dataclass(frozen=True, kw_only=True)
class LdapSettings:
    """How to reach an LDAP directory and where its users and groups are."""

    url: str  # ldap://host[:port] or ldaps://host[:port]
    bind_dn: str  # the service account that searches for users and groups
    bind_password: str = field(repr=False)
    # Users
    user_base: str
    user_attribute: str = "uid"
    user_filter: str = "(objectClass=inetOrgPerson)"
    display_name_attribute: str = "cn"
    email_attribute: str = "mail"
    # Groups
    group_base: str
    group_filter: str = "(objectClass=groupOfNames)"
    group_member_attribute: str = "member"
    # True: members are listed by DN (groupOfNames); False: by the user's
    # user_attribute value (posixGroup's memberUid).
    group_member_is_dn: bool = True
    group_name_attribute: str = "cn"
    # TLS
    start_tls: bool = False  # upgrade an ldap:// connection before binding
    ca_file: Path | None = None  # None: the system's trusted CAs
    # Timeouts
    timeout: float = 10.0  # seconds, for connecting and for each answer

    def __post_init__(self) -> None:
        scheme = _endpoint(self.url)[2]
        if self.start_tls and scheme == "ldaps":
            raise _invalid(
                "start_tls", "is for ldap:// URLs; an ldaps:// connection is TLS already"
            )
        for name in ("user_filter", "group_filter"):
            value = getattr(self, name)
            if not _is_parenthesized(value):
                raise _invalid(name, f"must be one LDAP filter in parentheses, not {value!r}")
        if isinstance(self.timeout, bool) or not self.timeout > 0:
            raise _invalid("timeout", f"must be a number of seconds above 0, not {self.timeout!r}")

    @property
    def uses_tls(self) -> bool:
        return self.start_tls or _endpoint(self.url)[2] == "ldaps"


class LdapDirectory:
    """A :class:`Directory` backed by an LDAP server (OpenLDAP, Active Directory, ...)."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self._tls = _VerifiedTls(_client_context(settings)) if settings.uses_tls else None

    def __repr__(self) -> str:
        return f"LdapDirectory({self.settings.url!r})"

    def authenticate(self, login: str, password: str) -> DirectoryUser | None:
        # An empty password is an anonymous bind (RFC 4513 5.1.2), which "succeeds".
        if not login or not password:
            return None
        settings = self.settings
        try:
            service = self._connect(settings.bind_dn, settings.bind_password)
            try:
                self._bind_service(service)
                found = self._find_user(service, login)
                if found is None:
                    return None
                dn, attributes = found
                if not self._password_matches(dn, password):
                    return None
                spelled = _spelling(attributes.get(settings.user_attribute), login)
                groups = self._groups_of(service, dn if settings.group_member_is_dn else spelled)
            finally:
                _close(service)
        except (LDAPCommunicationError, LDAPStartTLSError) as exc:
            raise self._unavailable(f"cannot be reached: {_reason(exc)}") from exc
        except LDAPException as exc:
            raise self._unavailable(f"failed to answer: {_reason(exc)}") from exc
        return DirectoryUser(
            login=spelled,
            display_name=_first(attributes.get(settings.display_name_attribute)) or spelled,
            email=_first(attributes.get(settings.email_attribute)),
            groups=groups,
        )

    # Steps

    def _bind_service(self, connection: ldap3.Connection) -> None:
        if not connection.bind():
            raise self._unavailable(
                f"refused the service account {self.settings.bind_dn!r}: "
                f"{_outcome(connection)}; check bind_dn and its password"
            )

    def _find_user(
        self, connection: ldap3.Connection, login: str
    ) -> tuple[str, dict[str, Any]] | None:
        settings = self.settings
        query = f"(&{settings.user_filter}({settings.user_attribute}={escape_filter_chars(login)}))"
        wanted = [
            settings.user_attribute,
            settings.display_name_attribute,
            settings.email_attribute,
        ]
        # Two are enough to tell "exactly one" from "several".
        entries = self._search(connection, settings.user_base, query, wanted, size_limit=2)
        if len(entries) > 1:
            log.warning(
                "login %r matches several entries under %s; refused", login, settings.user_base
            )
            return None
        if not entries:
            return None
        return entries[0]["dn"], entries[0]["attributes"]

    def _password_matches(self, dn: str, password: str) -> bool:
        connection = self._connect(dn, password)
        try:
            if connection.bind():
                return True
            if connection.result["result"] in _DIRECTORY_DOWN:
                raise self._unavailable(f"could not check a password: {_outcome(connection)}")
            # Also "account locked" and the like, which the user must not learn of here.
            log.info("bind as %s refused: %s", dn, _outcome(connection))
            return False
        finally:
            _close(connection)

    def _groups_of(self, connection: ldap3.Connection, member: str) -> tuple[str, ...]:
        """The names of the groups that list ``member`` (a DN, or a login for
        memberUid-style groups)."""
        settings = self.settings
        query = (
            f"(&{settings.group_filter}"
            f"({settings.group_member_attribute}={escape_filter_chars(member)}))"
        )
        entries = self._search(
            connection, settings.group_base, query, [settings.group_name_attribute]
        )
        names = {
            _first(entry["attributes"].get(settings.group_name_attribute)) for entry in entries
        }
        return tuple(sorted(names - {""}))

    # Plumbing

    def _connect(self, user: str, password: str) -> ldap3.Connection:
        """An open connection, TLS started if configured, that binds as ``user``."""
        settings = self.settings
        host, port, scheme = _endpoint(settings.url)
        server = ldap3.Server(
            host,
            port=port,
            use_ssl=scheme == "ldaps",
            get_info=ldap3.NONE,
            tls=self._tls,
            connect_timeout=settings.timeout,
        )
        connection = ldap3.Connection(
            server,
            user=user,
            password=password,
            read_only=True,
            auto_referrals=False,  # never follow the directory to another server
            # ldap3 packs this into SO_RCVTIMEO as whole seconds.
            receive_timeout=math.ceil(settings.timeout),
        )
        try:
            connection.open()
            if settings.start_tls:
                connection.start_tls()
        except BaseException:
            _close(connection)
            raise
        return connection

    def _search(
        self,
        connection: ldap3.Connection,
        base: str,
        query: str,
        attributes: list[str],
        *,
        size_limit: int = 0,
    ) -> list[dict[str, Any]]:
        connection.search(
            base,
            query,
            search_scope=ldap3.SUBTREE,
            attributes=attributes,
            size_limit=size_limit,
            time_limit=math.ceil(self.settings.timeout),
        )
        code = connection.result["result"]
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            raise self._unavailable(f"could not search {base!r}: {_outcome(connection)}")
        if code == _SIZE_LIMIT_EXCEEDED and not size_limit:
            log.warning("the directory cut short a search of %s for %s", base, query)
        return [entry for entry in connection.response or () if entry["type"] == "searchResEntry"]

    def _unavailable(self, problem: str) -> Unavailable:
        return Unavailable(
            f"the directory at {self.settings.url} {problem}",
            details={"directory": self.settings.url},
        )


class _VerifiedTls(ldap3.Tls):  # type: ignore[misc]  # ldap3 has no type hints
    """ldap3's TLS, with the certificate and host name checked by the standard library
    during the handshake (ldap3's own check calls ``ssl.match_hostname``, deprecated
    since Python 3.7 and removed in 3.12)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake,
        )


def _client_context(settings: LdapSettings) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise _invalid("ca_file", f"{settings.ca_file} is not a readable PEM file: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# Settings files

_STRINGS = {
    "url",
    "bind_dn",
    "user_base",
    "user_attribute",
    "user_filter",
    "display_name_attribute",
    "email_attribute",
    "group_base",
    "group_filter",
    "group_member_attribute",
    "group_name_attribute",
}
_BOOLEANS = {"start_tls", "group_member_is_dn"}
_PASSWORD_SOURCES = ("bind_password_file", "bind_password_env")


def load_ldap_settings(path: Path) -> LdapSettings:
    """The settings in a JSON (``*.json``) or YAML (``*.yaml``, ``*.yml``) file.

    The service account's password is read from the file named by
    ``bind_password_file`` or from the environment variable named by
    ``bind_password_env``. Relative paths are relative to the settings file's folder.
    """
    values = _read_mapping(path)
    try:
        return _settings(values, path.parent)
    except ConfigError as exc:
        raise ConfigError(
            f"LDAP settings {path}: {exc.msg}", details={"file": str(path), **exc.details}
        ) from None


def _read_mapping(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"LDAP settings {path}: name it *.json, *.yaml or *.yml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read LDAP settings {path}: {exc.strerror}") from exc
    if suffix == ".json":
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"LDAP settings {path} are not valid JSON: {exc}") from exc
    else:
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"LDAP settings {path} are not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"LDAP settings {path} must hold a mapping of settings")
    return values


def _settings(values: dict[str, Any], folder: Path) -> LdapSettings:
    known = {f.name for f in fields(LdapSettings)} - {"bind_password"}
    if "bind_password" in values:
        raise _invalid(
            "bind_password",
            "may not be written in the file: name a file with bind_password_file "
            "or an environment variable with bind_password_env",
        )
    unknown = values.keys() - known - set(_PASSWORD_SOURCES)
    if unknown:
        names = ", ".join(sorted(map(str, unknown)))
        raise ConfigError(
            f"unknown setting(s) {names}; known settings are "
            f"{', '.join(sorted(known | set(_PASSWORD_SOURCES)))}",
            details={"keys": sorted(map(str, unknown))},
        )
    settings: dict[str, Any] = {}
    for name in sorted(values.keys() & known):
        value = values[name]
        if name in _STRINGS and not (isinstance(value, str) and value.strip()):
            raise _invalid(name, f"must be a non-empty string, not {value!r}")
        if name in _BOOLEANS and not isinstance(value, bool):
            raise _invalid(name, f"must be true or false, not {value!r}")
        if name == "timeout" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _invalid(name, f"must be a number of seconds, not {value!r}")
        if name == "ca_file":
            value = _path(name, value, folder)
            if not value.is_file():
                raise _invalid(name, f"{value} is not a file")
        settings[name] = value
    for name in ("url", "bind_dn", "user_base", "group_base"):
        if name not in settings:
            raise _invalid(name, "is missing", problem="missing")
    settings["bind_password"] = _bind_password(values, folder)
    return LdapSettings(**settings)


def _bind_password(values: dict[str, Any], folder: Path) -> str:
    given = [name for name in _PASSWORD_SOURCES if name in values]
    if len(given) != 1:
        raise _invalid(
            "bind_password_file",
            "or bind_password_env (exactly one of them) must say where the service "
            "account's password is",
            problem="missing" if not given else "invalid",
        )
    if given == ["bind_password_file"]:
        path = _path("bind_password_file", values["bind_password_file"], folder)
        try:
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeError) as exc:
            raise _invalid("bind_password_file", f"{path} cannot be read: {exc}") from exc
        if not password:
            raise _invalid("bind_password_file", f"{path} is empty")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise _invalid(
                "bind_password_file",
                f"{path} is open to other users (mode {mode:04o}): run chmod 600 {path}",
            )
        return password
    variable = values["bind_password_env"]
    if not (isinstance(variable, str) and variable):
        raise _invalid("bind_password_env", f"must name an environment variable, not {variable!r}")
    password = os.environ.get(variable, "")
    if not password:
        raise _invalid("bind_password_env", f"names {variable}, which is not set or empty")
    return password


def _path(name: str, value: object, folder: Path) -> Path:
    if isinstance(value, Path) or (isinstance(value, str) and value):
        return folder / Path(value)  # an absolute value stays as it is
    raise _invalid(name, f"must be a path, not {value!r}")


def _invalid(key: str, message: str, *, problem: str = "invalid") -> ConfigError:
    return ConfigError(f"{key} {message}", details={"key": key, "problem": problem})


# Small helpers


def _endpoint(url: str) -> tuple[str, int, str]:
    """``(host, port, scheme)`` of an ldap:// or ldaps:// URL."""
    wrong = _invalid("url", f"must be ldap://host[:port] or ldaps://host[:port], not {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # a port that is not a number in 0-65535 is a ValueError
    except ValueError:
        raise wrong from None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("ldap", "ldaps") or not host or parts.path not in ("", "/"):
        raise wrong
    if parts.query or parts.fragment or parts.username is not None:
        raise wrong
    return host, port or (636 if scheme == "ldaps" else 389), scheme


def _is_parenthesized(text: str) -> bool:
    """Whether ``text`` is one balanced ``( ... )`` group; the server judges the rest."""
    depth = 0
    for position, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0 or (depth == 0 and position < len(text) - 1):
            return False
    return depth == 0 and text.startswith("(")


def _first(values: object) -> str:
    if isinstance(values, list | tuple):
        return str(values[0]) if values else ""
    return "" if values is None else str(values)


def _spelling(values: object, login: str) -> str:
    """The directory's spelling of ``login`` among an attribute's values."""
    candidates = values if isinstance(values, list | tuple) else [values]
    for value in candidates:
        if isinstance(value, str) and value.casefold() == login.casefold():
            return value
    return login


def _close(connection: ldap3.Connection) -> None:
    """Unbind if the connection is open, and close its socket in any case: ldap3 leaves
    the socket of a failed open (refused, bad certificate) to the garbage collector."""
    with contextlib.suppress(LDAPException, OSError):
        connection.unbind()
    if connection.socket is not None:
        with contextlib.suppress(OSError):
            connection.socket.close()


def _reason(exc: LDAPException) -> str:
    """ldap3's message, out of the tuple reprs it wraps some messages in."""
    text = str(exc)
    while text.startswith("(") and text.endswith(",)"):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            break
        if not (isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], str)):
            break
        text = value[0]
    return text


def _outcome(connection: ldap3.Connection) -> str:
    result = connection.result or {}
    text = result.get("description") or "no answer"
    if result.get("message"):
        text += f" ({result['message']})"
    return str(text)
