"""``podium resource TYPE [TITLE]``: the live state of a resource on many nodes, read
through ``puppet resource``, with the nodes grouped by identical state so that the ones
that differ stand out (MCollective's resource browsing and comparison).

The lines are made by pure functions (:func:`resource_lines`, :func:`puppet_text`) from
the API's answer; whatever a node sent is cleaned of control characters before it is
printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from podium.cli.client import add_connection_args, clean_line, print_json
from podium.cli.job import print_target
from podium.cli.puppet import api_client, names_text, seconds_arg, unanswered_lines
from podium.cli.target import TARGET_HELP, add_target_args, scope_from_args
from podium.cli.watch import ERROR, NO_ANSWER, OK, SOME_FAILED
from podium.errors import ValidationError

MAX_WAIT = 300  # seconds the server waits at most for `puppet resource`
RESOURCES_SHOWN = 5  # resources a group prints in full unless --verbose
DIFFERENCES_SHOWN = 20  # differences a group lists unless --verbose
VALUE_WIDTH = 120  # characters of a value a difference line shows unless --verbose


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "resource",
        help="compare the live state of a resource across nodes",
        description="Read a resource (or every resource of a type) on every targeted "
        "node as `puppet resource` does, and group the nodes whose state is identical: "
        "each group with its nodes and the resource's parameters, the groups after the "
        "first with what differs from it; then the nodes that did not answer and why. "
        "Values of sensitive parameters (a user's password) are shown as a fingerprint. "
        f"{TARGET_HELP} Exit code: {OK} every node answered and all are identical, "
        f"{ERROR} an error or nothing targeted, {SOME_FAILED} nodes differ or some did "
        f"not answer, {NO_ANSWER} none answered.",
    )
    p.add_argument("type", metavar="TYPE", help="a resource type: file, package, user ...")
    p.add_argument(
        "title", metavar="TITLE", nargs="?", help="one resource (default: all of the type)"
    )
    add_target_args(p)
    p.add_argument(
        "--timeout",
        type=seconds_arg(MAX_WAIT),
        default=30.0,
        help=f"seconds to wait for the nodes (default 30, at most {MAX_WAIT})",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="every resource, difference and node name in full",
    )
    add_connection_args(p)
    # A title after the target flags comes back in `parameters` (see cli.main): argparse
    # fills TITLE only from the words before the first option.
    p.set_defaults(func=run, takes_pairs=True, parameters=[])


def run(args: argparse.Namespace) -> int:
    # Puppet's type names are lower case; `File` and `file` are one type.
    body: dict[str, Any] = {
        "scope": scope_from_args(args),
        "type": args.type.lower(),
        "timeout": args.timeout,
    }
    titles = [*([args.title] if args.title is not None else []), *args.parameters]
    if len(titles) > 1:
        raise ValidationError(
            f"give one title (or none, for every resource of the type), not {len(titles)}: "
            "quote a title that holds spaces"
        )
    if titles:
        body["title"] = titles[0]
    with api_client(args, args.timeout) as client:
        answer = client.call("POST", "/command/puppet_resource", json=body)
    if args.format == "json":
        print_json(answer)
    else:
        print_target(answer, sys.stdout, explain=args.explain)
        sys.stdout.writelines(f"{line}\n" for line in resource_lines(answer, verbose=args.verbose))
    return resource_exit(answer)


# -- lines (pure) ------------------------------------------------------------------------


def summary_line(answer: Mapping[str, Any]) -> str:
    """``All 4 nodes identical.``, ``2 groups: 4 nodes identical, 1 node differs.``"""
    groups = answer.get("groups") or []
    answered = sum(len(g.get("nodes") or ()) for g in groups)
    if not groups:
        return "No node answered."
    if len(groups) == 1:
        return f"All {_nodes(answered)} identical." if answered > 1 else "1 node answered."
    largest = len(groups[0].get("nodes") or ())
    others = answered - largest
    if largest == 1:
        return f"{len(groups)} groups: every node differs."
    verb = "differs" if others == 1 else "differ"
    return f"{len(groups)} groups: {_nodes(largest)} identical, {_nodes(others)} {verb}."


def resource_lines(answer: Mapping[str, Any], *, verbose: bool = False) -> list[str]:
    """What ``podium resource`` prints after the target: the summary, each group with
    its nodes, how it differs from the first and its resources, then the nodes that
    did not answer."""
    lines = [summary_line(answer)]
    for number, group in enumerate(answer.get("groups") or (), 1):
        nodes = group.get("nodes") or []
        lines.append("")
        head = f"Group {number} ({_nodes(len(nodes))})"
        if number > 1:
            head += ", differs from group 1"
        lines.append(f"{head}: {names_text(nodes, verbose=verbose)}")
        if number > 1:
            lines.extend(f"  {t}" for t in difference_lines(group, verbose=verbose))
        lines.extend(_resources_lines(group, first=number == 1, verbose=verbose))
    unanswered = unanswered_lines(answer, verbose=verbose)
    if unanswered:
        lines.append("")
        lines.extend(unanswered)
    return lines


def _resources_lines(group: Mapping[str, Any], *, first: bool, verbose: bool) -> list[str]:
    resources = [r for r in group.get("resources") or () if isinstance(r, Mapping)]
    if not resources:
        return ["  (no resource of this type)"]
    if verbose or len(resources) <= RESOURCES_SHOWN:
        return [f"  {line}" for r in resources for line in puppet_text(r)]
    if not first:
        return []  # its differences say it; the whole list is in group 1 and --verbose
    titles = ", ".join(clean_line(str(r.get("title"))) for r in resources[:RESOURCES_SHOWN])
    more = len(resources) - RESOURCES_SHOWN
    return [f"  {len(resources)} resources: {titles} and {more} more (--verbose shows them)"]


def difference_lines(group: Mapping[str, Any], *, verbose: bool = False) -> list[str]:
    """``File[/etc/motd] mode: '0644' → '0600'`` (group 1's value, then this group's);
    ``File[/etc/x]: only in group 1``."""
    found = [d for d in group.get("differences") or () if isinstance(d, Mapping)]
    shown = found if verbose else found[:DIFFERENCES_SHOWN]
    width = None if verbose else VALUE_WIDTH
    lines = []
    for d in shown:
        ref = _ref(str(d.get("type")), str(d.get("title")))
        parameter = d.get("parameter")
        missing = d.get("missing")
        if parameter is None:
            where = "group 1" if missing == "value" else "this group"
            lines.append(f"{ref}: only in {where}")
            continue
        before = "(not set)" if missing == "reference" else value_text(d.get("reference"), width)
        after = "(not set)" if missing == "value" else value_text(d.get("value"), width)
        lines.append(f"{ref} {clean_line(str(parameter))}: {before} → {after}")
    if len(found) > len(shown):
        lines.append(f"... and {len(found) - len(shown)} more differences (--verbose)")
    return lines


def puppet_text(resource: Mapping[str, Any]) -> list[str]:
    """A resource as ``puppet resource`` prints it::

    file { '/etc/motd':
      ensure => 'file',
      mode   => '0644',
    }
    """
    kind, title = clean_line(str(resource.get("type"))), str(resource.get("title"))
    parameters = resource.get("parameters")
    items = sorted(parameters.items()) if isinstance(parameters, Mapping) else []
    # Puppet prints ensure first.
    items.sort(key=lambda item: item[0] != "ensure")
    width = max((len(clean_line(str(k))) for k, _ in items), default=0)
    lines = [f"{kind} {{ {_quoted(title)}:"]
    lines.extend(f"  {clean_line(str(k)).ljust(width)} => {value_text(v)}," for k, v in items)
    lines.append("}")
    return lines


def value_text(value: Any, width: int | None = None) -> str:
    """A value in Puppet's syntax: ``'text'``, ``['a', 'b']``, ``{'k' => 1}``, ``true``,
    ``undef``; cut to ``width`` characters if given."""
    text = _puppet(value)
    if width is not None and len(text) > width:
        text = text[: width - 3] + "..."
    return text


def _puppet(value: Any) -> str:
    if value is None:
        return "undef"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_puppet(v) for v in value) + "]"
    if isinstance(value, Mapping):
        pairs = ", ".join(f"{_quoted(str(k))} => {_puppet(v)}" for k, v in value.items())
        return "{" + pairs + "}"
    return clean_line(repr(value))


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{clean_line(escaped)}'"


def _ref(kind: str, title: str) -> str:
    name = "::".join(part.capitalize() for part in kind.split("::"))
    return clean_line(f"{name}[{title}]")


def _nodes(count: int) -> str:
    return f"{count} node{'' if count == 1 else 's'}"


def resource_exit(answer: Mapping[str, Any]) -> int:
    """0 every node answered and all are identical, 1 nothing targeted, 2 nodes differ
    or some did not answer, 3 none answered."""
    items = answer.get("items") or []
    groups = answer.get("groups") or []
    if not items:
        return ERROR
    if not groups:
        return NO_ANSWER
    if len(groups) > 1 or answer.get("unanswered"):
        return SOME_FAILED
    return OK
