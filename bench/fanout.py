"""Fan-out benchmark: a task job on a simulated fleet of 1,000 to 10,000 nodes.

A real ``podium server`` process (embedded broker, SQLite unless ``--database-url``)
and, in ONE other process, a fleet of simulated nodes: each is a real TLS WebSocket
connection to the broker with its own certificate from the server's CA, and behaves
like an agent on the wire (docs/protocol.md): ``facts_update`` on connect,
``rpc_provisional_response`` then ``rpc_non_blocking_response`` for a task request,
``rpc_result_ack`` consumed. The node does not run anything: the result is the echo
task's (``{"_output": "<message>\\n"}``), so the figures are the server's and broker's.

Each job is submitted and followed to its end by the real CLI in its own process,
``podium task run podium::echo message=... --nodes @FILE --format json`` (``--submit
api``: by this script over the API); meanwhile the job is polled until every result is
stored. Afterwards its event log is replayed against its pace limits. Before the rounds,
jobs held pending (the fleet accepts and keeps the results back) give the server's
memory per pending node.

    .venv/bin/python bench/fanout.py                      # 1,000 and 5,000 nodes
    .venv/bin/python bench/fanout.py --nodes 10000 --task-concurrency 250 10000
    .venv/bin/python bench/fanout.py --nodes 5000 --pace none concurrency=500 batch=10%
    .venv/bin/python bench/fanout.py --nodes 5000 --rounds 5 --submit cli api --gc-stats
    .venv/bin/python bench/fanout.py --database-url postgresql://user@127.0.0.1/podium

Certificates are issued once by a CA kept in ``--workdir`` (default
``~/.cache/podium-bench``); that CA is copied into each server's data directory, so
re-runs skip issuing. Everything else lives in temporary directories that are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import queue
import random
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from harness import (
    TERMINAL_JOB_STATES,
    Api,
    CpuMeter,
    ServerInfo,
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
from podium.jobs.kinds import PACE_OPTIONS, batch_size
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
    held: int = 0  # requests accepted but not answered yet (the "hold" command)
    first_request: float | None = None
    last_response: float | None = None
    last_ack: float | None = None
    all_connected: asyncio.Event = field(default_factory=asyncio.Event)

    def reset_round(self) -> None:
        self.round_requests = self.round_responses = self.round_acks = 0
        self.first_request = self.last_response = self.last_ack = None

    def report(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "all_connected"}


@dataclass(slots=True)
class Held:
    """A task request accepted (provisional response sent) whose result is kept back."""

    node: SimNode
    txid: str
    sender: str
    in_reply_to: str
    text: str


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

    def answer(self, txid: str, sender: str, in_reply_to: str, text: str) -> None:
        stats = self.fleet.stats
        results = {"_output": f"{text}\n"}
        reply = msg.NonBlockingResponse(transaction_id=txid, results=results)
        self._send(reply, sender, in_reply_to)
        stats.round_responses += 1
        stats.last_response = time.monotonic()

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
            if self.fleet.hold:
                self.fleet.held.append(Held(self, txid, env.sender, env.id, text))
                stats.held += 1
            elif self.fleet.delay > 0:
                loop = asyncio.get_running_loop()
                loop.call_later(self.fleet.delay, self.answer, txid, env.sender, env.id, text)
            else:
                self.answer(txid, env.sender, env.id, text)
        # Anything else (a task/stop rpc_blocking_request of a forced stop) is ignored.
        elif isinstance(message, msg.ResultAck):
            stats.acks += 1
            stats.round_acks += 1
            stats.last_ack = time.monotonic()
        elif isinstance(message, msg.Error):
            stats.errors += 1


class Fleet:
    """Every simulated node of this process."""

    def __init__(self, url: str, concurrency: int, delay: float = 0.0) -> None:
        self.url = url
        self.delay = delay  # seconds between accepting a task request and its result
        self.handshakes = asyncio.Semaphore(concurrency)
        self.stats = FleetStats()
        self.nodes: list[SimNode] = []
        self.stopping = False
        self.connected_at: float | None = None
        self.facts = gather("template", use_facter=False)
        self.hold = False  # accept task requests but keep their results back
        self.held: list[Held] = []

    def release(self) -> None:
        """Answer every request kept back, and answer at once again from now on."""
        self.hold = False
        held, self.held = self.held, []
        for h in held:
            h.node.answer(h.txid, h.sender, h.in_reply_to, h.text)
        self.stats.held = 0

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
    fleet = Fleet(args.broker.rstrip("/") + "/agent", args.concurrency, args.answer_delay)
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
        elif command == "hold":
            fleet.hold = True
            _emit("ok")
        elif command == "release":
            fleet.release()
            _emit("ok")
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
        cls,
        *,
        broker: str,
        cacert: Path,
        workdir: Path,
        count: int,
        concurrency: int,
        answer_delay: float = 0.0,
    ) -> FleetProcess:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_fleet",
                *("--broker", broker, "--cacert", str(cacert), "--workdir", str(workdir)),
                *("--count", str(count), "--concurrency", str(concurrency)),
                *("--answer-delay", str(answer_delay)),
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


# -- submitting a job and following it ------------------------------------------------------

FINAL_EVENTS = frozenset({"node_finished", "node_failed", "node_errored", "node_skipped"})
FINAL_NODE_STATES = ("finished", "failed", "errored", "skipped")
EVENTS_PAGE = 10_000  # the API's largest page

# `podium task run` as the `podium` command runs it (podium.cli.main.main), with one
# addition: it writes to stderr, as JSON, when it sent POST /command/task and when the
# answer came (wall clock), and the job's id, so that the benchmark times from the very
# submission and polls the job while the CLI follows its event stream.
CLI_SHIM = """\
import json, sys, time
from podium.cli import client
_call = client.ApiClient.call
def call(self, method, path, **kwargs):
    sent = time.time()
    answer = _call(self, method, path, **kwargs)
    if method == "POST" and path == "/command/task":
        line = json.dumps({"bench_post": [sent, time.time(), answer["job"]["name"]]})
        sys.stderr.write(line + "\\n")
        sys.stderr.flush()
    return answer
client.ApiClient.call = call
from podium.cli.main import main
sys.exit(main(sys.argv[1:]))
"""

# Loaded by the server process with --gc-stats or --profile (see server_environment), as
# its sitecustomize. From SIGUSR1 to SIGUSR2 (sent around each job) it times the garbage
# collector's passes (gc.callbacks) and, with --profile, runs cProfile over the main
# thread (the event loop) and, apart, over the work items of its thread pools
# (asyncio.to_thread: the database); with --gc-freeze it calls gc.freeze() first, to
# measure what that would save. SIGUSR2 writes the GC figures so far to
# PREFIX-gc.json; the profiles are written at exit, when uvicorn re-raises the SIGTERM
# it handled: the handler found then turns it into a normal exit, so that atexit runs.
PROFILER = """\
import atexit, cProfile, gc, json, os, signal, sys, threading, time
from concurrent.futures import thread as _pool
_prefix = os.environ.pop("PODIUM_BENCH_PROFILE", None)
_profiling = os.environ.pop("PODIUM_BENCH_CPROFILE", "") == "1"
_freeze = os.environ.pop("PODIUM_BENCH_GC_FREEZE", "") == "1"
if _prefix and os.environ.pop("PODIUM_BENCH_PROFILE_PER_PID", "") == "1":
    _prefix += "-" + str(os.getpid())  # many processes (agents) with one prefix
if _prefix:
    _on = [False]
    _gc = {"seq": 0, "passes": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "longest": 0.0}
    _began = [None]
    def _gc_timer(phase, info):
        if phase == "start":
            _began[0] = time.perf_counter() if _on[0] else None
        elif _began[0] is not None:
            took = time.perf_counter() - _began[0]
            generation = info["generation"]
            _gc["passes"][generation] += 1
            _gc["seconds"][generation] += took
            _gc["longest"] = max(_gc["longest"], took)
            _began[0] = None
    gc.callbacks.append(_gc_timer)
    _main = cProfile.Profile()
    _workers = []
    _local = threading.local()
    _item_run = _pool._WorkItem.run
    def _profiled_item(self):
        if not (_on[0] and _profiling):
            return _item_run(self)
        profile = getattr(_local, "profile", None)
        if profile is None:
            profile = _local.profile = cProfile.Profile()
            _workers.append(profile)
        profile.enable()
        try:
            return _item_run(self)
        finally:
            profile.disable()
    _pool._WorkItem.run = _profiled_item
    def _start(*_):
        if _freeze:  # an experiment: what exists now is never walked by a GC pass
            gc.freeze()
        _on[0] = True
        if _profiling:
            _main.enable()
    def _stop(*_):
        if _profiling:
            _main.disable()
        _on[0] = False
        _gc["seq"] += 1
        if _gc["seq"] == 1:  # before the first job: what the collector has to walk
            import collections
            tracked = gc.get_objects()
            kinds = collections.Counter(type(o).__qualname__ for o in tracked)
            _gc["tracked"] = len(tracked)
            _gc["kinds"] = kinds.most_common(12)
            del tracked
        with open(_prefix + "-gc.json.tmp", "w") as f:
            json.dump(_gc, f)
        os.replace(_prefix + "-gc.json.tmp", _prefix + "-gc.json")
    def _dump():
        if not _profiling:
            return
        _main.disable()
        _main.dump_stats(_prefix + "-main.prof")
        if _workers:
            import pstats
            stats = pstats.Stats(_workers[0])
            for profile in _workers[1:]:
                stats.add(profile)
            stats.dump_stats(_prefix + "-threads.prof")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    atexit.register(_dump)
"""


@dataclass(frozen=True)
class Pace:
    """A job's pace options, as ``POST /command/task`` takes them."""

    label: str
    options: dict[str, Any]

    @classmethod
    def parse(cls, text: str) -> Pace:
        """``none``, or ``name=value[,name=value]``: ``concurrency=500``, ``batch=10%``."""
        if text == "none":
            return cls("none", {})
        options: dict[str, Any] = {}
        for item in text.split(","):
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in PACE_OPTIONS:
                raise argparse.ArgumentTypeError(
                    f"{item!r}: give name=value with a name of {', '.join(PACE_OPTIONS)}"
                )
            value = value.strip()
            if name == "fail_fast":
                options[name] = value.lower() in ("1", "true", "yes")
            elif name == "batch" and value.endswith("%"):
                options[name] = value
            else:
                number = float(value)
                options[name] = int(number) if number.is_integer() else number
        return cls(text, options)

    def cli_flags(self) -> list[str]:
        flags: list[str] = []
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                flags.append(flag)
            elif value is not False:
                flags += [flag, str(value)]
        return flags

    def batch_size(self, nodes: int) -> int | None:
        return batch_size(self.options.get("batch"), nodes)


@dataclass
class CliRun:
    """What the ``podium task run ... --format json`` process did (times from submission)."""

    startup: float  # process started → it sent POST /command/task
    saw_finished: float | None  # → it printed job_finished
    exited: float  # → it exited
    exit_code: int
    cpu: float  # its CPU seconds
    lines: int  # events printed
    finals: int  # distinct nodes it printed a final node event for
    last: str | None  # the last event's type


@dataclass
class Submission:
    job_id: str
    started_at: float  # time.monotonic() when POST /command/task was sent
    submit_seconds: float  # until it was answered
    stored: float  # submission → polled in a final state with every node ended
    server_duration: float | None  # the job record's duration (start → finish)
    created_to_finished: float | None  # the job record's created → finished timestamps
    state: str
    node_states: dict[str, int]
    cli: CliRun | None = None


def _when(stamp: str | None) -> datetime | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def wait_stored(
    api: Api, job_id: str, want: int, *, poll: float, deadline: float
) -> tuple[float, dict[str, Any]]:
    """Poll the job until it is in a final state with all ``want`` nodes ended."""
    while True:
        job = api.call("GET", f"/jobs/{job_id}")
        now = time.monotonic()
        states = job["node_states"]
        ended = sum(states.get(s, 0) for s in FINAL_NODE_STATES)
        if job["state"] in TERMINAL_JOB_STATES and ended == want:
            return now, job
        if now > deadline:
            raise RuntimeError(f"job {job_id} still {job['state']}: {states}")
        time.sleep(poll)


def _submission(
    job_id: str, started: float, submitted: float, ended: float, job: dict[str, Any]
) -> Submission:
    created, finished = _when(job.get("created_timestamp")), _when(job.get("finished_timestamp"))
    return Submission(
        job_id=job_id,
        started_at=started,
        submit_seconds=submitted - started,
        stored=ended - started,
        server_duration=job.get("duration"),
        created_to_finished=(finished - created).total_seconds() if created and finished else None,
        state=job["state"],
        node_states=job["node_states"],
    )


def submit(api: Api, names: list[str], params: dict[str, Any], pace: Pace) -> str:
    body = {
        "task": "podium::echo",
        "params": params,
        "scope": {"nodes": names},
        **pace.options,
    }
    job_id: str = api.call("POST", "/command/task", json=body)["job"]["name"]
    return job_id


def run_api(
    api: Api, names: list[str], message: str, pace: Pace, *, poll: float, timeout: float
) -> Submission:
    """Submit over the API (one kept-alive connection) and poll until every result is stored."""
    started = time.monotonic()
    job_id = submit(api, names, {"message": message}, pace)
    submitted = time.monotonic()
    ended, job = wait_stored(api, job_id, len(names), poll=poll, deadline=started + timeout)
    return _submission(job_id, started, submitted, ended, job)


def run_cli(
    api: Api,
    server: ServerInfo,
    nodes_file: Path,
    names: list[str],
    message: str,
    pace: Pace,
    *,
    poll: float,
    timeout: float,
) -> Submission:
    """``podium task run podium::echo message=... --nodes @FILE --format json`` in its own
    process, which submits and follows the job's event stream to its end; meanwhile this
    polls the job, to time when every result was stored."""
    env = dict(
        os.environ,
        PODIUM_SERVER_URL=server.url,
        PODIUM_CACERT=str(server.cacert),
        PODIUM_TOKEN_FILE=str(server.token_file),
    )
    env.pop("PODIUM_TOKEN", None)
    argv = [
        *(sys.executable, "-c", CLI_SHIM, "task", "run", "podium::echo", f"message={message}"),
        *("--nodes", f"@{nodes_file}", *pace.cli_flags(), "--format", "json"),
    ]
    wall_offset = time.time() - time.monotonic()
    launched = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    lines: list[bytes] = []
    errors: list[bytes] = []
    marks: dict[str, float] = {}
    posted = threading.Event()
    post: list[Any] = []
    exited: list[Any] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if b'"type": "job_finished"' in line and "finished" not in marks:
                marks["finished"] = time.monotonic()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(b'{"bench_post"') and not post:
                post.extend(json.loads(line)["bench_post"])
                posted.set()
            else:
                errors.append(line)
        posted.set()

    def reap() -> None:
        _pid, status, usage = os.wait4(proc.pid, 0)
        exited.extend([time.monotonic(), status, usage.ru_utime + usage.ru_stime])

    threads = [threading.Thread(target=f, daemon=True) for f in (read_stdout, read_stderr, reap)]
    for thread in threads:
        thread.start()
    try:
        if not posted.wait(timeout) or not post:
            raise RuntimeError(
                "the CLI did not submit the job: " + b"".join(errors[-20:]).decode(errors="replace")
            )
        sent, answered, job_id = post[0] - wall_offset, post[1] - wall_offset, str(post[2])
        ended, job = wait_stored(api, job_id, len(names), poll=poll, deadline=sent + timeout)
        for thread in threads:
            thread.join(max(1.0, sent + timeout - time.monotonic()))
        if not exited:
            raise RuntimeError(f"the CLI did not exit within {timeout:.0f} s of submitting")
    finally:
        if not exited:
            proc.kill()
            for thread in threads:
                thread.join(5)
    exit_at, status, cpu = exited
    proc.returncode = os.waitstatus_to_exitcode(status)
    events = [json.loads(line) for line in lines]
    finals = {e["details"].get("node") for e in events if e.get("type") in FINAL_EVENTS}
    if proc.returncode != 0:
        tail = b"".join(errors[-20:]).decode(errors="replace")
        print(f"WARNING: the CLI exited with code {proc.returncode}: {tail}", file=sys.stderr)
    result = _submission(job_id, sent, answered, ended, job)
    result.cli = CliRun(
        startup=sent - launched,
        saw_finished=marks["finished"] - sent if "finished" in marks else None,
        exited=exit_at - sent,
        exit_code=proc.returncode,
        cpu=cpu,
        lines=len(events),
        finals=len(finals),
        last=events[-1].get("type") if events else None,
    )
    return result


# -- what the event log says ------------------------------------------------------------------


def job_events(api: Api, job_id: str) -> list[dict[str, Any]]:
    """Every event of a job, paged through ``/jobs/:id/events?start=``."""
    start, out = 0, []
    while True:
        page = api.call(
            "GET", f"/jobs/{job_id}/events", params={"start": start, "limit": EVENTS_PAGE}
        )
        items = page["items"]
        out += items
        if len(items) < EVENTS_PAGE:
            return out
        start = int(page["next-events"]["event"])


@dataclass
class EventCheck:
    """A job's event log against its limits."""

    events: int
    finals: int  # nodes with exactly one final event
    peak_running: int  # most nodes at once between node_running and their final event
    limit: int | None  # what peak_running may reach: min(concurrency, the server's cap)
    batch: int | None  # nodes per batch
    batches: int
    early: int  # nodes of a batch that ran before every node of the previous one ended
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_events(
    events: list[dict[str, Any]], order: list[str], *, limit: int | None, batch: int | None
) -> EventCheck:
    """Replay the event log in id order: how many nodes ran at once, whether batch k+1
    started only after batch k ended (batches of ``order``, the scope's order, which
    the job core keeps), one final event per node, ``job_finished`` last."""
    running: set[str] = set()
    peak = 0
    started: dict[str, int] = {}
    ended: dict[str, int] = {}
    problems: list[str] = []
    doubled = 0
    for pos, event in enumerate(events):
        kind = event["type"]
        node = (event.get("details") or {}).get("node")
        if kind == "node_running":
            running.add(node)
            started.setdefault(node, pos)
            peak = max(peak, len(running))
        elif kind in FINAL_EVENTS:
            if node in ended:
                doubled += 1
            ended[node] = pos
            running.discard(node)
    if doubled:
        problems.append(f"{doubled} nodes with more than one final event")
    missing = len(set(order) - set(ended))
    if missing:
        problems.append(f"{missing} nodes without a final event")
    if not events or events[-1]["type"] != "job_finished":
        problems.append("job_finished is not the last event")
    if limit is not None and peak > limit:
        problems.append(f"{peak} nodes ran at once, over the limit of {limit}")
    early = 0
    groups = [order[i : i + batch] for i in range(0, len(order), batch)] if batch else []
    for previous, group in itertools.pairwise(groups):
        over = max(ended.get(n, len(events)) for n in previous)
        early += sum(1 for n in group if started.get(n, len(events)) < over)
    if early:
        problems.append(f"{early} nodes started before the previous batch had ended")
    return EventCheck(
        events=len(events),
        finals=len(ended),
        peak_running=peak,
        limit=limit,
        batch=batch,
        batches=len(groups),
        early=early,
        problems=problems,
    )


# -- the benchmark -----------------------------------------------------------------------


@dataclass
class Round:
    pace: str
    submit: str  # "cli" or "api"
    run: Submission
    check: EventCheck
    acked: float | None  # submission → the last rpc_result_ack reached the fleet
    cpu_ours: float  # CPU seconds used by the server, the fleet, the CLI and this script
    cpu_other: float  # CPU seconds used meanwhile by other processes on the machine
    cpu_server: float  # CPU seconds used by the server process alone
    cpu_broker: float | None  # CPU seconds used by a standalone broker, if any
    rss: int  # the server's RSS after the round, KB
    steal: float = 0.0  # CPU seconds the hypervisor took from this guest meanwhile
    gc: GcUse | None = None  # the server's garbage collector during the round (--gc-stats)


@dataclass
class Pending:
    """A big job held pending: ``concurrency`` nodes accepted and silent, the rest queued."""

    nodes: int
    concurrency: int
    rss_before: int  # KB, idle before submitting
    rss_pending: int  # KB, idle while the job is pending
    rss_after: int  # KB, idle once the job was stopped and has ended
    cpu: float  # server CPU from submission to pending and idle
    seconds: float  # submission → `concurrency` nodes running

    @property
    def kb_per_node(self) -> float:
        return (self.rss_pending - self.rss_before) / self.nodes


@dataclass
class SizeResult:
    nodes: int
    cap: int | None  # --task-concurrency given to the server (None: its default)
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
    pending: list[Pending]
    disconnects: int


def wait_acks(fleet: FleetProcess, want: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = fleet.command("stats", "stats")
        if stats["round_acks"] >= want or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


@dataclass
class Probe:
    """The server runs :data:`PROFILER`: GC timings per job, and cProfile if asked."""

    prefix: Path
    cprofile: bool
    freeze: bool = False
    per_pid: bool = False  # for many processes: PREFIX-<pid>-main.prof and so on
    seq: int = 0
    site: Path | None = None  # the directory holding the sitecustomize, while needed

    def site_dir(self) -> Path:
        """A directory with :data:`PROFILER` as sitecustomize.py; it must outlive the
        start-up of the processes that load it (see :meth:`close`)."""
        if self.site is None:
            self.site = Path(tempfile.mkdtemp(prefix="podium-bench-profile-"))
            (self.site / "sitecustomize.py").write_text(PROFILER)
        return self.site

    def close(self) -> None:
        if self.site is not None:
            shutil.rmtree(self.site, ignore_errors=True)
            self.site = None

    def start(self, pid: int) -> None:
        os.kill(pid, signal.SIGUSR1)

    def stop(self, pid: int) -> dict[str, Any]:
        """Stop recording; the GC figures so far (cumulative)."""
        os.kill(pid, signal.SIGUSR2)
        self.seq += 1
        path = self.prefix.with_name(self.prefix.name + "-gc.json")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                figures: dict[str, Any] = json.loads(path.read_text())
                if figures["seq"] >= self.seq:
                    return figures
            time.sleep(0.01)
        raise RuntimeError(f"the server wrote no {path}")


@dataclass
class GcUse:
    """The server's garbage collection passes over a span: count and seconds per
    generation, and the longest pass."""

    passes: list[int]
    seconds: list[float]
    longest: float

    @classmethod
    def between(cls, before: dict[str, Any], after: dict[str, Any]) -> GcUse:
        return cls(
            [a - b for a, b in zip(after["passes"], before["passes"], strict=True)],
            [a - b for a, b in zip(after["seconds"], before["seconds"], strict=True)],
            after["longest"],
        )

    def text(self) -> str:
        return (
            f"GC {sum(self.seconds):.2f} s in {sum(self.passes)} passes (generation 2: "
            f"{self.passes[2]} passes, {self.seconds[2]:.2f} s; longest pass so far "
            f"{self.longest * 1000:.0f} ms)"
        )


@contextlib.contextmanager
def server_environment(cap: int | None, probe: Probe | None) -> Iterator[None]:
    """Environment for the server process while it starts (it inherits ours; the harness
    passes no extra flags): PODIUM_TASK_CONCURRENCY for ``--task-concurrency``, and with
    ``probe`` :data:`PROFILER` as its sitecustomize. Restored once it started. (Also
    used by agents.py around starting its agents.)"""
    values: dict[str, str] = {}
    if cap is not None:
        values["PODIUM_TASK_CONCURRENCY"] = str(cap)
    if probe is not None:
        tmp = probe.site_dir()
        probe.prefix.parent.mkdir(parents=True, exist_ok=True)
        values["PODIUM_BENCH_PROFILE"] = str(probe.prefix.resolve())
        values["PODIUM_BENCH_CPROFILE"] = "1" if probe.cprofile else "0"
        values["PODIUM_BENCH_GC_FREEZE"] = "1" if probe.freeze else "0"
        values["PODIUM_BENCH_PROFILE_PER_PID"] = "1" if probe.per_pid else "0"
        values["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(tmp), os.environ.get("PYTHONPATH")])
        )
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def server_cap(pid: int) -> str:
    """The PODIUM_TASK_CONCURRENCY the server process got, from its environment."""
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"PODIUM_TASK_CONCURRENCY="):
            return item.split(b"=", 1)[1].decode()
    return "unset (default 250)"


def cap_label(cap: int | None) -> str:
    return f"{cap:,}" if cap is not None else "250 (default)"


def hold_pending(
    api: Api, fleet: FleetProcess, names: list[str], pid: int, concurrency: int, timeout: float
) -> Pending:
    """A job on every node with ``concurrency`` against nodes that accept and then say
    nothing: the server's RSS growth while it is pending, per node. Then it is stopped
    (the queued nodes end skipped) and the held results are let go."""
    fleet.command("hold", "ok")
    try:
        wait_idle(pid)
        rss_before = rss_kb(pid)
        cpu_before = cpu_seconds(pid)
        started = time.monotonic()
        job_id = submit(
            api, names, {"message": "pending"}, Pace("hold", {"concurrency": concurrency})
        )
        deadline = started + timeout
        while True:
            job = api.call("GET", f"/jobs/{job_id}")
            if job["node_states"].get("running", 0) >= concurrency:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} never had {concurrency} nodes running")
            time.sleep(0.02)
        seconds = time.monotonic() - started
        wait_idle(pid)
        rss_pending = rss_kb(pid)
        cpu = cpu_seconds(pid) - cpu_before
        api.call("POST", "/command/stop", json={"job": job_id})
    finally:
        fleet.command("release", "ok")
    wait_stored(api, job_id, len(names), poll=0.05, deadline=time.monotonic() + timeout)
    wait_idle(pid)
    return Pending(len(names), concurrency, rss_before, rss_pending, rss_kb(pid), cpu, seconds)


def bench_size(
    args: argparse.Namespace, count: int, cap: int | None, cadir: Path, probe: Probe | None
) -> SizeResult:
    names = certnames(count)
    tag = f"[{count} cap {cap_label(cap)}]"
    with contextlib.ExitStack() as stack:
        if probe is not None:
            stack.callback(probe.close)
        with server_environment(cap, probe):
            demo, server = stack.enter_context(
                running_server(
                    database_url=args.database_url,
                    ca_dir=cadir,
                    standalone_broker=args.standalone_broker,
                )
            )
        api = Api(server)
        stack.callback(api.close)
        nodes_file = server.datadir.parent / "nodes.txt"
        nodes_file.write_text("".join(f"{n}\n" for n in names))
        fleet: FleetProcess | None = None
        host = server.broker_host_pid  # the process holding the connections
        what = "broker" if server.broker_pid else "server"
        pids = [server.pid] + ([server.broker_pid] if server.broker_pid else [])
        try:
            for pid in pids:
                wait_idle(pid)
            rss_before = rss_kb(host)
            print(
                f"{tag} {what} up (pid {host}, RSS {rss_before / 1024:.1f} MiB, "
                f"PODIUM_TASK_CONCURRENCY {server_cap(server.pid)})"
            )
            started = time.monotonic()
            cpu_start = cpu_seconds(host)
            fleet = FleetProcess.start(
                broker=server.broker_url,
                cacert=server.cacert,
                workdir=args.workdir,
                count=count,
                concurrency=args.connect_concurrency,
                answer_delay=args.answer_delay,
            )
            demo.procs.append(fleet.proc)  # type: ignore[arg-type]  # stopped with the rest
            connected = fleet.expect("connected", timeout=args.timeout)
            api.wait_connected(names, timeout=args.timeout)
            inventory = time.monotonic() - started
            connect_cpu = cpu_seconds(host) - cpu_start
            print(
                f"{tag} fleet connected in {connected['seconds']:.2f} s, after "
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
                f"{tag} {what} RSS {rss_connected / 1024:.1f} MiB connected: "
                f"{per_node:.1f} KB per connected node"
                + (
                    f" (server RSS {rss_kb(server.pid) / 1024:.1f} MiB)"
                    if server.broker_pid
                    else ""
                )
            )
            pending: list[Pending] = []
            for i in range(1, args.pending + 1):
                held = hold_pending(
                    api, fleet, names, server.pid, args.pending_concurrency, args.timeout
                )
                pending.append(held)
                print(
                    f"{tag} pending job {i} (concurrency {held.concurrency}, held): "
                    f"{held.concurrency} running after {secs(held.seconds)}; server RSS "
                    f"{held.rss_before / 1024:.1f} → {held.rss_pending / 1024:.1f} MiB "
                    f"pending ({held.kb_per_node:.2f} KB per node) → "
                    f"{held.rss_after / 1024:.1f} MiB once stopped; CPU {held.cpu:.2f} s"
                )
            rounds: list[Round] = []
            meter = CpuMeter([*pids, fleet.proc.pid])
            where = Where(api, server, fleet, meter, pids, names, nodes_file, cap, probe)
            for i in range(1, args.rounds + 1):
                for pace in args.pace:
                    for how in args.submit:
                        label = f"{tag} round {i} {pace.label} {how}:"
                        rounds.append(one_round(args, where, pace, how, label, f"round {i}"))
            rss_after = rss_kb(host)
            final = fleet.command("stats", "stats")
            fleet_rss = rss_kb(fleet.proc.pid)
            return SizeResult(
                nodes=count,
                cap=cap,
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
                pending=pending,
                disconnects=final["disconnects"],
            )
        finally:
            if fleet is not None:
                fleet.stop()
    raise AssertionError("unreachable")


@dataclass
class Where:
    """What a round runs on."""

    api: Api
    server: ServerInfo
    fleet: FleetProcess
    meter: CpuMeter
    pids: list[int]  # the server's, and the standalone broker's
    names: list[str]
    nodes_file: Path  # the names, one a line, for the CLI's --nodes @FILE
    cap: int | None
    probe: Probe | None  # the server runs PROFILER: recorded from submission to last ack


def one_round(
    args: argparse.Namespace, where: Where, pace: Pace, how: str, tag: str, message: str
) -> Round:
    api, server, fleet, meter, pids = where.api, where.server, where.fleet, where.meter, where.pids
    names, nodes_file, cap = where.names, where.nodes_file, where.cap
    count = len(names)
    wait_quiet(args.round_quiet_wait)
    fleet.command("round", "ok")
    gc_before = where.probe.stop(server.pid) if where.probe is not None else None
    if gc_before is not None and "tracked" in gc_before and gc_before["seq"] == 1:
        kinds = ", ".join(f"{name} {n:,}" for name, n in gc_before["kinds"])
        print(f"{tag} the server's GC tracks {gc_before['tracked']:,} objects: {kinds}")
    if where.probe is not None:
        where.probe.start(server.pid)
    meter.restart()
    cpu_before = [cpu_seconds(pid) for pid in pids]
    if how == "cli":
        run = run_cli(
            api, server, nodes_file, names, message, pace, poll=args.poll, timeout=args.timeout
        )
    else:
        run = run_api(api, names, message, pace, poll=args.poll, timeout=args.timeout)
    stats = wait_acks(fleet, count, timeout=60)
    ours, other, steal = meter.read()
    gc_used: GcUse | None = None
    if where.probe is not None and gc_before is not None:
        gc_used = GcUse.between(gc_before, where.probe.stop(server.pid))
    used = [cpu_seconds(pid) - b for pid, b in zip(pids, cpu_before, strict=True)]
    if run.cli is not None:  # the CLI process is ours, not "other"
        ours += run.cli.cpu
        other = max(0.0, other - run.cli.cpu)
    acked = None
    if stats["round_acks"] >= count and stats["last_ack"] is not None:
        acked = stats["last_ack"] - run.started_at
    limits = [x for x in (pace.options.get("concurrency"), cap or 250) if x is not None]
    check = check_events(
        job_events(api, run.job_id), names, limit=min(limits), batch=pace.batch_size(count)
    )
    for pid in pids:
        wait_idle(pid)
    rss = rss_kb(server.broker_host_pid)
    broker_cpu = used[1] if len(used) > 1 else None
    rate = MESSAGES_PER_NODE * count / acked if acked else None
    cli = ""
    if run.cli is not None:
        c = run.cli
        cli = (
            f"; CLI: started {secs(c.startup)} before the POST, saw job_finished "
            f"{secs(c.saw_finished)} and exited {secs(c.exited)} after it (code "
            f"{c.exit_code}, {c.lines} events, {c.finals} nodes' final events, last "
            f"{c.last}, CPU {c.cpu:.2f} s)"
        )
    batches = (
        f", {check.batches} batches of {check.batch}, {check.early} early" if check.batch else ""
    )
    print(
        f"{tag} job {run.job_id} {run.state}, stored in {secs(run.stored)} (POST answered in "
        f"{secs(run.submit_seconds)}, created → finished {secs(run.created_to_finished)}), "
        f"last ack {secs(acked)}, "
        + (f"{rate:,.0f} msg/s" if rate else "acks missing")
        + cli
        + f"; CPU {used[0]:.2f} s server, "
        + (f"{broker_cpu:.2f} s broker, " if broker_cpu is not None else "")
        + f"{ours:.2f} s all ours, {other:.2f} s other processes, {steal:.2f} s stolen; "
        + (f"server {gc_used.text()}; " if gc_used is not None else "")
        + f"{what_rss(server)} RSS "
        f"{rss / 1024:.1f} MiB; events: {check.events}, peak running {check.peak_running}"
        f" (limit {check.limit}){batches}: " + ("ok" if check.ok else "; ".join(check.problems))
    )
    return Round(
        pace.label, how, run, check, acked, ours, other, used[0], broker_cpu, rss, steal, gc_used
    )


def what_rss(server: ServerInfo) -> str:
    return "broker" if server.broker_pid else "server"


# -- the summary ----------------------------------------------------------------------------


def _med(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return median(known) if known else None


def job_table(results: list[SizeResult], args: argparse.Namespace) -> str:
    rows = []
    for r in results:
        baseline: dict[str, float] = {}
        for pace, how in itertools.product(args.pace, args.submit):
            rounds = [x for x in r.rounds if x.pace == pace.label and x.submit == how]
            if not rounds:
                continue
            stored = [x.run.stored for x in rounds]
            mid = median(stored)
            if pace.label == "none":
                baseline[how] = mid
            cpu = median([x.cpu_server for x in rounds])
            brokers = [x.cpu_broker for x in rounds if x.cpu_broker is not None]
            cpu_text = f"{cpu:.2f} s" + (f" + {median(brokers):.2f} s" if brokers else "")
            total = cpu + (median(brokers) if brokers else 0.0)
            clis = [x.run.cli for x in rounds if x.run.cli is not None]
            finals = {c.finals for c in clis}
            rows.append(
                [
                    f"{r.nodes:,}",
                    cap_label(r.cap),
                    pace.label,
                    how,
                    f"{secs(mid)} / {secs(min(stored))}",
                    secs(median([x.run.submit_seconds for x in rounds])),
                    secs(_med([x.run.created_to_finished for x in rounds])),
                    secs(_med([c.saw_finished for c in clis])) if clis else "-",
                    secs(_med([c.exited for c in clis])) if clis else "-",
                    (
                        ("all " if finals == {r.nodes} else "/".join(map(str, sorted(finals))))
                        if clis
                        else "-"
                    ),
                    secs(_med([x.acked for x in rounds])),
                    cpu_text,
                    f"{total / r.nodes * 1e6:.0f} µs",
                    f"{median([c.cpu for c in clis]):.2f} s" if clis else "-",
                    f"{max(x.check.peak_running for x in rounds)} / {rounds[0].check.limit}",
                    (
                        f"{sum(x.check.early for x in rounds)} early"
                        if rounds[0].check.batch
                        else "-"
                    ),
                    (
                        f"{mid / baseline[how]:.2f}x"
                        if how in baseline and pace.label != "none"
                        else "-"
                    ),
                    f"{median([x.cpu_other for x in rounds]):.2f} / "
                    f"{median([x.steal for x in rounds]):.2f} s",
                ]
                + ([gc_cell(rounds)] if args.gc_stats or args.gc_freeze or args.profile else [])
            )
    headers = [
        "nodes",
        "cap",
        "pace",
        "submitted by",
        "stored: median / best",
        "POST",
        "created → finished",
        "CLI saw job_finished",
        "CLI exited",
        "CLI finals",
        "last ack",
        "server CPU/job",
        "CPU/node",
        "CLI CPU",
        "peak running / limit",
        "batches",
        "vs none",
        "other CPU / steal",
    ] + (["server GC (gen 2)"] if args.gc_stats or args.gc_freeze or args.profile else [])
    return table(headers, rows)


def gc_cell(rounds: list[Round]) -> str:
    used = [x.gc for x in rounds if x.gc is not None]
    if not used:
        return "-"
    total = median([sum(g.seconds) for g in used])
    return f"{total:.2f} s ({median([g.seconds[2] for g in used]):.2f} s)"


def fleet_table(results: list[SizeResult]) -> str:
    rows = []
    for r in results:
        pend = [p.kb_per_node for p in r.pending]
        rows.append(
            [
                f"{r.nodes:,}",
                cap_label(r.cap),
                f"{r.connect_seconds:.2f} s",
                f"{r.rss_before / 1024:.0f} MiB",
                f"{r.rss_connected / 1024:.0f} MiB",
                f"{r.rss_after / 1024:.0f} MiB",
                f"{(r.rss_connected - r.rss_before) / r.nodes:.1f} KB",
                f"{(r.rss_after - r.rss_before) / r.nodes:.1f} KB",
                " / ".join(f"{k:.2f} KB" for k in pend) if pend else "-",
            ]
        )
    headers = [
        "nodes",
        "cap",
        "connect",
        "RSS before",
        "connected",
        "after jobs",
        "KB/node",
        "KB/node after jobs",
        "pending job: KB/node",
    ]
    return table(headers, rows)


def summary(results: list[SizeResult], args: argparse.Namespace) -> str:
    db = "PostgreSQL" if args.database_url else "SQLite"
    if args.standalone_broker:
        where = "standalone broker (RSS: the broker process; CPU: server + broker)"
    else:
        where = "embedded broker (RSS: the server process)"
    return (
        f"Fan-out, {args.rounds} round(s) per size, pace and submitter, {db}, {where}; "
        "cli: submitted and followed by `podium task run ... --format json`, api: "
        f"submitted over the API; polled every {ms(args.poll)}; times from the POST's "
        "sending\n\n" + job_table(results, args) + "\n\n" + fleet_table(results)
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
        worker.add_argument("--answer-delay", type=float, default=0.0)
        return fleet_worker(worker.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(
        description="Time a task job on a simulated fleet and measure the server's memory."
    )
    parser.add_argument(
        "--nodes", type=int, nargs="+", default=[1000, 5000], help="fleet sizes (1000 5000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="jobs per fleet size and pace (3)")
    parser.add_argument(
        "--submit",
        nargs="+",
        choices=["cli", "api"],
        default=["cli"],
        help="who submits each round's job, one job each: cli, the real CLI in its own "
        "process (`podium task run ... --format json`, following the event stream to its "
        "end; the default); api, this script over the API; both poll the job (cli)",
    )
    parser.add_argument(
        "--pace",
        type=Pace.parse,
        nargs="+",
        default=[Pace("none", {})],
        metavar="SPEC",
        help="pace options of each round's jobs, one job per SPEC: none, or "
        "name=value[,name=value] such as concurrency=500 or batch=10%% (none)",
    )
    parser.add_argument(
        "--task-concurrency",
        type=int,
        nargs="+",
        default=[None],
        metavar="N",
        help="the server's cap on running nodes (PODIUM_TASK_CONCURRENCY); with several, "
        "each fleet size is measured on a server with each (the server's default, 250)",
    )
    parser.add_argument(
        "--pending",
        type=int,
        default=2,
        metavar="N",
        help="before the rounds, N jobs held pending to measure the server's memory per "
        "pending node (2; 0: none)",
    )
    parser.add_argument(
        "--pending-concurrency",
        type=int,
        default=10,
        metavar="N",
        help="the held job's concurrency: N nodes accept and stay silent, the rest queue (10)",
    )
    parser.add_argument(
        "--answer-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="each simulated node sends its result this long after accepting a request, "
        "so that many run at once and the event log shows the pace limits at work (0)",
    )
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
        "--profile",
        type=Path,
        metavar="PREFIX",
        help="profile the server's jobs (submission to last ack) with cProfile: "
        "PREFIX-<nodes>-<cap>-main.prof (its event loop) and -threads.prof (its thread "
        "pools), for pstats; the CPU figures then include the profiler's overhead",
    )
    parser.add_argument(
        "--gc-stats",
        action="store_true",
        help="time the server's garbage collection passes during each job (gc.callbacks)",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="an experiment (implies --gc-stats): the server calls gc.freeze() before each "
        "job, so that no GC pass walks the objects of its connections",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="wait up to this long for other processes to go quiet first (120 s)",
    )
    parser.add_argument(
        "--round-quiet-wait",
        type=float,
        default=30,
        help="and up to this long before each job (30 s)",
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
    probes = tempfile.TemporaryDirectory(prefix="podium-bench-gc-")
    try:
        for count in args.nodes:
            for cap in args.task_concurrency:
                probe = None
                if args.profile is not None:
                    name = f"{args.profile.name}-{count}-{cap or 'default'}"
                    probe = Probe(args.profile.with_name(name), True, args.gc_freeze)
                elif args.gc_stats or args.gc_freeze:
                    probe = Probe(Path(probes.name) / f"{count}-{cap}", False, args.gc_freeze)
                results.append(bench_size(args, count, cap, cadir, probe))
                if probe is not None and probe.cprofile:
                    print(f"profiles: {probe.prefix}-main.prof, {probe.prefix}-threads.prof")
    except KeyboardInterrupt:
        print("interrupted; stopped everything", file=sys.stderr)
        return 130
    finally:
        probes.cleanup()
    print()
    print(summary(results, args))
    for r in results:
        other = sum(x.cpu_other for x in r.rounds)
        wall = sum(x.acked or x.run.stored for x in r.rounds)
        if other >= 0.1 and other > 0.1 * wall * CPUS:
            print(
                f"\nWARNING: other processes used {other:.1f} CPU-s during the {r.nodes:,}-node "
                f"rounds (cap {cap_label(r.cap)}; {other / (wall * CPUS):.0%} of this machine): "
                + (
                    "that includes the database server's own processes."
                    if args.database_url
                    else "the figures are noisy."
                )
            )
        bad = [x for x in r.rounds if not x.check.ok]
        for x in bad:
            print(f"\nLIMITS: job {x.run.job_id} ({x.pace}): {'; '.join(x.check.problems)}")
        print(
            f"\n{r.nodes:,} nodes, cap {cap_label(r.cap)}: {r.refused_busy} handshakes refused "
            f"(503) and retried, {r.connect_errors} connect errors, {r.disconnects} disconnects "
            f"during the jobs; {r.connect_cpu / r.nodes * 1000:.1f} ms of broker-process CPU "
            f"per connection; fleet process RSS {r.fleet_rss / 1024:.0f} MiB; all connected "
            f"in the server's inventory {r.inventory_seconds:.2f} s after the fleet process "
            "started; event logs: " + ("all within their limits" if not bad else f"{len(bad)} not")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
