"""Puppet's run reports and catalogs as PuppetDB's commands carry them, checked (pure).

    report = parse_report(payload)              # "store report", wire format v8 (v5..v7 too)
    catalog = parse_catalog(payload)            # "replace catalog", wire format v9 (v8 too)

A payload is untrusted: every field is checked against PuppetDB's wire format and any
problem is a :class:`~podium.errors.ValidationError` that names the field
(``resources[2].events[0].timestamp``) and says what it should be. What comes out is
frozen and ready to store: times in UTC to the millisecond, a report's resource events
flattened as PuppetDB's ``events`` entity has them (a skipped resource is one
``skipped`` event, an unchanged one none), a catalog's edges checked against its
resources, and each record's SHA-1 ``hash`` of its canonical JSON.

Text is stored as given, except that NUL characters and lone surrogates (which neither
PostgreSQL nor UTF-8 can hold) become U+FFFD, as PuppetDB does for event values.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from podium.errors import ValidationError
from podium.protocol.names import validate_certname

REPORT_VERSIONS: Final = (5, 6, 7, 8)
CATALOG_VERSIONS: Final = (8, 9)
RELATIONSHIPS: Final = ("contains", "before", "required-by", "notifies", "subscription-of")
REPORT_TYPES: Final = ("agent", "plan")

# Limits
MAX_NAME: Final = 255  # environments, statuses, uuids, versions...: what their columns hold
MAX_ITEMS: Final = 200_000  # resources, events, logs, metrics, edges in one payload
MAX_DEPTH: Final = 64  # nesting of a resource parameter's value
# A type and title together: PostgreSQL indexes catalog resources by them, and an index
# entry holds at most 2,704 bytes (PuppetDB has the same limit).
MAX_TYPE_TITLE_BYTES: Final = 2_400
_INT32: Final = 2**31
_INT64: Final = 2**63


@dataclass(frozen=True, slots=True)
class Metric:
    """One of a report's metrics: ``resources``/``changed`` = 2."""

    category: str
    name: str
    value: int | float


@dataclass(frozen=True, slots=True)
class Log:
    """One log line of a run; ``time`` as the agent wrote it (checked to be a time)."""

    file: str | None
    line: int | None
    level: str
    message: str
    source: str
    tags: tuple[str, ...]
    time: str


@dataclass(frozen=True, slots=True)
class Event:
    """One resource event, with its resource's fields (PuppetDB's ``events`` entity)."""

    resource_type: str
    resource_title: str
    status: str | None  # success, failure, noop, skipped
    timestamp: datetime
    property: str | None
    name: str | None
    old_value: str | None  # a string, or the JSON text of any other value
    new_value: str | None
    message: str | None
    file: str | None
    line: int | None
    containment_path: tuple[str, ...] | None
    containing_class: str | None
    corrective_change: bool | None


@dataclass(frozen=True)
class Report:
    """A Puppet run's report ("store report")."""

    certname: str
    environment: str
    puppet_version: str
    report_format: int
    configuration_version: str
    start_time: datetime
    end_time: datetime
    producer_timestamp: datetime
    producer: str | None
    transaction_uuid: str | None
    catalog_uuid: str | None
    code_id: str | None
    job_id: str | None
    cached_catalog_status: str | None
    status: str | None
    noop: bool | None
    noop_pending: bool | None
    corrective_change: bool | None
    type: str  # agent | plan
    metrics: tuple[Metric, ...]
    logs: tuple[Log, ...]
    events: tuple[Event, ...]
    hash: str  # SHA-1 of the report's canonical JSON: the same report, the same hash


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource of a catalog; ``parameters`` is a JSON object."""

    type: str
    title: str
    exported: bool
    file: str | None
    line: int | None
    tags: tuple[str, ...]
    parameters: Mapping[str, Any]
    resource: str  # SHA-1 of type, title and parameters (PuppetDB's resource hash)


@dataclass(frozen=True, slots=True)
class Edge:
    """A relationship: the source is managed before the target."""

    source_type: str
    source_title: str
    target_type: str
    target_title: str
    relationship: str


@dataclass(frozen=True)
class Catalog:
    """A node's compiled catalog ("replace catalog")."""

    certname: str
    version: str
    environment: str | None
    transaction_uuid: str | None
    catalog_uuid: str | None
    code_id: str | None
    job_id: str | None
    producer_timestamp: datetime
    producer: str | None
    resources: tuple[Resource, ...]
    edges: tuple[Edge, ...]
    hash: str  # SHA-1 of the resources and edges: unchanged ones are not rewritten


# Reports


def parse_report(payload: object, *, version: int = 8) -> Report:
    """The report in a "store report" payload of wire format ``version`` (5 to 8)."""
    if isinstance(version, bool) or version not in REPORT_VERSIONS:
        raise ValidationError(
            f"report wire format version {version!r} is not supported; versions: "
            f"{', '.join(map(str, REPORT_VERSIONS))}",
            details={"field": "version"},
        )
    doc = _Object(payload, "", "the report")
    certname = str(validate_certname(doc.get("certname", required=True), "certname"))
    if version >= 6:
        events = [
            event
            for index, item in enumerate(doc.items("resources"))
            for event in _resource_events(_Object(item, f"resources[{index}]", "a resource"))
        ]
    else:
        events = [
            _flat_event(_Object(item, f"resource_events[{index}]", "a resource event"))
            for index, item in enumerate(doc.items("resource_events"))
        ]
    kind = doc.text("type", required=False) or "agent"
    if kind not in REPORT_TYPES:
        raise doc.error("type", f"is agent or plan, not {kind!r}")
    report = Report(
        certname=certname,
        environment=doc.name("environment", required=True),
        puppet_version=doc.name("puppet_version", required=True),
        report_format=doc.integer("report_format", required=True),
        configuration_version=doc.text("configuration_version", required=True),
        start_time=doc.time("start_time"),
        end_time=doc.time("end_time"),
        producer_timestamp=doc.time("producer_timestamp"),
        producer=doc.name("producer"),
        transaction_uuid=doc.name("transaction_uuid"),
        catalog_uuid=doc.name("catalog_uuid" if version >= 7 else "transaction_uuid"),
        code_id=doc.text("code_id"),
        job_id=doc.name("job_id"),
        cached_catalog_status=doc.name("cached_catalog_status"),
        status=doc.name("status"),
        noop=doc.flag("noop"),
        noop_pending=doc.flag("noop_pending"),
        corrective_change=doc.flag("corrective_change"),
        type=kind,
        metrics=tuple(
            _metric(_Object(item, f"metrics[{index}]", "a metric"))
            for index, item in enumerate(doc.items("metrics", nullable=True))
        ),
        logs=tuple(
            _log(_Object(item, f"logs[{index}]", "a log entry"))
            for index, item in enumerate(doc.items("logs", nullable=True))
        ),
        events=tuple(events),
        hash="",
    )
    return _with_hash(report)


def _resource_events(resource: _Object) -> Iterator[Event]:
    """A resource status's events (v6 and later), each with the resource's fields."""
    common = {
        "resource_type": resource.type_name("resource_type"),
        "resource_title": resource.text("resource_title", required=True),
        "file": resource.text("file"),
        "line": resource.line("line"),
        "containment_path": resource.path("containment_path"),
    }
    timestamp = resource.time("timestamp")
    if resource.flag("skipped"):
        yield _event(common, status="skipped", timestamp=timestamp, corrective_change=False)
        return
    resource.flag("corrective_change")  # checked; PuppetDB keeps the events' own
    for index, item in enumerate(resource.items("events", nullable=True)):
        event = _Object(item, f"{resource.where}.events[{index}]", "an event")
        yield _event(
            common,
            status=event.name("status"),
            timestamp=event.time("timestamp"),
            property=event.text("property"),
            name=event.text("name"),
            old_value=event.json_text("old_value"),
            new_value=event.json_text("new_value"),
            message=event.text("message"),
            corrective_change=event.flag("corrective_change"),
        )


def _flat_event(event: _Object) -> Event:
    """A v5 resource event: the resource's fields and the event's in one object."""
    common = {
        "resource_type": event.type_name("resource_type"),
        "resource_title": event.text("resource_title", required=True),
        "file": event.text("file"),
        "line": event.line("line"),
        "containment_path": event.path("containment_path"),
    }
    return _event(
        common,
        status=event.name("status"),
        timestamp=event.time("timestamp"),
        property=event.text("property"),
        old_value=event.json_text("old_value"),
        new_value=event.json_text("new_value"),
        message=event.text("message"),
    )


def _event(common: dict[str, Any], **fields: Any) -> Event:
    values = {
        "property": None,
        "name": None,
        "old_value": None,
        "new_value": None,
        "message": None,
        "corrective_change": None,
        **common,
        **fields,
    }
    return Event(containing_class=containing_class(values["containment_path"]), **values)


def containing_class(path: Sequence[str] | None) -> str | None:
    """The innermost class of a containment path (PuppetDB's rule: the last element that
    is not empty and not a resource such as ``File[/tmp]``)."""
    for element in reversed(path or ()):
        if element and "[" not in element:
            return element
    return None


def _metric(metric: _Object) -> Metric:
    value = metric.get("value", required=True)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise metric.error("value", f"is a number, not {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise metric.error("value", "is a finite number")
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise metric.error("value", "is out of range (a 64-bit number)")
    return Metric(metric.name("category", required=True), metric.name("name", required=True), value)


def _log(log: _Object) -> Log:
    raw_time = log.get("time", required=True)
    log.time("time")  # a time, kept as written
    return Log(
        file=log.text("file"),
        line=log.line("line"),
        level=log.name("level", required=True),
        message=log.text("message", required=True),
        source=log.text("source", required=True),
        tags=tuple(log.strings("tags")),
        time=_clean(raw_time),
    )


def _with_hash(report: Report) -> Report:
    return replace(report, hash=_digest(report_document(report)))


def report_document(report: Report) -> dict[str, Any]:
    """The report as canonical JSON takes it (what its hash is of)."""
    return {
        "certname": report.certname,
        "environment": report.environment,
        "puppet_version": report.puppet_version,
        "report_format": report.report_format,
        "configuration_version": report.configuration_version,
        "start_time": iso(report.start_time),
        "end_time": iso(report.end_time),
        "producer_timestamp": iso(report.producer_timestamp),
        "producer": report.producer,
        "transaction_uuid": report.transaction_uuid,
        "catalog_uuid": report.catalog_uuid,
        "code_id": report.code_id,
        "job_id": report.job_id,
        "cached_catalog_status": report.cached_catalog_status,
        "status": report.status,
        "noop": report.noop,
        "noop_pending": report.noop_pending,
        "corrective_change": report.corrective_change,
        "type": report.type,
        "metrics": [metric_document(m) for m in report.metrics],
        "logs": [log_document(entry) for entry in report.logs],
        "events": [
            {
                "resource_type": e.resource_type,
                "resource_title": e.resource_title,
                "status": e.status,
                "timestamp": iso(e.timestamp),
                "property": e.property,
                "name": e.name,
                "old_value": e.old_value,
                "new_value": e.new_value,
                "message": e.message,
                "file": e.file,
                "line": e.line,
                "containment_path": e.containment_path,
                "corrective_change": e.corrective_change,
            }
            for e in report.events
        ],
    }


def metric_document(metric: Metric) -> dict[str, Any]:
    return {"category": metric.category, "name": metric.name, "value": metric.value}


def log_document(log: Log) -> dict[str, Any]:
    return {
        "file": log.file,
        "line": log.line,
        "level": log.level,
        "message": log.message,
        "source": log.source,
        "tags": list(log.tags),
        "time": log.time,
    }


# Catalogs


def parse_catalog(payload: object, *, version: int = 9) -> Catalog:
    """The catalog in a "replace catalog" payload of wire format ``version`` (8 or 9)."""
    if isinstance(version, bool) or version not in CATALOG_VERSIONS:
        raise ValidationError(
            f"catalog wire format version {version!r} is not supported; versions: "
            f"{', '.join(map(str, CATALOG_VERSIONS))}",
            details={"field": "version"},
        )
    doc = _Object(payload, "", "the catalog")
    certname = str(validate_certname(doc.get("certname", required=True), "certname"))
    resources: dict[tuple[str, str], Resource] = {}
    for index, item in enumerate(doc.items("resources")):
        resource = _resource(_Object(item, f"resources[{index}]", "a resource"))
        key = (resource.type, resource.title)
        if key in resources:
            raise doc.error(
                f"resources[{index}]", f"repeats {resource.type}[{resource.title}]: name it once"
            )
        resources[key] = resource
    edges: dict[Edge, None] = {}  # a set, in the catalog's order
    for index, item in enumerate(doc.items("edges")):
        edges.setdefault(_edge(_Object(item, f"edges[{index}]", "an edge"), resources), None)
    ordered = tuple(sorted(resources.values(), key=lambda r: (r.type, r.title)))
    links = tuple(edges)
    body = {
        "resources": [resource_document(r) for r in ordered],
        "edges": [edge_document(e) for e in sorted(links, key=_edge_key)],
    }
    return Catalog(
        certname=certname,
        version=doc.text("version", required=True, limit=MAX_NAME * 4),
        environment=doc.name("environment"),
        transaction_uuid=doc.name("transaction_uuid"),
        catalog_uuid=doc.name("catalog_uuid"),
        code_id=doc.text("code_id"),
        job_id=doc.name("job_id") if version >= 9 else None,
        producer_timestamp=doc.time("producer_timestamp"),
        producer=doc.name("producer") if version >= 9 else None,
        resources=ordered,
        edges=links,
        hash=_digest(body),
    )


def _resource(resource: _Object) -> Resource:
    kind = resource.type_name("type")
    title = resource.text("title", required=True)
    if len(kind.encode()) + len(title.encode()) > MAX_TYPE_TITLE_BYTES:
        raise resource.error(
            "title",
            f"of {kind} is too long: a type and title take at most {MAX_TYPE_TITLE_BYTES} "
            "bytes (PuppetDB's limit too); give the resource a shorter title",
        )
    raw = resource.get("parameters", required=False)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise resource.error("parameters", f"is a JSON object, not {_shown(raw)}")
    parameters = _json(raw, f"{resource.where}.parameters", 0)
    exported = resource.flag("exported")
    return Resource(
        type=kind,
        title=title,
        exported=bool(exported),
        file=resource.text("file"),
        line=resource.line("line"),
        tags=tuple(sorted({tag.lower() for tag in resource.strings("tags")})),
        parameters=parameters,
        resource=_digest({"type": kind, "title": title, "parameters": parameters}),
    )


def _edge(edge: _Object, resources: Mapping[tuple[str, str], Resource]) -> Edge:
    ends = []
    for end in ("source", "target"):
        spec = _Object(edge.get(end, required=True), f"{edge.where}.{end}", f"an edge's {end}")
        key = (spec.type_name("type"), spec.text("title", required=True))
        if key not in resources:
            raise edge.error(
                end, f"names {key[0]}[{key[1]}], which is not a resource of the catalog"
            )
        ends.append(key)
    relationship = edge.text("relationship", required=False) or "contains"
    if relationship not in RELATIONSHIPS:
        raise edge.error("relationship", f"is one of {', '.join(RELATIONSHIPS)}")
    (source_type, source_title), (target_type, target_title) = ends
    return Edge(source_type, source_title, target_type, target_title, relationship)


def _edge_key(edge: Edge) -> tuple[str, ...]:
    return (
        edge.source_type,
        edge.source_title,
        edge.relationship,
        edge.target_type,
        edge.target_title,
    )


def resource_document(resource: Resource) -> dict[str, Any]:
    return {
        "type": resource.type,
        "title": resource.title,
        "exported": resource.exported,
        "file": resource.file,
        "line": resource.line,
        "tags": list(resource.tags),
        "parameters": resource.parameters,
    }


def edge_document(edge: Edge) -> dict[str, Any]:
    return {
        "source_type": edge.source_type,
        "source_title": edge.source_title,
        "target_type": edge.target_type,
        "target_title": edge.target_title,
        "relationship": edge.relationship,
    }


# Fields


class _Object:
    """A JSON object of the payload at ``where``, read field by field."""

    def __init__(self, value: object, where: str, what: str) -> None:
        self.where = where
        if not isinstance(value, Mapping):
            raise ValidationError(
                f"{what}{' (' + where + ')' if where else ''} is a JSON object, not "
                f"{_shown(value)}",
                details={"field": where or "payload"},
            )
        self.data = value

    def path_of(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, problem: str) -> ValidationError:
        path = self.path_of(key)
        return ValidationError(f"{path} {problem}", details={"field": path})

    def get(self, key: str, *, required: bool) -> Any:
        value = self.data.get(key)
        if value is None and required:
            raise self.error(key, "is missing: PuppetDB's wire format requires it")
        return value

    def text(
        self, key: str, *, required: bool = False, limit: int | None = None
    ) -> Any:  # str, or None when not required
        value = self.get(key, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"is a string, not {_shown(value)}")
        if limit is not None and len(value) > limit:
            raise self.error(key, f"is longer than {limit} characters")
        return _clean(value)

    def name(self, key: str, *, required: bool = False) -> Any:  # str, or None
        return self.text(key, required=required, limit=MAX_NAME)

    def type_name(self, key: str) -> str:
        value: str = self.text(key, required=True)
        if not value:
            raise self.error(key, "is empty: name the resource's type, e.g. File")
        return value

    def flag(self, key: str) -> bool | None:
        value = self.get(key, required=False)
        if value is not None and not isinstance(value, bool):
            raise self.error(key, f"is true or false, not {_shown(value)}")
        return value

    def integer(self, key: str, *, required: bool = False) -> Any:  # int, or None
        value = self.get(key, required=required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"is an integer, not {_shown(value)}")
        if not 0 <= value < _INT32:
            raise self.error(key, f"is out of range (0 to {_INT32 - 1})")
        return value

    def line(self, key: str) -> int | None:
        value: int | None = self.integer(key)
        return value

    def time(self, key: str) -> datetime:
        return parse_time(self.get(key, required=True), self.path_of(key))

    def items(self, key: str, *, nullable: bool = False) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            if nullable:
                return []
            raise self.error(key, "is missing: PuppetDB's wire format requires it (maybe [])")
        if not isinstance(value, list | tuple):
            raise self.error(key, f"is an array, not {_shown(value)}")
        if len(value) > MAX_ITEMS:
            raise self.error(key, f"has more than {MAX_ITEMS} entries")
        return list(value)

    def strings(self, key: str) -> list[str]:
        out = []
        for index, item in enumerate(self.items(key, nullable=True)):
            if not isinstance(item, str):
                raise self.error(f"{key}[{index}]", f"is a string, not {_shown(item)}")
            out.append(_clean(item))
        return out

    def path(self, key: str) -> tuple[str, ...] | None:
        if self.data.get(key) is None:
            return None
        return tuple(self.strings(key))

    def json_text(self, key: str) -> str | None:
        """An event's old or new value: a string as it is, anything else as JSON."""
        raw = self.get(key, required=False)
        if raw is None or isinstance(raw, str):
            return None if raw is None else _clean(raw)
        checked = _json(raw, self.path_of(key), 0)
        return orjson.dumps(checked, option=orjson.OPT_SORT_KEYS).decode()


_ISO: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$"
)


def parse_time(value: object, where: str) -> datetime:
    """An ISO-8601 time in UTC to the millisecond; one without a zone is taken as UTC."""
    if isinstance(value, str) and _ISO.match(value):
        text = value.replace("Z", "+00:00")
        head, dot, rest = text.partition(".")
        if dot:  # more than microseconds (Ruby writes nanoseconds): cut to six digits
            digits = len(rest) - len(rest.lstrip("0123456789"))
            rest = rest[: min(digits, 6)].ljust(6, "0") + rest[digits:]
            text = f"{head}.{rest}"
        try:
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            parsed = parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            pass
        else:
            return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)
    raise ValidationError(
        f"{where} is a time in ISO-8601, such as 2026-03-01T12:00:00.000Z, not {_shown(value)}",
        details={"field": where},
    )


def iso(at: datetime) -> str:
    """A time as PuppetDB writes it: UTC, milliseconds, ``Z``."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _json(value: Any, where: str, depth: int) -> Any:
    """``value`` as JSON stores it: strings cleaned, integers of 64 bits, finite floats,
    objects with string keys, at most ``MAX_DEPTH`` levels deep."""
    if depth > MAX_DEPTH:
        raise ValidationError(
            f"{where} nests deeper than {MAX_DEPTH} levels", details={"field": where}
        )
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise ValidationError(
                f"{where} holds an integer out of range (64 bits)", details={"field": where}
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(
                f"{where} holds a number that is not finite", details={"field": where}
            )
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(
                    f"{where} has a key that is not a string: {_shown(key)}",
                    details={"field": where},
                )
            out[_clean(key)] = _json(item, f"{where}.{key}", depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_json(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise ValidationError(f"{where} is not JSON: {_shown(value)}", details={"field": where})


def _clean(text: str) -> str:
    """``text`` as the database can hold it: no NUL, no lone surrogate."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    return text


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _digest(document: Any) -> str:
    canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha1(canonical, usedforsecurity=False).hexdigest()


def _shown(value: object) -> str:
    """A short rendering of a bad value for a message."""
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:40] + "..."
        return repr(_clean(text))
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__
