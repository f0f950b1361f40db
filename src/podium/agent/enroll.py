"""Getting a certificate: key, CSR, submission to the server's CA, waiting for signing."""

from __future__ import annotations

import hashlib
import logging
import random
import ssl
import time
from pathlib import Path
from urllib.parse import quote

from podium.agent import http
from podium.agent.config import AgentConfig
from podium.errors import ConfigError, Conflict, NotFound
from podium.files import write_atomic
from podium.protocol.backoff import full_jitter

log = logging.getLogger(__name__)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=mode, durable=True)


def _fingerprint(pem: bytes) -> str:
    der = ssl.PEM_cert_to_DER_cert(pem.decode())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def enrollment_token(config: AgentConfig) -> str | None:
    """The token to send with the request: the one in ``enrollment_token_file``, else
    ``PODIUM_ENROLLMENT_TOKEN``, else none."""
    path = config.enrollment_token_file
    if path is None:
        return config.enrollment_token
    from podium.pki.autosign import read_token_file

    tokens = read_token_file(path)
    if len(tokens) != 1:
        raise ConfigError(
            f"the enrollment token file {path} holds {len(tokens)} tokens; an agent sends "
            "one: leave only the line with this node's token"
        )
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0
    if mode & 0o077:
        log.warning(
            "the enrollment token file %s can be read by other users (mode %04o); run chmod 600 %s",
            path,
            mode,
            path,
        )
    return tokens[0]


def ensure_certificate(config: AgentConfig, *, wait: bool = True) -> None:
    """Make sure the agent has a key, a signed certificate and the CA certificate."""
    if config.cert_path.exists() and config.key_path.exists() and config.ca_path.exists():
        return
    token = enrollment_token(config)  # before anything else: a missing file says so at once
    base = config.server_url.rstrip("/") + "/puppet-ca/v1"
    if not config.ca_path.exists():
        # Trust on first use, as Puppet agents do; pin it by giving --cacert instead.
        pem = http.request(f"{base}/certificate/ca", context=ssl._create_unverified_context())  # noqa: S323
        log.warning(
            "trusting the CA certificate downloaded from %s (SHA-256 %s); "
            "give --cacert to pin it instead",
            config.server_url,
            _fingerprint(pem),
        )
        _write_private(config.ca_path, pem, 0o644)
    from podium.pki import keys  # imported here: only enrollment needs cryptography

    if not config.key_path.exists():
        _write_private(config.key_path, keys.generate_key(), 0o600)
    context = ssl.create_default_context(cafile=str(config.ca_path))
    name = quote(config.certname, safe="")
    key_pem = config.key_path.read_bytes()
    csr = keys.make_csr(config.certname, key_pem, challenge_password=token)
    try:
        http.request(f"{base}/certificate_request/{name}", context=context, method="PUT", body=csr)
    except http.HttpError as exc:
        if exc.http_status != 409:
            raise
        raise Conflict(
            f"the CA refused this agent's request ({exc.msg}); if this node's key in "
            f"{config.key_path} was lost or replaced, revoke the old certificate or remove "
            "the old request on the server, then start the agent again"
        ) from exc
    announced = False
    while True:
        try:
            cert: bytes | None = http.request(f"{base}/certificate/{name}", context=context)
        except NotFound:
            cert = None
        # The CA may still hold an older certificate of this name, for another key: a
        # revoked one, while this request waits for an operator.
        if cert is not None and keys.certificate_matches_key(cert, key_pem):
            break
        if not wait:
            raise NotFound(f"the CA has not signed the request of {config.certname} yet")
        if not announced:
            log.warning(
                "waiting for the CA to sign %s; on the server run: podium ca sign %s",
                config.certname,
                config.certname,
            )
            announced = True
        time.sleep(config.waitforcert)
    _write_private(config.cert_path, cert, 0o644)
    log.info("certificate for %s installed", config.certname)


def enroll(config: AgentConfig) -> None:
    """:func:`ensure_certificate`, trying again while the server cannot be reached."""
    attempt = 0
    while True:
        try:
            ensure_certificate(config)
            return
        except http.HttpError as exc:
            # 429: the CA limits how often one address may ask; it lets us in later.
            if not exc.transient and exc.http_status != 429:
                raise
            delay = full_jitter(attempt, base=config.backoff_base, cap=config.backoff_cap)
            delay = max(delay, random.uniform(0.5, 1.0))
            log.warning("enrollment: %s; retrying in %.1f s", exc.msg, delay)
            time.sleep(delay)
            attempt += 1
