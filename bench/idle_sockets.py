"""Idle sockets benchmark: 20,000 connections that never send a byte, against a real server.

A real ``podium server`` with its defaults (5,000 API connections at once, a 10 s header
timeout for the API, the embedded broker's 10 s handshake timeouts) and, in worker
processes with open-file limits of their own, TCP connections that never send anything:
half to the API, half to the broker (``--api-share``). With ``--tls`` the API's sockets
finish a TLS handshake first (slower to open: one handshake after another).

While they are open the benchmark asks the API for its status, each time over a new
connection as a client that has just arrived would, and reports whether it answers and
how long it takes, with the server's RSS and open descriptors; then it waits for the
server to close the idle sockets on its own, and reports how many it did and when.

    .venv/bin/python bench/idle_sockets.py
    .venv/bin/python bench/idle_sockets.py --sockets 5000 --api-share 1 --tls
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from harness import (
    ServerInfo,
    interrupt_on_signals,
    median,
    ms,
    raise_nofile,
    rss_kb,
    running_server,
    table,
    wait_quiet,
)

SPARE = 200  # descriptors a worker keeps for itself


# -- the workers: sockets that never say anything ---------------------------------------


def _connect_all(port: int, count: int, *, batch: int, timeout: float) -> tuple[list[Any], Counter]:
    """``count`` TCP connections to ``port``, ``batch`` handshakes at a time."""
    done: list[Any] = []
    failed: Counter = Counter()
    selector = selectors.DefaultSelector()
    while len(done) + sum(failed.values()) < count:
        pending = {}
        for _ in range(min(batch, count - len(done) - sum(failed.values()))):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", port))
            if code not in (0, errno.EINPROGRESS):
                failed[errno.errorcode.get(code, str(code))] += 1
                sock.close()
                continue
            pending[sock.fileno()] = sock
            selector.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                sock = pending.pop(key.fd)
                selector.unregister(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    failed[errno.errorcode.get(code, str(code))] += 1
                    sock.close()
                else:
                    done.append(sock)
        for sock in pending.values():
            selector.unregister(sock)
            sock.close()
            failed["timeout"] += 1
    selector.close()
    return done, failed


def _handshake_all(socks: list[Any], cacert: Path) -> tuple[list[Any], Counter]:
    trust = ssl.create_default_context(cafile=str(cacert))
    done, failed = [], Counter()
    for sock in socks:
        sock.setblocking(True)
        sock.settimeout(30)
        try:
            done.append(trust.wrap_socket(sock, server_hostname="127.0.0.1"))
        except OSError as exc:
            failed[type(exc).__name__] += 1
            sock.close()
    return done, failed


def _closed(sock: Any) -> bool:
    """Whether the server has closed ``sock`` (EOF or reset); never waits."""
    sock.setblocking(False)
    try:
        return bool(sock.recv(1) == b"")
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True


def worker(args: argparse.Namespace) -> int:
    """Open the sockets, say how many, then answer "probe" with how many the server
    closed, until stdin ends."""
    limit = raise_nofile(args.api + args.broker + SPARE)
    started = time.monotonic()
    held: dict[str, list[Any]] = {}
    failed: Counter = Counter()
    for kind, port, count in (
        ("api", args.api_port, args.api),
        ("broker", args.broker_port, args.broker),
    ):
        socks, errors = _connect_all(port, count, batch=args.batch, timeout=args.connect_timeout)
        if kind == "api" and args.tls:
            socks, more = _handshake_all(socks, args.cacert)
            errors += more
        held[kind] = socks
        failed.update({f"{kind}: {k}": v for k, v in errors.items()})
    opened = {kind: len(socks) for kind, socks in held.items()}
    print(
        json.dumps(
            {
                "opened": opened,
                "failed": failed,
                "seconds": time.monotonic() - started,
                "nofile": limit,
            }
        ),
        flush=True,
    )
    closed: dict[str, int] = {kind: 0 for kind in held}
    for line in sys.stdin:
        if line.strip() != "probe":
            break
        for kind, socks in held.items():
            still = []
            for sock in socks:
                if _closed(sock):
                    sock.close()
                    closed[kind] += 1
                else:
                    still.append(sock)
            held[kind] = still
        print(
            json.dumps({"closed": closed, "open": {k: len(v) for k, v in held.items()}}), flush=True
        )
    return 0


class Workers:
    """The worker processes, asked together."""

    def __init__(self, procs: list[subprocess.Popen[str]]) -> None:
        self.procs = procs

    def read(self) -> list[dict[str, Any]]:
        out = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"a worker ended (exit {proc.wait()})")
            out.append(json.loads(line))
        return out

    def probe(self) -> tuple[Counter, Counter]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("probe\n")
            proc.stdin.flush()
        closed, still = Counter(), Counter()
        for answer in self.read():
            closed.update(answer["closed"])
            still.update(answer["open"])
        return closed, still

    def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- the server side --------------------------------------------------------------------


@dataclass
class Probe:
    answered: int
    asked: int
    seconds: list[float]
    errors: Counter


def ask_status(server: ServerInfo, count: int, *, timeout: float) -> Probe:
    """GET /status/v1/simple ``count`` times, each over a new connection."""
    trust = ssl.create_default_context(cafile=str(server.cacert))
    seconds, errors = [], Counter()
    for _ in range(count):
        started = time.monotonic()
        try:
            response = httpx.get(f"{server.url}/status/v1/simple", verify=trust, timeout=timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] += 1
            continue
        seconds.append(time.monotonic() - started)
    return Probe(len(seconds), count, seconds, errors)


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def row(phase: str, held: str, probe: Probe, pid: int) -> list[object]:
    return [
        phase,
        held,
        f"{probe.answered}/{probe.asked}" + (f" {dict(probe.errors)}" if probe.errors else ""),
        ms(median(probe.seconds)) if probe.seconds else "-",
        ms(max(probe.seconds)) if probe.seconds else "-",
        f"{rss_kb(pid) / 1024:.0f} MiB",
        fds(pid),
    ]


def run(args: argparse.Namespace) -> int:
    to_api = round(args.sockets * args.api_share)
    to_broker = args.sockets - to_api
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per_worker = (args.sockets if hard == resource.RLIM_INFINITY else hard) - SPARE
    count = max(1, math.ceil(args.sockets / per_worker))
    if args.workers:
        count = max(count, args.workers)
    with running_server() as (demo, server):
        pid = server.pid
        api_port = int(server.url.rsplit(":", 1)[1])
        broker_port = int(server.broker_url.split(":")[2].split("/")[0])
        rows = [row("before", "0", ask_status(server, args.requests, timeout=args.timeout), pid)]
        baseline_fds = fds(pid)
        procs = []
        for i in range(count):
            share_api = to_api // count + (1 if i < to_api % count else 0)
            share_broker = to_broker // count + (1 if i < to_broker % count else 0)
            argv = [
                sys.executable,
                __file__,
                "_worker",
                "--api-port",
                str(api_port),
                "--broker-port",
                str(broker_port),
                "--api",
                str(share_api),
                "--broker",
                str(share_broker),
                "--batch",
                str(args.batch),
                "--cacert",
                str(server.cacert),
            ]
            if args.tls:
                argv.append("--tls")
            procs.append(
                subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        workers = Workers(procs)
        try:
            opened = workers.read()
            total = Counter()
            failed = Counter()
            for answer in opened:
                total.update(answer["opened"])
                failed.update(answer["failed"])
            took = max(a["seconds"] for a in opened)
            print(
                f"opened {total['api'] + total['broker']} of {args.sockets} idle sockets "
                f"({total['api']} to the API{' with TLS' if args.tls else ''}, "
                f"{total['broker']} to the broker) from {count} processes "
                f"(RLIMIT_NOFILE {opened[0]['nofile']} each) in {took:.1f} s"
                + (f"; failed: {dict(failed)}" if failed else "")
            )
            closed, still = workers.probe()
            held = f"api {still['api']}, broker {still['broker']}"
            print(f"closed by the server while they were opened: {dict(closed)}")
            rows.append(
                row(
                    "sockets open",
                    held,
                    ask_status(server, args.requests, timeout=args.timeout),
                    pid,
                )
            )
            started = time.monotonic()
            gone_at: dict[str, float] = {}
            while time.monotonic() - started < args.hold:
                closed, still = workers.probe()
                for kind in ("api", "broker"):
                    if still[kind] == 0 and kind not in gone_at:
                        gone_at[kind] = time.monotonic() - started
                if len(gone_at) == 2:
                    break
                time.sleep(1.0)
            held = f"api {still['api']}, broker {still['broker']}"
            rows.append(
                row(
                    "after the timeouts",
                    held,
                    ask_status(server, args.requests, timeout=args.timeout),
                    pid,
                )
            )
            print(
                table(
                    [
                        "phase",
                        "idle sockets held",
                        "API answered",
                        "median",
                        "max",
                        "server RSS",
                        "server fds",
                    ],
                    rows,
                )
            )
            for kind in ("api", "broker"):
                when = gone_at.get(kind)
                print(
                    f"{kind}: the server closed {closed[kind]} of {total[kind]} idle sockets"
                    + (
                        f"; the last within {when:.0f} s of the probe above"
                        if when is not None
                        else f"; {still[kind]} still open after {args.hold:.0f} s"
                    )
                )
            ghosts = sum(still.values()) - (fds(pid) - baseline_fds)
            if ghosts > 0:
                print(
                    f"({ghosts} of those still open are open on this side only: the server "
                    "holds no socket for them. Its listen queue was full when they connected, "
                    "the kernel answered with SYN cookies, and they never sent a byte.)"
                )
        finally:
            workers.stop()
        alive = demo.procs[0].poll() is None
        print(f"server still running: {'yes' if alive else 'NO'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        parser = argparse.ArgumentParser(prog="idle_sockets.py _worker")
        parser.add_argument("--api-port", type=int, required=True)
        parser.add_argument("--broker-port", type=int, required=True)
        parser.add_argument("--api", type=int, required=True)
        parser.add_argument("--broker", type=int, required=True)
        parser.add_argument("--batch", type=int, default=500)
        parser.add_argument("--connect-timeout", type=float, default=10.0)
        parser.add_argument("--cacert", type=Path, required=True)
        parser.add_argument("--tls", action="store_true")
        return worker(parser.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(
        description="Open many idle sockets to a real server's API and broker; see whether "
        "the API still answers, and whether the server closes them."
    )
    parser.add_argument("--sockets", type=int, default=20_000, help="idle sockets (20000)")
    parser.add_argument(
        "--api-share", type=float, default=0.5, help="fraction of them to the API (0.5)"
    )
    parser.add_argument(
        "--tls", action="store_true", help="finish a TLS handshake on the API's sockets"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes holding the sockets (default: as few as their open-file limits allow)",
    )
    parser.add_argument("--batch", type=int, default=500, help="connects in flight (500)")
    parser.add_argument("--requests", type=int, default=20, help="status requests per phase (20)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, s (30)")
    parser.add_argument(
        "--hold", type=float, default=60.0, help="wait this long for the server to close them (60)"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=60, help="wait up to this long for a quiet machine (60)"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.api_share <= 1:
        parser.error("--api-share is a fraction, from 0 to 1")
    interrupt_on_signals()
    busy = wait_quiet(args.quiet_wait)
    if busy >= 0.2:
        print(f"WARNING: other processes use {busy:.0%} of a CPU; figures will be noisy")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
