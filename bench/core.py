"""The job core alone: decisions per second and memory per pending node.

No sockets, no database: a 10,000-node job fed to :class:`podium.jobs.core.JobCore` the
way the service feeds it (each node accepted, then finished), and a job of the same size
with ``concurrency`` 10 held with nothing answered, to weigh what a node waiting its turn
costs (tracemalloc).

    .venv/bin/python bench/core.py
    .venv/bin/python bench/core.py --nodes 1000 10000 50000
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

from podium.jobs.core import JobCore, Limits, Pace
from podium.protocol import messages as msg

NOW = 1_800_000_000.0


class _Echo:
    module = "task"
    action = "run"
    stop_action: str | None = "stop"

    def __init__(self) -> None:
        self._request = {"task": "podium::echo", "input": {"message": "hi"}}

    def request(self, certname: str) -> dict[str, Any] | str:
        return self._request

    def node_state(self, results: dict[str, Any]) -> str:
        return "finished"


def run_job(count: int, max_running: int) -> tuple[float, int]:
    """Seconds to take a ``count``-node job from start to end, and the events written."""
    names = [f"node-{i:05d}.example.com" for i in range(count)]
    core = JobCore(Limits(max_running=max_running), connected=names)
    result = {"_output": "hi\n"}
    events = 0
    started = time.perf_counter()
    core.add_job(1, _Echo(), [(n, f"tx-{n}") for n in names], NOW)
    sent = core.sends()
    events += len(core.changes().events)
    while sent:
        more = []
        for out in sent:
            txid = out.message.transaction_id  # type: ignore[attr-defined]
            core.receive(out.certname, msg.ProvisionalResponse(txid), NOW)
            core.receive(out.certname, msg.NonBlockingResponse(txid, result), NOW)
            more += core.sends()
            events += len(core.changes().events)
            core.next_timer()
        sent = more
    assert core.job_state(1) is None, "the job did not end"
    return time.perf_counter() - started, events


def pending_bytes(count: int) -> float:
    """Bytes the core holds per node of a ``concurrency`` 10 job waiting its turn."""
    names = [f"node-{i:05d}.example.com" for i in range(count)]
    pairs = [(n, f"tx-{n}") for n in names]  # the service holds these anyway
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    core = JobCore(connected=names)
    core.add_job(1, _Echo(), pairs, NOW, pace=Pace(concurrency=10))
    core.sends()
    core.changes()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del core
    return held / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| nodes | cap | core time (best) | per node | events | pending: bytes/node |")
    print("|---|---|---|---|---|---|")
    for count in args.nodes:
        for cap in (250, count):
            best = min(run_job(count, cap)[0] for _ in range(args.rounds))
            events = run_job(count, cap)[1]
            pending = pending_bytes(count)
            print(
                f"| {count:,} | {cap:,} | {best * 1000:.0f} ms | {best / count * 1e6:.1f} µs "
                f"| {events:,} | {pending:,.0f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
