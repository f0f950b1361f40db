"""``podium broker``: a standalone broker, for fleets larger than one server's broker."""

from __future__ import annotations

import argparse
from pathlib import Path

from podium.cli.logs import add_log_level, configure


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker",
        help="run a standalone PCP broker",
        description=(
            "Route PCP messages between agents and controllers. Give the broker's TLS files "
            "(--cert, --key, --cacert, --crl) or a CA directory on this host (--cadir) to "
            "issue them from. Controllers (servers allowed to send requests) are named by "
            "certname with --controller."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8142, help="listen port (default 8142)")
    p.add_argument("--certname", default="podium-broker", help="the broker's own certname")
    p.add_argument("--cadir", type=Path, help="CA directory to issue the broker certificate from")
    p.add_argument(
        "--ssldir", type=Path, help="where issued files go (default: beside the CA, in ssl/)"
    )
    p.add_argument("--cert", type=Path, help="the broker's certificate (PEM)")
    p.add_argument("--key", type=Path, help="the broker's private key (PEM)")
    p.add_argument("--cacert", type=Path, help="the CA certificate (PEM)")
    p.add_argument("--crl", type=Path, help="the CA's CRL, watched for revocations")
    p.add_argument(
        "--controller",
        dest="controllers",
        action="append",
        required=True,
        metavar="CERTNAME",
        help="a certname allowed to send requests to agents (repeatable)",
    )
    p.add_argument("--max-connections", type=int, default=20_000)
    add_log_level(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from podium import loop
    from podium.broker.routing import Router
    from podium.broker.server import Broker
    from podium.errors import ConfigError
    from podium.pki.tls import server_context
    from podium.server.limits import raise_nofile_limit, watching_descriptors

    configure(args.log_level)
    nofile = raise_nofile_limit(wanted=args.max_connections + 256)
    cert, key, cacert, crl = args.cert, args.key, args.cacert, args.crl
    if args.cadir is not None:
        from podium.pki.ca import CertificateAuthority

        ca = CertificateAuthority.open(args.cadir)
        ssldir = args.ssldir or args.cadir.parent / "ssl"
        cert = cert or ssldir / f"{args.certname}.pem"
        key = key or ssldir / f"{args.certname}.key.pem"
        if not cert.exists():
            pem, key_pem = ca.issue(
                args.certname, dns_names=[args.certname, "localhost"], ip_addresses=["127.0.0.1"]
            )
            ssldir.mkdir(parents=True, exist_ok=True, mode=0o700)
            cert.write_bytes(pem)
            key.touch(mode=0o600)
            key.write_bytes(key_pem)
        cacert = cacert or ca.ca_cert_path
        crl = crl or ca.crl_path
    if not (cert and key and cacert):
        raise ConfigError("the broker needs --cert, --key and --cacert, or --cadir to issue them")
    broker = Broker(
        Router(controllers=args.controllers, max_clients=args.max_connections),
        ssl_context=server_context(cert=cert, key=key, ca=cacert, require_client_cert=True),
        host=args.host,
        port=args.port,
        crl_path=crl,
    )

    async def main() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        async with watching_descriptors(nofile):
            await broker.start()
            logging.getLogger("podium.broker").info(
                "broker listening on wss://%s:%d/pcp/v2/", args.host, broker.port
            )
            await stop.wait()
            await broker.stop()

    loop.run(main())
    return 0
