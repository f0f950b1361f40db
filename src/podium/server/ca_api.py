"""``/puppet-ca/v1``: the CA API, with Puppet's paths and shapes.

Agents enroll without credentials (``certificate_request``, ``certificate``, the CRL
are open, as in Puppet), so a request that is to wait for an operator is bounded: a
rate per client address and a cap on how many may wait. Operators review and decide
through ``certificate_status`` and ``certificate_statuses``, which need the permission
``certificates:sign``; every decision goes to the activity log.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict

from podium.errors import Conflict, NotFound, RateLimited, Unavailable
from podium.pki.ca import CertificateAuthority
from podium.pki.names import validate_certname
from podium.pki.ratelimit import RateLimiter, client_key
from podium.pki.status import CertStatus, State, format_time
from podium.server.access import CurrentPrincipal, GuardedRoute, address, allow, audit
from podium.server.settings import ServerSettings
from podium.server.views import ERRORS

router = APIRouter(prefix="/puppet-ca/v1", route_class=GuardedRoute, responses=ERRORS)

_PEM = "application/x-pem-file"
_MAX_CSR_BYTES = 16 * 1024
_SIGN = allow("certificates:sign")


def _ca(request: Request) -> CertificateAuthority:
    ca: CertificateAuthority = request.app.state.runtime.ca
    return ca


def _limiter(request: Request) -> RateLimiter:
    """The app's limiter of certificate requests per client address."""
    limiter: RateLimiter | None = getattr(request.app.state, "csr_limiter", None)
    if limiter is None:
        settings: ServerSettings = request.app.state.runtime.settings
        limiter = request.app.state.csr_limiter = RateLimiter(
            per_minute=settings.csr_requests_per_minute, burst=settings.csr_burst
        )
    return limiter


# Enrollment (open)


@router.put("/certificate_request/{certname}", openapi_extra=allow("open"))
async def submit_request(certname: str, request: Request) -> PlainTextResponse:
    body = bytearray()
    async for chunk in request.stream():  # never more than the cap in memory
        body += chunk
        if len(body) > _MAX_CSR_BYTES:
            return PlainTextResponse(
                f"a certificate request is at most {_MAX_CSR_BYTES} bytes\n", status_code=413
            )
    limiter, client = _limiter(request), client_key(address(request))

    def admit() -> None:
        wait = limiter.acquire(client)
        if wait:
            raise RateLimited(
                f"too many certificate requests from {client}: at most {limiter.burst} at "
                f"once and {limiter.per_minute:g} a minute wait for an operator; try again "
                f"in {math.ceil(wait)} s",
                kind="podium.pki/rate-limited",
                retry_after=wait,
            )

    settings: ServerSettings = request.app.state.runtime.settings
    try:
        state = await asyncio.to_thread(
            _ca(request).submit_csr,
            validate_certname(certname),
            bytes(body),
            admit=admit,
            max_pending=settings.max_pending_csrs,
        )
    # Puppet agents show the body of a refusal as it is: plain text for these two.
    except RateLimited as exc:
        headers = {"Retry-After": str(math.ceil(exc.retry_after))}
        return PlainTextResponse(f"{exc.msg}\n", status_code=429, headers=headers)
    except Unavailable as exc:
        return PlainTextResponse(f"{exc.msg}\n", status_code=503)
    return PlainTextResponse(f"{state}\n")


@router.get("/certificate/{certname}", openapi_extra=allow("open"))
async def certificate(certname: str, request: Request) -> Response:
    ca = _ca(request)
    if certname == "ca":
        return Response(ca.ca_certificate(), media_type=_PEM)
    pem = await asyncio.to_thread(ca.certificate, validate_certname(certname))
    if pem is None:
        raise NotFound(f"no signed certificate for {certname}", kind="podium.pki/not-signed")
    return Response(pem, media_type=_PEM)


@router.get("/certificate_revocation_list/ca", openapi_extra=allow("open"))
async def crl(request: Request) -> Response:
    return Response(_ca(request).crl(), media_type=_PEM)


# Review and decisions (certificates:sign)


class DesiredState(BaseModel):
    """The body of ``PUT certificate_status``."""

    model_config = ConfigDict(extra="forbid")
    desired_state: Literal["signed", "revoked"]


@router.get("/certificate_statuses/{key}", openapi_extra=_SIGN)
async def list_statuses(
    key: str, request: Request, principal: CurrentPrincipal, state: State | None = None
) -> list[dict[str, Any]]:
    """Every request and certificate (``key`` is ignored, as in Puppet: ``any``)."""
    statuses = await asyncio.to_thread(_ca(request).statuses, state)
    return [status_view(status) for status in statuses]


@router.get("/certificate_status/{certname}", openapi_extra=_SIGN)
async def get_status(
    certname: str, request: Request, principal: CurrentPrincipal
) -> dict[str, Any]:
    status = await asyncio.to_thread(_ca(request).status, validate_certname(certname))
    return status_view(status)


@router.put("/certificate_status/{certname}", openapi_extra=_SIGN, status_code=204)
async def set_status(
    certname: str, body: DesiredState, request: Request, principal: CurrentPrincipal
) -> Response:
    ca = _ca(request)
    certname = validate_certname(certname)
    if body.desired_state == "signed":
        serial = await asyncio.to_thread(_sign, ca, certname)
        what, message = "sign", f"Signed the certificate of {certname} (serial {serial})."
    else:
        serial = await asyncio.to_thread(_revoke, ca, certname)
        what, message = "revoke", f"Revoked the certificate of {certname} (serial {serial})."
    await audit(
        request,
        principal,
        service="ca",
        type=what,
        object_type="certificates",
        object_id=certname,
        object_name=certname,
        message=message,
    )
    return Response(status_code=204)


@router.delete("/certificate_status/{certname}", openapi_extra=_SIGN, status_code=204)
async def clean(certname: str, request: Request, principal: CurrentPrincipal) -> Response:
    """Forget a certname (Puppet's ``ca clean``): revoke its certificate if valid, remove
    it and its request; it may then enroll like a new node."""
    certname = validate_certname(certname)
    serial = await asyncio.to_thread(_ca(request).clean, certname)
    done = f"revoked serial {serial} and removed" if serial is not None else "removed"
    await audit(
        request,
        principal,
        service="ca",
        type="clean",
        object_type="certificates",
        object_id=certname,
        object_name=certname,
        message=f"Cleaned {certname}: {done} its certificate and request.",
    )
    return Response(status_code=204)


def _sign(ca: CertificateAuthority, certname: str) -> int:
    from cryptography import x509

    try:
        pem = ca.sign(certname)
    except NotFound:
        if ca.certificate(certname) is None:
            raise
        raise Conflict(
            f"{certname} has no pending certificate request to sign; it has a certificate "
            "already (see its status)",
            details={"certname": certname},
        ) from None
    return x509.load_pem_x509_certificate(pem).serial_number


def _revoke(ca: CertificateAuthority, certname: str) -> int:
    try:
        return ca.revoke(certname)
    except NotFound:
        if not ca.has_request(certname):
            raise
        raise Conflict(
            f"{certname} has no signed certificate to revoke, only a pending request; "
            "clean it to refuse the request",
            details={"certname": certname},
        ) from None


def status_view(status: CertStatus) -> dict[str, Any]:
    """A status as Puppet's CA API gives it (with Podium's ``hold_reason`` when set)."""
    fingerprints = dict(status.fingerprints)
    view: dict[str, Any] = {
        "name": status.certname,
        "state": status.state,
        "fingerprint": status.fingerprint,
        "fingerprints": {**fingerprints, "default": status.fingerprint},
        "dns_alt_names": list(status.dns_alt_names),
        "subject_alt_names": [f"DNS:{name}" for name in status.dns_alt_names]
        + [f"IP:{ip}" for ip in status.ip_alt_names],
        "authorization_extensions": {},
    }
    if status.serial is not None:
        view["serial_number"] = status.serial
    if status.not_before is not None:
        view["not_before"] = format_time(status.not_before)
    if status.not_after is not None:
        view["not_after"] = format_time(status.not_after)
    if status.hold_reason is not None:
        view["hold_reason"] = status.hold_reason
    return view
