"""Identifiers shared across components."""

from __future__ import annotations

from typing import Any, NewType

Certname = NewType("Certname", str)
TransactionId = NewType("TransactionId", str)
JobId = NewType("JobId", int)
MessageId = NewType("MessageId", str)

JSONObject = dict[str, Any]
