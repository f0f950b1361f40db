"""``podium puppet status|enable|disable``: Puppet on many nodes at once, the nodes
grouped by state, as MCollective's ``mco puppet status|enable|disable`` showed them.

The lines are made by pure functions (:func:`status_lines`, :func:`node_line`) from the
API's answer; whatever a node sent is cleaned of control characters before it is
printed. :mod:`podium.cli.resource` shares the helpers at the bottom.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from podium.cli.client import ApiClient, add_connection_args, clean_line, print_json
from podium.cli.durations import format_duration
from podium.cli.job import print_target
from podium.cli.target import TARGET_HELP, add_target_args, scope_from_args
from podium.cli.watch import ERROR, NO_ANSWER, OK, SOME_FAILED

NAMES_SHOWN = 20  # node names a group's line lists unless --verbose
MAX_WAIT = 120  # seconds the server waits at most for status, enable and disable
_HTTP_MARGIN = 30.0  # seconds the CLI waits for the server beyond the nodes' timeout

_STATUS_EXIT = (
    f"Exit code: {OK} every node answered, {ERROR} an error or nothing targeted, "
    f"{SOME_FAILED} some nodes did not answer, {NO_ANSWER} none did."
)
_SWITCH_EXIT = (
    f"Exit code: {OK} every node answered and is now {{state}}, {ERROR} an error or "
    f"nothing targeted, {SOME_FAILED} some nodes did not answer, are not {{state}} or "
    f"were left out (not permitted), {NO_ANSWER} none answered."
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    puppet = sub.add_parser(
        "puppet",
        help="Puppet on nodes: its status, enable or disable it",
        description="Puppet's state on many nodes at once, grouped by state.",
    )
    psub = puppet.add_subparsers(dest="puppet_command", metavar="SUBCOMMAND", required=True)
    status = psub.add_parser(
        "status",
        help="whether Puppet is enabled, running, and how its last run went",
        description="Ask every targeted node's agent about its Puppet: enabled or "
        "disabled (and why), running now, its last run (when, its status, resources "
        f"changed and failed). Prints the nodes grouped by state. {TARGET_HELP} "
        f"{_STATUS_EXIT}",
    )
    enable = psub.add_parser(
        "enable",
        help="enable Puppet (lift a disable)",
        description="Enable Puppet on every targeted node: lift the lock that `puppet "
        "agent --disable` or `podium puppet disable` set; then print the nodes grouped "
        f"by state. Needs puppet_agent:run on the nodes. {TARGET_HELP} "
        + _SWITCH_EXIT.format(state="enabled"),
    )
    disable = psub.add_parser(
        "disable",
        help="disable Puppet, with a reason",
        description="Disable Puppet on every targeted node, with a reason that Puppet "
        "runs (Podium's and `puppet agent`'s) answer with until it is enabled again; then "
        f"print the nodes grouped by state. Needs puppet_agent:run on the nodes. "
        f"{TARGET_HELP} " + _SWITCH_EXIT.format(state="disabled"),
    )
    disable.add_argument(
        "-m",
        "--message",
        metavar="WHY",
        default="",
        help="why Puppet is disabled (one line, at most 1000 characters)",
    )
    for parser, action in ((status, "status"), (enable, "enable"), (disable, "disable")):
        add_target_args(parser)
        parser.add_argument(
            "--timeout",
            type=seconds_arg(MAX_WAIT),
            default=10.0,
            help=f"seconds to wait for the nodes (default 10, at most {MAX_WAIT})",
        )
        parser.add_argument(
            "-v", "--verbose", action="store_true", help="a line for every node, too"
        )
        add_connection_args(parser)
        parser.set_defaults(func=run, action=action)


def run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"scope": scope_from_args(args), "timeout": args.timeout}
    if args.action == "disable" and args.message:
        body["message"] = args.message
    with api_client(args, args.timeout) as client:
        answer = client.call("POST", f"/command/puppet_{args.action}", json=body)
    if args.format == "json":
        print_json(answer)
    else:
        print_target(answer, sys.stdout, explain=args.explain)
        lines = status_lines(answer, action=args.action, verbose=args.verbose)
        sys.stdout.writelines(f"{line}\n" for line in lines)
    return status_exit(answer, args.action)


# -- lines (pure) ------------------------------------------------------------------------

_RUN_LABELS = {
    "failed": "Idle, last run failed",
    "changed": "Idle, last run changed",
    "unchanged": "Idle, last run unchanged",
    None: "Idle, never run",
}


def group_label(group: Mapping[str, Any]) -> str:
    """``Disabled``, ``Running``, ``Idle, last run changed``, ``Idle, never run``."""
    state = group.get("state")
    if state == "disabled":
        return "Disabled"
    if state == "running":
        return "Running"
    run = group.get("last_run")
    return _RUN_LABELS.get(run, f"Idle, last run {clean_line(str(run))}")


def status_lines(answer: Mapping[str, Any], *, action: str, verbose: bool = False) -> list[str]:
    """What ``podium puppet <action>`` prints after the target: a line per group (the
    state, its nodes, a disabled agent's reason), the nodes that did not answer with
    why, those left out; with ``verbose``, a line per node."""
    lines = []
    items = answer.get("items") or []
    if action != "status":
        wanted = action == "enable"
        done = sum(1 for i in items if (i.get("status") or {}).get("enabled") is wanted)
        verb = "Enabled" if wanted else "Disabled"
        lines.append(f"{verb} Puppet on {done} of {len(items)} node{_s(len(items))}.")
    for group in answer.get("groups") or ():
        nodes = group.get("nodes") or []
        line = f"{group_label(group)} ({len(nodes)}): {names_text(nodes, verbose=verbose)}"
        if group.get("state") == "disabled":
            reason = group.get("message")
            line += f" — {clean_line(str(reason))}" if reason else " — no reason given"
        lines.append(line)
    lines.extend(unanswered_lines(answer, verbose=verbose))
    left_out = answer.get("left_out")
    if left_out:
        nodes = left_out.get("nodes") or []
        lines.append(
            f"Left out ({len(nodes)}): {names_text(nodes, verbose=verbose)} — "
            f"{clean_line(str(left_out.get('reason') or 'not permitted'))}"
        )
    if verbose and items:
        lines.append("")
        width = max(len(clean_line(str(i.get("name")))) for i in items)
        lines.extend(node_line(i, width=width) for i in items)
    return lines


def node_line(item: Mapping[str, Any], *, width: int = 0) -> str:
    """One node: ``web-1  disabled: maintenance; last run changed 2m ago (12 resources,
    2 changed, 0 failed; 3.2s; config 1764669600)``."""
    name = clean_line(str(item.get("name"))).ljust(width)
    status = item.get("status")
    if not isinstance(status, Mapping):
        return f"{name}  no answer: {clean_line(str(item.get('error') or 'unknown'))}"
    if status.get("enabled"):
        state = "running" if status.get("running") else "idle"
    else:
        reason = status.get("disabled_message")
        state = f"disabled: {clean_line(str(reason))}" if reason else "disabled"
        if status.get("running"):  # disabled while a run went on: it finishes
            state += " (a run is still going)"
    return f"{name}  {state}; {last_run_text(status)}"


def last_run_text(status: Mapping[str, Any]) -> str:
    """``last run changed 2m ago (12 resources, 2 changed, 0 failed; 3.2s; config 17)``
    or ``never run``."""
    run = status.get("last_run")
    if not isinstance(run, Mapping):
        return "never run"
    text = f"last run {clean_line(str(run.get('status') or 'unknown'))}"
    since = status.get("since_last_run")
    if isinstance(since, int | float) and not isinstance(since, bool):
        text += f" {format_duration(since)} ago"
    elif run.get("time"):
        text += f" at {clean_line(str(run['time']))}"
    resources = run.get("resources") if isinstance(run.get("resources"), Mapping) else {}
    details = []
    if resources:
        counts = ", ".join(
            f"{_count(resources.get(k))} {k}" for k in ("changed", "failed") if k in resources
        )
        details.append(
            f"{_count(resources.get('total'))} resources" + (f", {counts}" if counts else "")
        )
    if _is_number(run.get("duration")):
        details.append(format_duration(run["duration"]))
    if run.get("config_version") not in (None, ""):
        details.append(f"config {clean_line(str(run['config_version']))}")
    return text + (f" ({'; '.join(details)})" if details else "")


def status_exit(answer: Mapping[str, Any], action: str) -> int:
    """0 every node answered (and, for enable/disable, is in that state now), 1 nothing
    targeted, 2 some did not (or are not, or were left out), 3 none answered."""
    items = answer.get("items") or []
    if not items:
        return ERROR
    answered = [i for i in items if isinstance(i.get("status"), Mapping)]
    if not answered:
        return NO_ANSWER
    if len(answered) < len(items) or answer.get("left_out"):
        return SOME_FAILED
    if action != "status" and any(
        i["status"].get("enabled") is not (action == "enable") for i in answered
    ):
        return SOME_FAILED
    return OK


# -- shared with `podium resource` -------------------------------------------------------


def api_client(args: argparse.Namespace, wait: float) -> ApiClient:
    """A client that waits for the server as long as the server waits for the nodes."""
    return ApiClient(args.server_url, args.cacert, args.token, timeout=wait + _HTTP_MARGIN)


def seconds_arg(most: int) -> Callable[[str], float]:
    """An argparse ``type=`` for seconds to wait, more than 0 and at most ``most``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not 0 < value <= most:
            raise argparse.ArgumentTypeError(
                f"--timeout must be more than 0 and at most {most} seconds"
            )
        return value

    return parse


def names_text(nodes: Sequence[Any], *, verbose: bool = False) -> str:
    """``web-1, web-2`` (the first :data:`NAMES_SHOWN` unless ``verbose``, then how many
    more)."""
    shown = nodes if verbose else nodes[:NAMES_SHOWN]
    text = ", ".join(clean_line(str(n)) for n in shown)
    if len(nodes) > len(shown):
        text += f" and {len(nodes) - len(shown)} more (--verbose lists them)"
    return text


def unanswered_lines(answer: Mapping[str, Any], *, verbose: bool = False) -> list[str]:
    """``No answer (2): web-7, web-8 — no answer within 10 s``, a line per reason."""
    lines = []
    for group in answer.get("unanswered") or ():
        nodes = group.get("nodes") or []
        reason = clean_line(str(group.get("reason") or "unknown"))
        lines.append(f"No answer ({len(nodes)}): {names_text(nodes, verbose=verbose)} — {reason}")
    return lines


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> str:
    return str(int(value)) if _is_number(value) else "?"
