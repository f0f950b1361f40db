"""The certificate authority: enrollment requests, signing, revocation, autosign.

Everything lives in one directory, shared by the server and the ``podium ca`` command::

    ca_crt.pem  ca_key.pem (0600)  ca_crl.pem  serial  index.jsonl  autosign.json (0600)
    requests/<certname>.pem        signed/<certname>.pem

Every change happens under an ``flock`` on ``.lock`` and every file is replaced
atomically, so two processes may use the same CA at once.

Revoking a certificate keeps its certname out: a new request for it is never
autosigned, only signed by an operator by name; cleaning the certname
(:meth:`CertificateAuthority.clean`) forgets it, after which it enrolls like a new node.
"""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from podium.errors import Conflict, NotFound, PKIError, Unavailable, ValidationError
from podium.files import exclusive_lock, overwrite_in_place, write_atomic
from podium.pki import certs, status
from podium.pki.autosign import AutosignPolicy
from podium.pki.certs import PublicKey, fingerprint
from podium.pki.index import CertIndex, IndexEntry
from podium.pki.keys import PrivateKey, generate_key, load_private_key
from podium.pki.names import validate_certname
from podium.pki.status import CertStatus, State

__all__ = ["AutosignPolicy", "CertInfo", "CertStatus", "CertificateAuthority", "fingerprint"]

log = logging.getLogger(__name__)

_CRL_RENEW_BEFORE = timedelta(days=3)  # crl() re-signs a CRL that expires sooner
_CRL_BACKDATE = timedelta(hours=1)
_SECOND = timedelta(seconds=1)
_FIRST_SERIAL = 1  # the CA certificate's own


@dataclass(frozen=True)
class CertInfo:
    """A certificate request or a certificate, as ``podium ca list`` shows it."""

    certname: str
    state: str  # "requested" | "signed" | "revoked"
    serial: int | None
    fingerprint: str  # SHA-256 hex with colons, of the cert or the CSR
    not_after: datetime | None
    hold_reason: str | None = None  # a request autosign will not sign (see CertStatus)


class CertificateAuthority:
    """A certificate authority backed by a directory; create with :meth:`init` or
    :meth:`open`.

    One object may be shared by threads and kept for the life of a process: the CA key
    is read once, and the index of issued certificates is read incrementally.
    """

    def __init__(self, directory: Path, *, ca_cert: x509.Certificate, ca_key: PrivateKey) -> None:
        self.directory = directory
        self._ca_cert = ca_cert
        self._ca_key = ca_key
        self._ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
        self._index = CertIndex(directory / "index.jsonl")
        self._autosign = AutosignPolicy()
        self._autosign_stamp: tuple[int, int, int] | None = None

    # Paths

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / "ca_crt.pem"

    @property
    def crl_path(self) -> Path:
        return self.directory / "ca_crl.pem"

    @property
    def _key_path(self) -> Path:
        return self.directory / "ca_key.pem"

    @property
    def _serial_path(self) -> Path:
        return self.directory / "serial"

    @property
    def _autosign_path(self) -> Path:
        return self.directory / "autosign.json"

    def _request_path(self, certname: str) -> Path:
        return self.directory / "requests" / f"{certname}.pem"

    def _signed_path(self, certname: str) -> Path:
        return self.directory / "signed" / f"{certname}.pem"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with exclusive_lock(self.directory / ".lock"):
            self._index.sync()
            yield

    # Creating and opening

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        name: str = "Podium CA",
        autosign: AutosignPolicy | None = None,
    ) -> CertificateAuthority:
        """Create a CA in ``directory``: a self-signed EC P-256 CA certificate valid for
        ten years, an empty CRL and an autosign policy; :class:`Conflict` if one exists.
        """
        directory = Path(directory)
        if not name.strip():
            raise ValidationError("the CA name must not be empty")
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PKIError(f"cannot create the CA directory {directory}: {exc}") from exc
        with exclusive_lock(directory / ".lock"):
            if (directory / "ca_crt.pem").exists():
                raise Conflict(f"a certificate authority already exists in {directory}")
            key_pem = generate_key()
            key = load_private_key(key_pem)
            cert = certs.build_ca_certificate(key, name, _now())
            ca = cls(directory, ca_cert=cert, ca_key=key)
            for sub in ("requests", "signed"):
                (directory / sub).mkdir(mode=0o755, exist_ok=True)
            write_atomic(ca._key_path, key_pem, mode=0o600, durable=True)
            write_atomic(ca._serial_path, _format_serial(_FIRST_SERIAL + 1), durable=True)
            write_atomic(ca._index.path, b"", durable=True)
            ca._write_autosign(autosign or AutosignPolicy())
            ca._write_crl()
            # The certificate goes last: its presence is what makes this directory a CA.
            write_atomic(ca.ca_cert_path, ca._ca_pem, durable=True)
        return ca

    @classmethod
    def open(cls, directory: Path) -> CertificateAuthority:
        """Open the CA in ``directory``; :class:`NotFound` if there is none."""
        directory = Path(directory)
        cert_path = directory / "ca_crt.pem"
        key_path = directory / "ca_key.pem"
        try:
            cert_pem = cert_path.read_bytes()
        except FileNotFoundError:
            raise NotFound(
                f"there is no certificate authority in {directory}; "
                "run `podium ca init` to create one"
            ) from None
        except OSError as exc:
            raise PKIError(f"cannot read the CA certificate {cert_path}: {exc}") from exc
        try:
            key_pem = key_path.read_bytes()
        except OSError as exc:
            raise PKIError(f"cannot read the CA key {key_path}: {exc.strerror}") from exc
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise PKIError(f"the CA certificate {cert_path} is not a PEM certificate") from exc
        try:
            key = load_private_key(key_pem)
        except ValidationError as exc:
            raise PKIError(f"the CA key {key_path} is unusable: {exc.msg}") from exc
        if cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise PKIError(f"the CA key {key_path} does not belong to {cert_path}")
        ca = cls(directory, ca_cert=cert, ca_key=key)
        ca._renew_crl_if_due()
        return ca

    # Autosign

    @property
    def autosign(self) -> AutosignPolicy:
        """The autosign policy, as last written by any process."""
        try:
            stat = self._autosign_path.stat()
        except FileNotFoundError:
            return AutosignPolicy()
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != self._autosign_stamp:
            try:
                data = json.loads(self._autosign_path.read_bytes())
            except (OSError, ValueError) as exc:
                raise PKIError(f"cannot read the autosign policy {self._autosign_path}") from exc
            self._autosign = AutosignPolicy.from_dict(data)
            self._autosign_stamp = stamp
        return self._autosign

    def set_autosign(self, policy: AutosignPolicy) -> None:
        """Replace the autosign policy; it applies to requests submitted from now on."""
        with self._locked():
            self._write_autosign(policy)

    def _write_autosign(self, policy: AutosignPolicy) -> None:
        data = json.dumps(policy.to_dict(), indent=2).encode() + b"\n"
        write_atomic(self._autosign_path, data, mode=0o600)  # tokens are secrets

    # Enrollment

    def submit_csr(
        self,
        certname: str,
        csr_pem: bytes,
        *,
        admit: Callable[[], None] | None = None,
        max_pending: int | None = None,
    ) -> str:
        """Store a certificate request and sign it if the autosign policy allows.

        Returns ``"signed"`` or ``"requested"``. A request that does not parse, is not
        signed by its key, or whose CN is not ``certname`` is a :class:`ValidationError`;
        a certname that already has a valid certificate is a :class:`Conflict`. A
        certname whose certificate was revoked is never autosigned: its request waits
        for :meth:`sign`.

        Only a request that is to wait for an operator is bounded: ``admit`` is called
        before it is stored and may raise to refuse it (a rate limit), and a new one is
        :class:`Unavailable` while ``max_pending`` requests are pending already.
        """
        validate_certname(certname)
        csr = certs.load_csr(certname, csr_pem)
        password = certs.challenge_password(csr)
        with self._locked():
            self._refuse_if_certified(certname)
            revoked = self._revoked_serial(certname)
            if revoked is None and self.autosign.allows(certname, password):
                self._sign_request(certname, csr)
                return "signed"
            self._refuse_if_pending_with_another_key(certname, csr)
            if admit is not None:
                admit()
            path = self._request_path(certname)
            if max_pending is not None and not path.exists():
                self._refuse_if_queue_full(max_pending)
            write_atomic(path, csr.public_bytes(serialization.Encoding.PEM))
        if revoked is not None:
            log.warning(
                "the certificate request of %s waits for an operator: %s",
                certname,
                status.hold_reason(certname, revoked),
            )
        return "requested"

    def sign(self, certname: str) -> bytes:
        """Sign the pending request for ``certname`` and return the certificate PEM."""
        validate_certname(certname)
        with self._locked():
            path = self._request_path(certname)
            try:
                csr_pem = path.read_bytes()
            except FileNotFoundError:
                raise NotFound(
                    f"no certificate request is pending for {certname}",
                    details={"certname": certname},
                ) from None
            try:
                csr = x509.load_pem_x509_csr(csr_pem)
            except ValueError as exc:
                raise PKIError(f"the stored certificate request {path} is corrupt") from exc
            self._refuse_if_certified(certname)
            return self._sign_request(certname, csr)

    def issue(
        self,
        certname: str,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> tuple[bytes, bytes]:
        """Generate a key and a certificate for ``certname`` at once; ``(cert, key)`` PEM.

        This is for identities the CA's own host creates, such as the server's TLS
        certificate; ``dns_names`` and ``ip_addresses`` are added as alternative names.
        """
        validate_certname(certname)
        names: list[str] = []
        for dns_name in dns_names:
            lowered = validate_certname(dns_name.lower())
            if lowered not in names:
                names.append(lowered)
        addresses: list[certs.IPAddress] = []
        for address in ip_addresses:
            try:
                parsed = ipaddress.ip_address(address)
            except ValueError as exc:
                raise ValidationError(f"{address!r} is not an IP address") from exc
            if parsed not in addresses:
                addresses.append(parsed)
        key_pem = generate_key()
        key = load_private_key(key_pem)
        with self._locked():
            self._refuse_if_certified(certname)
            cert_pem = self._certify(certname, key.public_key(), names, addresses, server=True)
        return cert_pem, key_pem

    def revoke(self, certname: str) -> int:
        """Revoke the certificate of ``certname``, publish a new CRL, return its serial."""
        validate_certname(certname)
        with self._locked():
            serial = self._index.current.get(certname)
            if serial is None:
                raise NotFound(
                    f"{certname} has no signed certificate to revoke",
                    details={"certname": certname},
                )
            if serial not in self._index.revoked:
                self._index.append_revoked(serial, certname, _now())
                self._write_crl()
            return serial

    def clean(self, certname: str) -> int | None:
        """Forget ``certname``: revoke its certificate if it is still valid, remove it
        and any pending request. A new request for the name is then treated like a new
        node's (autosign applies again). Returns the serial of the certificate it had.
        """
        validate_certname(certname)
        with self._locked():
            serial = self._index.current.get(certname)
            request = self._request_path(certname)
            if serial is None and not request.exists():
                raise NotFound(
                    f"the CA has no certificate or request for {certname}",
                    details={"certname": certname},
                )
            if serial is not None:
                now = _now()
                if serial not in self._index.revoked:
                    self._index.append_revoked(serial, certname, now)
                    self._write_crl()
                self._index.append_cleaned(serial, certname, now)
                self._signed_path(certname).unlink(missing_ok=True)
            request.unlink(missing_ok=True)
        return serial

    # Reading

    def list(self) -> list[CertInfo]:
        """Pending requests and issued certificates, sorted by certname."""
        infos: list[CertInfo] = []
        with self._locked():
            for certname, serial in self._index.current.items():
                entry = self._index.by_serial[serial]
                infos.append(
                    CertInfo(
                        certname=certname,
                        state=self._index.state(serial),
                        serial=serial,
                        fingerprint=entry.fingerprint,
                        not_after=entry.not_after,
                    )
                )
            for path in self._request_paths():
                info = _request_info(path, self._hold_reason(path.name.removesuffix(".pem")))
                if info is not None:
                    infos.append(info)
        infos.sort(key=_by_certname_then_state)
        return infos

    def statuses(self, state: State | None = None) -> builtins.list[CertStatus]:
        """Every pending request and issued certificate (or those in ``state``) in full,
        sorted by certname; a certname may have a revoked certificate and a request."""
        found: list[CertStatus] = []
        with self._locked():
            if state in (None, "signed", "revoked"):
                for certname, serial in self._index.current.items():
                    if state is None or self._index.state(serial) == state:
                        found.append(self._certificate_status(certname, serial))
            if state in (None, "requested"):
                for path in self._request_paths():
                    pending = self._request_status(path.name.removesuffix(".pem"))
                    if pending is not None:
                        found.append(pending)
        found.sort(key=_by_certname_then_state)
        return found

    def status(self, certname: str) -> CertStatus:
        """The certificate of ``certname`` if it has one, else its pending request (as
        Puppet's CA answers); :class:`NotFound` if it has neither."""
        validate_certname(certname)
        with self._locked():
            serial = self._index.current.get(certname)
            if serial is not None:
                return self._certificate_status(certname, serial)
            pending = self._request_status(certname)
        if pending is None:
            raise NotFound(
                f"the CA has no certificate or request for {certname}",
                kind="podium.pki/unknown-certname",
                details={"certname": certname},
            )
        return pending

    def has_request(self, certname: str) -> bool:
        """Whether a request for ``certname`` is pending."""
        return self._request_path(validate_certname(certname)).exists()

    def certificate(self, certname: str) -> bytes | None:
        """The PEM certificate last issued to ``certname``, revoked or not, if any."""
        validate_certname(certname)
        try:
            return self._signed_path(certname).read_bytes()
        except FileNotFoundError:
            return None

    def ca_certificate(self) -> bytes:
        """The CA certificate PEM."""
        return self._ca_pem

    @property
    def fingerprint(self) -> str:
        """The SHA-256 fingerprint of the CA certificate."""
        return fingerprint(self._ca_cert.public_bytes(serialization.Encoding.DER))

    def crl(self) -> bytes:
        """The CRL PEM, re-signed first if it expires within three days.

        The CRL is valid for a week and TLS peers reject an expired one, so a long-lived
        server should call this (or re-open the CA) at least daily.
        """
        self._renew_crl_if_due()
        return self.crl_path.read_bytes()

    # Internals (callers hold the lock)

    def _request_paths(self) -> Iterator[Path]:
        return (self.directory / "requests").glob("*.pem")

    def _revoked_serial(self, certname: str) -> int | None:
        """The serial of ``certname``'s latest certificate if it was revoked."""
        serial = self._index.current.get(certname)
        return serial if serial is not None and serial in self._index.revoked else None

    def _hold_reason(self, certname: str) -> str | None:
        revoked = self._revoked_serial(certname)
        return status.hold_reason(certname, revoked) if revoked is not None else None

    def _refuse_if_queue_full(self, max_pending: int) -> None:
        with os.scandir(self.directory / "requests") as entries:
            pending = sum(1 for entry in entries if entry.name.endswith(".pem"))
        if pending >= max_pending:
            raise Unavailable(
                f"the CA holds {pending} pending certificate requests, its limit "
                f"(max_pending_csrs); sign or clean some before more can wait "
                "(`podium ca list`)",
                kind="podium.pki/too-many-requests",
                details={"pending": pending, "max_pending_csrs": max_pending},
            )

    def _certificate_status(self, certname: str, serial: int) -> CertStatus:
        state = self._index.state(serial)
        path = self._signed_path(certname)
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (FileNotFoundError, ValueError):
            cert = None
        if cert is not None and cert.serial_number == serial:
            return status.of_certificate(cert, "revoked" if state == "revoked" else "signed")
        # The index is written first: a process that died before the file leaves only this.
        entry = self._index.by_serial[serial]
        return CertStatus(
            certname=certname,
            state="revoked" if state == "revoked" else "signed",
            fingerprints={"SHA256": entry.fingerprint},
            serial=serial,
            not_after=entry.not_after,
        )

    def _request_status(self, certname: str) -> CertStatus | None:
        try:
            validate_certname(certname)
            csr = x509.load_pem_x509_csr(self._request_path(certname).read_bytes())
        except (ValidationError, ValueError, FileNotFoundError):
            return None  # a stray file, or a request signed meanwhile
        return status.of_request(certname, csr, hold_reason=self._hold_reason(certname))

    def _refuse_if_certified(self, certname: str) -> None:
        serial = self._index.current.get(certname)
        if serial is None or serial in self._index.revoked:
            return
        if self._index.by_serial[serial].not_after <= _now():
            return  # an expired certificate may be replaced
        raise Conflict(
            f"{certname} already has a signed certificate (serial {serial}); "
            f"revoke it with `podium ca revoke {certname}` before enrolling it again",
            details={"certname": certname, "serial": serial},
        )

    def _refuse_if_pending_with_another_key(
        self, certname: str, csr: x509.CertificateSigningRequest
    ) -> None:
        """A pending request is never silently swapped for another key (anyone can
        submit one): the operator would sign the wrong key."""
        try:
            pending = x509.load_pem_x509_csr(self._request_path(certname).read_bytes())
        except (FileNotFoundError, ValueError):
            return
        raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if pending.public_key().public_bytes(*raw) != csr.public_key().public_bytes(*raw):
            raise Conflict(
                f"a request for {certname} with another key is already pending; if it is "
                f"not genuine, delete {self._request_path(certname)} and submit again",
                details={"certname": certname},
            )

    def _sign_request(self, certname: str, csr: x509.CertificateSigningRequest) -> bytes:
        public_key = certs.request_public_key(certname, csr)
        cert_pem = self._certify(certname, public_key, (), (), server=False)
        self._request_path(certname).unlink(missing_ok=True)
        return cert_pem

    def _certify(
        self,
        certname: str,
        public_key: PublicKey,
        dns_names: Sequence[str],
        addresses: Sequence[certs.IPAddress],
        *,
        server: bool,
    ) -> bytes:
        cert = certs.build_certificate(
            ca_cert=self._ca_cert,
            ca_key=self._ca_key,
            certname=certname,
            public_key=public_key,
            serial=self._take_serial(),
            now=_now(),
            dns_names=dns_names,
            ip_addresses=addresses,
            server=server,
        )
        # The index first: should the process die before the file is written, the index
        # still knows the certificate and can revoke it.
        self._index.append_signed(
            IndexEntry(
                serial=cert.serial_number,
                certname=certname,
                not_after=cert.not_valid_after_utc,
                fingerprint=fingerprint(cert.public_bytes(serialization.Encoding.DER)),
            )
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        write_atomic(self._signed_path(certname), cert_pem)
        return cert_pem

    def _take_serial(self) -> int:
        """The next serial, already recorded as used, so a crash can skip but not repeat."""
        try:
            serial = int(self._serial_path.read_text().strip(), 16)
        except FileNotFoundError:
            serial = _FIRST_SERIAL + 1
        except ValueError as exc:
            raise PKIError(f"the serial file {self._serial_path} is corrupt") from exc
        serial = max(serial, self._index.max_serial + 1)
        overwrite_in_place(self._serial_path, _format_serial(serial + 1))
        return serial

    def _renew_crl_if_due(self) -> None:
        if not self._crl_due():
            return
        with self._locked():
            if self._crl_due():  # another process may have renewed it meanwhile
                self._write_crl()

    def _crl_due(self) -> bool:
        try:
            crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        except (FileNotFoundError, ValueError):
            return True
        next_update = crl.next_update_utc
        return next_update is None or next_update - _now() < _CRL_RENEW_BEFORE

    def _write_crl(self) -> None:
        now = _now()
        # Backdated, or a verifier whose clock is a little behind would call it "not yet
        # valid" and refuse every client.
        last_update = now - _CRL_BACKDATE
        number = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            previous = x509.load_pem_x509_crl(self.crl_path.read_bytes())
            with contextlib.suppress(x509.ExtensionNotFound):
                extension = previous.extensions.get_extension_for_class(x509.CRLNumber)
                number = extension.value.crl_number + 1
            # OpenSSL prefers the CRL with the latest lastUpdate when it holds several,
            # so CRLs issued in the same second must still be ordered.
            last_update = min(now, max(last_update, previous.last_update_utc + _SECOND))
        crl = certs.build_crl(
            ca_cert=self._ca_cert,
            ca_key=self._ca_key,
            revoked=self._index.revoked,
            number=number,
            last_update=last_update,
            next_update=now + certs.CRL_VALIDITY,
        )
        write_atomic(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _format_serial(serial: int) -> bytes:
    return f"{serial:04X}\n".encode()


_STATE_ORDER = {"requested": 0, "signed": 1, "revoked": 2}


def _by_certname_then_state(item: CertInfo | CertStatus) -> tuple[str, int]:
    return item.certname, _STATE_ORDER.get(item.state, 3)


def _request_info(path: Path, hold_reason: str | None) -> CertInfo | None:
    certname = path.name.removesuffix(".pem")
    try:
        validate_certname(certname)
        csr = x509.load_pem_x509_csr(path.read_bytes())
    except (ValidationError, ValueError, FileNotFoundError):
        return None  # a stray file, or a request signed since the directory was listed
    return CertInfo(
        certname=certname,
        state="requested",
        serial=None,
        fingerprint=fingerprint(csr.public_bytes(serialization.Encoding.DER)),
        not_after=None,
        hold_reason=hold_reason,
    )
