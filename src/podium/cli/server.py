"""``podium server``: the API, job engine and (by default) the broker in one process."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from podium.cli.ca import refuse_secret_option
from podium.cli.logs import add_log_level, configure


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "server",
        help="run the Podium server",
        description=(
            "Run the orchestrator API, the job engine and the PCP broker. State (database, "
            "CA, certificates) lives in --datadir; settings may also come from PODIUM_* "
            "environment variables (PODIUM_DATADIR, PODIUM_DATABASE_URL, ...)."
        ),
    )
    p.add_argument("--datadir", type=Path, help="state directory (default $PODIUM_DATADIR)")
    p.add_argument(
        "--database-url",
        help="SQLAlchemy URL, e.g. postgresql://user@host/podium (default: SQLite in datadir)",
    )
    p.add_argument("--codedir", type=Path, help="directory holding environments/<env>/modules")
    p.add_argument(
        "--basemodulepath",
        metavar="DIR[:DIR...]",
        help="folders that $basemodulepath stands for in environment.conf, and every "
        "environment's modulepath by default (default: <codedir>/modules)",
    )
    p.add_argument(
        "--job-retention-days",
        type=float,
        help="delete finished jobs older than this many days (default 30; 0 keeps them all)",
    )
    p.add_argument("--certname", help="the server's certname (default: this host's FQDN)")
    p.add_argument("--host", help="API listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="API port (default 8143)")
    p.add_argument("--broker-host", help="embedded broker listen address (default 127.0.0.1)")
    p.add_argument("--broker-port", type=int, help="embedded broker port (default 8142)")
    p.add_argument(
        "--broker",
        dest="brokers",
        action="append",
        metavar="URL",
        help="use this standalone broker (wss://host:8142/pcp/v2) instead of the embedded one; "
        "repeat for failover",
    )
    p.add_argument(
        "--dns-alt-name",
        dest="dns_alt_names",
        action="append",
        metavar="NAME",
        help="extra name or IP for the server certificate (repeatable)",
    )
    p.add_argument(
        "--puppetdb-client",
        dest="puppetdb_clients",
        action="append",
        metavar="CERTNAME",
        help="let the holder of this certificate from Podium's CA, a Puppet Server, use the "
        "PuppetDB API (/pdb/cmd/v1, /pdb/query/v4) without a token, as its PuppetDB "
        "terminus does (repeatable; default $PODIUM_PUPPETDB_CLIENTS, comma-separated)",
    )
    p.add_argument(
        "--autosign", action="append", metavar="GLOB", help="sign CSRs whose certname matches"
    )
    p.add_argument(
        "--autosign-token-file",
        dest="autosign_token_files",
        action="append",
        type=Path,
        metavar="FILE",
        help="sign CSRs carrying one of the enrollment tokens in FILE (one a line, mode "
        "0600; repeatable); or set PODIUM_AUTOSIGN_TOKENS (comma-separated)",
    )
    refuse_secret_option(
        p,
        "--autosign-token",
        instead="put the tokens in a file (one a line, mode 0600) and give "
        "--autosign-token-file FILE, or set PODIUM_AUTOSIGN_TOKENS",
    )
    p.add_argument(
        "--reconnect-grace",
        type=_positive(float),
        metavar="SECONDS",
        help="give up on a node whose agent dropped during a run after this long "
        "(default $PODIUM_RECONNECT_GRACE or 300)",
    )
    p.add_argument(
        "--task-concurrency",
        type=_positive(int),
        metavar="N",
        help="nodes running at once across all jobs; more wait their turn "
        "(default $PODIUM_TASK_CONCURRENCY or 250)",
    )
    p.add_argument(
        "--task-timeout",
        type=_positive(float),
        metavar="SECONDS",
        help="a task run's timeout on a node when the job sets none "
        "(default $PODIUM_TASK_TIMEOUT or 2400)",
    )
    p.add_argument(
        "--answer-timeout",
        type=_positive(float),
        metavar="SECONDS",
        help="an agent that has not accepted a request after this is sent it once more, "
        "then its node ends errored (default $PODIUM_ANSWER_TIMEOUT or 60)",
    )
    p.add_argument(
        "--max-request-body",
        type=_size,
        metavar="BYTES",
        help="the largest request body the API reads, e.g. 16M; a larger one is answered "
        "413 (default $PODIUM_MAX_REQUEST_BODY or 16M)",
    )
    p.add_argument(
        "--http-max-connections",
        type=_positive(int),
        metavar="N",
        help="API connections at once, TLS handshakes included; past it, the one that has "
        "waited longest for a request makes room, else the new one is closed "
        "(default $PODIUM_HTTP_MAX_CONNECTIONS or 5000)",
    )
    p.add_argument(
        "--http-header-timeout",
        type=_positive(float),
        metavar="SECONDS",
        help="close an API connection that has not sent a complete request head (TLS "
        "handshake included) this long after connecting or after its last response "
        "(default $PODIUM_HTTP_HEADER_TIMEOUT or 10)",
    )
    p.add_argument(
        "--admin-password-file",
        type=Path,
        metavar="FILE",
        help="at the first start, the admin user's password is the content of FILE (mode "
        "0600); without it one is made up and printed once (default "
        "$PODIUM_ADMIN_PASSWORD_FILE)",
    )
    p.add_argument(
        "--ldap-config",
        type=Path,
        metavar="FILE",
        help="let directory users log in: the LDAP settings file (see docs/access.md; "
        "default $PODIUM_LDAP_CONFIG)",
    )
    p.add_argument(
        "--token-lifetime",
        type=_positive(float),
        metavar="SECONDS",
        help="how long a login's token lives unless the login asks (default 3600)",
    )
    p.add_argument(
        "--token-max-lifetime",
        type=_positive(float),
        metavar="SECONDS",
        help="the longest a login may ask its token to live (default 86400)",
    )
    add_log_level(p)
    p.set_defaults(func=run)


def _positive(conv: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
        return value

    return parse


def _size(text: str) -> int:
    from podium.server.limits import byte_size

    try:
        return byte_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from podium.server.main import serve
    from podium.server.settings import ServerSettings

    configure(args.log_level)
    tuples = {
        k: tuple(getattr(args, k)) if getattr(args, k) else None
        for k in (
            "brokers",
            "dns_alt_names",
            "autosign",
            "autosign_token_files",
            "puppetdb_clients",
        )
    }
    if tuples["dns_alt_names"]:
        tuples["dns_alt_names"] = ("localhost", "127.0.0.1", *tuples["dns_alt_names"])
    settings = ServerSettings.from_env(
        datadir=args.datadir,
        database_url=args.database_url,
        codedir=args.codedir,
        basemodulepath=(
            tuple(Path(p) for p in args.basemodulepath.split(":") if p)
            if args.basemodulepath
            else None
        ),
        job_retention_days=args.job_retention_days,
        reconnect_grace=args.reconnect_grace,
        task_concurrency=args.task_concurrency,
        task_timeout=args.task_timeout,
        answer_timeout=args.answer_timeout,
        admin_password_file=args.admin_password_file,
        ldap_config=args.ldap_config,
        token_lifetime=args.token_lifetime,
        token_max_lifetime=args.token_max_lifetime,
        max_request_body=args.max_request_body,
        http_max_connections=args.http_max_connections,
        http_header_timeout=args.http_header_timeout,
        certname=args.certname,
        host=args.host,
        port=args.port,
        broker_host=args.broker_host,
        broker_port=args.broker_port,
        **tuples,
    )
    serve(settings, log_level=args.log_level)
    return 0
