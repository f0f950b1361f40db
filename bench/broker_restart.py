"""Broker restart benchmark: SIGKILL a standalone broker under 5,000 connected agents.

A real ``podium server`` whose job engine reaches a standalone ``podium broker``
process (as ``bench/fanout.py --standalone-broker`` runs it), and, in ONE other process,
a fleet of simulated nodes: real TLS WebSocket connections with their own certificates
that answer like agents on the wire (``bench/fanout.py``'s nodes). Once the server's
inventory shows every node connected, the broker is killed with SIGKILL and started
again on the same port. The nodes reconnect with the real agent's policy
(``podium.agent.daemon.Agent.run``): after a session ends, a full-jitter exponential
backoff (``podium.protocol.backoff.full_jitter``, the agent's default base and cap), and
on HTTP 503 from the broker's admission control, the ``Retry-After`` delay first.

Measured: the time from the broker listening again until all N are reconnected (the
fleet's view, and the server's inventory), every connection attempt and how it ended
(accepted, refused with 503, connection refused while the broker was down, timeouts),
the peak attempt rate, the CPU the processes used, and the API's latency during the
storm (another thread polls ``GET /orchestrator/v1/jobs?limit=1`` and
``GET /orchestrator/v1/inventory/<node>``). Then, unless ``--no-job``, one
``podium::echo`` job on the whole fleet shows that it works again.

    .venv/bin/python bench/broker_restart.py                 # 5,000 nodes
    .venv/bin/python bench/broker_restart.py --nodes 500

Certificates are issued once into ``--workdir`` (shared with ``bench/fanout.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fanout import Fleet, FleetProcess, SimNode, certnames, ensure_certificates
from harness import (
    Api,
    CpuMeter,
    ServerInfo,
    cpu_seconds,
    default_workdir,
    interrupt_on_signals,
    median,
    ms,
    percentile,
    raise_nofile,
    restart_broker,
    rss_kb,
    running_server,
    secs,
    table,
    wait_idle,
    wait_quiet,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from podium.agent.config import AgentConfig
from podium.agent.daemon import _STABLE_AFTER, _retry_after
from podium.pki.tls import client_context
from podium.protocol.backoff import full_jitter

CPUS = os.cpu_count() or 1
# The real agent's defaults (podium.agent.config.AgentConfig).
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(AgentConfig)}
BACKOFF_BASE = float(_DEFAULTS["backoff_base"])  # type: ignore[arg-type]
BACKOFF_CAP = float(_DEFAULTS["backoff_cap"])  # type: ignore[arg-type]
CONNECT_TIMEOUT = float(_DEFAULTS["connect_timeout"])  # type: ignore[arg-type]

# How a connection attempt ended.
OK, BUSY, REFUSED, TIMEOUT, TLS, HTTP, OTHER = (
    "accepted",
    "503",
    "conn-refused",
    "timeout",
    "tls-error",
    "http-other",
    "other-error",
)
OUTCOMES = (OK, BUSY, REFUSED, TIMEOUT, TLS, HTTP, OTHER)


# -- the simulated fleet (runs in its own process) ------------------------------------------


class RestartNode(SimNode):
    """A simulated agent that reconnects as ``podium agent`` does."""

    __slots__ = ("fresh", "index", "seen")

    fleet: RestartFleet

    def __init__(self, fleet: RestartFleet, certname: str, context: ssl.SSLContext) -> None:
        super().__init__(fleet, certname, context)
        self.index = len(fleet.nodes)
        self.fresh = False  # the current session opened after the mark
        self.seen = False  # connected at least once

    async def run(self) -> None:
        """``podium.agent.daemon.Agent.run`` with one broker URL."""
        fleet = self.fleet
        loop = asyncio.get_running_loop()
        attempt = 0
        while not fleet.stopping:
            started = loop.time()
            try:
                await self._session()
            except (OSError, WebSocketException, TimeoutError) as exc:
                retry_after = _retry_after(exc)
                if retry_after:
                    await asyncio.sleep(retry_after)
            if fleet.stopping:
                break
            if loop.time() - started > _STABLE_AFTER:
                attempt = 0
            delay = full_jitter(attempt, base=BACKOFF_BASE, cap=BACKOFF_CAP)
            attempt += 1
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        fleet = self.fleet
        gate = fleet.gate()
        async with gate if gate is not None else contextlib.nullcontext():
            began = time.monotonic()
            try:
                ws = await connect(
                    fleet.url,
                    ssl=self.context,
                    compression=None,
                    open_timeout=fleet.connect_timeout,
                    ping_interval=None,  # the broker pings; answering is automatic
                    close_timeout=2,
                    max_queue=4,
                )
            except Exception as exc:
                fleet.attempt(self, began, exc)
                raise
        fleet.attempt(self, began, None)
        self.ws = ws
        if fleet.marked is not None:
            self.fresh = True
            fleet.opened()
        elif not self.seen:
            self.seen = True
            fleet.first_connect()
        self._send_facts()
        try:
            async for frame in ws:
                self._receive(frame)
        except ConnectionClosed:
            pass
        finally:
            self.ws = None
            if self.fresh:
                self.fresh = False
                fleet.fresh -= 1
            if not fleet.stopping:
                fleet.stats.disconnects += 1
                if fleet.marked is not None:
                    fleet.lost.append(time.monotonic())


def _outcome(exc: BaseException | None) -> tuple[str, float | None]:
    if exc is None:
        return OK, None
    if isinstance(exc, InvalidStatus):
        if exc.response.status_code == 503:
            return BUSY, _retry_after(exc) or None
        return HTTP, None
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED, None
    if isinstance(exc, TimeoutError):
        return TIMEOUT, None
    if isinstance(exc, ssl.SSLError):
        return TLS, None
    return OTHER, None


class RestartFleet(Fleet):
    """The fleet, and a record of every connection attempt after the mark."""

    nodes: list[RestartNode]  # type: ignore[assignment]

    def __init__(
        self, url: str, initial_concurrency: int, storm_concurrency: int, connect_timeout: float
    ) -> None:
        super().__init__(url, initial_concurrency)
        self.connect_timeout = connect_timeout
        self.storm = asyncio.Semaphore(storm_concurrency) if storm_concurrency > 0 else None
        self.marked: float | None = None
        self.fresh = 0  # sessions opened after the mark and still open
        self.reconnected_at: float | None = None
        # (node, started, ended, outcome, Retry-After) for each attempt after the mark
        self.attempts: list[tuple[int, float, float, str, float | None]] = []
        self.lost: list[float] = []  # when sessions ended, after the mark
        self.errors: Counter[str] = Counter()  # "other" failures by exception type
        self.loop_errors: Counter[str] = Counter()  # the event loop's error reports

    def add(self, certname: str, context: ssl.SSLContext) -> None:
        self.nodes.append(RestartNode(self, certname, context))

    def gate(self) -> asyncio.Semaphore | None:
        """What caps the handshakes in flight: only the first connection is capped,
        unless --storm-concurrency caps the reconnection too."""
        return self.handshakes if self.marked is None else self.storm

    def attempt(self, node: RestartNode, began: float, exc: BaseException | None) -> None:
        if self.marked is None:
            if exc is not None:
                self.stats.connect_errors += 1
                if isinstance(exc, InvalidStatus) and exc.response.status_code == 503:
                    self.stats.refused_busy += 1
            return
        outcome, retry_after = _outcome(exc)
        if outcome == OTHER:
            self.errors[f"{type(exc).__name__}: {exc}"[:100]] += 1
        self.attempts.append((node.index, began, time.monotonic(), outcome, retry_after))

    def first_connect(self) -> None:
        self.stats.connected += 1
        if self.stats.connected == len(self.nodes):
            self.connected_at = time.monotonic()
            self.stats.all_connected.set()

    def opened(self) -> None:
        self.fresh += 1
        if self.fresh == len(self.nodes) and self.reconnected_at is None:
            self.reconnected_at = time.monotonic()
            _emit("reconnected", at=self.reconnected_at)

    def mark(self) -> None:
        self.marked = time.monotonic()
        self.fresh = 0
        self.reconnected_at = None
        self.attempts.clear()
        self.lost.clear()
        self.errors.clear()
        self.loop_errors.clear()


def _emit(event: str, **values: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **values}) + "\n")
    sys.stdout.flush()


async def _fleet_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    fleet = RestartFleet(
        args.broker.rstrip("/") + "/agent",
        args.concurrency,
        args.storm_concurrency,
        args.connect_timeout,
    )

    def loop_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # uvloop reports "Fatal error on SSL protocol" (a write after the transport was
        # closed) for handshakes aborted by open_timeout; counted, not printed.
        fleet.loop_errors[str(context.get("message"))[:80]] += 1

    loop.set_exception_handler(loop_error)
    started = time.monotonic()
    for name in certnames(args.count):
        pem = args.workdir / "nodes" / f"{name}.pem"
        fleet.add(name, client_context(ca=args.cacert, cert=pem))
    contexts = time.monotonic() - started
    started = time.monotonic()
    tasks = [asyncio.create_task(node.run()) for node in fleet.nodes]
    await fleet.stats.all_connected.wait()
    assert fleet.connected_at is not None
    _emit(
        "connected",
        seconds=fleet.connected_at - started,
        contexts_seconds=contexts,
        **fleet.stats.report(),
    )
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        line = await reader.readline()
        command = line.decode().strip()
        if command == "mark":
            fleet.mark()
            _emit("marked", at=fleet.marked)
        elif command == "round":
            fleet.stats.reset_round()
            _emit("ok")
        elif command == "stats":
            _emit(
                "stats",
                fresh=fleet.fresh,
                reconnected_at=fleet.reconnected_at,
                attempts=fleet.attempts,
                lost=fleet.lost,
                error_kinds=dict(fleet.errors.most_common(10)),
                loop_errors=dict(fleet.loop_errors.most_common(5)),
                **fleet.stats.report(),
            )
        elif command == "quit" or not line:
            break
    fleet.stopping = True
    for node in fleet.nodes:
        if node.ws is not None:
            node.ws.transport.abort()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def fleet_worker(args: argparse.Namespace) -> int:
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_fleet_main(args))
    return 0


def start_fleet(args: argparse.Namespace, server: ServerInfo) -> FleetProcess:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "_fleet",
            *("--broker", server.broker_url, "--cacert", str(server.cacert)),
            *("--workdir", str(args.workdir), "--count", str(args.nodes)),
            *("--concurrency", str(args.connect_concurrency)),
            *("--storm-concurrency", str(args.storm_concurrency)),
            *("--connect-timeout", str(args.connect_timeout)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return FleetProcess(proc)  # type: ignore[arg-type]


# -- the API's latency, from another thread -------------------------------------------------


class LatencyProbe(threading.Thread):
    """Polls two cheap API calls in turn over one kept-alive connection until stopped."""

    def __init__(self, server: ServerInfo, names: list[str], interval: float) -> None:
        super().__init__(daemon=True)
        self.api = Api(server, timeout=30)
        self.names = names
        self.interval = interval
        self.samples: list[tuple[float, str, float, str | None]] = []  # at, what, s, error
        self._halt = threading.Event()

    def run(self) -> None:
        rng = random.Random(1)
        calls = ("GET /jobs?limit=1", "GET /inventory/<node>")
        i = 0
        try:
            while not self._halt.is_set():
                what = calls[i % 2]
                i += 1
                path = "/jobs?limit=1" if i % 2 else f"/inventory/{rng.choice(self.names)}"
                started = time.monotonic()
                error = None
                try:
                    self.api.call("GET", path)
                except Exception as exc:  # every failure is a figure
                    error = f"{type(exc).__name__}: {exc}"[:120]
                self.samples.append((started, what, time.monotonic() - started, error))
                self._halt.wait(self.interval)
        finally:
            self.api.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)


def latency_row(label: str, samples: list[tuple[float, str, float, str | None]]) -> list[str]:
    good = [s for _at, _what, s, error in samples if error is None]
    errors = sum(1 for *_rest, error in samples if error is not None)
    if not good:
        return [label, str(len(samples)), "-", "-", "-", str(errors)]
    return [
        label,
        str(len(samples)),
        ms(percentile(good, 50)),
        ms(percentile(good, 99)),
        ms(max(good)),
        str(errors),
    ]


# -- the benchmark -----------------------------------------------------------------------


class CpuSampler(threading.Thread):
    """CPU seconds used so far by the broker (whichever process it is), the server and
    the fleet, every ``interval`` seconds."""

    def __init__(self, server: ServerInfo, fleet_pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.fleet_pid = fleet_pid
        self.interval = interval
        self.samples: list[tuple[float, int | None, float, float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            broker = self.server.broker_pid
            try:
                used = cpu_seconds(broker) if broker is not None else 0.0
            except OSError:  # killed, not yet replaced
                broker, used = None, 0.0
            with contextlib.suppress(OSError):
                self.samples.append(
                    (
                        time.monotonic(),
                        broker,
                        used,
                        cpu_seconds(self.server.pid),
                        cpu_seconds(self.fleet_pid),
                    )
                )
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def per_bin(self, zero: float, step: float) -> dict[int, list[float]]:
        """CPU seconds used in each ``step`` from ``zero``: [broker, server, fleet]."""
        bins: dict[int, list[float]] = {}
        for (_t0, b0, bc0, sc0, fc0), (t1, b1, bc1, sc1, fc1) in itertools.pairwise(self.samples):
            used = bins.setdefault(int((t1 - zero) // step), [0.0, 0.0, 0.0])
            if b1 is not None:
                used[0] += bc1 - bc0 if b1 == b0 else bc1
            used[1] += sc1 - sc0
            used[2] += fc1 - fc0
        return bins


def softirq_seconds() -> float:
    """CPU seconds the machine has spent in soft interrupts (network processing)."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[7]) / os.sysconf("SC_CLK_TCK")


def timeline(
    attempts: list[list[Any]],
    cpu: dict[int, list[float]],
    zero: float,
    until: float,
    step: float = 1.0,
) -> list[list[str]]:
    """Per ``step`` from ``zero``: attempts started, how attempts ended, connected so
    far, and the CPU the processes used (in % of one core)."""
    started: Counter[int] = Counter()
    ended: dict[int, Counter[str]] = {}
    for _node, began, finished, outcome, _retry in attempts:
        started[int((began - zero) // step)] += 1
        ended.setdefault(int((finished - zero) // step), Counter())[outcome] += 1
    rows = []
    total_ok = 0
    first = min([*started, *ended], default=0)
    last = max([int((until - zero) // step), *started, *ended])
    for b in range(first, last + 1):
        c = ended.get(b, Counter())
        total_ok += c[OK]
        failed = sum(c[o] for o in (TLS, HTTP, OTHER))
        used = cpu.get(b, [0.0, 0.0, 0.0])
        rows.append(
            [
                f"{b * step:+.0f} s",
                str(started[b]),
                str(c[OK]),
                str(c[BUSY]),
                str(c[REFUSED]),
                str(c[TIMEOUT]),
                str(failed),
                str(total_ok),
                *(f"{u / step:.0%}" for u in used),
            ]
        )
    return rows


def peak_rate(times: list[float], window: float = 1.0) -> float:
    """The most events in any ``window`` seconds (sliding), per second."""
    times = sorted(times)
    best = 0
    low = 0
    for high, t in enumerate(times):
        while t - times[low] > window:
            low += 1
        best = max(best, high - low + 1)
    return best / window


def run(args: argparse.Namespace, cadir: Path) -> int:
    names = certnames(args.nodes)
    with running_server(ca_dir=cadir, standalone_broker=True, keep_logs=args.keep_logs) as (
        demo,
        server,
    ):
        api = Api(server)
        fleet: FleetProcess | None = None
        probe: LatencyProbe | None = None
        sampler: CpuSampler | None = None
        assert server.broker_pid is not None
        try:
            for pid in (server.pid, server.broker_pid):
                wait_idle(pid)
            print(
                f"server up (pid {server.pid}), broker up (pid {server.broker_pid}, "
                f"{server.broker_url})"
            )
            started = time.monotonic()
            fleet = start_fleet(args, server)
            demo.procs.append(fleet.proc)  # type: ignore[arg-type]  # stopped with the rest
            connected = fleet.expect("connected", timeout=args.timeout)
            api.wait_connected(names, timeout=args.timeout)
            print(
                f"{args.nodes} nodes connected in {connected['seconds']:.1f} s "
                f"(after {connected['contexts_seconds']:.1f} s loading certificates; "
                f"{connected['refused_busy']} refused with 503), all in the server's "
                f"inventory {time.monotonic() - started:.1f} s after the fleet started"
            )
            for pid in (server.pid, server.broker_pid, fleet.proc.pid):
                wait_idle(pid, timeout=120)
            broker_rss = rss_kb(server.broker_pid)
            busy = wait_quiet(args.quiet_wait)  # the tests of others come and go
            if busy >= 0.2:
                print(f"WARNING: other processes use {busy:.0%} of a CPU at the kill")
            fleet.command("mark", "marked")
            probe = LatencyProbe(server, names, args.api_interval)
            probe.start()
            sampler = CpuSampler(server, fleet.proc.pid)
            sampler.start()
            time.sleep(args.baseline)
            meter = CpuMeter([server.pid, fleet.proc.pid])
            softirq = softirq_seconds()
            server_cpu = cpu_seconds(server.pid)
            fleet_cpu = cpu_seconds(fleet.proc.pid)
            print(f"SIGKILL broker pid {server.broker_pid} and start it again ...")
            restart = restart_broker(demo, server, down=args.down)
            zero = restart.listening_at
            down = restart.listening_at - restart.killed_at
            print(f"new broker pid {restart.pid} listening {down:.2f} s after the kill")
            # The server's inventory: all N connected again.
            deadline = zero + args.timeout
            seen = 0
            link_at = None  # the server's first inventory from the new broker
            inventory_at = None
            fleet_at = None
            while True:
                with contextlib.suppress(Exception):
                    seen = api.connected(names)
                now = time.monotonic()
                if seen and link_at is None:
                    link_at = now
                if seen == args.nodes:
                    inventory_at = now
                    break
                if now > deadline:
                    break
                time.sleep(args.inventory_interval)
            with contextlib.suppress(RuntimeError):
                fleet_at = fleet.expect("reconnected", timeout=1 if inventory_at else 0.1)["at"]
            ours, other, steal = meter.read()
            softirq = softirq_seconds() - softirq
            storm_end = inventory_at or time.monotonic()
            server_used = cpu_seconds(server.pid) - server_cpu
            broker_used = cpu_seconds(restart.pid)
            fleet_used = cpu_seconds(fleet.proc.pid) - fleet_cpu
            # The meter follows the server and the fleet; the new broker is not among them.
            ours, other = ours + broker_used, max(0.0, other - broker_used)
            time.sleep(args.baseline)
            probe.stop()
            sampler.stop()
            stats = fleet.command("stats", "stats", timeout=60)
            if fleet_at is None:
                fleet_at = stats["reconnected_at"]
            job = None
            if args.job and inventory_at is not None:
                fleet.command("round", "ok")
                job = api.run_task(
                    names, params={"message": "after the restart"}, poll=0.05, timeout=120
                )
            broker_rss_after = rss_kb(restart.pid)
        finally:
            if probe is not None and probe.is_alive():
                probe.stop()
            if sampler is not None and sampler.is_alive():
                sampler.stop()
            api.close()
            if fleet is not None:
                fleet.stop()

    # -- figures -------------------------------------------------------------------------
    attempts = stats["attempts"]
    # /proc/net/tcp is read every 5 ms, and takes a while with thousands of sockets: an
    # attempt that was not refused shows the port listening at its start, if earlier.
    zero = min([zero, *(a[1] for a in attempts if a[3] != REFUSED and a[1] > restart.started_at)])
    by_outcome = Counter(a[3] for a in attempts)
    after_listen = [a for a in attempts if a[1] >= zero]
    per_node = Counter(a[0] for a in attempts)
    retry_afters = Counter(a[4] for a in attempts if a[3] == BUSY)
    ok_times = [a[2] for a in attempts if a[3] == OK]
    opened = [a[2] - a[1] for a in attempts if a[3] == OK]
    lost = stats["lost"]
    print()
    print(
        f"Broker restart under {args.nodes:,} simulated agents (standalone broker, SQLite); "
        f"reconnect policy: full jitter, base {BACKOFF_BASE:g} s, cap {BACKOFF_CAP:g} s, "
        f"Retry-After honoured; handshakes in flight during the storm: "
        + (str(args.storm_concurrency) if args.storm_concurrency > 0 else "not capped")
        + f"; connect timeout {args.connect_timeout:g} s"
    )
    print()
    rows = [
        ["broker killed → new broker listening", secs(zero - restart.killed_at)],
        [
            "sessions lost (fleet saw the kill)",
            f"{len(lost):,} within {secs(max(lost) - restart.killed_at) if lost else '-'}",
        ],
        [
            "listening → all N reconnected (fleet)",
            secs(fleet_at - zero) if fleet_at else f"NOT ALL: {stats['fresh']:,}/{args.nodes:,}",
        ],
        [
            "listening → the server's link back (inventory shows any node)",
            secs(link_at - zero) if link_at else "never",
        ],
        [
            "listening → all N connected in the server's inventory",
            secs(inventory_at - zero) if inventory_at else f"NOT ALL: {seen:,}/{args.nodes:,}",
        ],
        ["kill → all N in the server's inventory", secs(storm_end - restart.killed_at)],
        ["connection attempts", f"{len(attempts):,} ({len(after_listen):,} after listening)"],
        *[[f"  {o}", f"{by_outcome[o]:,}"] for o in OUTCOMES if by_outcome[o]],
        [
            "attempts per node",
            f"median {median(list(per_node.values())):.0f}, max {max(per_node.values())}",
        ],
        [
            "time to open, accepted attempts",
            (
                f"p50 {secs(percentile(opened, 50))}, p90 {secs(percentile(opened, 90))}, "
                f"max {secs(max(opened))}"
            )
            if opened
            else "-",
        ],
        ["Retry-After values sent with 503", str(dict(retry_afters)) if retry_afters else "-"],
        [
            "peak attempt rate (1 s sliding window)",
            f"{peak_rate([a[1] for a in attempts]):,.0f}/s (accepted: "
            f"{peak_rate(ok_times):,.0f}/s)",
        ],
        [
            "CPU during the storm",
            f"broker {broker_used:.1f} s, server {server_used:.1f} s, fleet {fleet_used:.1f} s "
            f"(all ours {ours:.1f} s over {storm_end - restart.killed_at:.1f} s; other "
            f"processes {other:.1f} s, of which {softirq:.1f} s in softirq, which includes "
            f"our loopback traffic; stolen {steal:.1f} s)",
        ],
        [
            "broker CPU per accepted connection",
            f"{broker_used / max(1, by_outcome[OK]) * 1000:.2f} ms "
            f"({broker_used / max(1, len(after_listen)) * 1000:.2f} ms per attempt after "
            "listening)",
        ],
        [
            "broker RSS before / after",
            f"{broker_rss / 1024:.0f} MiB / {broker_rss_after / 1024:.0f} MiB",
        ],
    ]
    if job is not None:
        rows.append(
            [
                "podium::echo job on all N afterwards",
                f"{secs(job.seconds)} to every result stored ({job.node_states})",
            ]
        )
    print(table(["figure", "value"], rows))
    if stats["error_kinds"]:
        print("\nother errors:", json.dumps(stats["error_kinds"], indent=1))
    if stats["loop_errors"]:
        print("the fleet's event loop reported:", json.dumps(stats["loop_errors"]))

    print("\nAPI latency (another thread; GET /jobs?limit=1 and GET /inventory/<node> in turn)")
    samples = probe.samples
    before = [s for s in samples if s[0] < restart.killed_at]
    storm = [s for s in samples if restart.killed_at <= s[0] < storm_end]
    after = [s for s in samples if s[0] >= storm_end]
    lat_rows = [latency_row("before the kill", before), latency_row("during the storm", storm)]
    for what in ("GET /jobs?limit=1", "GET /inventory/<node>"):
        lat_rows.append(latency_row(f"  storm: {what}", [s for s in storm if s[1] == what]))
    lat_rows.append(latency_row("after", after))
    print(table(["phase", "requests", "p50", "p99", "max", "errors"], lat_rows))
    errors = Counter(s[3] for s in storm if s[3] is not None)
    if errors:
        print("API errors during the storm:", dict(errors.most_common(5)))

    print(
        "\nPer second from the new broker listening: attempts started; attempts that ended "
        "accepted, refused (503), refused by the kernel (nothing listening), timed out "
        f"({args.connect_timeout:g} s), failed otherwise; nodes connected; CPU of one core used"
    )
    print(
        table(
            [
                *("second", "started", "accepted", "503", "conn-refused", "timed out"),
                *("failed", "connected", "broker CPU", "server CPU", "fleet CPU"),
            ],
            timeline(attempts, sampler.per_bin(zero, 1.0), zero, storm_end),
        )
    )
    if attempts:
        last = max((a for a in attempts if a[3] == OK), key=lambda a: a[2], default=None)
        if last is not None:
            mine = [a for a in attempts if a[0] == last[0]]
            history = ", ".join(f"{a[3]} at {a[1] - zero:+.1f} s" for a in mine)
            print(f"\nthe last node to reconnect ({names[last[0]]}): {history}")
    took = inventory_at - zero if inventory_at is not None else None
    verdict = (
        "met"
        if took is not None and took <= args.target
        else "MISSED"
        if took is not None
        else "MISSED (not all back)"
    )
    print(f"\ntarget: all {args.nodes:,} back within {args.target:.0f} s: {verdict}")
    span = storm_end - restart.killed_at
    if other - softirq > 0.1 * span * CPUS:
        print(
            f"WARNING: other processes used {other - softirq:.1f} CPU-s during the storm "
            f"besides softirq ({(other - softirq) / (span * CPUS):.0%} of this machine): "
            "the figures are noisy"
        )
    return 0 if inventory_at is not None else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_fleet"]:
        worker = argparse.ArgumentParser(prog="broker_restart.py _fleet")
        worker.add_argument("--broker", required=True)
        worker.add_argument("--cacert", type=Path, required=True)
        worker.add_argument("--workdir", type=Path, required=True)
        worker.add_argument("--count", type=int, required=True)
        worker.add_argument("--concurrency", type=int, default=100)
        worker.add_argument("--storm-concurrency", type=int, default=0)
        worker.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT)
        return fleet_worker(worker.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(
        description="SIGKILL and restart a standalone broker under a simulated fleet."
    )
    parser.add_argument("--nodes", type=int, default=5000, help="simulated agents (5000)")
    parser.add_argument(
        "--workdir", type=Path, default=default_workdir(), help="certificate cache (%(default)s)"
    )
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        default=100,
        help="handshakes in flight while the fleet first connects (100)",
    )
    parser.add_argument(
        "--storm-concurrency",
        type=int,
        default=0,
        help="cap on the handshakes in flight while reconnecting; 0: none, as a real fleet (0)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=CONNECT_TIMEOUT,
        help="the agents' open timeout: TCP, TLS and WebSocket handshakes (%(default)g s, "
        "the agent's default)",
    )
    parser.add_argument(
        "--down", type=float, default=0.0, help="seconds between the kill and the restart (0)"
    )
    parser.add_argument(
        "--target", type=float, default=60.0, help="seconds for all to be back (60)"
    )
    parser.add_argument(
        "--api-interval", type=float, default=0.05, help="pause between API probes, s (0.05)"
    )
    parser.add_argument(
        "--inventory-interval",
        type=float,
        default=0.5,
        help="how often the server's inventory is read during the storm, s (0.5)",
    )
    parser.add_argument(
        "--baseline", type=float, default=3.0, help="API probes before the kill, s (3)"
    )
    parser.add_argument(
        "--job",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run a podium::echo job on the fleet once it is back (on)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="per step, seconds (300)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="wait up to this long for other processes to go quiet first (120 s)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    interrupt_on_signals()
    limit = raise_nofile(args.nodes * 2 + 1024)
    if limit < args.nodes + 256:
        parser.error(f"RLIMIT_NOFILE is {limit}: too low for {args.nodes} connections")
    cadir = ensure_certificates(args.workdir, certnames(args.nodes))
    busy = wait_quiet(args.quiet_wait)
    if busy >= 0.2:
        print(f"WARNING: other processes use {busy:.0%} of a CPU; figures will be noisy")
    try:
        return run(args, cadir)
    except KeyboardInterrupt:
        print("interrupted; stopped everything", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
