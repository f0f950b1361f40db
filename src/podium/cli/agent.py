"""``podium agent``: the daemon that runs on every node."""

from __future__ import annotations

import argparse
from pathlib import Path

from podium.cli.ca import refuse_secret_option
from podium.cli.logs import add_log_level, configure


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "agent",
        help="run the agent on this node",
        description=(
            "Enroll with the server's CA if needed, connect to a broker (failing over down "
            "the list) and run the tasks the server sends. Settings come from --config "
            "(TOML, the same names as the flags with underscores) and flags, flags winning."
        ),
    )
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--certname", help="this node's name (default: its FQDN)")
    p.add_argument("--server-url", help="the server's API, e.g. https://podium.example:8143")
    p.add_argument(
        "--broker",
        dest="brokers",
        action="append",
        metavar="URL",
        help="broker URL, e.g. wss://podium.example:8142/pcp/v2 (repeat for failover)",
    )
    p.add_argument(
        "--vardir", type=Path, help="where the agent keeps its SSL files, spool and cache"
    )
    p.add_argument("--cacert", type=Path, help="the CA certificate to trust (pins it)")
    p.add_argument(
        "--enrollment-token-file",
        type=Path,
        metavar="FILE",
        help="file (mode 0600) holding the token that lets the CA sign this node at once; "
        "or set PODIUM_ENROLLMENT_TOKEN",
    )
    refuse_secret_option(
        p,
        "--enrollment-token",
        instead="put the token in a file (mode 0600) and give --enrollment-token-file "
        "FILE, or set PODIUM_ENROLLMENT_TOKEN",
    )
    p.add_argument("--facts-file", type=Path, help="JSON object of extra facts to report")
    p.add_argument("--concurrency", type=int, help="tasks run at once (default 8)")
    p.add_argument(
        "--puppet-bin",
        metavar="PATH",
        help="the puppet command for puppet runs, looked up on PATH (default: puppet)",
    )
    p.add_argument(
        "--puppet-root",
        type=Path,
        metavar="DIR",
        help="give Puppet folders of its own under DIR (etc, var, code, log, run, public, "
        "etc/ssl) instead of its defaults",
    )
    add_log_level(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from podium.agent import config as agent_config
    from podium.agent.daemon import run_agent

    configure(args.log_level)
    overrides = {
        name: getattr(args, name)
        for name in (
            "certname",
            "server_url",
            "brokers",
            "vardir",
            "cacert",
            "enrollment_token_file",
            "facts_file",
            "concurrency",
            "puppet_bin",
            "puppet_root",
        )
    }
    return run_agent(agent_config.load(args.config, overrides))
