"""``podium ca``: create the certificate authority, review and sign requests, revoke."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.cli.client import print_json

if TYPE_CHECKING:
    from podium.pki.ca import AutosignPolicy, CertificateAuthority, CertInfo


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cadir",
        type=Path,
        metavar="DIR",
        help="The CA directory. Defaults to $PODIUM_CADIR, else ca/ in the data directory.",
    )
    common.add_argument(
        "--format",
        choices=("human", "json"),
        default="human",
        help="Print for people (the default) or as JSON for scripts.",
    )

    parser = subparsers.add_parser(
        "ca",
        help="manage the certificate authority (list, sign, revoke)",
        description=(
            "Manage the certificate authority. Every node enrolls by sending a certificate "
            "request; an operator signs it here, or the autosign policy does."
        ),
    )
    actions = parser.add_subparsers(dest="ca_command", metavar="ACTION", required=True)

    init = actions.add_parser(
        "init",
        parents=[common],
        help="Create a new certificate authority.",
        description="Create a new certificate authority with an empty revocation list.",
    )
    init.add_argument(
        "--name", default="Podium CA", help="The CA's common name. Defaults to 'Podium CA'."
    )
    init.add_argument(
        "--autosign",
        action="extend",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="Sign requests whose certname matches this glob at once; '*' signs all.",
    )
    init.add_argument(
        "--autosign-token",
        action="extend",
        nargs="+",
        default=[],
        metavar="TOKEN",
        help="Sign requests whose challenge password is this enrollment token at once.",
    )
    init.set_defaults(func=_init)

    list_ = actions.add_parser(
        "list",
        parents=[common],
        help="Show pending certificate requests.",
        description="Show pending certificate requests, or every request and certificate.",
    )
    list_.add_argument(
        "--all", action="store_true", help="Show signed and revoked certificates as well."
    )
    list_.set_defaults(func=_list)

    sign = actions.add_parser(
        "sign",
        parents=[common],
        help="Sign pending certificate requests.",
        description="Sign pending certificate requests, given by certname or all at once.",
    )
    sign.add_argument("certnames", nargs="*", metavar="CERTNAME", help="A request to sign.")
    sign.add_argument("--all", action="store_true", help="Sign every pending request.")
    sign.set_defaults(func=_sign)

    revoke = actions.add_parser(
        "revoke",
        parents=[common],
        help="Revoke certificates.",
        description=(
            "Revoke certificates and publish a new revocation list. Brokers drop the "
            "revoked nodes' connections and refuse them from then on."
        ),
    )
    revoke.add_argument(
        "certnames", nargs="+", metavar="CERTNAME", help="A node whose certificate to revoke."
    )
    revoke.set_defaults(func=_revoke)

    autosign = actions.add_parser(
        "autosign",
        parents=[common],
        help="Show or change the autosign policy.",
        description=(
            "Show the autosign policy, or change it. --pattern replaces the patterns and "
            "--token replaces the tokens; what is not given stays as it was."
        ),
    )
    autosign.add_argument(
        "--pattern",
        action="extend",
        nargs="+",
        metavar="P",
        help="Sign requests whose certname matches this glob at once; '*' signs all.",
    )
    autosign.add_argument(
        "--token",
        action="extend",
        nargs="+",
        metavar="T",
        help="Sign requests whose challenge password is this enrollment token at once.",
    )
    autosign.add_argument(
        "--off", action="store_true", help="Remove all patterns and tokens; sign by hand."
    )
    autosign.set_defaults(func=_autosign)


def _init(args: argparse.Namespace) -> int:
    from podium.pki.ca import AutosignPolicy, CertificateAuthority

    policy = AutosignPolicy(patterns=tuple(args.autosign), tokens=tuple(args.autosign_token))
    ca = CertificateAuthority.init(_cadir(args), name=args.name, autosign=policy)
    if args.format == "json":
        print_json(
            {
                "cadir": str(ca.directory),
                "name": args.name,
                "ca_certificate": str(ca.ca_cert_path),
                "fingerprint": ca.fingerprint,
                "autosign": _policy_dict(policy),
            }
        )
    else:
        print(f"Created the certificate authority {args.name!r} in {ca.directory}.")
        print(f"CA certificate: {ca.ca_cert_path}")
        print(f"CA fingerprint (SHA-256): {ca.fingerprint}")
        _print_policy(policy)
    return 0


def _list(args: argparse.Namespace) -> int:
    ca = _open(args)
    infos = [info for info in ca.list() if args.all or info.state == "requested"]
    if args.format == "json":
        print_json([_info_dict(info) for info in infos])
    elif not infos:
        print("The CA has no requests or certificates." if args.all else _NONE_PENDING)
    else:
        _print_table(infos)
    return 0


def _sign(args: argparse.Namespace) -> int:
    from podium.errors import NotFound, ValidationError
    from podium.pki.names import validate_certname

    if args.all == bool(args.certnames):
        raise ValidationError("give the certnames to sign, or --all, but not both")
    ca = _open(args)
    pending = [info.certname for info in ca.list() if info.state == "requested"]
    if args.all:
        certnames = pending
    else:
        certnames = _unique(validate_certname(name) for name in args.certnames)
        missing = [name for name in certnames if name not in pending]
        if missing:
            raise NotFound(f"no certificate request is pending for {', '.join(missing)}")
    results = [_signed(ca, certname) for certname in certnames]
    if args.format == "json":
        print_json(results)
    elif not results:
        print(_NONE_PENDING)
    else:
        for result in results:
            print(f"Signed the certificate of {result['certname']} (serial {result['serial']}).")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from podium.errors import NotFound
    from podium.pki.names import validate_certname

    ca = _open(args)
    certified = {info.certname for info in ca.list() if info.state != "requested"}
    certnames = _unique(validate_certname(name) for name in args.certnames)
    missing = [name for name in certnames if name not in certified]
    if missing:
        raise NotFound(f"no certificate was signed for {', '.join(missing)}")
    results = [
        {"certname": name, "serial": ca.revoke(name), "state": "revoked"} for name in certnames
    ]
    if args.format == "json":
        print_json(results)
    else:
        for result in results:
            print(f"Revoked the certificate of {result['certname']} (serial {result['serial']}).")
    return 0


def _autosign(args: argparse.Namespace) -> int:
    from podium.errors import ValidationError
    from podium.pki.ca import AutosignPolicy

    ca = _open(args)
    policy = ca.autosign
    if args.off:
        if args.pattern or args.token:
            raise ValidationError("--off cannot be combined with --pattern or --token")
        policy = AutosignPolicy()
        ca.set_autosign(policy)
    elif args.pattern is not None or args.token is not None:
        policy = AutosignPolicy(
            patterns=tuple(args.pattern) if args.pattern is not None else policy.patterns,
            tokens=tuple(args.token) if args.token is not None else policy.tokens,
        )
        ca.set_autosign(policy)
    if args.format == "json":
        print_json(_policy_dict(policy))
    else:
        _print_policy(policy)
    return 0


_NONE_PENDING = "No certificate requests are pending."


def _cadir(args: argparse.Namespace) -> Path:
    from podium.config import default_cadir

    cadir: Path | None = args.cadir
    return cadir if cadir is not None else default_cadir()


def _open(args: argparse.Namespace) -> CertificateAuthority:
    from podium.pki.ca import CertificateAuthority

    return CertificateAuthority.open(_cadir(args))


def _signed(ca: CertificateAuthority, certname: str) -> dict[str, Any]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(ca.sign(certname))
    return {"certname": certname, "serial": cert.serial_number, "state": "signed"}


def _unique(names: Any) -> list[str]:
    return list(dict.fromkeys(names))


def _info_dict(info: CertInfo) -> dict[str, Any]:
    return {
        "certname": info.certname,
        "state": info.state,
        "serial": info.serial,
        "fingerprint": info.fingerprint,
        "not_after": info.not_after.isoformat() if info.not_after else None,
    }


def _policy_dict(policy: AutosignPolicy) -> dict[str, Any]:
    # Tokens are secrets: say how many there are, not what they are.
    return {"patterns": list(policy.patterns), "token_count": len(policy.tokens)}


def _print_policy(policy: AutosignPolicy) -> None:
    if not policy.enabled:
        print("Autosign is off: requests wait for `podium ca sign`.")
        return
    if policy.patterns:
        print(f"Autosign patterns: {', '.join(policy.patterns)}")
    if policy.tokens:
        count = len(policy.tokens)
        print(f"Autosign tokens: {count} enrollment token{'s' if count != 1 else ''}")


def _print_table(infos: Sequence[CertInfo]) -> None:
    rows = [("CERTNAME", "STATE", "FINGERPRINT (SHA-256)", "EXPIRES")]
    for info in infos:
        expires = info.not_after.strftime("%Y-%m-%d %H:%M UTC") if info.not_after else "-"
        rows.append((info.certname, info.state, info.fingerprint, expires))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[3]]))
