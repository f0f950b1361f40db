"""``podium job show``, and watching a job live (shared with ``podium task run``)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any, TextIO

from podium.cli.client import (
    ApiClient,
    add_connection_args,
    clean_line,
    clean_text,
    print_json,
    table,
)
from podium.cli.target import TARGET_HELP, add_target_args, scope_from_args

TERMINAL = {"stopped", "finished", "failed"}

# Choria's exit codes
OK, ERROR, SOME_FAILED, NO_ANSWER = 0, 1, 2, 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    job = sub.add_parser("job", help="show jobs", description="Look at jobs, past and running.")
    jsub = job.add_subparsers(dest="job_command", metavar="SUBCOMMAND", required=True)
    show = jsub.add_parser(
        "show",
        help="list jobs, or show one job with its nodes",
        description="With no ID, list recent jobs as a table; with an ID, show that job in full.",
    )
    show.add_argument("job_id", nargs="?", type=_job_id, metavar="ID", help="the job to show")
    show.add_argument(
        "--limit", type=_limit, default=25, help="how many jobs to list (default 25, at most 1000)"
    )
    add_connection_args(show)
    show.set_defaults(func=run_show)

    plan = jsub.add_parser(
        "plan",
        help="show which nodes a target resolves to, without running anything",
        description="Resolve the target as a job would and print the nodes, which of them "
        "are connected, and what was left out: duplicates, globs that matched nothing, "
        f"and nodes lacking a fact the query uses. {TARGET_HELP}",
    )
    add_target_args(plan)
    add_connection_args(plan)
    plan.set_defaults(func=run_plan)


def _job_id(text: str) -> str:
    if not re.fullmatch(r"[0-9]+", text):
        raise argparse.ArgumentTypeError(
            f"no job {text!r}: job ids are numbers, as `podium job show` lists them"
        )
    return text


def _limit(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text.strip()) or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(
            f"--limit must be a whole number from 1 to 1000, not {text!r}"
        )
    return int(text)


def _one_line(text: str | None) -> str:
    """A description for one line: its whitespace runs, newlines included, as a space."""
    return clean_line(" ".join((text or "").split()))


def run_show(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    if args.job_id is None:
        listing = client.call("GET", "/jobs", params={"limit": args.limit})
        if args.format == "json":
            print_json(listing)
            return OK
        rows = [
            [
                j["name"],
                j["state"],
                j["type"],
                j["owner"]["login"],
                str(j["node_count"]),
                (j["timestamp"] or "")[:19].replace("T", " "),
                _one_line(j["description"]),
            ]
            for j in listing["items"]
        ]
        if not rows:
            print(
                "No jobs yet. Start one with: podium task run podium::echo message=hi --nodes NODE"
            )
            return OK
        print(table(rows, ["ID", "STATE", "TYPE", "OWNER", "NODES", "TIMESTAMP", "DESCRIPTION"]))
        total = listing["pagination"]["total"]
        if total > len(rows):
            print(f"({len(rows)} of {total} jobs; --limit N shows more)")
        return OK
    job = client.call("GET", f"/jobs/{args.job_id}")
    nodes = client.call("GET", f"/jobs/{args.job_id}/nodes")["items"]
    if args.format == "json":
        print_json({**job, "nodes": nodes})
        return OK
    print(f"Job {clean_line(str(job['name']))}: {clean_line(str(job['state']))}")
    print(f"  Type:        {clean_line(str(job['type']))}")
    if job["type"] == "task":
        print(f"  Task:        {clean_line(str(job['options'].get('task')))}")
    print(f"  Environment: {clean_line(str(job['environment']['name']))}")
    print(f"  Owner:       {clean_line(str(job['owner']['login']))}")
    if job["description"]:
        print(f"  Description: {_one_line(job['description'])}")
    print(f"  Created:     {clean_line(str(job['created_timestamp']))}")
    if job["duration"] is not None:
        print(f"  Duration:    {job['duration']:.3f} s")
    counts = clean_line(", ".join(f"{n} {s}" for s, n in sorted(job["node_states"].items())))
    print(f"  Nodes:       {job['node_count']} ({counts})")
    print()
    for node in nodes:
        print_node(node, sys.stdout)
    return OK


def run_plan(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    scope = scope_from_args(args)
    plan = client.call("POST", "/targets", json={"scope": scope})
    if args.format == "json":
        print_json(plan)
        return OK
    print_target(plan, sys.stdout, explain=True)
    items = plan["items"]
    if items:
        print(table([[i["name"], "yes" if i["connected"] else "no"] for i in items],
                    ["NODE", "CONNECTED"]))  # fmt: skip
    return OK if items else ERROR


def print_target(plan: dict[str, Any], out: TextIO, *, explain: bool) -> None:
    """What a target resolved to, and every node it left out, said plainly."""
    items = plan["items"]
    if explain and plan.get("explain"):
        out.write(f"Target: {clean_text(plan['explain'])}\n")
    offline = [i["name"] for i in items if not i["connected"]]
    out.write(
        f"{len(items)} node{'s' if len(items) != 1 else ''}"
        + (f", {len(offline)} not connected" if offline else "")
        + "\n"
    )
    if plan.get("duplicates"):
        dropped = clean_line(", ".join(plan["duplicates"]))
        out.write(f"Note: dropped names given twice: {dropped}\n")
    for glob in plan.get("unmatched") or ():
        out.write(f"Note: {clean_line(repr(glob))} matched no node of the inventory\n")
    for fact, count in (plan.get("missing_facts") or {}).items():
        out.write(
            f"Warning: {count} node{'s' if count != 1 else ''} lack the fact "
            f"{clean_line(fact)} and are not targeted\n"
        )


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


def _result_lines(result: dict[str, Any] | None, *, with_error: bool = True) -> list[str]:
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


def print_node(node: dict[str, Any], out: TextIO) -> None:
    """A node's line and its result; whatever the node said is cleaned of control
    characters (an escape sequence in task output must not reach the terminal)."""
    state, name = clean_line(str(node["state"])), clean_line(str(node["name"]))
    message = (node.get("details") or {}).get("message")
    if state == "finished":
        out.write(f"Finished on node {name}\n")
    elif state in ("failed", "errored"):
        out.write(f"Failed on {name}\n")
        if message:
            out.writelines(line + "\n" for line in _block("  Error:", _text_lines(str(message))))
    else:
        out.write(f"{state.capitalize()} on {name}\n")
    for line in _result_lines(node.get("result"), with_error=not message):
        out.write(line + "\n")


_FINAL_EVENTS = {
    "node_finished": "finished",
    "node_failed": "failed",
    "node_errored": "errored",
    "node_skipped": "skipped",
}


def watch(client: ApiClient, job_id: str, *, out: TextIO, poll: float = 0.1) -> int:
    """Print a line per node as it starts and finishes; the summary; Choria's exit code.

    Everything comes from the job's event feed (final events carry the node's result),
    so following a job costs the same per node whatever its size."""
    start = 0
    begun = time.monotonic()
    nodes: dict[str, dict[str, Any]] = {}
    while True:
        page = client.call("GET", f"/jobs/{job_id}/events", params={"start": start})
        for event in page["items"]:
            details = event["details"]
            if event["type"] == "node_running":
                out.write(f"Started on {clean_line(str(details['node']))} ...\n")
            elif event["type"] in _FINAL_EVENTS:
                node = {
                    "name": details["node"],
                    "state": _FINAL_EVENTS[event["type"]],
                    "result": details.get("result"),
                    "details": {"message": details["message"]} if "message" in details else {},
                }
                nodes[node["name"]] = node
                print_node(node, out)
        out.flush()
        start = int(page["next-events"]["event"])
        if page["job_state"] in TERMINAL and not page["items"]:
            break
        if not page["items"]:
            time.sleep(poll)
    job = client.call("GET", f"/jobs/{job_id}")
    return summarize(job, list(nodes.values()), out, wall=time.monotonic() - begun)


def summarize(
    job: dict[str, Any], nodes: list[dict[str, Any]], out: TextIO, *, wall: float | None = None
) -> int:
    """The closing lines; returns 0 all ok, 2 some failed, 3 no node answered."""
    states = job["node_states"]
    total = job["node_count"]
    ok = states.get("finished", 0)
    duration = job["duration"] if job["duration"] is not None else wall
    verb = {"finished": "completed", "failed": "completed", "stopped": "stopped"}.get(
        job["state"], job["state"]
    )
    out.write(f"\nJob {clean_line(str(verb))}. {ok}/{total} nodes succeeded.\n")
    if duration is not None:
        out.write(f"Duration: {duration:.3f} s\n")
    if ok == total:
        return OK
    answered = sum(1 for n in nodes if n["state"] == "finished" or n.get("result"))
    return SOME_FAILED if answered else NO_ANSWER
