"""Podium's exceptions.

Every error Podium raises on purpose derives from :class:`PodiumError`, which carries
the API's error shape: ``kind``, ``msg`` and ``details``.

    PodiumError
    ├── ValidationError (ValueError)     bad input from a user or a peer, HTTP 400
    │   └── ProtocolError                a PCP/PXP message that breaks the protocol
    ├── NotFound (KeyError)              an unknown job, node, task, certificate: 404
    ├── Conflict                         the request clashes with current state: 409
    ├── NotPermitted                     the caller may not do this: 403
    ├── Unauthenticated                  no valid token was given: 401
    ├── RateLimited                      too many attempts; try again later: 429
    ├── Unavailable                      a part the request needs is down: 503
    ├── ConfigError                      a setting is missing or wrong
    ├── PKIError                         certificate authority and TLS material
    └── StoreError                       the database could not do what was asked
"""

from __future__ import annotations

from typing import Any

_NS = "puppetlabs.orchestrator"


class PodiumError(Exception):
    """Root of Podium's exceptions; ``kind``/``msg``/``details`` are the API error body."""

    kind: str = f"{_NS}/unknown-error"
    status: int = 500

    def __init__(
        self, msg: str, *, kind: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(msg)
        self.msg = msg
        if kind is not None:
            self.kind = kind
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return self.msg

    def to_dict(self) -> dict[str, Any]:
        """The error as the API returns it."""
        return {"kind": self.kind, "msg": self.msg, "details": self.details}


class ValidationError(PodiumError, ValueError):
    kind = f"{_NS}/validation-error"
    status = 400


class ProtocolError(ValidationError):
    kind = "podium.protocol/invalid-message"


class NotFound(PodiumError, KeyError):
    kind = f"{_NS}/not-found"
    status = 404

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.msg


class Conflict(PodiumError):
    kind = f"{_NS}/conflict"
    status = 409


class NotPermitted(PodiumError):
    kind = f"{_NS}/not-permitted"
    status = 403


class Unauthenticated(PodiumError):
    kind = "puppetlabs.rbac/user-unauthenticated"
    status = 401


class RateLimited(PodiumError):
    kind = "puppetlabs.rbac/too-many-attempts"
    status = 429

    def __init__(self, msg: str, *, retry_after: float, kind: str | None = None) -> None:
        super().__init__(msg, kind=kind, details={"retry_after": round(retry_after)})
        self.retry_after = retry_after


class Unavailable(PodiumError):
    kind = "podium/unavailable"
    status = 503


class ConfigError(PodiumError):
    kind = "podium/config-error"


class PKIError(PodiumError):
    kind = "podium.pki/error"


class StoreError(PodiumError):
    kind = "podium.store/error"
    status = 503
