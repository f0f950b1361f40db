"""The ``podium`` command: one sub-command per module in this package.

Each module exposes ``register(subparsers)`` and attaches ``func(args) -> int`` to its
parsers; heavy imports happen inside ``func`` so that ``podium agent`` stays small.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from podium import __version__
from podium.errors import PodiumError

_COMMANDS = (
    "server",
    "broker",
    "agent",
    "ca",
    "task",
    "job",
    "app",
    "puppet",
    "resource",
    "node",
    "query",
    "group",
    "facts",
    "access",
    "user",
    "role",
    "activity",
    "demo",
)


class _Parser(argparse.ArgumentParser):
    """argparse, saying a usage error as ``podium <command>: <sentence>`` (the way
    :func:`main` says every other error) with exit code 1, since 2 and 3 are Choria's
    "some nodes failed" and "no node answered". Sub-commands' parsers are of this class
    too (``add_subparsers`` makes them of the parent's class)."""

    def error(self, message: str) -> NoReturn:
        raised = sys.exc_info()[1]
        if isinstance(raised, argparse.ArgumentError) and isinstance(
            raised.__context__, argparse.ArgumentTypeError
        ):
            # The CLI's own sentence, from a type= function, without argparse's
            # "argument --x: " in front; the option's name is added if it lacks it.
            message = str(raised.__context__)
            name = raised.argument_name or ""
            if name.startswith("-") and name not in message:
                message = f"{name}: {message}"
        else:
            message = f"{message} (see {self.prog} --help)"
        _usage_error(" ".join(self.prog.split()[:2]), message)


def _usage_error(prog: str, message: str) -> NoReturn:
    """Print ``<prog>: <message>`` and exit 1, as for any other error."""
    from podium.cli.client import clean_text  # argv may hold anything

    print(f"{prog}: {clean_text(message)}", file=sys.stderr)
    raise SystemExit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="podium",
        description="Run tasks and Puppet across a fleet, now, and review what happened.",
    )
    parser.add_argument("--version", action="version", version=f"podium {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(f"podium.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:
        # KEY=VALUE pairs may follow options (`task run T --nodes a k=v`); argparse
        # would stop at the first option after them.
        if getattr(args, "takes_pairs", False) and not any(r.startswith("-") for r in rest):
            args.parameters = [*args.parameters, *rest]
        else:
            _usage_error(
                f"podium {args.command}",
                f"unrecognized arguments: {' '.join(rest)} (see podium {args.command} --help)",
            )
    try:
        code: int = args.func(args)
    except PodiumError as exc:
        from podium.cli.client import clean_text  # the message may quote a node or server

        print(f"podium {args.command}: {clean_text(exc.msg)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `podium job show | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    sys.exit(main())
