"""Durations as people write them on the command line (``90``, ``30s``, ``5m``, ``2h``,
``1d``) and as the CLI prints them (``4m 59s``)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from itertools import pairwise

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9]+)\s*([smhd]?)")
DURATION_HELP = "seconds (90) or a number with s, m, h or d (30s, 5m, 2h, 1d)"


def parse_duration(text: str) -> int:
    """Whole seconds from ``90``, ``30s``, ``5m``, ``2h`` or ``1d``; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: give {DURATION_HELP}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def duration_arg(what: str, *, minimum: int = 1) -> Callable[[str], int]:
    """An argparse ``type=`` for a duration of at least ``minimum`` seconds; ``what``
    names it in the error (``the job timeout must be at least 1 second``)."""

    def parse(text: str) -> int:
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if value < minimum:
            unit = "second" if minimum == 1 else "seconds"
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum} {unit}")
        return value

    return parse


def format_duration(seconds: float) -> str:
    """``0.4s``, ``45s``, ``4m 59s``, ``2h 5m``, ``3d 4h``: the two largest units."""
    if seconds < 0:
        seconds = 0
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for (unit, size), (small, small_size) in pairwise(units):
        if whole >= size:
            rest = (whole % size) // small_size
            return f"{whole // size}{unit} {rest}{small}" if rest else f"{whole // size}{unit}"
    return f"{whole}s"  # not reached: whole >= 60


def parse_timestamp(text: str | None) -> datetime | None:
    """An API timestamp (ISO 8601, ``Z`` or an offset) as an aware datetime; None for
    None or anything unreadable (a display must not fail on a field it only shows)."""
    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def until_text(when: datetime, now: datetime, tz: tzinfo | None = None) -> str:
    """``12:05:01 (in 4m 59s)`` or ``12:05:01 (2m ago)``, in the local time zone unless
    ``tz`` is given; the date comes first when it is not today's."""
    local, today = when.astimezone(tz), now.astimezone(tz)
    clock = local.strftime("%H:%M:%S")
    if local.date() != today.date():
        clock = local.strftime("%Y-%m-%d %H:%M:%S")
    left = (when - now).total_seconds()
    if left >= 0:
        return f"{clock} (in {format_duration(left)})"
    return f"{clock} ({format_duration(-left)} ago)"
