"""The messages carried in PCP envelopes: the broker's own and PXP v1's.

Each message type has a frozen dataclass; :func:`decode` checks an envelope's ``data``
strictly (required fields, types, no unknown fields, validated names) and
:func:`encode` builds an envelope from a message. Podium's additions to PXP are
``rpc_result_ack`` (the controller has stored a final result; the agent may forget it)
``facts_update`` (an agent's facts, sent on connect) and ``task_output`` (a running
task's output so far, in bounded chunks, so that operators see it live).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

from podium.errors import ProtocolError
from podium.protocol.envelope import Envelope, new_id
from podium.protocol.names import validate_module, validate_transaction_id

ChangeKind = Literal["connected", "disconnected"]


@dataclass(frozen=True, slots=True)
class Message:
    message_type: ClassVar[str]


# -- broker messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InventoryRequest(Message):
    message_type = "inventory_request"
    query: list[str]
    subscribe: bool = False


@dataclass(frozen=True, slots=True)
class InventoryResponse(Message):
    message_type = "inventory_response"
    uris: list[str]


@dataclass(frozen=True, slots=True)
class InventoryUpdate(Message):
    message_type = "inventory_update"
    changes: list[dict[str, str]]  # {"client": uri, "change": "connected" | "disconnected"}


@dataclass(frozen=True, slots=True)
class Error(Message):
    message_type = "error"
    description: str
    id: str | None = None  # the id of the message that caused it


# -- PXP --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NonBlockingRequest(Message):
    message_type = "rpc_non_blocking_request"
    transaction_id: str
    module: str
    action: str
    params: dict[str, Any]
    notify_outcome: bool = True


@dataclass(frozen=True, slots=True)
class BlockingRequest(Message):
    message_type = "rpc_blocking_request"
    transaction_id: str
    module: str
    action: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProvisionalResponse(Message):
    message_type = "rpc_provisional_response"
    transaction_id: str


@dataclass(frozen=True, slots=True)
class NonBlockingResponse(Message):
    message_type = "rpc_non_blocking_response"
    transaction_id: str
    results: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BlockingResponse(Message):
    message_type = "rpc_blocking_response"
    transaction_id: str
    results: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RpcError(Message):
    message_type = "rpc_error_message"
    transaction_id: str
    description: str


@dataclass(frozen=True, slots=True)
class ResultAck(Message):
    message_type = "rpc_result_ack"
    transaction_id: str


@dataclass(frozen=True, slots=True)
class FactsUpdate(Message):
    message_type = "facts_update"
    facts: dict[str, Any]
    # What the agent can run (shell, powershell, python, puppet-agent): the server
    # picks a task's implementation by it.
    features: list[str] | None = None


@dataclass(frozen=True, slots=True)
class TaskOutput(Message):
    """A chunk of a running task's stdout or stderr; ``offset`` is how many bytes of that
    stream came before it (so a receiver sees gaps and repeats). Best effort: chunks are
    not spooled and never re-sent; the final result carries the whole (capped) output."""

    message_type = "task_output"
    transaction_id: str
    stream: str  # "stdout" | "stderr"
    offset: int
    data: str


OUTPUT_STREAMS = frozenset({"stdout", "stderr"})
MAX_OUTPUT_CHUNK = 16 * 1024  # characters of one task_output's data

Request = NonBlockingRequest | BlockingRequest
REQUEST_TYPES = frozenset({NonBlockingRequest.message_type, BlockingRequest.message_type})
# Only controllers may send these to agents.
CONTROLLER_ONLY = REQUEST_TYPES | {ResultAck.message_type}

_CLASSES: dict[str, type[Message]] = {
    cls.message_type: cls
    for cls in (
        InventoryRequest,
        InventoryResponse,
        InventoryUpdate,
        Error,
        NonBlockingRequest,
        BlockingRequest,
        ProvisionalResponse,
        NonBlockingResponse,
        BlockingResponse,
        RpcError,
        ResultAck,
        FactsUpdate,
        TaskOutput,
    )
}
MESSAGE_TYPES = frozenset(_CLASSES)

_TYPE_CHECKS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "str": (str, "a string"),
    "int": (int, "a whole number"),
    "bool": (bool, "true or false"),
    "dict[str, Any]": (dict, "an object"),
    "list[str]": (list, "a list of strings"),
    "list[str] | None": ((list, type(None)), "a list of strings or null"),
    "list[dict[str, str]]": (list, "a list of objects"),
    "str | None": ((str, type(None)), "a string or null"),
}


def _check_field(message_type: str, name: str, annotation: str, value: Any) -> None:
    expected, words = _TYPE_CHECKS[annotation]
    items: Any = value
    if (
        not isinstance(value, expected)
        or (annotation == "str" and len(items) > 65536)
        or (annotation == "int" and (isinstance(value, bool) or not 0 <= items < 2**53))
    ):
        raise ProtocolError(
            f"{message_type}: field {name!r} must be {words}",
            details={"message_type": message_type, "field": name},
        )
    if (
        annotation.startswith("list[str]")
        and value is not None
        and not all(isinstance(v, str) for v in items)
    ):
        raise ProtocolError(f"{message_type}: field {name!r} must be {words}")
    if annotation == "list[dict[str, str]]" and not all(isinstance(v, dict) for v in items):
        raise ProtocolError(f"{message_type}: field {name!r} must be {words}")


@dataclass(frozen=True, slots=True)
class _Shape:
    """A message class's fields, worked out once."""

    annotations: dict[str, str]
    required: frozenset[str]
    names: tuple[str, ...]


def _shape(cls: type[Message]) -> _Shape:
    declared = fields(cls)
    return _Shape(
        annotations={f.name: str(f.type) for f in declared},
        required=frozenset(f.name for f in declared if f.default is f.default_factory),
        names=tuple(f.name for f in declared),
    )


_SHAPES: dict[type[Message], _Shape] = {cls: _shape(cls) for cls in _CLASSES.values()}


def decode(envelope: Envelope) -> Message:
    """The message in ``envelope``, validated; :class:`ProtocolError` if it is not one."""
    cls = _CLASSES.get(envelope.message_type)
    if cls is None:
        raise ProtocolError(
            f"unknown message_type {envelope.message_type!r}",
            kind="podium.protocol/unknown-message-type",
            details={"message_type": envelope.message_type},
        )
    data = envelope.data
    if not isinstance(data, dict):
        raise ProtocolError(f"{cls.message_type}: data must be a JSON object")
    shape = _SHAPES[cls]
    extra = data.keys() - shape.annotations.keys()
    if extra:
        raise ProtocolError(
            f"{cls.message_type}: unknown field(s) {', '.join(sorted(extra))}",
            details={"message_type": cls.message_type, "fields": sorted(extra)},
        )
    missing = shape.required - data.keys()
    if missing:
        name = min(missing)
        raise ProtocolError(
            f"{cls.message_type}: missing field {name!r}",
            details={"message_type": cls.message_type, "field": name},
        )
    for name, value in data.items():
        _check_field(cls.message_type, name, shape.annotations[name], value)
    if "transaction_id" in data:
        validate_transaction_id(data["transaction_id"])
    if "module" in data:
        validate_module(data["module"])
        validate_module(data["action"], "action")
    if cls is TaskOutput:
        if data["stream"] not in OUTPUT_STREAMS:
            raise ProtocolError('task_output: field \'stream\' must be "stdout" or "stderr"')
        if len(data["data"]) > MAX_OUTPUT_CHUNK:
            raise ProtocolError(
                f"task_output: field 'data' holds more than {MAX_OUTPUT_CHUNK} characters"
            )
    return cls(**data)


def to_data(message: Message) -> dict[str, Any]:
    return {name: getattr(message, name) for name in _SHAPES[type(message)].names}


def encode(
    message: Message,
    *,
    sender: str,
    target: str,
    in_reply_to: str | None = None,
    id: str | None = None,
) -> Envelope:
    return Envelope(
        id=id or new_id(),
        message_type=message.message_type,
        sender=sender,
        target=target,
        data=to_data(message),
        in_reply_to=in_reply_to,
    )
