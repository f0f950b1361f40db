"""``podium job show``, and watching a job live (shared with ``podium task run``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from podium.cli.client import ApiClient, add_connection_args, clean_text, print_json, table
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
    show.add_argument("job_id", nargs="?", metavar="ID", help="the job to show")
    show.add_argument("--limit", type=int, default=25, help="how many jobs to list (default 25)")
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
                j["description"],
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
    print(f"Job {job['name']}: {job['state']}")
    print(f"  Type:        {job['type']}")
    if job["type"] == "task":
        print(f"  Task:        {job['options'].get('task')}")
    print(f"  Environment: {job['environment']['name']}")
    print(f"  Owner:       {job['owner']['login']}")
    if job["description"]:
        print(f"  Description: {job['description']}")
    print(f"  Created:     {job['created_timestamp']}")
    if job["duration"] is not None:
        print(f"  Duration:    {job['duration']:.3f} s")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(job["node_states"].items()))
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
        out.write(f"Note: dropped names given twice: {', '.join(plan['duplicates'])}\n")
    for glob in plan.get("unmatched") or ():
        out.write(f"Note: {glob!r} matched no node of the inventory\n")
    for fact, count in (plan.get("missing_facts") or {}).items():
        out.write(
            f"Warning: {count} node{'s' if count != 1 else ''} lack the fact {fact} and are "
            "not targeted\n"
        )


def _result_lines(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    lines = []
    for key, value in result.items():
        if key == "_error" and isinstance(value, dict):
            lines.append(f"  Error: {value.get('msg', value)}")
        elif key == "_output" and isinstance(value, str):
            lines.append("  STDOUT:")
            lines.extend(f"    {line}" for line in value.rstrip("\n").splitlines() or [""])
        else:
            lines.append(f"  {key} : {value}")
    return lines


def print_node(node: dict[str, Any], out: TextIO) -> None:
    state, name = node["state"], node["name"]
    if state == "finished":
        out.write(f"Finished on node {name}\n")
    elif state in ("failed", "errored"):
        out.write(f"Failed on {name}\n")
        message = node.get("details", {}).get("message")
        if message:
            out.write(f"  Error: {message}\n")
    else:
        out.write(f"{state.capitalize()} on {name}\n")
    for line in _result_lines(node.get("result")):
        if line.startswith("  Error:") and node.get("details", {}).get("message"):
            continue
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
                out.write(f"Started on {details['node']} ...\n")
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
    out.write(f"\nJob {verb}. {ok}/{total} nodes succeeded.\n")
    if duration is not None:
        out.write(f"Duration: {duration:.3f} s\n")
    if ok == total:
        return OK
    answered = sum(1 for n in nodes if n["state"] == "finished" or n.get("result"))
    return SOME_FAILED if answered else NO_ANSWER
