"""A Puppet run's result for people: resource event counts, the events, the log (pure).

The live display and ``podium job show`` print a deploy job's nodes with these lines,
as ``puppet job run`` does: ``Resource events: 0 failed 3 changed 0 skipped 0 noop``,
then what changed (or would change, in a noop run) and what failed. Everything the
node sent is cleaned of control characters before it is printed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from podium.cli.client import clean_line

EVENTS_SHOWN = 10  # events a node's block lists unless every event is asked for
_COUNTED = ("failed", "changed", "skipped", "noop")
_EVENT_LABELS = {
    "success": "Changed",
    "failure": "Failed",
    "noop": "Would change",
    "audit": "Audited",
}


def outcome(result: Mapping[str, Any] | None) -> str:
    """``changed``, ``unchanged``, ``failed``, or ``noop, 2 pending changes``."""
    if not result:
        return ""
    if not result.get("status"):  # refused before Puppet ran, or Puppet wrote no report
        return "Puppet did not run" if result.get("_error") else "no status"
    status = clean_line(str(result["status"]))
    if result.get("noop") and status != "failed":
        pending = int((result.get("metrics") or {}).get("noop") or 0)
        if pending or result.get("noop_pending"):
            return f"noop, {pending} pending change{'s' if pending != 1 else ''}"
        return "noop, nothing to change"
    return status


def counts_text(metrics: Mapping[str, Any]) -> str:
    """PE's line of resource event counts."""
    parts = " ".join(f"{_int(metrics.get(name))} {name}" for name in _COUNTED)
    total = _int(metrics.get("total"))
    corrective = _int(metrics.get("corrective_change"))
    extra = f", {corrective} corrective" if corrective else ""
    return f"Resource events: {parts} ({total} resources{extra})"


def run_lines(
    result: Mapping[str, Any] | None,
    *,
    events: int | None = EVENTS_SHOWN,
    logs: bool = False,
    with_error: bool = True,
) -> list[str]:
    """The lines under a node's head line: the error (unless ``with_error`` is false),
    the counts, the events (the first ``events``; None: all) and, with ``logs``, the
    run's log. Indented by two spaces."""
    if not result:
        return []
    lines = []
    error = result.get("_error")
    if with_error and isinstance(error, Mapping) and error.get("msg"):
        lines.append(f"  Error: {clean_line(str(error['msg']))}")
    metrics = result.get("metrics")
    if isinstance(metrics, Mapping):
        lines.append(f"  {counts_text(metrics)}")
    found = [e for e in result.get("events") or () if isinstance(e, Mapping)]
    shown = found if events is None else found[:events]
    lines.extend(f"  {event_text(e)}" for e in shown)
    if len(found) > len(shown):
        lines.append(f"  ... and {len(found) - len(shown)} more events (podium job show)")
    facts = [
        ("Configuration version", result.get("configuration_version")),
        ("Duration", _seconds(result.get("duration"))),
    ]
    if logs:
        facts.append(("Transaction", result.get("transaction_uuid")))
    lines.extend(f"  {label}: {clean_line(str(v))}" for label, v in facts if v not in (None, ""))
    if result.get("truncated"):
        lines.append("  (the node cut its result to fit one message; its report has it all)")
    if logs:
        entries = [e for e in result.get("logs") or () if isinstance(e, Mapping)]
        if entries:
            lines.append("  Log:")
            lines.extend(f"    {log_text(e)}" for e in entries)
    return lines


def event_text(event: Mapping[str, Any]) -> str:
    """``Changed: File[/etc/motd] content: {md5}1 → {md5}2`` and the event's message
    where it says more."""
    label = _EVENT_LABELS.get(str(event.get("status")), clean_line(str(event.get("status"))))
    resource = f"{event.get('resource_type')}[{event.get('resource_title')}]"
    text = f"{label}: {clean_line(resource)}"
    prop = event.get("property")
    if prop:
        old, new = _value(event.get("old_value")), _value(event.get("new_value"))
        text += f" {clean_line(str(prop))}: {old} → {new}"
    message = event.get("message")
    if message and (event.get("status") == "failure" or not prop):
        text += f" ({clean_line(str(message))})"
    return text


def log_text(entry: Mapping[str, Any]) -> str:
    level = clean_line(str(entry.get("level") or "info"))
    source = entry.get("source")
    where = f"{clean_line(str(source))}: " if source and source != "Puppet" else ""
    return f"{level}: {where}{clean_line(str(entry.get('message') or ''))}"


def comparable(result: Any) -> Any:
    """What makes two nodes' runs the same for grouping: their outcome, counts and
    events, not their times, transaction ids or logs."""
    if not isinstance(result, Mapping):
        return result
    events = [
        {k: v for k, v in e.items() if k not in ("timestamp", "line")}
        for e in result.get("events") or ()
        if isinstance(e, Mapping)
    ]
    return {
        "status": result.get("status"),
        "noop": result.get("noop"),
        "metrics": result.get("metrics"),
        "events": events,
        "error": (result.get("_error") or {}).get("msg"),
    }


def _value(value: Any) -> str:
    if value is None:
        return "absent"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return clean_line(text if len(text) <= 80 else text[:77] + "...")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _seconds(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.2f} s"
    return None
