"""What the benchmarks share: a real server process, job timing, memory and statistics.

The server is started with :class:`podium.cli.demo.Demo` (the same machinery as
``podium demo``): a ``python -m podium server`` process on loopback with a throw-away
data directory. Everything a benchmark starts is stopped and removed in ``finally``
blocks; SIGTERM and SIGHUP are turned into ``KeyboardInterrupt`` so those run too.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from podium.cli.demo import Demo

SERVER_CERTNAME = "podium-server"  # what Demo names the server
TERMINAL_JOB_STATES = frozenset({"stopped", "finished", "failed"})
CLK_TCK = os.sysconf("SC_CLK_TCK")


def default_workdir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "podium-bench"


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def interrupt_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so that cleanup code runs."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


# -- processes --------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    """VmRSS of a process, in KB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds_with_children(pid: int) -> float:
    """CPU time of a process and of the children it has reaped (its tasks, for an agent)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """CPU seconds the whole machine has spent busy, and stolen by the hypervisor."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


class CpuMeter:
    """CPU used by our processes, and by everything else on the machine, over a span.

    Other processes compete with the benchmark for the same cores, so a round during
    which they were busy is flagged rather than silently counted.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        busy, steal = machine_busy()
        ours = sum(cpu_seconds_with_children(pid) for pid in self.pids)
        me = os.times()
        return busy, steal, ours + me.user + me.system

    def restart(self) -> None:
        self._start = self._sample()

    def read(self) -> tuple[float, float, float]:
        """(our CPU seconds, other processes' CPU seconds, stolen seconds) since start."""
        busy, steal, ours = self._sample()
        b0, s0, o0 = self._start
        mine = ours - o0
        return mine, max(0.0, (busy - b0) - mine), steal - s0


def wait_quiet(max_wait: float, *, threshold: float = 0.2) -> float:
    """Wait (up to ``max_wait`` s) until other processes use under ``threshold`` of a CPU;
    returns the fraction of a CPU they were using when we stopped waiting."""
    deadline = time.monotonic() + max_wait
    while True:
        meter = CpuMeter([])
        time.sleep(1.0)
        _mine, other, _steal = meter.read()
        if other < threshold or time.monotonic() >= deadline:
            return other
        print(
            f"(other processes are using {other:.0%} of a CPU; waiting for a quiet machine)",
            file=sys.stderr,
        )


def wait_idle(pid: int, *, window: float = 0.5, busy: float = 0.05, timeout: float = 60) -> None:
    """Until the process uses less than ``busy`` of a CPU over ``window`` seconds."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - last < busy * window:
            return
        last = now


@dataclass
class ServerInfo:
    pid: int
    url: str
    broker_url: str
    cacert: Path
    datadir: Path
    token_file: Path  # the admin's API token
    broker_pid: int | None = None  # a standalone broker's process, if there is one

    @property
    def broker_host_pid(self) -> int:
        """The process that holds the agents' connections."""
        return self.broker_pid or self.pid


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} (process exit {proc.poll()})")
        time.sleep(0.05)


def listening(port: int) -> bool:
    """Whether a socket of this host listens on TCP ``port`` (from /proc/net: no probe
    connection, which a full accept queue would hold up)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def _tail(log: Path, what: str) -> None:
    if log.exists():
        lines = log.read_text(errors="replace").splitlines()[-20:]
        if lines:
            print(f"--- {what} log (last lines) ---", *lines, sep="\n", file=sys.stderr)


def broker_args(root: Path, port: int) -> list[str]:
    """``podium`` arguments of the standalone broker of :func:`running_server`."""
    return [
        *("broker", "--cadir", str(root / "server" / "ca")),
        *("--ssldir", str(root / "broker-ssl"), "--controller", SERVER_CERTNAME),
        *("--port", str(port), "--log-level", "warning"),
    ]


@dataclass
class BrokerRestart:
    """When a standalone broker was killed and when its successor listened again."""

    killed_at: float  # time.monotonic() once the old process was reaped
    started_at: float  # the new process spawned
    listening_at: float  # a socket listened on its port (/proc/net/tcp)
    pid: int  # the new process


def restart_broker(demo: Demo, server: ServerInfo, *, down: float = 0.0) -> BrokerRestart:
    """SIGKILL the standalone broker of :func:`running_server` and start it again on the
    same port after ``down`` seconds; ``server.broker_pid`` is updated. The new process
    joins ``demo.procs``, so it is stopped with the rest."""
    if server.broker_pid is None:
        raise ValueError("the server has no standalone broker (standalone_broker=True)")
    old = next(p for p in demo.procs if p.pid == server.broker_pid)
    port = int(server.broker_url.split(":")[2].split("/")[0])
    old.kill()
    old.wait()
    killed = time.monotonic()
    if down > 0:
        time.sleep(down)
    root = server.datadir.parent
    started = time.monotonic()
    broker = demo._spawn(broker_args(root, port), root / "broker.log")
    server.broker_pid = broker.pid
    deadline = started + 30
    while not listening(port):
        if broker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the broker does not listen on {port} (exit {broker.poll()})")
        time.sleep(0.005)
    return BrokerRestart(killed, started, time.monotonic(), broker.pid)


@contextlib.contextmanager
def running_server(
    *,
    agents: int = 0,
    database_url: str | None = None,
    ca_dir: Path | None = None,
    standalone_broker: bool = False,
    keep_logs: bool = False,
    codedir: Path | None = None,
) -> Iterator[tuple[Demo, ServerInfo]]:
    """A server (and ``agents`` real agents) in a temporary directory, removed afterwards.

    ``ca_dir``: a CA to copy into the server's data directory before it starts, so
    that certificates issued by it earlier (and cached) are trusted by this server.
    ``standalone_broker``: run ``podium broker`` (issued from that CA) and point the
    server at it instead of using the embedded broker; needs ``ca_dir``.
    """
    if standalone_broker and ca_dir is None:
        raise ValueError("a standalone broker needs a CA made beforehand (ca_dir)")
    root = Path(tempfile.mkdtemp(prefix="podium-bench-"))
    demo = Demo(root, agents, codedir)
    broker_url = f"wss://127.0.0.1:{demo.broker_port}/pcp/v2"
    broker: subprocess.Popen[bytes] | None = None
    server: subprocess.Popen[bytes] | None = None
    env = {"PODIUM_DATABASE_URL": database_url}
    if standalone_broker:
        env["PODIUM_BROKERS"] = broker_url
    saved = {name: os.environ.get(name) for name in env}
    try:
        if ca_dir is not None:
            shutil.copytree(ca_dir, root / "server" / "ca")
        if standalone_broker:
            broker = demo._spawn(broker_args(root, demo.broker_port), root / "broker.log")
            _wait_port(demo.broker_port, broker)
        for name, value in env.items():
            if value:
                os.environ[name] = value
        try:
            first = len(demo.procs)
            demo.start_server()
            server = demo.procs[first]
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        info = ServerInfo(
            pid=server.pid,
            url=demo.server_url,
            broker_url=broker_url,
            cacert=demo.cacert,
            datadir=root / "server",
            token_file=demo.token_file,
            broker_pid=broker.pid if broker is not None else None,
        )
        yield demo, info
    except BaseException:
        for proc, what in ((server, "server"), (broker, "broker")):
            if proc is not None and proc.poll() is not None:
                print(f"the {what} exited with code {proc.returncode}", file=sys.stderr)
        _tail(root / "server.log", "server")
        _tail(root / "broker.log", "broker")
        raise
    finally:
        demo.stop()
        if keep_logs:
            print(f"(logs kept in {root})", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


# -- the API ------------------------------------------------------------------------------


@dataclass
class JobRun:
    job_id: str
    started_at: float  # time.monotonic() at submission
    seconds: float  # submission → terminal state and every node finished, as polled
    submit_seconds: float  # how long POST /command/task took to answer
    server_duration: float | None  # the job record's own duration (start → finish)
    state: str
    node_states: dict[str, int]


class Api:
    """The orchestrator API over one kept-alive HTTPS connection."""

    def __init__(self, server: ServerInfo, *, timeout: float = 120) -> None:
        self._http = httpx.Client(
            base_url=server.url + "/orchestrator/v1",
            verify=ssl.create_default_context(cafile=str(server.cacert)),
            timeout=timeout,
            headers={"X-Authentication": server.token_file.read_text().strip()},
        )

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code}: {response.text}")
        return response.json()

    def connected(self, certnames: Sequence[str]) -> int:
        items = self.call("POST", "/inventory", json={"nodes": list(certnames)})["items"]
        return sum(1 for item in items if item["connected"])

    def wait_connected(self, certnames: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (count := self.connected(certnames)) < len(certnames):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {count}/{len(certnames)} nodes connected")
            time.sleep(0.1)

    def run_task(
        self,
        certnames: Sequence[str],
        *,
        task: str = "podium::echo",
        params: dict[str, Any] | None = None,
        poll: float = 0.01,
        timeout: float = 300,
    ) -> JobRun:
        """Submit a task and poll its job until it is over; the time from submission."""
        body = {
            "task": task,
            "params": params if params is not None else {"message": "hello"},
            "scope": {"nodes": list(certnames)},
        }
        return self.run_job("/command/task", body, len(certnames), poll=poll, timeout=timeout)

    def deploy(
        self, certnames: Sequence[str], *, poll: float = 0.01, timeout: float = 300, **body: Any
    ) -> JobRun:
        """A Puppet run (``/command/deploy``) on ``certnames``, polled until it is over."""
        body = {"scope": {"nodes": list(certnames)}, **body}
        return self.run_job("/command/deploy", body, len(certnames), poll=poll, timeout=timeout)

    def run_job(
        self, command: str, body: dict[str, Any], want: int, *, poll: float, timeout: float
    ) -> JobRun:
        """POST ``command`` and poll its job until its ``want`` nodes have ended."""
        started = time.monotonic()
        job_id = self.call("POST", command, json=body)["job"]["name"]
        submitted = time.monotonic()
        deadline = started + timeout
        while True:
            job = self.call("GET", f"/jobs/{job_id}")
            ended = time.monotonic()
            states = job["node_states"]
            if job["state"] in TERMINAL_JOB_STATES and sum(states.values()) == want:
                break
            if ended > deadline:
                raise RuntimeError(f"job {job_id} still {job['state']}: {states}")
            time.sleep(poll)
        if states.get("finished", 0) != want:
            raise RuntimeError(f"job {job_id} ended {job['state']}: {states}")
        return JobRun(
            job_id=job_id,
            started_at=started,
            seconds=ended - started,
            submit_seconds=submitted - started,
            server_duration=job.get("duration"),
            state=job["state"],
            node_states=states,
        )


# -- figures ------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, columns padded so that it also reads well as plain text."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"
