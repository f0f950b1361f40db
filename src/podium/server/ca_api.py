"""``/puppet-ca/v1``: the CA endpoints agents enroll with (Puppet's paths and shapes)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from podium.errors import NotFound
from podium.pki.ca import CertificateAuthority
from podium.pki.names import validate_certname

router = APIRouter(prefix="/puppet-ca/v1")

_PEM = "application/x-pem-file"
_MAX_CSR_BYTES = 16 * 1024


def _ca(request: Request) -> CertificateAuthority:
    ca: CertificateAuthority = request.app.state.runtime.ca
    return ca


@router.put("/certificate_request/{certname}")
async def submit_request(certname: str, request: Request) -> PlainTextResponse:
    body = bytearray()
    async for chunk in request.stream():  # never more than the cap in memory
        body += chunk
        if len(body) > _MAX_CSR_BYTES:
            return PlainTextResponse(
                f"a certificate request is at most {_MAX_CSR_BYTES} bytes\n", status_code=413
            )
    state = await asyncio.to_thread(
        _ca(request).submit_csr, validate_certname(certname), bytes(body)
    )
    return PlainTextResponse(f"{state}\n")


@router.get("/certificate/{certname}")
async def certificate(certname: str, request: Request) -> Response:
    ca = _ca(request)
    if certname == "ca":
        return Response(ca.ca_certificate(), media_type=_PEM)
    pem = await asyncio.to_thread(ca.certificate, validate_certname(certname))
    if pem is None:
        raise NotFound(f"no signed certificate for {certname}", kind="podium.pki/not-signed")
    return Response(pem, media_type=_PEM)


@router.get("/certificate_revocation_list/ca")
async def crl(request: Request) -> Response:
    return Response(_ca(request).crl(), media_type=_PEM)
