"""A throw-away Puppet Server (Debian's puppetserver 7) for tests, and Puppet agents to
run against it.

    server = PuppetServer(folder, certname="puppet.test", tls=TlsFiles(...),
                          puppetdb_url="https://127.0.0.1:8143")
    server.start()                       # until /status/v1/simple answers "running"
    server.url                           # https://127.0.0.1:<port>
    server.manifest().write_text("node default { ... }")
    agent = PuppetAgent(folder2, certname="web-1.test", server=server, tls=..., ca_url=...)
    agent.run()                          # `puppet agent --test ...`, its exit code and output
    server.stop()

The server runs as the current user, in the foreground (``java -jar`` as Debian's
``puppetserver foreground`` does, see ``/usr/share/puppetserver/cli/apps/foreground``),
from a conf.d, a Puppet confdir, codedir, vardir, logdir, rundir and ssldir of its own
under ``folder``, on a free port of 127.0.0.1, with one JRuby instance and a small heap.
Its CA service is disabled: it serves with the certificate in ``tls``, which another CA
issued (Podium's, in the tests), and trusts that CA's clients. With ``puppetdb_url``
its PuppetDB terminus (Debian's puppet-terminus-puppetdb) stores facts, catalogs and
reports there; failures to store are logged (``soft_write_failure``), not fatal to a
run, so that a refused command shows in :meth:`PuppetServer.errors` rather than as a
failed catalog. Its log is ``folder/log/puppetserver.log``.

Neither the server nor the agents read or write /etc/puppet, /etc/puppetlabs,
/var/lib/puppet, /var/cache/puppet or the packaged service: every Puppet folder is
given (publicdir too, which Debian puts in /var/cache/puppet). ``scripts/ensure-puppet``
installs Puppet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx

from podium.cli.fleet import stop_processes_under

ENSURE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensure-puppet"

# Debian's layout (puppetserver 7.9, puppet-agent 7.23, puppet-terminus-puppetdb 7.12).
JAR = Path("/usr/share/puppetserver/puppetserver.jar")
JRUBY_LIB = Path("/usr/share/jruby/lib")
RUBY_LOAD_PATH = Path("/usr/lib/puppetserver/ruby/vendor_ruby")
VENDORED_GEMS = Path("/usr/lib/puppetserver/vendored-jruby-gems")
TERMINUS = Path("/usr/lib/ruby/vendor_ruby/puppet/indirector/catalog/puppetdb.rb")

# A 2-core CI machine with little to spare: one JRuby, a heap that fits it.
JAVA_HEAP = ("-Xms256m", "-Xmx768m")
# The quick JIT alone: the server starts in about half the time, and tests compile
# a few small catalogs, never enough for the optimizing JIT to pay off.
_JAVA_QUICK_START = ("-XX:TieredStopAtLevel=1",)
# The first start compiles a lot of Ruby: a loaded machine takes minutes, not seconds.
START_TIMEOUT = 240.0
STOP_TIMEOUT = 60.0
RUN_TIMEOUT = 300.0

# Debian's bootstrap.cfg and ca.cfg, less the CA (replaced by its disabled twin), the
# admin API, the metrics web service and analytics, which tests never call. The file
# watcher stays: with it, Jetty takes a replaced crl.pem without a restart.
_SERVICES = """\
puppetlabs.services.request-handler.request-handler-service/request-handler-service
puppetlabs.services.jruby.jruby-puppet-service/jruby-puppet-pooled-service
puppetlabs.services.jruby-pool-manager.jruby-pool-manager-service/jruby-pool-manager-service
puppetlabs.services.puppet-profiler.puppet-profiler-service/puppet-profiler-service
puppetlabs.trapperkeeper.services.webserver.jetty9-service/jetty9-service
puppetlabs.trapperkeeper.services.webrouting.webrouting-service/webrouting-service
puppetlabs.services.config.puppet-server-config-service/puppet-server-config-service
puppetlabs.services.master.master-service/master-service
puppetlabs.trapperkeeper.services.authorization.authorization-service/authorization-service
puppetlabs.services.versioned-code-service.versioned-code-service/versioned-code-service
puppetlabs.trapperkeeper.services.scheduler.scheduler-service/scheduler-service
puppetlabs.trapperkeeper.services.status.status-service/status-service
puppetlabs.trapperkeeper.services.metrics.metrics-service/metrics-service
puppetlabs.services.jruby.jruby-metrics-service/jruby-metrics-service
puppetlabs.services.ca.certificate-authority-disabled-service/certificate-authority-disabled-service
puppetlabs.trapperkeeper.services.watcher.filesystem-watch-service/filesystem-watch-service
"""

_GLOBAL = """\
global: {{
    logging-config: "{folder}/logback.xml"
}}
"""

_WEBSERVER = """\
webserver: {{
    access-log-config: "{folder}/request-logging.xml"
    client-auth: want
    ssl-host: 127.0.0.1
    ssl-port: {port}
    ssl-cert: "{ssldir}/certs/{certname}.pem"
    ssl-key: "{ssldir}/private_keys/{certname}.pem"
    ssl-ca-cert: "{ssldir}/certs/ca.pem"
{crl}}}
"""

_WEB_ROUTES = """\
web-router-service: {
    "puppetlabs.services.master.master-service/master-service": "/puppet"
    "puppetlabs.trapperkeeper.services.status.status-service/status-service": "/status"
}
"""

_PUPPETSERVER = """\
jruby-puppet: {{
    ruby-load-path: ["{ruby_load_path}"]
    gem-home: "{folder}/jruby-gems"
    gem-path: ["{folder}/jruby-gems", "{vendored_gems}"]
    server-conf-dir: "{folder}/confdir"
    server-code-dir: "{folder}/codedir"
    server-var-dir: "{folder}/vardir"
    server-run-dir: "{folder}/rundir"
    server-log-dir: "{folder}/log"
    max-active-instances: 1
}}
http-client: {{
}}
profiler: {{
}}
"""

_METRICS = """\
metrics: {
    server-id: localhost
}
"""

# Debian's auth.conf, less the CA's rules (no CA here).
_AUTH = """\
authorization: {
    version: 1
    rules: [
        {
            match-request: {
                path: "^/puppet/v3/catalog/([^/]+)$", type: regex, method: [get, post]
            }
            allow: "$1"
            sort-order: 500
            name: "puppetlabs v3 catalog from agents"
        },
        {
            match-request: { path: "^/puppet/v3/node/([^/]+)$", type: regex, method: get }
            allow: "$1"
            sort-order: 500
            name: "puppetlabs node"
        },
        {
            match-request: { path: "^/puppet/v3/report/([^/]+)$", type: regex, method: put }
            allow: "$1"
            sort-order: 500
            name: "puppetlabs report"
        },
        {
            match-request: { path: "^/puppet/v3/facts/([^/]+)$", type: regex, method: put }
            allow: "$1"
            sort-order: 500
            name: "puppetlabs facts"
        },
        {
            match-request: { path: "/puppet/v3/environments", type: path, method: get }
            allow: "*"
            sort-order: 500
            name: "puppetlabs environments"
        },
        {
            match-request: {
                path: "/puppet/v3/file_bucket_file", type: path, method: [get, head, post, put]
            }
            allow: "*"
            sort-order: 500
            name: "puppetlabs file bucket file"
        },
        {
            match-request: { path: "/puppet/v3/file_content", type: path, method: [get, post] }
            allow: "*"
            sort-order: 500
            name: "puppetlabs file content"
        },
        {
            match-request: { path: "/puppet/v3/file_metadata", type: path, method: [get, post] }
            allow: "*"
            sort-order: 500
            name: "puppetlabs file metadata"
        },
        {
            match-request: { path: "/puppet/v3/static_file_content", type: path, method: get }
            allow: "*"
            sort-order: 500
            name: "puppetlabs static file content"
        },
        {
            match-request: { path: "/status/v1/simple", type: path, method: get }
            allow-unauthenticated: true
            sort-order: 500
            name: "puppetlabs status service - simple"
        },
        {
            match-request: { path: "/", type: path }
            deny: "*"
            sort-order: 999
            name: "puppetlabs deny all"
        }
    ]
}
"""

_LOGBACK = """\
<configuration>
    <appender name="FILE" class="ch.qos.logback.core.FileAppender">
        <file>{folder}/log/puppetserver.log</file>
        <append>true</append>
        <encoder>
            <pattern>%d{{yyyy-MM-dd'T'HH:mm:ss.SSSXXX}} %-5p [%t] [%c{{2}}] %m%n</pattern>
        </encoder>
    </appender>
    <logger name="org.eclipse.jetty" level="INFO"/>
    <root level="info">
        <appender-ref ref="FILE"/>
    </root>
</configuration>
"""

_REQUEST_LOGGING = """\
<configuration debug="false">
    <appender name="FILE" class="ch.qos.logback.core.FileAppender">
        <file>{folder}/log/access.log</file>
        <append>true</append>
        <encoder>
            <pattern>%h [%t] "%r" %s %b %D</pattern>
        </encoder>
    </appender>
    <appender-ref ref="FILE"/>
</configuration>
"""

_SERVER_PUPPET_CONF = """\
[server]
certname = {certname}
ssldir = {folder}/ssldir
publicdir = {folder}/vardir/public
environment_timeout = 0
{puppetdb}"""

_PUPPETDB_SETTINGS = """\
storeconfigs = true
storeconfigs_backend = puppetdb
reports = puppetdb
"""

_PUPPETDB_CONF = """\
[main]
server_urls = {url}
soft_write_failure = true
"""

_ROUTES = """\
---
server:
  facts:
    terminus: puppetdb
    cache: json
"""

_AGENT_PUPPET_CONF = """\
[main]
certname = {certname}
server = {host}
serverport = {port}
ca_server = {ca_host}
ca_port = {ca_port}
"""


class PuppetNotInstalled(RuntimeError):
    """No Puppet Server, Puppet agent or PuppetDB terminus on this machine."""


class TlsFiles(NamedTuple):
    """PEM files of an identity from a CA: its certificate, its key, the CA's
    certificate and, for a server, the CA's certificate revocation list."""

    cert: Path
    key: Path
    ca: Path
    crl: Path | None = None


def missing_puppet() -> str | None:
    """What of Debian's Puppet is not installed, as a sentence; None when all is there."""
    missing = [
        str(path) for path in (JAR, JRUBY_LIB, RUBY_LOAD_PATH, TERMINUS) if not path.exists()
    ]
    missing += [tool for tool in ("java", "puppet") if shutil.which(tool) is None]
    if not missing:
        return None
    return f"Puppet is not installed (no {', '.join(missing)}): run {ENSURE_SCRIPT}"


class PuppetServer:
    """A Puppet Server with one environment folder per name, "production" first."""

    def __init__(
        self,
        folder: Path,
        *,
        certname: str,
        tls: TlsFiles,
        puppetdb_url: str | None = None,
        java_heap: Sequence[str] = JAVA_HEAP,
    ) -> None:
        missing = missing_puppet()
        if missing:
            raise PuppetNotInstalled(missing)
        self.folder = folder.absolute()
        self.certname = certname
        self.tls = tls
        self.puppetdb_url = puppetdb_url
        self.java_heap = tuple(java_heap)
        self.port = 0
        self.started_in: float | None = None  # seconds from exec to "running"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "log" / "puppetserver.log"

    @property
    def confdir(self) -> Path:
        return self.folder / "confdir"

    @property
    def ssldir(self) -> Path:
        return self.folder / "ssldir"

    def environment(self, name: str = "production") -> Path:
        """The folder of environment ``name``, made if need be (with manifests/)."""
        path = self.folder / "codedir" / "environments" / name
        (path / "manifests").mkdir(parents=True, exist_ok=True)
        return path

    def manifest(self, environment: str = "production") -> Path:
        """The main manifest of ``environment``: write it before an agent runs."""
        return self.environment(environment) / "manifests" / "site.pp"

    def errors(self, since: int = 0) -> list[str]:
        """The ERROR lines of the log from byte ``since`` on (see :meth:`log_size`)."""
        try:
            with self.log.open("rb") as log:
                log.seek(since)
                text = log.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if " ERROR " in line]

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    # Lifecycle

    def start(self) -> None:
        """Write the configuration and start the server; return once it answers."""
        self._write_files()
        # Another process may take the port between our probe and Jetty's bind.
        for attempt in range(5):
            if self._start_on_free_port(last=attempt == 4):
                return

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL if it hangs) and whatever it left running.
        Idempotent; the folder is left as it is, logs included."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it may end on its own meanwhile
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        stop_processes_under(self.folder)

    # Plumbing

    def _write_files(self) -> None:
        folder = self.folder
        for sub in ("conf.d", "confdir", "codedir", "vardir", "rundir", "log", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("certs", "private_keys"):
            (self.ssldir / sub).mkdir(parents=True, exist_ok=True, mode=0o750)
        _install(self.tls.cert, self.ssldir / "certs" / f"{self.certname}.pem")
        _install(self.tls.key, self.ssldir / "private_keys" / f"{self.certname}.pem", 0o600)
        _install(self.tls.ca, self.ssldir / "certs" / "ca.pem")
        if self.tls.crl is not None:
            _install(self.tls.crl, self.ssldir / "crl.pem")
        self.environment("production")
        values = {
            "folder": folder,
            "certname": self.certname,
            "ssldir": self.ssldir,
            "ruby_load_path": RUBY_LOAD_PATH,
            "vendored_gems": VENDORED_GEMS,
        }
        (folder / "services.cfg").write_text(_SERVICES)
        (folder / "logback.xml").write_text(_LOGBACK.format(**values))
        (folder / "request-logging.xml").write_text(_REQUEST_LOGGING.format(**values))
        conf_d = folder / "conf.d"
        (conf_d / "global.conf").write_text(_GLOBAL.format(**values))
        (conf_d / "web-routes.conf").write_text(_WEB_ROUTES)
        (conf_d / "puppetserver.conf").write_text(_PUPPETSERVER.format(**values))
        (conf_d / "metrics.conf").write_text(_METRICS)
        (conf_d / "auth.conf").write_text(_AUTH)
        puppetdb = ""
        if self.puppetdb_url is not None:
            puppetdb = _PUPPETDB_SETTINGS
            (self.confdir / "puppetdb.conf").write_text(
                _PUPPETDB_CONF.format(url=self.puppetdb_url)
            )
            (self.confdir / "routes.yaml").write_text(_ROUTES)
        (self.confdir / "puppet.conf").write_text(
            _SERVER_PUPPET_CONF.format(puppetdb=puppetdb, **values)
        )

    def _start_on_free_port(self, *, last: bool) -> bool:
        self.port = _free_port()
        conf_d = self.folder / "conf.d"
        (conf_d / "webserver.conf").write_text(
            _WEBSERVER.format(
                folder=self.folder,
                port=self.port,
                ssldir=self.ssldir,
                certname=self.certname,
                crl=f'    ssl-crl-path: "{self.ssldir}/crl.pem"\n' if self.tls.crl else "",
            )
        )
        log = self.log
        offset = self.log_size()
        command = [
            shutil.which("java") or "java",
            *self.java_heap,
            *_JAVA_QUICK_START,
            "-XX:+CrashOnOutOfMemoryError",
            f"-XX:ErrorFile={self.folder}/log/java_error_%p.log",
            "-XX:-UsePerfData",  # no /tmp/hsperfdata_<user>
            f"-Djava.io.tmpdir={self.folder}/tmp",
            "-Djruby.logger.class=com.puppetlabs.jruby_utils.jruby.Slf4jLogger",
            f"-Djruby.lib={JRUBY_LIB}",
            # As Debian's cli-defaults.sh: JRuby's native subprocess control needs them.
            *("--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED"),
            *("--add-opens", "java.base/java.io=ALL-UNNAMED"),
            *("-jar", str(JAR)),
            *("--config", str(conf_d)),
            *("--bootstrap-config", str(self.folder / "services.cfg")),
        ]
        began = time.monotonic()
        with (self.folder / "log" / "stdout.log").open("ab") as output:
            self._process = subprocess.Popen(
                command,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() signals all of it
            )
        deadline = began + START_TIMEOUT
        while not self._answers():
            code = self._process.poll()
            if code is not None:
                self._process = None
                text = _tail(log, offset)
                if "Address already in use" in text and not last:
                    return False
                raise RuntimeError(f"puppetserver exited with {code}; its log ends with:\n{text}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"puppetserver did not answer within {START_TIMEOUT:.0f} s; its log ends "
                    f"with:\n{_tail(log, offset)}"
                )
            time.sleep(0.2)
        self.started_in = time.monotonic() - began
        return True

    def _answers(self) -> bool:
        """Whether /status/v1/simple says "running", over TLS verified with the CA."""
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        try:
            answer = httpx.get(f"{self.url}/status/v1/simple", verify=context, timeout=5)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and answer.text.strip() == "running"


class PuppetAgent:
    """``puppet agent`` runs for one node against a :class:`PuppetServer`, with a
    confdir, vardir, logdir, rundir, codedir, publicdir and ssldir of its own under
    ``folder``. Its certificate and key (``tls``) are copied into its ssldir, where
    Puppet may set their owner and mode as it does for its own; without a CRL in
    ``tls``, Puppet fetches it from the CA at ``ca_url`` (``ca_server``) on its first
    run."""

    def __init__(
        self, folder: Path, *, certname: str, server: PuppetServer, tls: TlsFiles, ca_url: str
    ) -> None:
        missing = missing_puppet()
        if missing:
            raise PuppetNotInstalled(missing)
        self.folder = folder.absolute()
        self.certname = certname
        self.server = server
        self.tls = tls
        self.ca_url = ca_url
        self._written = False

    @property
    def ssldir(self) -> Path:
        return self.folder / "ssldir"

    @property
    def vardir(self) -> Path:
        return self.folder / "vardir"

    def run(
        self, *flags: str, facts: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``puppet agent --onetime --no-daemonize --detailed-exitcodes --test FLAGS``;
        ``facts`` are added to the node's (as ``FACTER_<name>`` variables)."""
        if not self._written:
            self._write_files()
        environment = {**os.environ, **{f"FACTER_{k}": v for k, v in (facts or {}).items()}}
        command = [
            shutil.which("puppet") or "puppet",
            *("agent", "--onetime", "--no-daemonize", "--detailed-exitcodes", "--test"),
            "--color=false",
            *self._folders(),
            *flags,
        ]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=environment,
            timeout=RUN_TIMEOUT,
            check=False,
        )

    def _folders(self) -> list[str]:
        folder = self.folder
        return [
            *("--confdir", str(folder / "confdir")),
            *("--vardir", str(self.vardir)),
            *("--logdir", str(folder / "logdir")),
            *("--rundir", str(folder / "rundir")),
            *("--codedir", str(folder / "codedir")),
            *("--publicdir", str(folder / "publicdir")),
            *("--ssldir", str(self.ssldir)),
        ]

    def _write_files(self) -> None:
        for sub in ("confdir", "vardir", "logdir", "rundir", "codedir", "publicdir"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        agent_files(
            self.folder / "confdir",
            self.ssldir,
            certname=self.certname,
            server=self.server,
            tls=self.tls,
            ca_url=self.ca_url,
        )
        self._written = True


def agent_files(
    confdir: Path, ssldir: Path, *, certname: str, server: PuppetServer, tls: TlsFiles, ca_url: str
) -> None:
    """A ``puppet.conf`` in ``confdir`` for runs against ``server`` as ``certname``, and
    the node's certificate, key, the CA's certificate (and CRL) in ``ssldir``."""
    for sub in ("certs", "private_keys"):
        (ssldir / sub).mkdir(parents=True, exist_ok=True, mode=0o750)
    _install(tls.cert, ssldir / "certs" / f"{certname}.pem")
    _install(tls.key, ssldir / "private_keys" / f"{certname}.pem", 0o600)
    _install(tls.ca, ssldir / "certs" / "ca.pem")
    if tls.crl is not None:
        _install(tls.crl, ssldir / "crl.pem")
    ca = urlsplit(ca_url)
    confdir.mkdir(parents=True, exist_ok=True)
    (confdir / "puppet.conf").write_text(
        _AGENT_PUPPET_CONF.format(
            certname=certname,
            host="127.0.0.1",
            port=server.port,
            ca_host=ca.hostname,
            ca_port=ca.port or 443,
        )
    )


def _install(source: Path, target: Path, mode: int = 0o644) -> None:
    """A copy of ``source`` at ``target``, with ``mode`` from the start: a key is never
    readable by others, not even for a moment."""
    target.touch(mode=mode)
    target.write_bytes(source.read_bytes())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(log: Path, offset: int, lines: int = 40) -> str:
    try:
        with log.open("rb") as file:
            file.seek(offset)
            text = file.read().decode(errors="replace")
    except OSError:
        return f"({log} is missing)"
    return "\n".join(text.splitlines()[-lines:])
