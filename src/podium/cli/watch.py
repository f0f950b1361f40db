"""Following a job live, as ``podium task run`` and ``podium job rerun`` do.

:class:`JobDisplay` is the display's logic and is pure: fed a job's event views one by
one, it returns the lines to print and keeps the counts the progress line shows. Nodes
whose final state and result are the same are grouped, so a job of 10,000 nodes prints
a screenful; small jobs and ``--verbose`` print every node. :class:`PlainScreen` (a pipe
or a file) and :class:`RichScreen` (a terminal, with a live progress bar) print what it
returns; :func:`follow` feeds it from :meth:`ApiClient.stream_events` and turns the first
Ctrl+C into a stop of the job, the second into leaving it be.

Everything a node or a user wrote goes through :func:`clean_text`/:func:`clean_line`
before it is printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, NamedTuple, Protocol, TextIO

from podium.cli import runs
from podium.cli.client import clean_line, clean_text
from podium.cli.durations import format_duration, parse_timestamp, until_text
from podium.errors import PodiumError

# Choria's exit codes
OK, ERROR, SOME_FAILED, NO_ANSWER = 0, 1, 2, 3

FINAL_EVENTS = {
    "node_finished": "finished",
    "node_failed": "failed",
    "node_errored": "errored",
    "node_skipped": "skipped",
}
COUNTED = ("running", "finished", "failed", "errored", "skipped")

# Limits of what the grouped display prints
EVERY_NODE_UP_TO = 10  # a job this small prints every node, as --verbose does
NAMES_SHOWN = 5  # names listed for a group of identical results
RESULTS_SHOWN = 20  # distinct results printed in full as they come
GROUPS_LISTED = 20  # lines of the closing summary by result
DISCONNECTS_SHOWN = 20  # disconnect lines before they are only counted
PARTIAL_LINE_MAX = 4096  # a streamed line longer than this is printed in pieces


class Line(NamedTuple):
    """A line to print and how it looks: ``error`` (red), ``warning``, ``muted``,
    ``stderr``, or plain."""

    text: str
    style: str = ""


class Client(Protocol):
    """What following a job needs of :class:`ApiClient` (tests pass fakes)."""

    def call(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def stream_events(
        self, job_id: str, last_event_id: str | None = None
    ) -> Iterator[dict[str, Any]]: ...


# -- a node's result, for people --------------------------------------------------------


def _block(head: str, lines: list[str]) -> list[str]:
    """``head line`` for one line; for more, ``head`` and then each line indented under
    it. Each line is cleaned: the block's own line breaks are the only ones."""
    if len(lines) <= 1:
        return [f"{head} {clean_text(lines[0]) if lines else ''}".rstrip()]
    return [head, *(f"    {clean_text(line)}" for line in lines)]


def _text_lines(text: str) -> list[str]:
    return text.rstrip("\n").splitlines()


def _json(value: Any, indent: int | None = None) -> str:
    """JSON with its text as it is (control characters come out escaped as \\u001b)."""
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)


def result_lines(result: dict[str, Any] | None, *, with_error: bool = True) -> list[str]:
    """A task's result for people: ``_output`` as a STDOUT block, ``_error`` by its
    message (left out without ``with_error``), strings as they are, objects and arrays
    as indented JSON, other values as JSON (``true``, ``null``)."""
    if not result:
        return []
    lines = []
    for key, value in result.items():
        label = f"  {clean_line(str(key))} :"
        if key == "_error" and isinstance(value, dict):
            if with_error:
                msg = value.get("msg")
                text = msg if isinstance(msg, str) else _json(value)
                lines.extend(_block("  Error:", _text_lines(text)))
        elif key == "_output" and isinstance(value, str):
            lines.append("  STDOUT:")
            lines.extend(f"    {clean_text(line)}" for line in _text_lines(value) or [""])
        elif isinstance(value, str):
            lines.extend(_block(label, _text_lines(value)))
        elif isinstance(value, dict | list):
            # split at "\n" only: a U+2028 inside a JSON string is not a line break here
            lines.extend(_block(label, _json(value, indent=2).split("\n")))
        else:
            lines.append(f"{label} {clean_line(_json(value))}")
    return lines


def node_lines(
    node: Mapping[str, Any],
    *,
    puppet: bool = False,
    events: int | None = runs.EVENTS_SHOWN,
    logs: bool = False,
) -> list[Line]:
    """A node's line and its result (``print_node``'s text), failures in red; with
    ``puppet``, the result is a Puppet run's (see :mod:`podium.cli.runs`)."""
    state, name = clean_line(str(node["state"])), clean_line(str(node["name"]))
    message = (node.get("details") or {}).get("message")
    result = node.get("result")
    failed = state in ("failed", "errored")
    style = "error" if failed else "muted" if state == "skipped" else ""
    if puppet and isinstance(result, dict):
        head = "Finished on node" if state == "finished" else f"{state.capitalize()} on"
        texts = [f"{head} {name}: {runs.outcome(result)}"]
        if message:
            texts.extend(_block("  Error:" if failed else "  Note:", _text_lines(str(message))))
        texts.extend(runs.run_lines(result, events=events, logs=logs, with_error=not message))
        return [Line(text, style) for text in texts]
    if state == "finished":
        texts = [f"Finished on node {name}"]
    elif failed:
        texts = [f"Failed on {name}"]
        if message:
            texts.extend(_block("  Error:", _text_lines(str(message))))
    else:
        texts = [f"{state.capitalize()} on {name}"]
        if message:
            texts.extend(_block("  Note:", _text_lines(str(message))))
    texts.extend(result_lines(result if isinstance(result, dict) else None, with_error=not message))
    return [Line(text, style) for text in texts]


# -- the display's logic --------------------------------------------------------------


@dataclass
class _Group:
    """Nodes whose final state and result are the same (their own name aside)."""

    state: str
    first: str
    shown: bool
    count: int = 0
    names: list[str] = field(default_factory=list)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class JobDisplay:
    """What to print for a job's events, and the counts of its nodes by state.

    ``job`` is the job's view (``name`` and ``node_count`` are used); ``now`` and ``tz``
    are the clock and time zone for "given up at 12:05:01 (in 4m 59s)". Feeding the
    same event twice (a stream taken up again) changes nothing.
    """

    def __init__(
        self,
        job: Mapping[str, Any],
        *,
        verbose: bool = False,
        stream: bool = False,
        now: Callable[[], datetime] = _utcnow,
        tz: tzinfo | None = None,
        events: int | None = runs.EVENTS_SHOWN,
        logs: bool = False,
    ) -> None:
        self.events, self.logs = events, logs  # of a Puppet run, what is printed
        self.job_id = clean_line(str(job.get("name", "")))
        self.node_count = int(job.get("node_count") or 0)
        self.every_node = verbose or self.node_count <= EVERY_NODE_UP_TO
        self.puppet = job.get("type") == "deploy"  # results are Puppet runs
        self.stream = stream
        self._now, self._tz = now, tz
        self.counts: Counter[str] = Counter()
        self.disconnected: set[str] = set()
        self.state: str | None = None  # the job's, once job_finished came
        self.done = False
        self.aborted: str | None = None
        self._states: dict[str, str] = {}
        self._answered: set[str] = set()
        self._groups: dict[bytes, _Group] = {}
        self._shown = 0  # groups printed in full
        self._group_of: dict[str, bytes] = {}
        self._partial: dict[tuple[str, str], str] = {}
        self._streamed: set[str] = set()
        self._disconnects_shown: set[str] = set()
        self._more_disconnects = False
        self._last_id = -1

    # what the progress line shows
    @property
    def ended(self) -> int:
        return sum(self.counts[s] for s in FINAL_EVENTS.values())

    @property
    def answered(self) -> bool:
        """Whether any node answered: finished, or ran and returned a result."""
        return bool(self._answered)

    def tally(self) -> list[tuple[str, int]]:
        """``(label, count)`` for the progress line, always in the same order."""
        return [*((s, self.counts[s]) for s in COUNTED), ("disconnected", len(self.disconnected))]

    def progress_text(self) -> str:
        return ", ".join(f"{n} {label}" for label, n in self.tally())

    def feed(self, event: Mapping[str, Any]) -> list[Line]:
        """The lines to print for one event view ``{id, type, details, ...}``."""
        raw_id = str(event.get("id", ""))
        if raw_id.isascii() and raw_id.isdigit() and int(raw_id) <= self._last_id:
            return []
        kind = str(event.get("type", ""))
        details = event.get("details") or {}
        if not isinstance(details, Mapping):
            details = {}
        lines = self._handle(kind, details)
        if raw_id.isascii() and raw_id.isdigit():
            self._last_id = int(raw_id)
        return lines

    def _handle(self, kind: str, details: Mapping[str, Any]) -> list[Line]:
        node = str(details.get("node", ""))
        name = clean_line(node)
        if kind in FINAL_EVENTS:
            return self._final(node, FINAL_EVENTS[kind], details)
        if kind == "node_running":
            if self._states.get(node) in FINAL_EVENTS.values():
                return []
            self._move(node, "running")
            return [Line(f"Started on {name} ...")] if self.every_node else []
        if kind == "node_output":
            return self._output(node, details) if self.stream else []
        if kind == "node_disconnected":
            return self._disconnected(node, details.get("give_up_at"))
        if kind == "node_reconnected":
            self.disconnected.discard(node)
            if node in self._disconnects_shown:
                return [Line(f"{name} reconnected")]
            return []
        if kind == "job_ready":
            return [
                Line(
                    f"Job {self.job_id} is waiting: the server runs as many jobs at once as "
                    "it may; this one starts when another ends.",
                    "muted",
                )
            ]
        if kind == "job_stopping":
            by = clean_line(str(details.get("by") or "someone"))
            if details.get("force"):
                text = f"Job {self.job_id} is stopping (by {by}, forced): running tasks are killed."
            else:
                text = (
                    f"Job {self.job_id} is stopping (by {by}): nothing new starts; "
                    "running nodes finish."
                )
            return [Line(text, "warning")]
        if kind == "job_aborted":
            self.aborted = str(details.get("reason") or "aborted")
            return [Line(f"Job {self.job_id} aborted: {clean_line(self.aborted)}", "error")]
        if kind == "job_finished":
            self.done = True
            self.state = str(details.get("state") or "")
            return self._flush(list(self._partial))
        return []

    def _move(self, node: str, state: str) -> None:
        old = self._states.get(node)
        if old is not None:
            self.counts[old] -= 1
        self._states[node] = state
        self.counts[state] += 1

    def _final(self, node: str, state: str, details: Mapping[str, Any]) -> list[Line]:
        lines = self._flush([k for k in self._partial if k[0] == node])
        self._move(node, state)
        self.disconnected.discard(node)
        result = details.get("result")
        message = details.get("message")
        if state == "finished" or result:
            self._answered.add(node)
        else:
            self._answered.discard(node)
        key = _group_key(node, state, runs.comparable(result) if self.puppet else result, message)
        old = self._group_of.get(node)
        if old is not None:
            before = self._groups[old]
            before.count -= 1
            if node in before.names:
                before.names.remove(node)
        group = self._groups.get(key)
        new = group is None
        if group is None:
            group = _Group(state, node, shown=self.every_node or self._shown < RESULTS_SHOWN)
            self._groups[key] = group
            self._shown += group.shown
        group.count += 1
        if len(group.names) < NAMES_SHOWN:
            group.names.append(node)
        self._group_of[node] = key
        if self.every_node or (new and group.shown):
            shown = dict(result) if isinstance(result, dict) else result
            if isinstance(shown, dict) and node in self._streamed:
                shown.pop("_output", None)  # printed live already
            view = {"name": node, "state": state, "result": shown}
            view["details"] = {"message": message} if message else {}
            lines.extend(node_lines(view, puppet=self.puppet, events=self.events, logs=self.logs))
        return lines

    def _disconnected(self, node: str, give_up_at: Any) -> list[Line]:
        self.disconnected.add(node)
        if not self.every_node and len(self._disconnects_shown) >= DISCONNECTS_SHOWN:
            if self._more_disconnects:
                return []
            self._more_disconnects = True
            return [
                Line(
                    "More nodes disconnected; they are counted, not listed: "
                    f"podium job show {self.job_id} lists them.",
                    "warning",
                )
            ]
        self._disconnects_shown.add(node)
        when = parse_timestamp(give_up_at if isinstance(give_up_at, str) else None)
        name = clean_line(node)
        if when is None:
            return [Line(f"{name} disconnected; waiting for it to reconnect", "warning")]
        at = until_text(when, self._now(), self._tz)
        return [Line(f"{name} disconnected; given up at {at} unless it reconnects", "warning")]

    def _output(self, node: str, details: Mapping[str, Any]) -> list[Line]:
        stream = "stderr" if details.get("stream") == "stderr" else "stdout"
        if stream == "stdout":
            self._streamed.add(node)
        key = (node, stream)
        text = self._partial.pop(key, "") + str(details.get("data") or "")
        *complete, rest = text.split("\n")
        while len(rest) > PARTIAL_LINE_MAX:
            complete.append(rest[:PARTIAL_LINE_MAX])
            rest = rest[PARTIAL_LINE_MAX:]
        if rest:
            self._partial[key] = rest
        lines = [_stream_line(node, stream, line.removesuffix("\r")) for line in complete]
        if details.get("truncated"):
            lines.extend(self._flush([key]))
            lines.append(
                Line(
                    f"{clean_line(node)} | … live output stops here; the result has it all", "muted"
                )
            )
        return lines

    def _flush(self, keys: Iterable[tuple[str, str]]) -> list[Line]:
        """The partial lines kept for these (node, stream) pairs, printed as they are."""
        lines = []
        for key in list(keys):
            rest = self._partial.pop(key, "")
            if rest:
                lines.append(_stream_line(key[0], key[1], rest.removesuffix("\r")))
        return lines

    # the end
    def summary(self) -> list[Line]:
        """The closing summary by result: each group of more than one node, or not
        printed in full, with its count and a few names (none when every node was
        printed). Partial output lines still kept come first."""
        lines = self._flush(list(self._partial))
        if self.every_node:
            return lines
        groups = [g for g in self._groups.values() if g.count > 0 and (g.count > 1 or not g.shown)]
        if not groups:
            return lines
        lines.extend([Line(""), Line("Summary by result:")])
        for group in groups[:GROUPS_LISTED]:
            names = ", ".join(clean_line(n) for n in group.names)
            more = group.count - len(group.names)
            if more > 0:
                names += f" and {more} more"
            nodes = "node" if group.count == 1 else "nodes"
            how = f"like {clean_line(group.first)}" if group.shown else "with a result not shown"
            style = "error" if group.state in ("failed", "errored") else ""
            lines.append(Line(f"  {group.count} {nodes} {group.state} {how}: {names}", style))
        rest = groups[GROUPS_LISTED:]
        if rest:
            count = sum(g.count for g in rest)
            lines.append(
                Line(
                    f"  and {len(rest)} more results on {count} nodes: "
                    f"podium job show {self.job_id} --format json"
                )
            )
        return lines

    def closing(self, job: Mapping[str, Any], *, wall: float | None = None) -> list[Line]:
        """:meth:`summary`, then the job's closing lines."""
        return [*self.summary(), *closing_lines(job, wall=wall)]

    def exit_code(self, job: Mapping[str, Any]) -> int:
        return exit_code(job, answered=self.answered)


def _group_key(node: str, state: str, result: Any, message: Any) -> bytes:
    """What makes two nodes' ends the same: state, result and message, the node's own
    name in them aside ("unknown node web01" is the same as "unknown node web02")."""
    text = json.dumps([state, result, message], sort_keys=True, default=str)
    name = json.dumps(node)[1:-1]
    if name:
        text = text.replace(name, "\0")
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _stream_line(node: str, stream: str, text: str) -> Line:
    mark, style = ("!", "stderr") if stream == "stderr" else ("|", "")
    return Line(f"{clean_line(node)} {mark} {clean_text(text)}", style)


def exit_code(job: Mapping[str, Any], *, answered: bool) -> int:
    """0 all nodes succeeded, 1 nothing targeted, 2 some failed, 3 no node answered."""
    total = int(job.get("node_count") or 0)
    ok = (job.get("node_states") or {}).get("finished", 0)
    if total == 0:
        return ERROR
    if ok == total:
        return OK
    return SOME_FAILED if answered else NO_ANSWER


def closing_lines(job: Mapping[str, Any], *, wall: float | None = None) -> list[Line]:
    """``Job completed. 8/10 nodes succeeded.`` (or ``Job stopped. ...``), the duration,
    and how to run again what did not succeed."""
    total = int(job.get("node_count") or 0)
    ok = (job.get("node_states") or {}).get("finished", 0)
    state = str(job.get("state") or "")
    verb = {"finished": "completed", "failed": "completed", "stopped": "stopped"}.get(state, state)
    style = "" if ok == total and total else "error" if state == "failed" else "warning"
    lines = [Line(""), Line(f"Job {clean_line(verb)}. {ok}/{total} nodes succeeded.", style)]
    duration = job.get("duration")
    duration = duration if duration is not None else wall
    if duration is not None:
        lines.append(Line(f"Duration: {duration:.3f} s"))
    name = job.get("name")
    if name is not None and total and ok < total:
        lines.append(
            Line(
                "Run the nodes that did not succeed again: "
                f"podium job rerun {clean_line(str(name))} --only-failed",
                "muted",
            )
        )
    return lines


def header_lines(job: Mapping[str, Any], *, query: str | None = None) -> list[Line]:
    """The lines before a job's events: id, environment, pace, node count."""
    options = job.get("options") or {}
    env = (job.get("environment") or {}).get("name") or options.get("environment") or ""
    lines = [
        f"New job ID: {clean_line(str(job.get('name')))}",
        f"Environment: {clean_line(str(env))}",
    ]
    if query is not None:
        lines.append(f"Query: {clean_line(query)}")
    lines.append(f"Concurrency: {options.get('concurrency') or 'server default'}")
    lines.extend(f"{label}: {text}" for label, text in pace_items(options))
    lines.append(f"Nodes: {job.get('node_count', 0)}")
    return [Line(line) for line in lines]


def pace_items(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """How a job is paced, as ``(label, text)``: batches, fail fast, timeouts, offline."""
    items = []
    batch = options.get("batch")
    if batch is not None:
        text = f"{clean_line(str(batch))} {'of the nodes' if str(batch).endswith('%') else 'nodes'}"
        sleep = options.get("batch_sleep")
        if sleep:
            text += f" at a time, {format_duration(float(sleep))} between batches"
        else:
            text += " at a time"
        items.append(("Batches", text))
    if options.get("fail_fast"):
        items.append(("Fail fast", "nothing new starts after a node fails"))
    timeouts = []
    if options.get("timeout"):
        timeouts.append(f"{format_duration(float(options['timeout']))} a node")
    if options.get("job_timeout"):
        timeouts.append(f"{format_duration(float(options['job_timeout']))} the job")
    if timeouts:
        items.append(("Timeouts", ", ".join(timeouts)))
    if options.get("offline_ttl"):
        ttl = format_duration(float(options["offline_ttl"]))
        items.append(("Offline nodes", f"waited for up to {ttl}, then failed"))
    return items


def node_results(
    job: Mapping[str, Any], nodes: Iterable[Mapping[str, Any]], *, verbose: bool = False
) -> list[Line]:
    """The results of a job's nodes (from ``/jobs/:id/nodes``), grouped as when it ran:
    every node for a small job or ``verbose``, else a block per distinct result and the
    summary by result; a Puppet run's with every event and its log."""
    display = JobDisplay(job, verbose=verbose, events=None, logs=True)
    lines: list[Line] = []
    for node in nodes:
        state = str(node.get("state"))
        kind = next((k for k, s in FINAL_EVENTS.items() if s == state), None)
        if kind is None:
            if display.every_node:
                lines.extend(node_lines(node))
            continue
        details = {"node": node.get("name"), "result": node.get("result")}
        message = (node.get("details") or {}).get("message")
        if message:
            details["message"] = message
        lines.extend(display.feed({"type": kind, "details": details}))
    return [*lines, *display.summary()]


# -- screens ----------------------------------------------------------------------------


class PlainScreen:
    """Lines to a pipe or a file, as they are: no progress bar, no escape codes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def start(self, display: JobDisplay) -> None:
        pass

    def print(self, lines: Iterable[Line]) -> None:
        self.out.writelines(line.text + "\n" for line in lines)
        self.out.flush()

    def update(self, display: JobDisplay) -> None:
        pass

    def stop(self) -> None:
        self.out.flush()


_STYLES = {"error": "red", "warning": "yellow", "muted": "dim", "stderr": "dim red", "": ""}
_TALLY_STYLES = {
    "running": "cyan",
    "finished": "green",
    "failed": "red",
    "errored": "red",
    "skipped": "yellow",
    "disconnected": "magenta",
}


class RichScreen:
    """A terminal: lines printed above a live progress bar with the counts by state."""

    def __init__(self, out: TextIO, *, force_terminal: bool | None = None) -> None:
        from rich.console import Console

        self.console = Console(
            file=out,
            force_terminal=force_terminal,
            highlight=False,
            markup=False,
            emoji=False,
            soft_wrap=True,
        )
        self._progress: Any = None
        self._task: Any = None

    def start(self, display: JobDisplay) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.description}", markup=True),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task(
            self._describe(display), total=display.node_count or None
        )
        self._progress.start()

    def print(self, lines: Iterable[Line]) -> None:
        from rich.text import Text

        for line in lines:
            self.console.print(Text(line.text, style=_STYLES.get(line.style, "")))

    def update(self, display: JobDisplay) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=display.ended, description=self._describe(display)
            )

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    @staticmethod
    def _describe(display: JobDisplay) -> str:
        # numbers and fixed words only: safe as rich markup
        parts = [
            f"[{_TALLY_STYLES[label] if n else 'dim'}]{n} {label}[/]"
            for label, n in display.tally()
            if n or label in ("running", "finished")
        ]
        return " · ".join(parts)


Screen = PlainScreen | RichScreen


def open_screen(out: TextIO) -> Screen:
    """A :class:`RichScreen` on a terminal, else a :class:`PlainScreen`."""
    try:
        terminal = out.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if terminal and os.environ.get("TERM") != "dumb":
        return RichScreen(out)
    return PlainScreen(out)


# -- following a job ----------------------------------------------------------------------


def follow(
    client: Client,
    job_id: str,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    verbose: bool = False,
    stream: bool = False,
    as_json: bool = False,
    header: bool = True,
    query: str | None = None,
    screen: Screen | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Follow job ``job_id`` to its end and return Choria's exit code.

    Human output (``out``, stdout by default): :func:`header_lines` unless ``header``
    is false, a line per node or per distinct result, the progress bar on a terminal,
    and the closing lines. ``as_json``: every event as one JSON line instead (with the
    job's id added as ``job``), other messages to ``err``. The first Ctrl+C asks the
    server to stop the job and keeps following; the second stops following.
    """
    out = out or sys.stdout
    job = client.call("GET", f"/jobs/{job_id}")
    display = JobDisplay(job, verbose=verbose, stream=stream)
    begun = clock()
    if as_json:
        note = PlainScreen(err or sys.stderr)

        def handle(event: dict[str, Any]) -> None:
            out.write(json.dumps({"job": str(job_id), **event}) + "\n")
            out.flush()
            display.feed(event)

        if not _follow_events(client, job_id, display, handle, note.print):
            return ERROR
        return display.exit_code(client.call("GET", f"/jobs/{job_id}"))

    shown = screen or open_screen(out)
    if header:
        shown.print([*header_lines(job, query=query), Line("")])
    shown.start(display)

    def show(event: dict[str, Any]) -> None:
        lines = display.feed(event)
        shown.update(display)  # first: the bar redrawn under the lines counts this event
        shown.print(lines)

    try:
        followed = _follow_events(client, job_id, display, show, shown.print)
    finally:
        shown.stop()
    if not followed:
        return ERROR
    final = client.call("GET", f"/jobs/{job_id}")
    shown.print(display.closing(final, wall=clock() - begun))
    return display.exit_code(final)


def _follow_events(
    client: Client,
    job_id: str,
    display: JobDisplay,
    handle: Callable[[dict[str, Any]], None],
    say: Callable[[list[Line]], None],
) -> bool:
    """Feed the job's events to ``handle`` until it ends: True; False when the user
    stopped watching (a second Ctrl+C)."""
    last: str | None = None
    stopping = False
    while not display.done:
        events = client.stream_events(job_id, last)
        try:
            for event in events:
                handle(event)
                if event.get("id") is not None:
                    last = str(event["id"])
            return True
        except KeyboardInterrupt:
            if stopping:
                say(_stopped_watching(job_id))
                return False
            stopping = True
            try:
                say(
                    [
                        Line(""),
                        Line(
                            f"Stopping job {job_id}: nothing new starts; running nodes "
                            "finish. Ctrl+C again to stop watching.",
                            "warning",
                        ),
                    ]
                )
                say(_ask_stop(client, job_id))
            except KeyboardInterrupt:
                say(_stopped_watching(job_id))
                return False
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
    return True


def _ask_stop(client: Client, job_id: str) -> list[Line]:
    try:
        answer = client.call("POST", "/command/stop", json={"job": str(job_id), "force": False})
    except PodiumError as exc:
        return [
            Line(
                f"Could not stop job {job_id}: {clean_text(exc.msg)} (still watching; "
                "Ctrl+C again to stop watching)",
                "error",
            )
        ]
    state = str((answer.get("job") or {}).get("state") or "")
    if state in ("finished", "failed", "stopped"):
        return [Line(f"Job {job_id} had already ended: {clean_line(state)}.", "muted")]
    return []


def _stopped_watching(job_id: str) -> list[Line]:
    return [
        Line(""),
        Line(f"Stopped watching job {job_id}; it goes on. See it with: podium job show {job_id}"),
    ]
