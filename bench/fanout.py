"""Fan-out benchmark: a task job on a simulated fleet of 1,000 and 5,000 nodes.

A real ``podium server`` process (embedded broker, SQLite unless ``--database-url``)
and, in ONE other process, a fleet of simulated nodes: each is a real TLS WebSocket
connection to the broker with its own certificate from the server's CA, and behaves
like an agent on the wire (docs/protocol.md): ``facts_update`` on connect,
``rpc_provisional_response`` then ``rpc_non_blocking_response`` for a task request,
``rpc_result_ack`` consumed. The node does not run anything: the result is the echo
task's (``{"_output": "<message>\\n"}``), so the figures are the server's and broker's.

    .venv/bin/python bench/fanout.py                      # 1,000 and 5,000 nodes
    .venv/bin/python bench/fanout.py --nodes 5000 --rounds 5
    .venv/bin/python bench/fanout.py --database-url postgresql://user@127.0.0.1/podium

Certificates are issued once by a CA kept in ``--workdir`` (default
``~/.cache/podium-bench``); that CA is copied into each server's data directory, so
re-runs skip issuing. Everything else lives in temporary directories that are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import random
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    Api,
    CpuMeter,
    JobRun,
    cpu_seconds,
    default_workdir,
    interrupt_on_signals,
    median,
    ms,
    raise_nofile,
    rss_kb,
    running_server,
    secs,
    table,
    wait_idle,
    wait_quiet,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import broadcast
from websockets.exceptions import InvalidStatus, WebSocketException

from podium.agent.facts import gather
from podium.errors import ProtocolError
from podium.pki.ca import CertificateAuthority
from podium.pki.tls import client_context
from podium.protocol import envelope as pcp
from podium.protocol import messages as msg

CPUS = os.cpu_count() or 1
MESSAGES_PER_NODE = 4  # request, provisional response, final response, ack
CERT_PREFIX = "sim-"
CERT_SUFFIX = ".bench"


def certnames(count: int) -> list[str]:
    return [f"{CERT_PREFIX}{i:05d}{CERT_SUFFIX}" for i in range(1, count + 1)]


# -- certificates -------------------------------------------------------------------------


def ensure_certificates(workdir: Path, names: list[str]) -> Path:
    """A CA in ``workdir/ca`` and a certificate + key per name in ``workdir/nodes``."""
    cadir = workdir / "ca"
    nodes = workdir / "nodes"
    if (cadir / "ca_crt.pem").exists():
        ca = CertificateAuthority.open(cadir)
    else:
        shutil.rmtree(nodes, ignore_errors=True)  # issued by a CA that is gone
        ca = CertificateAuthority.init(cadir, name="Podium benchmark CA")
    nodes.mkdir(parents=True, exist_ok=True, mode=0o700)
    missing = [n for n in names if not (nodes / f"{n}.pem").exists()]
    if missing:
        print(f"Issuing {len(missing)} node certificates into {nodes} (cached for re-runs) ...")
        started = time.monotonic()
        for i, name in enumerate(missing, 1):
            cert, key = ca.issue(name)
            tmp = nodes / f"{name}.pem.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(cert + key)
            tmp.replace(nodes / f"{name}.pem")
            if i % 1000 == 0:
                print(f"  {i}/{len(missing)}")
        print(f"  done in {time.monotonic() - started:.1f} s")
    return cadir


# -- the simulated fleet (runs in its own process) ------------------------------------------


@dataclass
class FleetStats:
    connected: int = 0
    connect_errors: int = 0
    refused_busy: int = 0  # HTTP 503 from the broker's admission control
    disconnects: int = 0
    requests: int = 0
    acks: int = 0
    errors: int = 0
    round_requests: int = 0
    round_responses: int = 0
    round_acks: int = 0
    first_request: float | None = None
    last_response: float | None = None
    last_ack: float | None = None
    all_connected: asyncio.Event = field(default_factory=asyncio.Event)

    def reset_round(self) -> None:
        self.round_requests = self.round_responses = self.round_acks = 0
        self.first_request = self.last_response = self.last_ack = None

    def report(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "all_connected"}


class SimNode:
    """One simulated agent: a TLS WebSocket connection and PXP answers, no task runs."""

    __slots__ = ("certname", "context", "fleet", "uri", "ws")

    def __init__(self, fleet: Fleet, certname: str, context: ssl.SSLContext) -> None:
        self.fleet = fleet
        self.certname = certname
        self.uri = pcp.make_uri(certname, "agent")
        self.context = context
        self.ws: ClientConnection | None = None

    async def run(self) -> None:
        fleet = self.fleet
        attempt = 0
        first = True
        while not fleet.stopping:
            try:
                async with fleet.handshakes:
                    ws = await connect(
                        fleet.url,
                        ssl=self.context,
                        compression=None,
                        open_timeout=120,
                        ping_interval=None,  # the broker pings; answering is automatic
                        close_timeout=2,
                        max_queue=4,
                    )
            except InvalidStatus as exc:
                if exc.response.status_code != 503:
                    fleet.stats.connect_errors += 1
                    await asyncio.sleep(1 + random.random())
                    continue
                fleet.stats.refused_busy += 1
                retry = float(exc.response.headers.get("Retry-After", "1"))
                await asyncio.sleep(retry * (1 + random.random()))
                continue
            except (OSError, WebSocketException, TimeoutError):
                fleet.stats.connect_errors += 1
                attempt += 1
                await asyncio.sleep(min(8.0, 0.1 * 2**attempt) * random.random())
                continue
            attempt = 0
            self.ws = ws
            self._send_facts()
            if first:
                first = False
                fleet.stats.connected += 1
                if fleet.stats.connected == len(fleet.nodes):
                    fleet.connected_at = time.monotonic()
                    fleet.stats.all_connected.set()
            try:
                async for frame in ws:
                    self._receive(frame)
            except WebSocketException:
                pass
            finally:
                self.ws = None
            if not fleet.stopping:
                fleet.stats.disconnects += 1

    def _send(self, message: msg.Message, target: str, in_reply_to: str | None = None) -> None:
        env = msg.encode(message, sender=self.uri, target=target, in_reply_to=in_reply_to)
        if self.ws is not None:
            broadcast((self.ws,), pcp.serialize(env), text=True)

    def _send_facts(self) -> None:
        facts = dict(self.fleet.facts, certname=self.certname)
        self._send(msg.FactsUpdate(facts=facts, features=["python", "shell"]), "pcp://*/server")

    def _receive(self, frame: str | bytes) -> None:
        stats = self.fleet.stats
        try:
            env = pcp.parse(frame)
            message = msg.decode(env)
        except ProtocolError:
            stats.errors += 1
            return
        if isinstance(message, msg.NonBlockingRequest):
            now = time.monotonic()
            stats.requests += 1
            stats.round_requests += 1
            if stats.first_request is None:
                stats.first_request = now
            txid = message.transaction_id
            if (message.module, message.action) != ("task", "run"):
                error = msg.RpcError(transaction_id=txid, description="only task/run")
                self._send(error, env.sender, env.id)
                return
            task_input = message.params.get("input") or {}
            text = str(task_input.get("message", ""))
            self._send(msg.ProvisionalResponse(transaction_id=txid), env.sender, env.id)
            results = {"_output": f"{text}\n"}
            reply = msg.NonBlockingResponse(transaction_id=txid, results=results)
            self._send(reply, env.sender, env.id)
            stats.round_responses += 1
            stats.last_response = time.monotonic()
        elif isinstance(message, msg.ResultAck):
            stats.acks += 1
            stats.round_acks += 1
            stats.last_ack = time.monotonic()
        elif isinstance(message, msg.Error):
            stats.errors += 1


class Fleet:
    """Every simulated node of this process."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.url = url
        self.handshakes = asyncio.Semaphore(concurrency)
        self.stats = FleetStats()
        self.nodes: list[SimNode] = []
        self.stopping = False
        self.connected_at: float | None = None
        self.facts = gather("template", use_facter=False)

    def add(self, certname: str, context: ssl.SSLContext) -> None:
        self.nodes.append(SimNode(self, certname, context))


def _emit(event: str, **values: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **values}) + "\n")
    sys.stdout.flush()


async def _fleet_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    names = certnames(args.count)
    fleet = Fleet(args.broker.rstrip("/") + "/agent", args.concurrency)
    started = time.monotonic()
    for name in names:
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
        started=started,
        **fleet.stats.report(),
    )
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        line = await reader.readline()
        command = line.decode().strip()
        if command == "round":
            fleet.stats.reset_round()
            _emit("ok")
        elif command == "stats":
            _emit("stats", **fleet.stats.report())
        elif command == "quit" or not line:
            break
    fleet.stopping = True
    for node in fleet.nodes:
        if node.ws is not None:
            node.ws.transport.abort()  # no close handshake: 5,000 of them take seconds
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


class FleetProcess:
    """The parent's handle on the fleet process: JSON lines out, commands in."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def start(
        cls, *, broker: str, cacert: Path, workdir: Path, count: int, concurrency: int
    ) -> FleetProcess:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_fleet",
                *("--broker", broker, "--cacert", str(cacert), "--workdir", str(workdir)),
                *("--count", str(count), "--concurrency", str(concurrency)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        return cls(proc)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"the fleet sent no {event!r} in {timeout:.0f} s") from None
            if item is None:
                raise RuntimeError(f"the fleet process exited ({self.proc.poll()})")
            if item["event"] == event:
                return item

    def command(self, command: str, reply: str, timeout: float = 30) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect(reply, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the benchmark -----------------------------------------------------------------------


@dataclass
class Round:
    run: JobRun
    acked: float | None  # submission → the last rpc_result_ack reached the fleet
    cpu_ours: float  # CPU seconds used by the server, the fleet and this script
    cpu_other: float  # CPU seconds used meanwhile by other processes on the machine
    cpu_server: float  # CPU seconds used by the server process alone
    cpu_broker: float | None  # CPU seconds used by a standalone broker, if any
    rss: int  # the server's RSS after the round, KB


@dataclass
class SizeResult:
    nodes: int
    connect_seconds: float
    connect_cpu: float  # CPU seconds the broker's process spent while the fleet connected
    inventory_seconds: float
    refused_busy: int
    connect_errors: int
    rss_before: int
    rss_connected: int
    rss_after: int
    fleet_rss: int
    rounds: list[Round]
    disconnects: int


def wait_acks(fleet: FleetProcess, want: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = fleet.command("stats", "stats")
        if stats["round_acks"] >= want or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def bench_size(args: argparse.Namespace, count: int, cadir: Path) -> SizeResult:
    names = certnames(count)
    with running_server(
        database_url=args.database_url, ca_dir=cadir, standalone_broker=args.standalone_broker
    ) as (demo, server):
        api = Api(server)
        fleet: FleetProcess | None = None
        host = server.broker_host_pid  # the process holding the connections
        what = "broker" if server.broker_pid else "server"
        pids = [server.pid] + ([server.broker_pid] if server.broker_pid else [])
        try:
            for pid in pids:
                wait_idle(pid)
            rss_before = rss_kb(host)
            print(f"[{count}] {what} up (pid {host}, RSS {rss_before / 1024:.1f} MiB)")
            started = time.monotonic()
            cpu_start = cpu_seconds(host)
            fleet = FleetProcess.start(
                broker=server.broker_url,
                cacert=server.cacert,
                workdir=args.workdir,
                count=count,
                concurrency=args.connect_concurrency,
            )
            demo.procs.append(fleet.proc)  # type: ignore[arg-type]  # stopped with the rest
            connected = fleet.expect("connected", timeout=args.timeout)
            api.wait_connected(names, timeout=args.timeout)
            inventory = time.monotonic() - started
            connect_cpu = cpu_seconds(host) - cpu_start
            print(
                f"[{count}] fleet connected in {connected['seconds']:.2f} s, after "
                f"{connected['contexts_seconds']:.2f} s loading its TLS certificates "
                f"({connected['refused_busy']} handshakes refused with 503 and retried, "
                f"{connected['connect_errors']} connect errors); all in the server's "
                f"inventory {inventory:.2f} s after the fleet process started; {what} CPU "
                f"{connect_cpu:.1f} s, {connect_cpu / count * 1000:.1f} ms per connection"
            )
            for pid in pids:
                wait_idle(pid)
            rss_connected = rss_kb(host)
            per_node = (rss_connected - rss_before) / count
            print(
                f"[{count}] {what} RSS {rss_connected / 1024:.1f} MiB connected: "
                f"{per_node:.1f} KB per connected node"
                + (
                    f" (server RSS {rss_kb(server.pid) / 1024:.1f} MiB)"
                    if server.broker_pid
                    else ""
                )
            )
            rounds: list[Round] = []
            meter = CpuMeter([*pids, fleet.proc.pid])
            for i in range(1, args.rounds + 1):
                fleet.command("round", "ok")
                meter.restart()
                cpu_before = [cpu_seconds(pid) for pid in pids]
                run = api.run_task(
                    names, params={"message": f"round {i}"}, poll=args.poll, timeout=args.timeout
                )
                stats = wait_acks(fleet, count, timeout=60)
                ours, other, _steal = meter.read()
                used = [cpu_seconds(pid) - b for pid, b in zip(pids, cpu_before, strict=True)]
                acked = None
                if stats["round_acks"] >= count and stats["last_ack"] is not None:
                    acked = stats["last_ack"] - run.started_at
                for pid in pids:
                    wait_idle(pid)
                rss = rss_kb(host)
                broker_cpu = used[1] if len(used) > 1 else None
                rounds.append(Round(run, acked, ours, other, used[0], broker_cpu, rss))
                rate = MESSAGES_PER_NODE * count / acked if acked else None
                print(
                    f"[{count}] round {i}: job {run.job_id} stored in {secs(run.seconds)} "
                    f"(POST answered in {secs(run.submit_seconds)}, server duration "
                    f"{secs(run.server_duration)}), last ack {secs(acked)}, "
                    + (f"{rate:,.0f} msg/s" if rate else "acks missing")
                    + f"; CPU {used[0]:.2f} s server, "
                    + (f"{broker_cpu:.2f} s broker, " if broker_cpu is not None else "")
                    + f"{ours:.2f} s all ours, {other:.2f} s other processes; "
                    f"{what} RSS {rss / 1024:.1f} MiB"
                )
            rss_after = rss_kb(host)
            final = fleet.command("stats", "stats")
            fleet_rss = rss_kb(fleet.proc.pid)
            return SizeResult(
                nodes=count,
                connect_seconds=connected["seconds"],
                connect_cpu=connect_cpu,
                inventory_seconds=inventory,
                refused_busy=connected["refused_busy"],
                connect_errors=connected["connect_errors"],
                rss_before=rss_before,
                rss_connected=rss_connected,
                rss_after=rss_after,
                fleet_rss=fleet_rss,
                rounds=rounds,
                disconnects=final["disconnects"],
            )
        finally:
            api.close()
            if fleet is not None:
                fleet.stop()


def summary(results: list[SizeResult], args: argparse.Namespace) -> str:
    rows = []
    for r in results:
        stored = [x.run.seconds for x in r.rounds]
        durations = [x.run.server_duration for x in r.rounds if x.run.server_duration is not None]
        acked = [x.acked for x in r.rounds if x.acked is not None]
        rate = MESSAGES_PER_NODE * r.nodes / median(acked) if acked else None
        cpu = f"{median([x.cpu_server for x in r.rounds]):.2f} s"
        brokers = [x.cpu_broker for x in r.rounds if x.cpu_broker is not None]
        if brokers:
            cpu += f" + {median(brokers):.2f} s"
        rows.append(
            [
                f"{r.nodes:,}",
                f"{r.connect_seconds:.2f} s",
                f"{secs(median(stored))} / {secs(min(stored))}",
                secs(median(durations)) if durations else "-",
                secs(median(acked)) if acked else "-",
                f"{rate:,.0f}" if rate else "-",
                cpu,
                f"{r.rss_before / 1024:.0f} MiB",
                f"{r.rss_connected / 1024:.0f} MiB",
                f"{r.rss_after / 1024:.0f} MiB",
                f"{(r.rss_connected - r.rss_before) / r.nodes:.1f} KB",
                f"{(r.rss_after - r.rss_before) / r.nodes:.1f} KB",
            ]
        )
    headers = [
        "nodes",
        "connect",
        "stored: median / best",
        "server duration",
        "last ack",
        "msg/s",
        "server CPU/job",
        "RSS before",
        "connected",
        "after jobs",
        "KB/node",
        "KB/node after jobs",
    ]
    db = "PostgreSQL" if args.database_url else "SQLite"
    if args.standalone_broker:
        where = "standalone broker (RSS: the broker process; CPU: server + broker)"
    else:
        where = "embedded broker (RSS: the server process)"
    return (
        f"Fan-out, {args.rounds} round(s) per size, {db}, {where}, "
        f"poll every {ms(args.poll)}\n\n" + table(headers, rows)
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_fleet"]:  # the fleet process, started by bench_size()
        worker = argparse.ArgumentParser(prog="fanout.py _fleet")
        worker.add_argument("--broker", required=True)
        worker.add_argument("--cacert", type=Path, required=True)
        worker.add_argument("--workdir", type=Path, required=True)
        worker.add_argument("--count", type=int, required=True)
        worker.add_argument("--concurrency", type=int, default=100)
        return fleet_worker(worker.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(
        description="Time a task job on a simulated fleet and measure the server's memory."
    )
    parser.add_argument(
        "--nodes", type=int, nargs="+", default=[1000, 5000], help="fleet sizes (1000 5000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="jobs per fleet size (3)")
    parser.add_argument("--database-url", help="e.g. postgresql://user@127.0.0.1/db (SQLite)")
    parser.add_argument(
        "--standalone-broker",
        action="store_true",
        help="connect the fleet to a `podium broker` process instead of the embedded broker",
    )
    parser.add_argument(
        "--workdir", type=Path, default=default_workdir(), help="certificate cache (%(default)s)"
    )
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        default=100,
        help="TLS handshakes the fleet has in flight at once (100)",
    )
    parser.add_argument(
        "--poll", type=float, default=0.02, help="job polling interval in seconds (0.02)"
    )
    parser.add_argument("--timeout", type=float, default=300, help="per step, seconds (300)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="wait up to this long for other processes to go quiet first (120 s)",
    )
    args = parser.parse_args(argv)
    interrupt_on_signals()
    limit = raise_nofile(max(args.nodes) * 2 + 1024)
    if limit < max(args.nodes) + 256:
        parser.error(f"RLIMIT_NOFILE is {limit}: too low for {max(args.nodes)} connections")
    cadir = ensure_certificates(args.workdir, certnames(max(args.nodes)))
    busy = wait_quiet(args.quiet_wait)
    if busy >= 0.2:
        print(f"WARNING: other processes use {busy:.0%} of a CPU; figures will be noisy")
    results: list[SizeResult] = []
    try:
        for count in args.nodes:
            results.append(bench_size(args, count, cadir))
    except KeyboardInterrupt:
        print("interrupted; stopped everything", file=sys.stderr)
        return 130
    print()
    print(summary(results, args))
    for r in results:
        other = sum(x.cpu_other for x in r.rounds)
        wall = sum(x.acked or x.run.seconds for x in r.rounds)
        if other >= 0.1 and other > 0.1 * wall * CPUS:
            print(
                f"\nWARNING: other processes used {other:.1f} CPU-s during the {r.nodes:,}-node "
                f"rounds ({other / (wall * CPUS):.0%} of this machine): "
                + (
                    "that includes the database server's own processes."
                    if args.database_url
                    else "the figures are noisy."
                )
            )
        print(
            f"\n{r.nodes:,} nodes: {r.refused_busy} handshakes refused (503) and retried, "
            f"{r.connect_errors} connect errors, {r.disconnects} disconnects during the jobs; "
            f"{r.connect_cpu / r.nodes * 1000:.1f} ms of broker-process CPU per connection; "
            f"fleet process RSS {r.fleet_rss / 1024:.0f} MiB; all connected in the server's "
            f"inventory {r.inventory_seconds:.2f} s after the fleet process started"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
