"""A throw-away PostgreSQL server for tests, or an existing one reached by URL.

    server = PostgresServer()          # or PostgresServer("postgresql://u:p@host/postgres")
    server.start()
    url = server.create_database()     # postgresql+psycopg://...: a new, empty database
    ...
    server.stop()                      # stops and deletes a server it started

A started server lives in a temporary directory, listens on 127.0.0.1 on a free port
(and on a unix socket in that directory), trusts loopback connections, and trades
durability for speed. PostgreSQL refuses to run as root; as root, its files belong to
the ``postgres`` user and its commands run through ``runuser -u postgres --``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

ENSURE_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ensure-postgres"
_OWNER = "postgres"  # the system user that runs the server when we are root

_SETTINGS = """
# Added for a throw-away test server: speed over durability.
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
"""


class PostgresNotInstalled(RuntimeError):
    """No ``initdb``/``pg_ctl`` on this machine."""


def find_bindir() -> Path | None:
    """The newest PostgreSQL's bin directory: Debian's layout first, then the PATH."""
    candidates = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file()
    ]
    if candidates:
        return max(candidates, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)])
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


class PostgresServer:
    """A PostgreSQL server to create test databases in."""

    def __init__(self, url: str | None = None, *, bindir: Path | None = None) -> None:
        # With a URL, use that server (its user must be allowed to create databases).
        self.admin_url: URL | None = _psycopg_url(url) if url else None
        self.external = url is not None
        self._bindir = bindir
        self._dir: Path | None = None
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Lifecycle

    def start(self) -> None:
        """Start a server of our own, unless one was given by URL; then connect to it."""
        if not self.external and self._dir is None:
            self._start_own()
        self._admin = self.admin_connection()

    def stop(self) -> None:
        """Disconnect; stop and delete the server if we started it. Idempotent."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._dir is None:
            return
        data = self._dir / "data"
        if (data / "postmaster.pid").exists():
            self._run([self._tool("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    # Databases

    def create_database(
        self,
        name: str | None = None,
        *,
        template: str = "template0",
        connection: psycopg.Connection[tuple[object, ...]] | None = None,
    ) -> str:
        """Create an empty database and return its ``postgresql+psycopg://`` URL.

        ``connection`` is an :meth:`admin_connection` to use instead of the shared one.
        """
        name = name or f"podium_test_{uuid.uuid4().hex[:16]}"
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {} ENCODING 'UTF8'").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        if connection is None:
            self._admin_execute(statement)
        else:
            connection.execute(statement)
        return self.database_url(name)

    def admin_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        """A new autocommit connection to the server's ``postgres`` database."""
        assert self.admin_url is not None, "start() the server first"
        return psycopg.connect(_conninfo(self.admin_url), autocommit=True)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it."""
        self._admin_execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def database_url(self, name: str) -> str:
        """The ``postgresql+psycopg://`` URL of database ``name`` on this server."""
        assert self.admin_url is not None, "start() the server first"
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    # Plumbing

    def _admin_execute(self, statement: sql.Composed) -> None:
        with self._lock:
            if self._admin is None:
                raise RuntimeError("start() the PostgreSQL server first")
            self._admin.execute(statement)

    def _start_own(self) -> None:
        bindir = self._bindir or find_bindir()
        if bindir is None:
            raise PostgresNotInstalled(
                "PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin "
                f"or on the PATH): run {ENSURE_SCRIPT} to install it, or set "
                "PODIUM_TEST_POSTGRES_URL to the URL of a server to use"
            )
        self._bindir = bindir
        # Not under pytest's tmp_path: as root, that is closed to the postgres user.
        self._dir = Path(tempfile.mkdtemp(prefix="podium-pg-"))
        try:
            if os.geteuid() == 0:
                owner = pwd.getpwnam(_OWNER)
                os.chown(self._dir, owner.pw_uid, owner.pw_gid)
            data = self._dir / "data"
            initdb = [self._tool("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
            self._run([*initdb, "-E", "UTF8", "--locale=C", "--no-sync"])
            with (data / "postgresql.conf").open("a") as conf:
                conf.write(_SETTINGS.format(socket_dir=self._dir))
            self._start_on_free_port(data)
        except BaseException:
            self.stop()
            raise

    def _start_on_free_port(self, data: Path) -> None:
        # Another process may take the port between our probe and the server's bind.
        for attempt in range(5):
            port = _free_port()
            pg_ctl = [self._tool("pg_ctl"), "-D", str(data), "-l", str(data.parent / "server.log")]
            result = self._run(
                [*pg_ctl, "-o", f"-p {port}", "-w", "-t", "60", "start"], check=attempt == 4
            )
            if result.returncode == 0:
                self.admin_url = URL.create(
                    "postgresql+psycopg",
                    username="postgres",
                    host="127.0.0.1",
                    port=port,
                    database="postgres",
                )
                return

    def _tool(self, name: str) -> str:
        assert self._bindir is not None
        return str(self._bindir / name)

    def _run(self, command: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresNotInstalled("running as root needs runuser (util-linux)")
            try:
                pwd.getpwnam(_OWNER)
            except KeyError:
                raise PostgresNotInstalled(
                    f"PostgreSQL refuses to run as root and there is no {_OWNER!r} user: "
                    f"run {ENSURE_SCRIPT}, or create that user"
                ) from None
            command = ["runuser", "-u", _OWNER, "--", *command]
        result = subprocess.run(
            command, cwd=self._dir, capture_output=True, text=True, check=False, timeout=120
        )
        if check and result.returncode != 0:
            log = ""
            if self._dir is not None:
                with contextlib.suppress(OSError):
                    log = (self._dir / "server.log").read_text()[-2000:]
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{log}"
            )
        return result


class DatabaseSupply:
    """Empty databases created ahead of time on a thread, so that a test need not wait.

    CREATE DATABASE copies a template, which takes tens of milliseconds; meanwhile the
    previous test runs. Databases given back are dropped on that thread as well, when
    it has nothing to create; :meth:`close` drops whatever is left.
    """

    def __init__(self, server: PostgresServer, *, ahead: int = 2) -> None:
        self._server = server
        self._ready: queue.Queue[str | BaseException] = queue.Queue(maxsize=ahead)
        self._used: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-databases", daemon=True)
        self._thread.start()

    def take(self) -> str:
        """The URL of a new, empty database."""
        item = self._ready.get(timeout=120)
        if isinstance(item, BaseException):
            raise RuntimeError("creating a test database failed") from item
        return item

    def give_back(self, url: str) -> None:
        """Have a database taken earlier dropped, once its users have disconnected."""
        self._used.put(url)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        while not self._ready.empty():
            item = self._ready.get_nowait()
            if isinstance(item, str):
                self._used.put(item)
        while not self._used.empty():
            self._server.drop_database(_database_name(self._used.get_nowait()))

    def _run(self) -> None:
        try:
            with self._server.admin_connection() as connection:
                while not self._stop.is_set():
                    url = self._server.create_database(connection=connection)
                    if not self._hand_over(url, connection):
                        self._used.put(url)
        except Exception as error:
            self._hand_over(error, None)

    def _hand_over(
        self, item: str | BaseException, connection: psycopg.Connection[tuple[object, ...]] | None
    ) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.05)
            except queue.Full:
                while connection is not None and not self._used.empty():
                    name = _database_name(self._used.get_nowait())
                    connection.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
                continue
            return True
        return False


def _database_name(url: str) -> str:
    return str(make_url(url).database)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _psycopg_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed.set(drivername="postgresql+psycopg")


def _conninfo(url: URL) -> str:
    """libpq's form of a SQLAlchemy URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
