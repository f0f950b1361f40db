"""A throw-away OpenLDAP server (slapd) for tests, and an example directory to load in it.

    server = SlapdServer(folder, suffix=SUFFIX, tls=TlsFiles(ca=..., cert=..., key=...))
    server.start(example_ldif(server.hash_password))
    server.url              # ldap://127.0.0.1:<port>
    server.ldaps_url        # ldaps://localhost:<port>, with a certificate for "localhost"
    server.stop()

The server runs as the current user, in the foreground, from a ``slapd.conf`` written in
``folder`` (mdb database, Debian's schema files), and listens on free ports of
127.0.0.1. Its entries are loaded with ``slapadd`` before it starts; its log is
``folder/slapd.log``. ``scripts/ensure-slapd`` installs slapd.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from waiting import DEADLINE

ENSURE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-slapd"

_SBIN_DIRS = (Path("/usr/sbin"), Path("/usr/local/sbin"), Path("/usr/local/libexec"))
_MODULE_DIRS = (Path("/usr/lib/ldap"), Path("/usr/lib/openldap"), Path("/usr/lib64/openldap"))
_SCHEMA_DIRS = (Path("/etc/ldap/schema"), Path("/etc/openldap/schema"))

_CONF = """\
# A throw-away directory for tests.
include "{schema}/core.schema"
include "{schema}/cosine.schema"
include "{schema}/inetorgperson.schema"
include "{schema}/nis.schema"
{modules}
pidfile "{folder}/slapd.pid"
argsfile "{folder}/slapd.args"
{tls}
database mdb
maxsize 16777216
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
directory "{folder}/data"
# Anyone may try a password; a bound user (the service account) reads all but passwords.
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
"""


class SlapdNotInstalled(RuntimeError):
    """No slapd on this machine."""


class TlsFiles(NamedTuple):
    """PEM files for slapd's ldaps:// listener and StartTLS."""

    ca: Path
    cert: Path
    key: Path


def find_sbin() -> Path | None:
    """The folder of slapd, slapadd and slappasswd: Debian's first, then the PATH."""
    found = shutil.which("slapd")
    for folder in (*_SBIN_DIRS, *([Path(found).parent] if found else [])):
        if all((folder / tool).is_file() for tool in ("slapd", "slapadd", "slappasswd")):
            return folder
    return None


class SlapdServer:
    """An OpenLDAP server holding one database, ``suffix``."""

    def __init__(self, folder: Path, *, suffix: str, tls: TlsFiles | None = None) -> None:
        self.folder = folder
        self.suffix = suffix
        self.tls = tls
        self.port = 0
        self.ldaps_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        sbin = find_sbin()
        if sbin is None:
            raise SlapdNotInstalled(
                "OpenLDAP's slapd is not installed (no slapd, slapadd and slappasswd under "
                f"/usr/sbin or on the PATH): run {ENSURE_SCRIPT} to install it"
            )
        self._sbin = sbin
        whoami = shutil.which("ldapwhoami")
        if whoami is None:
            raise SlapdNotInstalled(f"OpenLDAP's ldap-utils are not installed: run {ENSURE_SCRIPT}")
        self._whoami = whoami

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        assert self.tls is not None, "the server was made without TLS files"
        return f"ldaps://localhost:{self.ldaps_port}"

    def hash_password(self, password: str) -> str:
        """``password`` as a ``{SSHA}`` userPassword value."""
        result = self._run([self._tool("slappasswd"), "-h", "{SSHA}", "-s", password])
        return result.stdout.strip()

    # Lifecycle

    def start(self, ldif: str) -> None:
        """Load the entries of ``ldif`` into a new database and start serving it."""
        conf = self.folder / "slapd.conf"
        (self.folder / "data").mkdir(parents=True)
        conf.write_text(self._conf())
        (self.folder / "entries.ldif").write_text(ldif)
        self._run(
            [self._tool("slapadd"), "-q", "-f", str(conf), "-l", str(self.folder / "entries.ldif")]
        )
        # Another process may take a port between our probe and slapd's bind.
        for attempt in range(5):
            if self._start_on_free_ports(conf, last=attempt == 4):
                return

    def stop(self) -> None:
        """Stop the server. Idempotent; the folder is left as it is, log included."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    # Plumbing

    def _start_on_free_ports(self, conf: Path, *, last: bool) -> bool:
        self.port, self.ldaps_port = _free_ports(2)
        listeners = [f"ldap://127.0.0.1:{self.port}/"]
        if self.tls is not None:
            listeners.append(f"ldaps://127.0.0.1:{self.ldaps_port}/")
        log = self.folder / "slapd.log"
        with log.open("wb") as output:  # this attempt's log only
            # -d keeps slapd in the foreground; "none" logs only what is always logged.
            command = [
                self._tool("slapd"),
                "-d",
                "none",
                "-f",
                str(conf),
                "-h",
                " ".join(listeners),
            ]
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + DEADLINE
        while not self._answers():
            code = self._process.poll()
            if code is not None:
                self._process = None
                text = log.read_text(errors="replace")
                if "Address already in use" in text and not last:
                    return False
                raise RuntimeError(f"slapd exited with {code}:\n{text[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"slapd did not answer within {DEADLINE:.0f} s: see {log}")
            time.sleep(0.05)
        return True

    def _answers(self) -> bool:
        """Whether slapd answers an LDAP request (an anonymous "who am I?") on its port."""
        probe = [self._whoami, "-x", "-H", self.url, "-o", "nettimeout=1"]
        # LDAPNOINIT: no ldap.conf or .ldaprc may point the probe elsewhere.
        environment = {**os.environ, "LDAPNOINIT": "1"}
        try:
            result = subprocess.run(probe, capture_output=True, env=environment, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def _conf(self) -> str:
        schema = next((d for d in _SCHEMA_DIRS if (d / "core.schema").is_file()), None)
        if schema is None:
            raise SlapdNotInstalled(f"no OpenLDAP schema files (core.schema) under {_SCHEMA_DIRS}")
        # Debian builds the backends as modules; other builds may have mdb built in.
        modules = next((d for d in _MODULE_DIRS if any(d.glob("back_mdb.*"))), None)
        tls = ""
        if self.tls is not None:
            tls = (
                f'TLSCACertificateFile "{self.tls.ca}"\n'
                f'TLSCertificateFile "{self.tls.cert}"\n'
                f'TLSCertificateKeyFile "{self.tls.key}"'
            )
        return _CONF.format(
            schema=schema,
            modules=f'modulepath "{modules}"\nmoduleload back_mdb' if modules else "",
            folder=self.folder,
            tls=tls,
            suffix=self.suffix,
        )

    def _tool(self, name: str) -> str:
        return str(self._sbin / name)

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            command, cwd=self.folder, capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result


def _free_ports(count: int) -> list[int]:
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


# The example directory

SUFFIX = "dc=example,dc=test"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
UNIX_GROUPS = f"ou=unix,{SUFFIX}"  # posixGroup entries, members listed by memberUid
SERVICE_DN = f"cn=podium,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-secret"
PASSWORDS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol": "carol-secret",
    "dana": "dana-secret",
    "twin": "twin-secret",
}
DANA_DN = f"cn=Dana (Contractor),{PEOPLE}"  # parentheses, which a filter must escape


def example_ldif(hash_password: Callable[[str], str]) -> str:
    """The example directory: people, groups and the service account, as LDIF.

    ``hash_password`` turns a password into a userPassword value
    (:meth:`SlapdServer.hash_password`).
    """
    secret = {login: hash_password(password) for login, password in PASSWORDS.items()}
    service = hash_password(SERVICE_PASSWORD)
    return f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=services,{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: podium
userPassword: {service}

dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

dn: uid=alice,{PEOPLE}
objectClass: inetOrgPerson
uid: alice
cn: Alice Liddell
sn: Liddell
mail: alice@example.test
userPassword: {secret["alice"]}

dn: uid=bob,{PEOPLE}
objectClass: inetOrgPerson
uid: bob
cn: Bob Builder
sn: Builder
mail: bob@example.test
userPassword: {secret["bob"]}

dn: uid=carol,{PEOPLE}
objectClass: inetOrgPerson
uid: carol
cn: Carol
sn: Carol
userPassword: {secret["carol"]}

dn: {DANA_DN}
objectClass: inetOrgPerson
uid: dana
cn: Dana (Contractor)
sn: Dana
mail: dana@example.test
userPassword: {secret["dana"]}

dn: cn=Twin One,{PEOPLE}
objectClass: inetOrgPerson
uid: twin
cn: Twin One
sn: One
userPassword: {secret["twin"]}

dn: cn=Twin Two,{PEOPLE}
objectClass: inetOrgPerson
uid: twin
cn: Twin Two
sn: Two
userPassword: {secret["twin"]}

dn: {GROUPS}
objectClass: organizationalUnit
ou: groups

dn: cn=ops,{GROUPS}
objectClass: groupOfNames
cn: ops
member: uid=alice,{PEOPLE}
member: uid=bob,{PEOPLE}

dn: cn=dev,{GROUPS}
objectClass: groupOfNames
cn: dev
member: uid=bob,{PEOPLE}

dn: cn=contractors,{GROUPS}
objectClass: groupOfNames
cn: contractors
member: {DANA_DN}

dn: {UNIX_GROUPS}
objectClass: organizationalUnit
ou: unix

dn: cn=wheel,{UNIX_GROUPS}
objectClass: posixGroup
cn: wheel
gidNumber: 10
memberUid: alice
"""
