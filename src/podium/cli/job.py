"""``podium job run|show|stop|rerun|plan``; watching a job live is :mod:`podium.cli.watch`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from podium.cli.app import order_lines
from podium.cli.client import (
    ApiClient,
    add_connection_args,
    clean_line,
    clean_text,
    print_json,
    table,
)
from podium.cli.durations import format_duration, parse_timestamp, until_text
from podium.cli.target import TARGET_HELP, add_target_args, scope_from_args
from podium.cli.watch import (
    ERROR,
    NO_ANSWER,
    OK,
    SOME_FAILED,
    Client,
    closing_lines,
    exit_code,
    follow,
    node_lines,
    node_results,
    pace_items,
    result_lines,
)
from podium.jobs.states import JOB_STATES

__all__ = [
    "ERROR",
    "NO_ANSWER",
    "OK",
    "SOME_FAILED",
    "TERMINAL",
    "add_display_args",
    "print_node",
    "print_target",
    "register",
    "summarize",
    "watch",
]

TERMINAL = {"stopped", "finished", "failed"}
NODES_PAGE = 1000  # nodes `job show ID` prints; --format json pages through them all

_result_lines = result_lines  # the name tests and older callers use


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    job = sub.add_parser(
        "job", help="show, stop and rerun jobs", description="Look at jobs, past and running."
    )
    jsub = job.add_subparsers(dest="job_command", metavar="SUBCOMMAND", required=True)
    show = jsub.add_parser(
        "show",
        help="list jobs, or show one job with its nodes",
        description="With no ID, list recent jobs as a table; with an ID, show that job in "
        f"full: its options, a table of its nodes (the first {NODES_PAGE}; --format json "
        "gives all) and their results, identical results grouped unless --verbose.",
    )
    show.add_argument("job_id", nargs="?", type=_job_id, metavar="ID", help="the job to show")
    show.add_argument(
        "--limit", type=_limit, default=25, help="how many jobs to list (default 25, at most 1000)"
    )
    show.add_argument("--state", choices=JOB_STATES, help="list only jobs in this state")
    show.add_argument("--owner", metavar="LOGIN", help="list only the jobs of this user")
    show.add_argument(
        "--verbose", action="store_true", help="print every node's result, none grouped"
    )
    add_connection_args(show)
    show.set_defaults(func=run_show)

    stop = jsub.add_parser(
        "stop",
        help="stop a running job",
        description="Stop a job: nothing new starts and nodes not started end skipped; "
        "nodes already running finish, unless --force kills their tasks (they end "
        "errored). Stopping a job that has ended changes nothing.",
    )
    stop.add_argument("job_id", type=_job_id, metavar="ID", help="the job to stop")
    stop.add_argument("--force", action="store_true", help="kill the tasks running now, too")
    add_connection_args(stop)
    stop.set_defaults(func=run_stop)

    rerun = jsub.add_parser(
        "rerun",
        help="run a job's command again, and watch it",
        description="Start a new job with the command and options of job ID, on all its "
        "nodes or only those that did not succeed, and watch it as `podium task run` does. "
        "Exit code: 0 all nodes succeeded, 1 error or nothing to run, 2 some nodes failed, "
        "3 no node answered.",
    )
    rerun.add_argument("job_id", type=_job_id, metavar="ID", help="the job to run again")
    rerun.add_argument(
        "--only-failed",
        action="store_true",
        help="only the nodes that failed, errored or were skipped",
    )
    add_display_args(rerun)
    add_connection_args(rerun)
    rerun.set_defaults(func=run_rerun)

    from podium.cli.task import add_pace_args  # it imports this module

    run = jsub.add_parser(
        "run",
        help="run Puppet on nodes now, and watch it",
        description="Run Puppet on the target nodes now (PE's puppet job run) and watch "
        "it: a line per node with its resource event counts as it ends (a job of more "
        "than 10 nodes prints each distinct outcome once, and a summary), then a summary. "
        "In apply mode (the default) the server packs the environment's manifests and "
        "modules and each node applies them with its classification from its node groups; "
        "--mode agent runs puppet agent against the site's Puppet Server. Ctrl+C stops the "
        f"job. {TARGET_HELP} Exit code: 0 all nodes succeeded, 1 error, 2 some nodes "
        "failed, 3 no node answered.",
    )
    add_target_args(run)
    run.add_argument("-e", "--environment", default="production", help="code environment")
    noop = run.add_mutually_exclusive_group()
    noop.add_argument(
        "--noop", action="store_true", help="change nothing: report what would change"
    )
    noop.add_argument(
        "--no-noop", action="store_true", help="change things even where a node is set to noop"
    )
    run.add_argument(
        "--mode",
        choices=("apply", "agent"),
        default="apply",
        help="apply: puppet apply of the packed environment (default); agent: puppet agent "
        "against the site's Puppet Server",
    )
    run.add_argument(
        "--no-enforce-environment",
        dest="enforce_environment",
        action="store_false",
        help="run each node in the environment its node groups give it, not -e's",
    )
    for flag, what in (
        ("--debug", "debug messages"),
        ("--trace", "Ruby stack traces of errors"),
        ("--evaltrace", "the time each resource took"),
    ):
        run.add_argument(flag, action="store_true", help=f"have Puppet log {what}")
    run.add_argument("--description", default="", help="a note stored with the job")
    add_pace_args(run, "Puppet run")
    add_display_args(run)
    add_connection_args(run)
    run.set_defaults(func=run_deploy)

    plan = jsub.add_parser(
        "plan",
        help="show which nodes a target resolves to, and the order Puppet runs them in",
        description="Resolve the target as a job would and print the nodes, which of them "
        "are connected, and what was left out: duplicates, globs that matched nothing, "
        "and nodes lacking a fact the query uses; then, when applications of the "
        "environment order them, the levels a Puppet run (podium job run) goes through. "
        f"{TARGET_HELP}",
    )
    add_target_args(plan)
    plan.add_argument(
        "-e",
        "--environment",
        default="production",
        help="the environment whose applications order a Puppet run (see podium app show)",
    )
    add_connection_args(plan)
    plan.set_defaults(func=run_plan)


def add_display_args(p: argparse.ArgumentParser) -> None:
    """The flags of commands that follow a job live (``task run``, ``job rerun``)."""
    p.add_argument(
        "--stream",
        action="store_true",
        help="print the tasks' output as it comes, each line after its node's name "
        "(web01 | line; web01 ! line for stderr)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="a line for every node as it starts and ends; without it, a job of more than "
        "10 nodes prints each distinct result once and a summary by result",
    )


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


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def target_text(scope: Mapping[str, Any] | None, *, names: int = 3, width: int = 40) -> str:
    """A job's target in a few words: ``web01, web02 +8 more``, ``query: ...``,
    ``group: <id>``, with ``class: ...`` for -C."""
    if not scope:
        return ""
    parts = []
    nodes = scope.get("nodes")
    if isinstance(nodes, list):
        shown = ", ".join(str(n) for n in nodes[:names])
        parts.append(shown + (f" +{len(nodes) - names} more" if len(nodes) > names else ""))
    query = scope.get("query")
    if query is not None:
        text = query if isinstance(query, str) else _compact_json(query)
        parts.append(f"query: {_shorten(' '.join(text.split()), width)}")
    if scope.get("node_group") is not None:
        parts.append(f"group: {scope['node_group']}")
    if scope.get("classes"):
        parts.append(f"class: {', '.join(str(c) for c in scope['classes'])}")
    return clean_line("; ".join(parts))


def _compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def run_show(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    if args.job_id is None:
        return _list_jobs(client, args)
    return _show_job(client, args.job_id, as_json=args.format == "json", verbose=args.verbose)


def _list_jobs(client: ApiClient, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.state:
        params["state"] = args.state
    if args.owner:
        params["owner"] = args.owner
    listing = client.call("GET", "/jobs", params=params)
    if args.format == "json":
        print_json(listing)
        return OK
    rows = []
    for j in listing["items"]:
        options = j.get("options") or {}
        rows.append(
            [
                j["name"],
                j["state"],
                j["type"],
                str(options.get("task") or ("puppet" if j["type"] == "deploy" else "")),
                target_text(options.get("scope")),
                j["owner"]["login"],
                str(j["node_count"]),
                (j["timestamp"] or "")[:19].replace("T", " "),
                _one_line(j["description"]),
            ]
        )
    if not rows:
        if args.state or args.owner:
            print("No jobs match.")
        else:
            print(
                "No jobs yet. Start one with: podium task run podium::echo message=hi --nodes NODE"
            )
        return OK
    headers = ["ID", "STATE", "TYPE", "TASK", "TARGET", "OWNER", "NODES", "TIMESTAMP"]
    print(table(rows, [*headers, "DESCRIPTION"]))
    total = listing["pagination"]["total"]
    if total > len(rows):
        print(f"({len(rows)} of {total} jobs; --limit N shows more)")
    return OK


def _show_job(client: ApiClient, job_id: str, *, as_json: bool, verbose: bool) -> int:
    job = client.call("GET", f"/jobs/{job_id}")
    page = client.call("GET", f"/jobs/{job_id}/nodes", params={"limit": NODES_PAGE})
    nodes = list(page["items"])
    total = int((page.get("pagination") or {}).get("total") or len(nodes))
    if as_json:
        while len(nodes) < total:
            more = client.call(
                "GET",
                f"/jobs/{job_id}/nodes",
                params={"limit": NODES_PAGE, "offset": len(nodes)},
            )["items"]
            if not more:
                break
            nodes.extend(more)
        print_json({**job, "nodes": nodes})
        return OK
    out = sys.stdout
    for line in job_lines(job):
        out.write(line + "\n")
    out.write("\n")
    if nodes:
        out.write(node_table(nodes) + "\n")
        if total > len(nodes):
            out.write(
                f"({len(nodes)} of {total} nodes shown; all of them: "
                f"podium job show {job_id} --format json)\n"
            )
        out.write("\n")
    for result in node_results(job, nodes, verbose=verbose):
        out.write(result.text + "\n")
    return OK


def job_lines(job: Mapping[str, Any]) -> list[str]:
    """The fields of ``job show ID``: state, owner, target, options, times, counts."""
    options = job.get("options") or {}
    lines = [
        f"Job {clean_line(str(job['name']))}: {clean_line(str(job['state']))}",
        f"  Type:        {clean_line(str(job['type']))}",
    ]
    if job["type"] == "task":
        lines.append(f"  Task:        {clean_line(str(options.get('task')))}")
    if job["type"] == "deploy":
        lines.append(f"  Mode:        {clean_line(str(options.get('mode') or 'apply'))}")
    if options.get("params"):
        lines.append(f"  Parameters:  {clean_line(_compact_json(options['params']))}")
    lines.append(f"  Environment: {clean_line(str(job['environment']['name']))}")
    lines.append(f"  Owner:       {clean_line(str(job['owner']['login']))}")
    if job.get("description"):
        lines.append(f"  Description: {_one_line(job['description'])}")
    target = target_text(options.get("scope"), names=10, width=200)
    if target:
        lines.append(f"  Target:      {target}")
    pace = [] if not options.get("concurrency") else [f"concurrency {options['concurrency']}"]
    pace.extend(f"{label.lower()}: {text}" for label, text in pace_items(options))
    pace.extend(
        flag.replace("_", "-")
        for flag in ("noop", "no_noop", "debug", "trace", "evaltrace")
        if options.get(flag)
    )
    if options.get("enforce_environment") is False:
        pace.append("each node in its own environment")
    if pace:
        lines.append(f"  Options:     {clean_line('; '.join(pace))}")
    for label, key in (
        ("Created", "created_timestamp"),
        ("Started", "started_timestamp"),
        ("Finished", "finished_timestamp"),
    ):
        if job.get(key):
            lines.append(f"  {label + ':':<12} {clean_line(str(job[key]))}")
    if job.get("duration") is not None:
        lines.append(f"  Duration:    {job['duration']:.3f} s")
    counts = clean_line(", ".join(f"{n} {s}" for s, n in sorted(job["node_states"].items())))
    lines.append(f"  Nodes:       {job['node_count']} ({counts})")
    return lines


def _error_of(node: Mapping[str, Any]) -> str:
    """A failed task's own error message (its result's ``_error.msg``), if any."""
    result = node.get("result")
    error = result.get("_error") if isinstance(result, Mapping) else None
    msg = error.get("msg") if isinstance(error, Mapping) else None
    return msg if isinstance(msg, str) else ""


def node_table(nodes: list[Mapping[str, Any]]) -> str:
    """NODE, STATE, DURATION, MESSAGE; a disconnected node says when it is given up."""
    rows = []
    for node in nodes:
        duration = node.get("duration")
        message = _one_line(str((node.get("details") or {}).get("message") or _error_of(node)))
        away = node.get("disconnected")
        if isinstance(away, Mapping):
            when = parse_timestamp(away.get("give_up_at"))
            note = "disconnected"
            if when is not None:
                note += f", given up at {until_text(when, datetime.now(UTC))}"
            message = f"{note}; {message}" if message else note
        rows.append(
            [
                str(node["name"]),
                str(node["state"]),
                format_duration(float(duration)) if duration is not None else "",
                _shorten(message, 100),
            ]
        )
    return table(rows, ["NODE", "STATE", "DURATION", "MESSAGE"])


def run_stop(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    answer = client.call(
        "POST", "/command/stop", json={"job": args.job_id, "force": bool(args.force)}
    )
    if args.format == "json":
        print_json(answer)
        return OK
    job = answer.get("job") or {}
    state = clean_line(str(job.get("state") or ""))
    counts = job.get("nodes") or {}
    tally = clean_line(", ".join(f"{n} {s}" for s, n in counts.items()))
    tally = f" ({tally})" if tally else ""
    if state in ("finished", "failed"):
        print(f"Job {args.job_id} had already ended: {state}{tally}.")
    elif state == "stopped":
        print(f"Job {args.job_id} is stopped{tally}.")
    elif args.force:
        print(f"Job {args.job_id} is stopping{tally}: its running tasks are being killed.")
    else:
        print(
            f"Job {args.job_id} is stopping{tally}: nothing new starts; running nodes finish "
            f"(podium job stop {args.job_id} --force kills them)."
        )
    return OK


def run_rerun(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    body = {"job": args.job_id, "only_failed": bool(args.only_failed)}
    job = client.call("POST", "/command/rerun", json=body)["job"]
    as_json = args.format == "json"
    if not as_json:
        which = "the nodes that did not succeed" if args.only_failed else "all its nodes"
        print(f"Running job {args.job_id} again on {which} ...")
    try:
        return follow(
            client, job["name"], verbose=args.verbose, stream=args.stream, as_json=as_json
        )
    finally:
        client.close()


# The API's pace fields, from the flags of the same names.
PACE_FLAGS = ("concurrency", "batch", "batch_sleep", "timeout", "job_timeout", "offline_ttl")


def pace_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The pace fields of a job command's body, from its flags."""
    body = {n: getattr(args, n) for n in PACE_FLAGS if getattr(args, n, None) is not None}
    if getattr(args, "fail_fast", False):
        body["fail_fast"] = True
    return body


def deploy_command(args: argparse.Namespace) -> dict[str, Any]:
    """The body of ``POST /command/deploy`` for ``job run``'s arguments."""
    body: dict[str, Any] = {
        "scope": scope_from_args(args),
        "environment": args.environment,
        "mode": args.mode,
        "description": args.description,
    }
    for flag in ("noop", "no_noop", "debug", "trace", "evaltrace"):
        if getattr(args, flag):
            body[flag] = True
    if not args.enforce_environment:
        body["enforce_environment"] = False
    return {**body, **pace_fields(args)}


def run_deploy(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    body = deploy_command(args)
    as_json = args.format == "json"
    if not as_json:
        sys.stdout.write("Starting a Puppet run ...\n")
        sys.stdout.flush()
    answer = client.call("POST", "/command/deploy", json=body)
    warn_left_out(answer)
    query = body["scope"].get("query")
    try:
        return follow(
            client,
            answer["job"]["name"],
            verbose=args.verbose,
            stream=args.stream,
            as_json=as_json,
            query=query if args.explain and isinstance(query, str) else None,
        )
    finally:
        client.close()


def warn_left_out(answer: Mapping[str, Any]) -> None:
    """Say on stderr which nodes a job command left out for the caller's permissions."""
    left_out = answer.get("left_out")
    if not left_out:
        return
    names = [clean_line(str(n)) for n in left_out.get("nodes", ())]
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    print(
        f"warning: left out {len(names)} nodes you may not run this on ({shown}): "
        f"{clean_line(str(left_out.get('reason', '')))}",
        file=sys.stderr,
    )


def run_plan(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    scope = scope_from_args(args)
    plan = client.call("POST", "/targets", json={"scope": scope})
    items = plan["items"]
    order = None
    if items:
        body = {"scope": scope, "environment": args.environment}
        order = client.call("POST", "/command/plan", json=body)
    if args.format == "json":
        print_json({**plan, "run_order": order})
        return OK
    print_target(plan, sys.stdout, explain=True)
    if items:
        print(table([[i["name"], "yes" if i["connected"] else "no"] for i in items],
                    ["NODE", "CONNECTED"]))  # fmt: skip
    if order is not None and any(n.get("application") for n in order["nodes"].values()):
        print()
        print("\n".join(order_lines(order)))
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


def print_node(node: dict[str, Any], out: TextIO) -> None:
    """A node's line and its result; whatever the node said is cleaned of control
    characters (an escape sequence in task output must not reach the terminal)."""
    out.writelines(line.text + "\n" for line in node_lines(node))


def watch(
    client: Client, job_id: str, *, out: TextIO, verbose: bool = False, stream: bool = False
) -> int:
    """Follow a job from its event stream without the header lines: a line per node (or
    per distinct result), the summary; Choria's exit code. See :func:`watch.follow`."""
    return follow(client, job_id, out=out, verbose=verbose, stream=stream, header=False)


def summarize(
    job: dict[str, Any], nodes: list[dict[str, Any]], out: TextIO, *, wall: float | None = None
) -> int:
    """The closing lines; returns 0 all ok, 1 nothing targeted, 2 some failed, 3 no node
    answered."""
    out.writelines(line.text + "\n" for line in closing_lines(job, wall=wall))
    answered = any(n["state"] == "finished" or n.get("result") for n in nodes)
    return exit_code(job, answered=answered)
