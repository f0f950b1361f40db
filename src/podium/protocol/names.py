"""Validation of names that travel in messages and later become paths or lookups."""

from __future__ import annotations

import re

from podium.errors import ProtocolError, ValidationError
from podium.ids import Certname, TransactionId

# Transaction ids name spool directories on the agent: a closed alphabet, no dots.
_TRANSACTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
# PXP module and action names, e.g. "task", "status", "pxp-module-puppet", "run".
_MODULE = re.compile(r"[a-z][a-z0-9_-]{0,63}\Z")
_CERTNAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,251}[a-z0-9])?")
CERTNAME_RULE = (
    "a certname is 1 to 253 characters of lowercase letters, digits, '.', '_' and '-', "
    "starts and ends with a letter or digit, and has no '..'"
)
_CLIENT_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")


def validate_transaction_id(value: object) -> TransactionId:
    if not isinstance(value, str) or not _TRANSACTION_ID.match(value):
        raise ProtocolError(
            f"invalid transaction_id {value!r}: use 1-64 letters, digits, '-' or '_'",
            details={"field": "transaction_id"},
        )
    return TransactionId(value)


def validate_module(value: object, field: str = "module") -> str:
    if not isinstance(value, str) or not _MODULE.match(value):
        raise ProtocolError(
            f"invalid {field} {value!r}: use lowercase letters, digits, '-' or '_'",
            details={"field": field},
        )
    return value


def is_certname(value: str) -> bool:
    # fullmatch, not match with "$": "$" would let a trailing newline through.
    return bool(_CERTNAME.fullmatch(value)) and ".." not in value


def validate_certname(value: object, field: str = "certname") -> Certname:
    """``value`` if it is a valid certname, else :class:`ValidationError`.

    Certnames become file names in the CA directory and the agent's spool, so this is
    also what keeps a peer from naming a path outside them.
    """
    if not isinstance(value, str) or not is_certname(value):
        raise ValidationError(f"invalid {field} {value!r}: {CERTNAME_RULE}", details={field: value})
    return Certname(value)


def validate_client_type(value: object) -> str:
    if not isinstance(value, str) or not _CLIENT_TYPE.match(value):
        raise ProtocolError(f"invalid client type {value!r}", details={"field": "type"})
    return value
