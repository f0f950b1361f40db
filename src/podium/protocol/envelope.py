"""PCP v2 envelopes: one JSON object per WebSocket message.

``{"id", "message_type", "sender", "target", "in_reply_to", "data"}``; URIs are
``pcp://<certname>/<client type>``, ``pcp:///server`` is the broker itself and
``pcp://*/<type>`` every client of a type. Parsing is strict: unknown fields, wrong
types and oversized messages are :class:`~podium.errors.ProtocolError`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import orjson

from podium.errors import ProtocolError

BROKER_URI = "pcp:///server"
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
# Bytes to leave for the envelope around a message's data when sizing the data.
ENVELOPE_ROOM = 4096

_FIELDS = frozenset({"id", "message_type", "sender", "target", "in_reply_to", "data"})
_REQUIRED = ("id", "message_type", "sender", "target")
_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_MESSAGE_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_URI = re.compile(r"pcp://(\*|[a-z0-9](?:[a-z0-9._-]{0,251}[a-z0-9])?)?/([a-z][a-z0-9_-]{0,31})\Z")


@dataclass(frozen=True, slots=True)
class Envelope:
    """One PCP message."""

    id: str
    message_type: str
    sender: str
    target: str
    data: Any = None
    in_reply_to: str | None = None

    def reply(self, message_type: str, data: Any, *, sender: str | None = None) -> Envelope:
        """A message answering this one, addressed to its sender."""
        return Envelope(
            id=new_id(),
            message_type=message_type,
            sender=sender or self.target,
            target=self.sender,
            data=data,
            in_reply_to=self.id,
        )


def new_id() -> str:
    """A random message id (128 bits, hex): cheaper to make than a formatted UUID."""
    return os.urandom(16).hex()


def make_uri(certname: str, client_type: str) -> str:
    return f"pcp://{certname}/{client_type}"


def split_uri(uri: str) -> tuple[str, str]:
    """``pcp://cn/type`` → ``("cn", "type")``; the broker's own URI gives ``("", "server")``."""
    match = _URI.match(uri)
    if match is None or ".." in uri:
        raise ProtocolError(
            f"invalid PCP URI {uri!r}: expected pcp://<certname>/<type>", details={"uri": uri}
        )
    return match.group(1) or "", match.group(2)


def parse(raw: bytes | str, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Envelope:
    """Decode and validate one envelope."""
    size = len(raw)
    if size > max_bytes:
        raise ProtocolError(
            f"message of {size} bytes exceeds the limit of {max_bytes} bytes",
            kind="podium.protocol/message-too-large",
            details={"size": size, "limit": max_bytes},
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"message is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("message must be a JSON object (a PCP envelope)")
    extra = obj.keys() - _FIELDS
    if extra:
        raise ProtocolError(
            f"unknown envelope field(s): {', '.join(sorted(extra))}",
            details={"fields": sorted(extra)},
        )
    for name in _REQUIRED:
        if not isinstance(obj.get(name), str):
            raise ProtocolError(f"envelope field {name!r} is missing or not a string")
    if not _MESSAGE_ID.match(obj["id"]):
        raise ProtocolError(f"invalid message id {obj['id']!r}")
    if not _MESSAGE_TYPE.match(obj["message_type"]):
        raise ProtocolError(f"invalid message_type {obj['message_type']!r}")
    split_uri(obj["sender"])
    split_uri(obj["target"])
    in_reply_to = obj.get("in_reply_to")
    if in_reply_to is not None and (
        not isinstance(in_reply_to, str) or not _MESSAGE_ID.match(in_reply_to)
    ):
        raise ProtocolError(f"invalid in_reply_to {in_reply_to!r}")
    return Envelope(
        id=obj["id"],
        message_type=obj["message_type"],
        sender=obj["sender"],
        target=obj["target"],
        data=obj.get("data"),
        in_reply_to=in_reply_to,
    )


def serialize(envelope: Envelope) -> bytes:
    obj: dict[str, Any] = {
        "id": envelope.id,
        "message_type": envelope.message_type,
        "sender": envelope.sender,
        "target": envelope.target,
    }
    if envelope.in_reply_to is not None:
        obj["in_reply_to"] = envelope.in_reply_to
    if envelope.data is not None:
        obj["data"] = envelope.data
    return orjson.dumps(obj)
