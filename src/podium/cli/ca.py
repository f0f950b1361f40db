"""``podium ca``: create the certificate authority, review and sign requests, revoke.

``list``, ``sign`` and ``revoke`` work on the CA directory of this machine when there
is one (or ``--cadir`` names it), else through a server's CA API
(``/puppet-ca/v1/certificate_status``, which needs the permission
``certificates:sign``), as on an operator's laptop. ``init`` and ``autosign`` change a
CA directory and only work locally.

Enrollment tokens are secrets and never given on the command line, where ``ps``
shows them to every user: they come from files, one a line (``-`` is standard input).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.cli.client import print_json

if TYPE_CHECKING:
    from podium.cli.client import ApiClient
    from podium.pki.ca import AutosignPolicy, CertificateAuthority, CertInfo


def refuse_secret_option(parser: argparse.ArgumentParser, flag: str, *, instead: str) -> None:
    """Make ``flag``, which once took a secret, fail with a sentence saying ``instead``
    what to do: a command line is visible to every user of the machine."""
    parser.add_argument(
        flag,
        nargs="?",
        action=_RefusedSecret,
        instead=instead,
        dest=argparse.SUPPRESS,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


class _RefusedSecret(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, *, instead: str, **kw: Any):
        super().__init__(option_strings, dest, **kw)
        self.instead = instead

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"{option_string} is no longer accepted: every user of this machine can read "
            f"a command line (ps); {self.instead}"
        )


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
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--server-url",
        help="Use this server's CA API instead of a CA directory (the default when this "
        "machine has no CA directory: $PODIUM_SERVER_URL, else https://127.0.0.1:8143). "
        "The API token is the one of `podium access login`, or $PODIUM_TOKEN.",
    )
    remote.add_argument(
        "--cacert",
        type=Path,
        help="The CA certificate to verify the server with (default $PODIUM_CACERT).",
    )

    parser = subparsers.add_parser(
        "ca",
        help="manage the certificate authority (list, sign, revoke)",
        description=(
            "Manage the certificate authority. Every node enrolls by sending a certificate "
            "request; an operator signs it here, or the autosign policy does. list, sign "
            "and revoke use this machine's CA directory when it has one, else the "
            "server's CA API."
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
        "--autosign-token-file",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="Sign requests whose challenge password is one of the enrollment tokens in "
        "FILE (one a line; '-' reads them from standard input) at once. Without it, the "
        "comma-separated tokens of $PODIUM_AUTOSIGN_TOKENS, if set.",
    )
    refuse_secret_option(
        init,
        "--autosign-token",
        instead="put the tokens in a file (one a line, mode 0600) and give "
        "--autosign-token-file FILE, or set PODIUM_AUTOSIGN_TOKENS",
    )
    init.set_defaults(func=_init)

    list_ = actions.add_parser(
        "list",
        parents=[common, remote],
        help="Show pending certificate requests.",
        description="Show pending certificate requests, or every request and certificate.",
    )
    list_.add_argument(
        "--all", action="store_true", help="Show signed and revoked certificates as well."
    )
    list_.set_defaults(func=_list)

    sign = actions.add_parser(
        "sign",
        parents=[common, remote],
        help="Sign pending certificate requests.",
        description=(
            "Sign pending certificate requests, given by certname or all at once. A "
            "request for a certname whose certificate was revoked is signed only when "
            "named, never by --all."
        ),
    )
    sign.add_argument("certnames", nargs="*", metavar="CERTNAME", help="A request to sign.")
    sign.add_argument("--all", action="store_true", help="Sign every pending request.")
    sign.set_defaults(func=_sign)

    revoke = actions.add_parser(
        "revoke",
        parents=[common, remote],
        help="Revoke certificates.",
        description=(
            "Revoke certificates and publish a new revocation list. Brokers drop the "
            "revoked nodes' connections and refuse them from then on, and a new request "
            "for a revoked certname waits for `podium ca sign CERTNAME`."
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
            "--token-file replaces the tokens; what is not given stays as it was."
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
        "--token-file",
        action="append",
        type=Path,
        metavar="FILE",
        help="Sign requests whose challenge password is one of the enrollment tokens in "
        "FILE (one a line; '-' reads them from standard input) at once.",
    )
    refuse_secret_option(
        autosign,
        "--token",
        instead="put the tokens in a file (one a line, mode 0600) and give --token-file "
        "FILE, or pipe them in with --token-file -",
    )
    autosign.add_argument(
        "--off", action="store_true", help="Remove all patterns and tokens; sign by hand."
    )
    autosign.set_defaults(func=_autosign)


# Local only: creating the CA and its autosign policy


def _init(args: argparse.Namespace) -> int:
    from podium.config import env
    from podium.pki.autosign import parse_tokens
    from podium.pki.ca import AutosignPolicy, CertificateAuthority

    if args.autosign_token_file:
        tokens = _read_tokens(args.autosign_token_file)
    elif raw := env("AUTOSIGN_TOKENS"):
        tokens = parse_tokens(raw.replace(",", "\n"), source="PODIUM_AUTOSIGN_TOKENS")
    else:
        tokens = ()
    policy = AutosignPolicy(patterns=tuple(args.autosign), tokens=tokens)
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


def _autosign(args: argparse.Namespace) -> int:
    from podium.errors import ValidationError
    from podium.pki.ca import AutosignPolicy

    ca = _open(args)
    policy = ca.autosign
    if args.off:
        if args.pattern or args.token_file:
            raise ValidationError("--off cannot be combined with --pattern or --token-file")
        policy = AutosignPolicy()
        ca.set_autosign(policy)
    elif args.pattern is not None or args.token_file is not None:
        policy = AutosignPolicy(
            patterns=tuple(args.pattern) if args.pattern is not None else policy.patterns,
            tokens=_read_tokens(args.token_file) if args.token_file else policy.tokens,
        )
        ca.set_autosign(policy)
    if args.format == "json":
        print_json(_policy_dict(policy))
    else:
        _print_policy(policy)
    return 0


def _read_tokens(files: Iterable[Path]) -> tuple[str, ...]:
    from podium.pki.autosign import parse_tokens, read_token_file

    tokens: list[str] = []
    for path in files:
        if str(path) == "-":
            read = parse_tokens(sys.stdin.read(), source="the standard input")
        else:
            read = read_token_file(path)
        tokens += [token for token in read if token not in tokens]
    return tuple(tokens)


# list, sign and revoke: on a CA directory, or through a server's CA API


def _list(args: argparse.Namespace) -> int:
    with _backend(args) as ca:
        infos = ca.infos(None if args.all else "requested")
    if args.format == "json":
        print_json([_info_dict(info) for info in infos])
    elif not infos:
        print("The CA has no requests or certificates." if args.all else _NONE_PENDING)
    else:
        _print_table(infos)
        for info in infos:
            if info.hold_reason:
                print(f"\n{_held(info)}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from podium.errors import NotFound, ValidationError
    from podium.pki.names import validate_certname

    if args.all == bool(args.certnames):
        raise ValidationError("give the certnames to sign, or --all, but not both")
    with _backend(args) as ca:
        pending = {info.certname: info for info in ca.infos("requested")}
        held: list[CertInfo] = []
        if args.all:
            # A revoked certname comes back only when an operator names it.
            held = [info for info in pending.values() if info.hold_reason]
            certnames = [name for name, info in pending.items() if not info.hold_reason]
        else:
            certnames = _unique(validate_certname(name) for name in args.certnames)
            missing = [name for name in certnames if name not in pending]
            if missing:
                raise NotFound(f"no certificate request is pending for {', '.join(missing)}")
        results = [_result(name, ca.sign(name), "signed") for name in certnames]
    if args.format == "json":
        print_json(results)
    elif not results and not held:
        print(_NONE_PENDING)
    else:
        for result in results:
            print(f"Signed the certificate of {result['certname']} (serial {result['serial']}).")
    for info in held:
        print(f"Not signed: {_held(info)}", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from podium.errors import NotFound
    from podium.pki.names import validate_certname

    certnames = _unique(validate_certname(name) for name in args.certnames)
    with _backend(args) as ca:
        certified = ca.certified(certnames)
        missing = [name for name in certnames if name not in certified]
        if missing:
            raise NotFound(f"no certificate was signed for {', '.join(missing)}")
        results = [_result(name, ca.revoke(name), "revoked") for name in certnames]
    if args.format == "json":
        print_json(results)
    else:
        for result in results:
            print(f"Revoked the certificate of {result['certname']} (serial {result['serial']}).")
    return 0


_NONE_PENDING = "No certificate requests are pending."


def _result(certname: str, serial: int, state: str) -> dict[str, Any]:
    return {"certname": certname, "serial": serial, "state": state}


class _LocalCa:
    """A CA directory on this machine."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca

    def infos(self, state: str | None) -> list[CertInfo]:
        return [info for info in self.ca.list() if state is None or info.state == state]

    def certified(self, certnames: Sequence[str]) -> set[str]:
        return {info.certname for info in self.ca.list() if info.state != "requested"}

    def sign(self, certname: str) -> int:
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.ca.sign(certname)).serial_number

    def revoke(self, certname: str) -> int:
        return self.ca.revoke(certname)


class _RemoteCa:
    """A server's CA, through ``/puppet-ca/v1/certificate_status``."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def infos(self, state: str | None) -> list[CertInfo]:
        params = {"state": state} if state else None
        items = self.client.call("GET", "/certificate_statuses/any", params=params)
        return [_info_of_status(item) for item in items]

    def certified(self, certnames: Sequence[str]) -> set[str]:
        return {name for name in certnames if self._serial(name) is not None}

    def sign(self, certname: str) -> int:
        self._put(certname, "signed")
        serial = self._serial(certname)
        if serial is None:
            from podium.errors import PodiumError

            raise PodiumError(f"the server signed {certname} but shows no certificate for it")
        return serial

    def revoke(self, certname: str) -> int:
        serial = self._serial(certname)
        if serial is None:
            from podium.errors import NotFound

            raise NotFound(f"no certificate was signed for {certname}")
        self._put(certname, "revoked")
        return serial

    def _serial(self, certname: str) -> int | None:
        """The serial of ``certname``'s certificate; None when it has none."""
        from podium.errors import NotFound

        try:
            item = self.client.call("GET", f"/certificate_status/{certname}")
        except NotFound:
            return None
        if not isinstance(item, dict) or item.get("state") not in ("signed", "revoked"):
            return None
        serial = item.get("serial_number")
        return serial if isinstance(serial, int) else None

    def _put(self, certname: str, state: str) -> None:
        self.client.call("PUT", f"/certificate_status/{certname}", json={"desired_state": state})


@contextlib.contextmanager
def _backend(args: argparse.Namespace) -> Iterator[_LocalCa | _RemoteCa]:
    if _is_local(args):
        yield _LocalCa(_open(args))
        return
    with _client(args) as client:
        yield _RemoteCa(client)


def _cadir(args: argparse.Namespace) -> Path:
    from podium.config import default_cadir

    cadir: Path | None = args.cadir
    return cadir if cadir is not None else default_cadir()


def _open(args: argparse.Namespace) -> CertificateAuthority:
    from podium.pki.ca import CertificateAuthority

    return CertificateAuthority.open(_cadir(args))


def _is_local(args: argparse.Namespace) -> bool:
    """Whether to use a CA directory: one is named (``--cadir``, ``$PODIUM_CADIR``), or
    no server is (``--server-url``) and this machine has one this user can read."""
    from podium.config import env
    from podium.errors import ValidationError

    if args.cadir is not None and args.server_url:
        raise ValidationError(
            "give --cadir (a CA directory on this machine) or --server-url (a server's "
            "CA API), not both"
        )
    if args.cadir is not None:
        return True
    if args.server_url:
        return False
    if env("CADIR"):
        return True
    cadir = _cadir(args)
    return (cadir / "ca_crt.pem").exists() and os.access(cadir / "ca_key.pem", os.R_OK)


def _client(args: argparse.Namespace) -> ApiClient:
    from podium.cli.client import ApiClient
    from podium.errors import PodiumError

    try:
        return ApiClient(args.server_url, args.cacert, api="/puppet-ca/v1")
    except PodiumError as exc:
        if args.server_url:
            raise
        raise PodiumError(
            f"this machine has no CA directory this user can read ({_cadir(args)}; give "
            f"--cadir if it is elsewhere), and to use a server's CA API instead: {exc.msg}",
            kind=exc.kind,
        ) from exc


def _info_of_status(item: dict[str, Any]) -> CertInfo:
    """A ``certificate_status`` answer as ``podium ca list`` shows it."""
    from podium.pki.ca import CertInfo
    from podium.pki.status import parse_time

    not_after = item.get("not_after")
    return CertInfo(
        certname=item["name"],
        state=item["state"],
        serial=item.get("serial_number"),
        fingerprint=item.get("fingerprints", {}).get("SHA256") or item.get("fingerprint", ""),
        not_after=parse_time(not_after) if not_after else None,
        hold_reason=item.get("hold_reason"),
    )


def _held(info: CertInfo) -> str:
    from podium.cli.client import clean_line

    return clean_line(f"{info.certname} waits for an operator: {info.hold_reason}.")


def _unique(names: Any) -> list[str]:
    return list(dict.fromkeys(names))


def _info_dict(info: CertInfo) -> dict[str, Any]:
    return {
        "certname": info.certname,
        "state": info.state,
        "serial": info.serial,
        "fingerprint": info.fingerprint,
        "not_after": info.not_after.isoformat() if info.not_after else None,
        "hold_reason": info.hold_reason,
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
    from podium.cli.client import clean_line  # a remote server's answer may hold anything

    rows = [["CERTNAME", "STATE", "FINGERPRINT (SHA-256)", "EXPIRES"]]
    for info in infos:
        expires = info.not_after.strftime("%Y-%m-%d %H:%M UTC") if info.not_after else "-"
        cells = [info.certname, info.state, info.fingerprint]
        rows.append([*(clean_line(cell) for cell in cells), expires])
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*padded, row[3]]))
