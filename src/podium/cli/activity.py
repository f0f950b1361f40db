"""``podium activity``: who did what, newest first (``/activity-api/v1/events``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from podium.cli import access
from podium.cli.client import ApiClient, add_connection_args, clean_line, table
from podium.cli.durations import DURATION_HELP, parse_duration, parse_timestamp

API = "/activity-api/v1"
SERVICES = ("rbac", "orchestrator", "classifier", "ca")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "activity",
        help="the activity log: who did what, and when",
        description="Show the activity log, newest first: logins, changes to users, roles, "
        "node groups and certificates, and jobs started and stopped.",
    )
    p.add_argument("--user", metavar="LOGIN", help="only what this user did")
    p.add_argument("--service", choices=SERVICES, help="only this part of the server")
    p.add_argument("--type", metavar="TYPE", help="only this kind of event: login, create, ...")
    p.add_argument(
        "--object-type", metavar="TYPE", help="only events on this kind of object: users, ..."
    )
    p.add_argument(
        "--object", metavar="ID", help="only events on this object (a user's or role's id, ...)"
    )
    p.add_argument(
        "--since",
        type=since_arg,
        metavar="WHEN",
        help=f"only events from this time on: ISO 8601 (local time unless it says), or a "
        f"duration ago: {DURATION_HELP}",
    )
    p.add_argument(
        "--limit", type=_count(1, 1000), default=50, help="how many (default 50, at most 1000)"
    )
    p.add_argument("--offset", type=_count(0, 2**31), default=0, help="skip this many first")
    add_connection_args(p)
    p.set_defaults(func=run)


def since_arg(text: str) -> datetime:
    """An argparse ``type=``: ``2026-05-09T10:00`` (local time), ``...Z``, or ``2h`` ago."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since {text!r} is neither a time (2026-05-09T10:00, 2026-05-09T10:00Z) nor a "
            f"duration ago ({DURATION_HELP})"
        ) from None
    return when if when.tzinfo is not None else when.astimezone()


def _count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high or not text.strip().isascii():
            raise argparse.ArgumentTypeError(
                f"must be a whole number from {low} to {high}, not {text!r}"
            )
        return value

    return parse


def query(args: argparse.Namespace) -> dict[str, str | int]:
    """The query parameters of ``GET /events`` for ``args``."""
    params: dict[str, str | int] = {"limit": args.limit, "offset": args.offset}
    for name, value in (
        ("login", args.user),
        ("service_id", args.service),
        ("type", args.type),
        ("object_type", args.object_type),
        ("object_id", args.object),
    ):
        if value is not None:
            params[name] = value
    if args.since is not None:
        params["after"] = args.since.isoformat()
    return params


def rows(commits: list[dict[str, Any]]) -> list[list[str]]:
    """The table's rows: time, user, address, service, type, object, message."""
    out = []
    for c in commits:
        when = parse_timestamp(c.get("timestamp"))
        obj = c.get("object") or {}
        thing = obj.get("name") or obj.get("id") or ""
        for event in c.get("events") or [{}]:
            out.append(
                [
                    when.astimezone().strftime("%Y-%m-%d %H:%M:%S") if when else "",
                    (c.get("subject") or {}).get("name") or "",
                    c.get("ip_address") or "",
                    (c.get("service") or {}).get("id") or "",
                    event.get("type") or "",
                    f"{obj.get('type')} {thing}" if obj.get("type") else thing,
                    event.get("message") or "",
                ]
            )
    return out


def run(args: argparse.Namespace) -> int:
    with access.connect(args, API) as client:
        return show(client, args, sys.stdout)


def show(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    page = client.call("GET", "/events", params=query(args))
    if args.format == "json":
        access.write_json(page, out)
        return 0
    commits = page.get("commits") or []
    if not commits:
        out.write(
            "No activity" + (" matches." if args.offset == 0 else " past that offset.") + "\n"
        )
        return 0
    headers = ["TIME", "USER", "ADDRESS", "SERVICE", "TYPE", "OBJECT", "MESSAGE"]
    out.write(table(rows(commits), headers) + "\n")
    total = int(page.get("total-rows") or 0)
    shown = args.offset + len(commits)
    if shown < total:
        out.write(
            clean_line(
                f"{args.offset + 1}-{shown} of {total}, newest first; --offset {shown} for more."
            )
            + "\n"
        )
    return 0
