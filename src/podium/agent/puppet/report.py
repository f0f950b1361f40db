"""Puppet's last-run report and run summary, read as plain data (pure).

Puppet writes its report (``--lastrunreport``) as YAML with Ruby tags
(``!ruby/object:Puppet::Transaction::Report``, ``...::Resource::Status``, ``!ruby/sym``);
they are read as the plain mappings, lists and strings they tag. From the report come:

- :func:`run_results`: the ``puppet``/``run`` results (status, metrics, events, logs, ...)
  with, under ``report``, the report in PuppetDB's ``store report`` v8 wire format
  (:func:`store_report`);
- :func:`failure_message`: one sentence naming the failed resources and why;
- :func:`fit`: the results cut to fit one message.

:func:`parse_summary` reads ``last_run_summary.yaml`` for ``puppet``/``status``. Text
that is not what Puppet writes raises :class:`~podium.errors.ValidationError` only.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import orjson
import yaml

from podium.errors import ValidationError

STATUSES: Final = ("unchanged", "changed", "failed")
RESOURCE_METRICS: Final = (
    "total",
    "changed",
    "failed",
    "skipped",
    "out_of_sync",
    "corrective_change",
    "restarted",
    "failed_to_restart",
    "scheduled",
)
MESSAGE_MARGIN: Final = 4096  # bytes of a message that are not the results
_MAX_MESSAGE: Final = 2000  # characters of a failure message
_MAX_DEPTH: Final = 64  # of values copied out of the report
_FRACTION: Final = re.compile(r"(\.\d{6})\d+")
_CHANGE_FAILED: Final = re.compile(r"\Achange from .* failed: ", re.DOTALL)

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """YAML as Puppet writes it: Ruby-tagged nodes read as what they tag."""


def _ruby(loader: Any, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_Loader.add_multi_constructor("!ruby/", _ruby)


def load_yaml(text: str | bytes, what: str) -> Any:
    """``text`` read as YAML with Ruby tags; :class:`ValidationError` names ``what``."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except (yaml.YAMLError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValidationError(f"{what} is not YAML Podium can read: {problem}") from exc


# -- the report ---------------------------------------------------------------------


def parse_report(text: str | bytes) -> dict[str, Any]:
    """Puppet's last-run report as a checked mapping."""
    report = load_yaml(text, "the Puppet report")
    if not isinstance(report, dict):
        raise ValidationError("the Puppet report is not a mapping: Puppet did not write it")
    for key in ("host", "status"):
        if not isinstance(report.get(key), str):
            raise ValidationError(f"the Puppet report has no {key}")
    if report["status"] not in STATUSES:
        raise ValidationError(f"the Puppet report has an unknown status {report['status']!r}")
    _time(report.get("time"), "the report's time")  # required
    for key in ("logs",):
        if not isinstance(report.get(key) or [], list):
            raise ValidationError(f"the Puppet report's {key} is not a list")
    for key in ("metrics", "resource_statuses"):
        if not isinstance(report.get(key) or {}, dict):
            raise ValidationError(f"the Puppet report's {key} is not a mapping")
    return report


def run_results(
    report: dict[str, Any], *, mode: str, exit_code: int | None, now: datetime
) -> dict[str, Any]:
    """The ``puppet``/``run`` results of a checked report (without ``_error``)."""
    wire = store_report(report, producer_timestamp=now)
    resources = _resource_metrics(report)
    events = _events(wire)
    metrics = {name: _count(resources.get(name)) for name in RESOURCE_METRICS}
    metrics["noop"] = sum(1 for event in events if event["status"] == "noop")
    return {
        "status": report["status"],
        "noop": bool(report.get("noop")),
        "noop_pending": bool(report.get("noop_pending")),
        "corrective_change": bool(report.get("corrective_change")),
        "metrics": metrics,
        "events": events,
        "logs": wire["logs"],
        "configuration_version": wire["configuration_version"],
        "transaction_uuid": wire["transaction_uuid"],
        "catalog_uuid": wire["catalog_uuid"],
        "environment": wire["environment"],
        "puppet_version": wire["puppet_version"],
        "mode": mode,
        "cached_catalog_status": wire["cached_catalog_status"],
        "start_time": wire["start_time"],
        "end_time": wire["end_time"],
        "duration": _duration(report),
        "exit_code": exit_code,
        "report": wire,
    }


def store_report(
    report: dict[str, Any], *, producer_timestamp: datetime, job_id: str | None = None
) -> dict[str, Any]:
    """The report as the payload of PuppetDB's ``store report`` command, version 8."""
    start = _time(report.get("time"), "the report's time")
    assert start is not None
    try:
        end = start + timedelta(seconds=_duration(report))
    except OverflowError:  # a start at the end of time
        end = start
    noop = bool(report.get("noop"))
    resources = []
    for status in _statuses(report):
        entry = {
            "resource_type": _text(status.get("resource_type")) or "",
            "resource_title": _text(status.get("title")) or "",
            "skipped": bool(status.get("skipped")),
            "timestamp": _wire(_time(status.get("time"))),
            "file": _text(status.get("file")),
            "line": _int(status.get("line")),
            "containment_path": [_text(p) or "" for p in _list(status.get("containment_path"))],
            "corrective_change": bool(status.get("corrective_change")),
            "events": [
                {
                    "property": _text(event.get("property")),
                    "old_value": _plain(event.get("previous_value")),
                    "new_value": _plain(event.get("desired_value")),
                    "status": _text(event.get("status")),
                    "message": _text(event.get("message")),
                    "timestamp": _wire(_time(event.get("time"))),
                    "name": _text(event.get("name")),
                    "corrective_change": bool(event.get("corrective_change")),
                }
                for event in _mappings(status.get("events"))
            ],
        }
        # PuppetDB's own terminus sends what happened, and every resource of a noop run.
        if noop or entry["events"] or entry["skipped"]:
            resources.append(entry)
    certname = _text(report.get("host")) or ""
    return {
        "certname": certname,
        "environment": _text(report.get("environment")) or "production",
        "puppet_version": _text(report.get("puppet_version")) or "",
        "report_format": _int(report.get("report_format")) or 0,
        "configuration_version": _text(report.get("configuration_version")) or "",
        "start_time": _wire(start),
        "end_time": _wire(end),
        "producer_timestamp": _wire(producer_timestamp),
        "producer": certname,
        "corrective_change": bool(report.get("corrective_change")),
        "noop": noop,
        "noop_pending": bool(report.get("noop_pending")),
        "status": report["status"],
        "transaction_uuid": _text(report.get("transaction_uuid")),
        "catalog_uuid": _text(report.get("catalog_uuid")),
        "code_id": _text(report.get("code_id")),
        "job_id": job_id if job_id is not None else _text(report.get("job_id")),
        "cached_catalog_status": _text(report.get("cached_catalog_status")),
        "type": "agent",
        "logs": [
            {
                "level": _text(log.get("level")) or "notice",
                "message": _text(log.get("message")) or "",
                "source": _text(log.get("source")) or "",
                "tags": [_text(t) or "" for t in _list(log.get("tags"))],
                "time": _wire(_time(log.get("time"))),
                "file": _text(log.get("file")),
                "line": _int(log.get("line")),
            }
            for log in _mappings(report.get("logs"))
        ],
        "metrics": [
            {"category": category, "name": name, "value": value}
            for category, values in _metrics(report).items()
            for name, value in values.items()
        ],
        "resources": resources,
    }


def failure_message(report: dict[str, Any]) -> str | None:
    """Why a run failed, naming each failed resource; None if nothing failed."""
    failed = []
    for status in _statuses(report):
        if not status.get("failed"):
            continue
        ref = _text(status.get("resource")) or (
            f"{_text(status.get('resource_type'))}[{_text(status.get('title'))}]"
        )
        reasons = [
            _CHANGE_FAILED.sub("", _text(event.get("message")) or "")
            for event in _mappings(status.get("events"))
            if event.get("status") == "failure"
        ]
        if not any(reasons):
            reasons = [
                _text(log.get("message")) or ""
                for log in _mappings(report.get("logs"))
                if log.get("level") == "err" and f"/{ref}/" in f"{_text(log.get('source'))}/"
            ]
        reason = "; ".join(r for r in reasons if r) or "no message"
        failed.append(f"{ref}: {reason}")
    if failed:
        count = f"{len(failed)} resource{'s' if len(failed) > 1 else ''} failed"
        return _cap(f"{count}: {'; '.join(failed)}")
    if report.get("status") != "failed":
        return None
    errors = [
        _text(log.get("message")) or ""
        for log in _mappings(report.get("logs"))
        if log.get("level") in ("err", "alert", "emerg", "crit")
    ]
    return _cap(f"the Puppet run failed: {'; '.join(e for e in errors if e) or 'no message'}")


def fit(results: dict[str, Any], limit: int) -> dict[str, Any]:
    """``results``, or a copy whose message fits ``limit`` bytes: the logs, then the
    events, then the report's resources are cut (the metrics keep the counts)."""
    if _size(results) <= limit:
        return results
    fitted = {**results, "truncated": True}
    report = fitted.get("report")
    if isinstance(report, dict):
        fitted["report"] = report = {**report}
    cuts: list[tuple[dict[str, Any], str]] = [(fitted, "logs")]
    if isinstance(report, dict):
        cuts.append((report, "logs"))
    cuts.append((fitted, "events"))
    if isinstance(report, dict):
        cuts.append((report, "resources"))
    for holder, key in cuts:
        items = holder.get(key)
        if not isinstance(items, list):
            continue
        while items and _size(fitted) > limit:
            items = items[: len(items) // 2]
            holder[key] = items
        if _size(fitted) <= limit:
            break
    return fitted


def _size(results: dict[str, Any]) -> int:
    return len(orjson.dumps(results)) + MESSAGE_MARGIN


# -- the summary ----------------------------------------------------------------------


def parse_summary(text: str | bytes, now: datetime) -> tuple[dict[str, Any], float | None]:
    """(last run, seconds since it) from ``last_run_summary.yaml``."""
    summary = load_yaml(text, "the Puppet run summary")
    if not isinstance(summary, dict):
        raise ValidationError("the Puppet run summary is not a mapping")
    times = _mapping(summary.get("time"))
    version = _mapping(summary.get("version"))
    resources = _numbers(summary.get("resources"))
    events = _numbers(summary.get("events"))
    changes = _numbers(summary.get("changes"))
    last = times.get("last_run")
    when: datetime | None = None
    if isinstance(last, int | float) and not isinstance(last, bool):
        try:
            when = datetime.fromtimestamp(last, UTC)
        except (OverflowError, OSError, ValueError):
            when = None
    if not resources or resources.get("failed", 0) or events.get("failure", 0):
        status = "failed"
    elif changes.get("total", 0):
        status = "changed"
    else:
        status = "unchanged"
    total = times.get("total")
    last_run = {
        "time": _wire(when),
        "status": status,
        "config_version": _text(version.get("config")),
        "resources": resources,
        "events": events,
        "changes": changes,
        "duration": float(total) if isinstance(total, int | float) and total >= 0 else None,
    }
    since = (now - when).total_seconds() if when is not None else None
    return last_run, since


# -- helpers --------------------------------------------------------------------------


def _statuses(report: dict[str, Any]) -> list[dict[str, Any]]:
    return _mappings(list(_mapping(report.get("resource_statuses")).values()))


def _events(wire: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "resource_type": resource["resource_type"],
            "resource_title": resource["resource_title"],
            "property": event["property"],
            "old_value": event["old_value"],
            "new_value": event["new_value"],
            "status": event["status"],
            "message": event["message"],
            "corrective_change": event["corrective_change"],
            "file": resource["file"],
            "line": resource["line"],
            "timestamp": event["timestamp"],
        }
        for resource in wire["resources"]
        for event in resource["events"]
    ]


def _metrics(report: dict[str, Any]) -> dict[str, dict[str, float | int]]:
    """category → name → value, from Puppet's ``[[name, label, value], ...]`` lists."""
    found: dict[str, dict[str, float | int]] = {}
    for category, metric in _mapping(report.get("metrics")).items():
        values: dict[str, float | int] = {}
        for row in _list(_mapping(metric).get("values")):
            good = isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)
            if good and _is_number(row[2]):
                values[row[0]] = row[2]
        if isinstance(category, str):
            found[category] = values
    return found


def _resource_metrics(report: dict[str, Any]) -> dict[str, float | int]:
    return _metrics(report).get("resources", {})


def _duration(report: dict[str, Any]) -> float:
    total = _metrics(report).get("time", {}).get("total", 0.0)
    return float(total) if 0 <= total < 10**9 else 0.0


def _time(value: object, what: str | None = None) -> datetime | None:
    """A time as Puppet writes it; None (or, naming ``what``, an error) otherwise."""
    when: datetime | None = None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        when = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(_FRACTION.sub(r"\1", value.strip()))
        except ValueError:
            when = None
    if when is not None:
        try:
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        except OverflowError:  # year 1 or 9999 moved out of range by its offset
            when = None
    if when is None and what is not None:
        raise ValidationError(f"{what} is not a time: {value!r:.80}")
    return when


def _wire(when: datetime | None) -> str | None:
    """PuppetDB's wire time: ISO-8601 in UTC with milliseconds."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return None


def _int(value: object) -> int | None:
    """An integer JSON carries (64 bits); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    return None


def _count(value: object) -> int:
    """A metric's value as a whole count (0 when it is none)."""
    if isinstance(value, float) and math.isfinite(value):
        value = int(value)
    found = _int(value)
    return found if found is not None and found >= 0 else 0


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: object) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _mappings(value: object) -> list[dict[str, Any]]:
    return [item for item in _list(value) if isinstance(item, dict)]


def _numbers(value: object) -> dict[str, float | int]:
    """The finite numbers of a mapping, by name (JSON carries no others)."""
    return {k: v for k, v in _mapping(value).items() if isinstance(k, str) and _is_number(v)}


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def _plain(value: object, depth: int = 0) -> Any:
    """``value`` as JSON can carry it (YAML also has times, bytes and odd keys)."""
    if depth > _MAX_DEPTH:
        return None
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple | set):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    return str(value)


def plain(value: object) -> Any:
    """``value`` as JSON can carry it."""
    return _plain(value)


def _cap(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
