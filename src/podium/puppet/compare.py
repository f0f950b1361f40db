"""What Puppet is doing on many nodes, and the live state of a resource on them, grouped
so that a node that differs stands out (pure).

Nodes answer ``puppet/status`` (``puppet/enable`` and ``puppet/disable`` answer the
status after them) with their agent's lock state and last run summary, and
``puppet/resource`` with resources as ``puppet resource`` reads them. Those answers are
untrusted: each is checked (:func:`parse_status`, :func:`parse_resources`; a
:class:`~podium.errors.ProtocolError` says what is wrong) before it is grouped.

- :func:`status_groups`: nodes by state: disabled (by the reason given), running, idle
  (by the status of the last run; never run is an idle node without one).
- :func:`resource_groups`: nodes whose resources are identical (the same canonical JSON
  of their types, titles and parameters), largest group first, every later group with
  its :func:`differences` from the first.
- :func:`reason_groups`: the nodes that gave no usable answer, by reason.

Groups partition the nodes they are given: every node is in exactly one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from podium.errors import ProtocolError

RUN_STATUSES: Final = ("failed", "changed", "unchanged")  # Puppet's report statuses
MAX_MESSAGE: Final = 1000  # characters of a disabled agent's reason that are kept
# Parameters whose value is a secret (a user's password hash): shown and compared by a
# fingerprint of the value, never the value.
SENSITIVE_PARAMETERS: Final = frozenset({"password"})
# Parameters that differ between nodes whose resources are the same (when a file was
# written is not what it holds): left out, or no two nodes would ever be alike.
VOLATILE_PARAMETERS: Final = {"file": frozenset({"ctime", "mtime"})}
_INVALID = "podium.puppet/invalid-answer"
_MAX_DEPTH = 64

State = Literal["disabled", "running", "idle"]


# -- puppet/status ---------------------------------------------------------------------


@dataclass(frozen=True)
class LastRun:
    """The summary of a node's last Puppet run (its ``last_run_summary.yaml``)."""

    status: str  # one of RUN_STATUSES: Puppet's, or read from the counts
    time: str | None = None  # ISO 8601
    config_version: str | None = None
    duration: float | None = None  # seconds
    resources: dict[str, float] = field(default_factory=dict)  # total, changed, failed...
    events: dict[str, float] = field(default_factory=dict)  # failure, success, total
    changes: dict[str, float] = field(default_factory=dict)  # total

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "status": self.status,
            "config_version": self.config_version,
            "resources": dict(self.resources),
            "events": dict(self.events),
            "changes": dict(self.changes),
            "duration": self.duration,
        }


@dataclass(frozen=True)
class PuppetStatus:
    """A node's Puppet: enabled or disabled (and why), running now, its last run."""

    enabled: bool
    running: bool = False
    disabled_message: str | None = None  # only when disabled
    last_run: LastRun | None = None  # None: Puppet never ran there
    since_last_run: float | None = None  # seconds

    @property
    def state(self) -> State:
        if not self.enabled:
            return "disabled"
        return "running" if self.running else "idle"

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "disabled_message": self.disabled_message,
            "running": self.running,
            "last_run": self.last_run.to_dict() if self.last_run is not None else None,
            "since_last_run": self.since_last_run,
        }


def parse_status(results: object) -> PuppetStatus:
    """A node's ``puppet/status`` answer, checked; keys this version does not know are
    ignored (a newer agent may say more)."""
    data = _object(results, "the answer")
    enabled = _bool(data.get("enabled"), "enabled")
    running = _bool(data.get("running", False), "running")
    message = _optional_text(data.get("disabled_message"), "disabled_message")
    if not message:
        message = None  # "no reason given", however the node says it
    elif len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    raw_run = data.get("last_run")
    return PuppetStatus(
        enabled=enabled,
        running=running,
        disabled_message=None if enabled else message,
        last_run=None if raw_run is None else _last_run(raw_run),
        since_last_run=_optional_number(data.get("since_last_run"), "since_last_run"),
    )


def _last_run(raw: object) -> LastRun:
    data = _object(raw, "last_run")
    resources = _counts(data.get("resources"), "last_run.resources")
    events = _counts(data.get("events"), "last_run.events")
    changes = _counts(data.get("changes"), "last_run.changes")
    status = data.get("status")
    if status is None:
        status = _status_from_counts(resources, events, changes)
    elif status not in RUN_STATUSES:
        raise _invalid(
            f"last_run.status is {_shown(status)}; it must be one of {', '.join(RUN_STATUSES)}"
        )
    version = data.get("config_version")
    if isinstance(version, bool) or not isinstance(version, str | int | float | None):
        raise _invalid("last_run.config_version must be text or a number")
    time = _optional_text(data.get("time"), "last_run.time")
    return LastRun(
        status=status,
        time=time[:64] if time is not None else None,
        config_version=None if version is None else str(version)[:256],
        duration=_optional_number(data.get("duration"), "last_run.duration"),
        resources=resources,
        events=events,
        changes=changes,
    )


def _status_from_counts(
    resources: Mapping[str, float], events: Mapping[str, float], changes: Mapping[str, float]
) -> str:
    """A run's status from its summary's counts, for summaries that do not say it
    (Puppet 7's ``last_run_summary.yaml`` does not)."""
    if resources.get("failed") or resources.get("failed_to_restart") or events.get("failure"):
        return "failed"
    if resources.get("changed") or changes.get("total"):
        return "changed"
    return "unchanged"


@dataclass(frozen=True)
class StatusGroup:
    """Nodes in the same state: ``detail`` is the reason a disabled agent gives (None:
    none given) or the status of an idle node's last run (None: it never ran)."""

    state: State
    detail: str | None
    nodes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.state == "disabled":
            out["message"] = self.detail
        elif self.state == "idle":
            out["last_run"] = self.detail
        out["nodes"] = list(self.nodes)
        return out


_STATE_ORDER: Final = ("disabled", "running", "idle")
_RUN_ORDER: Final = (*RUN_STATUSES, None)  # problems first, never run last


def status_key(status: PuppetStatus) -> tuple[State, str | None]:
    """What puts two nodes in the same group."""
    if status.state == "disabled":
        return "disabled", status.disabled_message
    if status.state == "running":
        return "running", None
    return "idle", status.last_run.status if status.last_run is not None else None


def status_groups(statuses: Mapping[str, PuppetStatus]) -> list[StatusGroup]:
    """The nodes by state: disabled, running, then idle by their last run (failed,
    changed, unchanged, never run); larger groups first within a state, then those
    with a reason before those without. Nodes keep the order they are given in."""
    members: dict[tuple[State, str | None], list[str]] = {}
    for certname, status in statuses.items():
        members.setdefault(status_key(status), []).append(certname)

    def order(
        item: tuple[tuple[State, str | None], list[str]],
    ) -> tuple[int, int, int, bool, str]:
        (state, detail), nodes = item
        run = _RUN_ORDER.index(detail) if state == "idle" else 0
        return _STATE_ORDER.index(state), run, -len(nodes), detail is None, detail or ""

    return [
        StatusGroup(state, detail, tuple(nodes))
        for (state, detail), nodes in sorted(members.items(), key=order)
    ]


# -- puppet/resource -------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """A resource as ``puppet resource`` reads it on a node."""

    type: str
    title: str
    parameters: dict[str, Any]

    @property
    def ref(self) -> str:
        """Puppet's reference: ``File[/etc/motd]``, ``Apt::Source[debian]``."""
        name = "::".join(part.capitalize() for part in self.type.split("::"))
        return f"{name}[{self.title}]"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "title": self.title, "parameters": dict(self.parameters)}


def parse_resources(results: object) -> tuple[Resource, ...]:
    """A node's ``puppet/resource`` answer, checked, sorted by type and title, without
    :data:`VOLATILE_PARAMETERS` and with :data:`SENSITIVE_PARAMETERS` replaced by a
    fingerprint of their value."""
    data = _object(results, "the answer")
    items = data.get("resources")
    if not isinstance(items, list):
        raise _invalid("the answer has no resources list")
    found: dict[tuple[str, str], Resource] = {}
    for index, item in enumerate(items):
        where = f"resources[{index}]"
        entry = _object(item, where)
        kind, title = entry.get("type"), entry.get("title")
        if not isinstance(kind, str) or not kind:
            raise _invalid(f"{where}.type must be a resource type's name")
        if not isinstance(title, str):
            raise _invalid(f"{where}.title must be text")
        parameters = _object(entry.get("parameters"), f"{where}.parameters")
        _check_json(parameters, f"{where}.parameters", 0)
        key = (kind, title)
        if key in found:
            raise _invalid(f"the answer names {kind} {_shown(title)} twice")
        found[key] = Resource(kind, title, _redacted(kind, parameters))
    return tuple(found[k] for k in sorted(found))


def fingerprint(value: Any) -> str:
    """What a sensitive value is shown as: enough to tell two values apart, nothing of
    the value itself. A fingerprint stays as it is (redacting twice changes nothing)."""
    if isinstance(value, str) and _FINGERPRINT.fullmatch(value):
        return value
    digest = hashlib.sha256(canonical(value).encode()).hexdigest()
    return f"(sensitive: sha256 {digest[:16]})"


_FINGERPRINT: Final = re.compile(r"\(sensitive: sha256 [0-9a-f]{16}\)")


def _redacted(kind: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    volatile = VOLATILE_PARAMETERS.get(kind, frozenset())
    return {
        name: fingerprint(value) if name in SENSITIVE_PARAMETERS else value
        for name, value in parameters.items()
        if name not in volatile
    }


def canonical(value: Any) -> str:
    """One text per JSON value: keys sorted, no spaces, ``1`` and ``1.0`` and ``true``
    told apart (Python's ``==`` would not)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def state_of(resources: Sequence[Resource]) -> str:
    """The canonical JSON of a node's resources: what makes two nodes' state identical."""
    ordered = sorted(resources, key=lambda r: (r.type, r.title))
    return canonical([r.to_dict() for r in ordered])


@dataclass(frozen=True)
class Difference:
    """How a group's resource differs from the first group's (the reference): a
    parameter's value, or a resource or parameter only one side has (``missing`` says
    which side lacks it; ``parameter`` None: the whole resource)."""

    type: str
    title: str
    parameter: str | None
    reference: Any = None
    value: Any = None
    missing: Literal["reference", "value"] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "title": self.title,
            "parameter": self.parameter,
            "reference": self.reference,
            "value": self.value,
            "missing": self.missing,
        }


def differences(reference: Sequence[Resource], other: Sequence[Resource]) -> list[Difference]:
    """What ``other`` has that ``reference`` has not, or otherwise; empty exactly when
    both have the same :func:`state_of`."""
    ours = {(r.type, r.title): r for r in reference}
    theirs = {(r.type, r.title): r for r in other}
    out: list[Difference] = []
    for key in sorted(ours.keys() | theirs.keys()):
        kind, title = key
        mine, yours = ours.get(key), theirs.get(key)
        if yours is None:
            assert mine is not None
            out.append(Difference(kind, title, None, reference=mine.parameters, missing="value"))
            continue
        if mine is None:
            out.append(Difference(kind, title, None, value=yours.parameters, missing="reference"))
            continue
        for name in sorted(mine.parameters.keys() | yours.parameters.keys()):
            if name not in yours.parameters:
                out.append(
                    Difference(kind, title, name, reference=mine.parameters[name], missing="value")
                )
            elif name not in mine.parameters:
                out.append(
                    Difference(kind, title, name, value=yours.parameters[name], missing="reference")
                )
            elif canonical(mine.parameters[name]) != canonical(yours.parameters[name]):
                out.append(
                    Difference(
                        kind,
                        title,
                        name,
                        reference=mine.parameters[name],
                        value=yours.parameters[name],
                    )
                )
    return out


@dataclass(frozen=True)
class ResourceGroup:
    """Nodes whose resources are identical; ``digest`` is the SHA-256 of their
    :func:`state_of`, ``differences`` those from the first group (none for it)."""

    nodes: tuple[str, ...]
    resources: tuple[Resource, ...]
    digest: str
    differences: tuple[Difference, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": list(self.nodes),
            "digest": self.digest,
            "resources": [r.to_dict() for r in self.resources],
            "differences": [d.to_dict() for d in self.differences],
        }


def resource_groups(states: Mapping[str, Sequence[Resource]]) -> list[ResourceGroup]:
    """The nodes by identical resource state, largest group first (among equals, the
    one whose first node comes first); nodes keep the order they are given in."""
    members: dict[str, list[str]] = {}
    resources: dict[str, tuple[Resource, ...]] = {}
    for certname, found in states.items():
        state = state_of(found)
        members.setdefault(state, []).append(certname)
        resources.setdefault(state, tuple(sorted(found, key=lambda r: (r.type, r.title))))
    ordered = sorted(members, key=lambda s: -len(members[s]))  # stable: first seen first
    groups: list[ResourceGroup] = []
    for state in ordered:
        digest = hashlib.sha256(state.encode()).hexdigest()
        diff = differences(groups[0].resources, resources[state]) if groups else []
        groups.append(ResourceGroup(tuple(members[state]), resources[state], digest, tuple(diff)))
    return groups


# -- nodes without an answer -----------------------------------------------------------


def reason_groups(reasons: Mapping[str, str]) -> list[tuple[str, tuple[str, ...]]]:
    """The nodes that gave no usable answer, by reason, most nodes first."""
    members: dict[str, list[str]] = {}
    for certname, reason in reasons.items():
        members.setdefault(reason, []).append(certname)
    ordered = sorted(members, key=lambda r: -len(members[r]))
    return [(reason, tuple(members[reason])) for reason in ordered]


# -- checks ----------------------------------------------------------------------------


def _invalid(text: str) -> ProtocolError:
    return ProtocolError(f"the node's answer is not valid: {text}", kind=_INVALID)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _invalid(f"{where} must be an object")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(f"{where} must be true or false, not {_shown(value)}")
    return value


def _optional_text(value: object, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _invalid(f"{where} must be text, not {_shown(value)}")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _optional_number(value: object, where: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise _invalid(f"{where} must be a number, not {_shown(value)}")
    assert isinstance(value, int | float)
    return value


def _counts(value: object, where: str) -> dict[str, float]:
    if value is None:
        return {}
    data = _object(value, where)
    for name, count in data.items():
        if not _is_number(count):
            raise _invalid(f"{where}.{name} must be a number, not {_shown(count)}")
    return dict(data)


def _check_json(value: object, where: str, depth: int) -> None:
    """Only what JSON holds, finite numbers, not nested without end."""
    if depth > _MAX_DEPTH:
        raise _invalid(f"{where} is nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _invalid(f"{where} has a key that is not text")
            _check_json(item, where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, where, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _invalid(f"{where} holds {value}, which JSON has not")
    elif not isinstance(value, str | int | float | bool | None):
        raise _invalid(f"{where} holds a {type(value).__name__}, which JSON has not")
