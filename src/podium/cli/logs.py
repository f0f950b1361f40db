"""Logging for the long-running commands (server, broker, agent)."""

from __future__ import annotations

import argparse
import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def configure(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
