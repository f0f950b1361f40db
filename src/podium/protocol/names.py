"""Validation of names that travel in messages and later become paths or lookups."""

from __future__ import annotations

import re

from podium.errors import ProtocolError
from podium.types import Certname, TransactionId

# Transaction ids name spool directories on the agent: a closed alphabet, no dots.
_TRANSACTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
# PXP module and action names, e.g. "task", "status", "pxp-module-puppet", "run".
_MODULE = re.compile(r"[a-z][a-z0-9_-]{0,63}\Z")
_CERTNAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,251}[a-z0-9])?\Z")
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
    return bool(_CERTNAME.match(value)) and ".." not in value


def validate_certname(value: object, field: str = "certname") -> Certname:
    if not isinstance(value, str) or not is_certname(value):
        raise ProtocolError(
            f"invalid {field} {value!r}: certnames are lowercase letters, digits, '.', '-', '_'",
            details={"field": field},
        )
    return Certname(value)


def validate_client_type(value: object) -> str:
    if not isinstance(value, str) or not _CLIENT_TYPE.match(value):
        raise ProtocolError(f"invalid client type {value!r}", details={"field": "type"})
    return value
