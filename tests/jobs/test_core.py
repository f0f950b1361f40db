"""The job core without sockets, threads or a database: feed events, assert decisions."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podium.jobs.core import Changes, JobCore, Limits, Pace, ResumedNode
from podium.protocol import messages as msg

T0 = 1_800_000_000.0


class Echo:
    """A job kind: every node gets the same request; ``_error`` in a result fails it."""

    module = "task"
    action = "run"
    stop_action: str | None = "stop"

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.refuse = refuse

    def request(self, certname: str) -> dict[str, Any] | str:
        if certname in self.refuse:
            return f"nothing fits {certname}"
        return {"task": "podium::echo"}

    def node_state(self, results: dict[str, Any]) -> str:
        return "failed" if "_error" in results else "finished"


class World:
    """A core and everything it has said so far."""

    def __init__(self, limits: Limits | None = None, connected: tuple[str, ...] = ()) -> None:
        self.core = JobCore(limits, connected=connected)
        self.now = T0
        self.sent: list[tuple[str, msg.Message]] = []
        self.written = Changes()

    def drain(self) -> None:
        self.sent += [(o.certname, o.message) for o in self.core.sends()]
        self.written.extend(self.core.changes())

    def add(self, job_id: int, names: list[str], **kw: Any) -> None:
        unknown = kw.pop("unknown", ())
        kind = kw.pop("kind", Echo())
        self.core.add_job(
            job_id,
            kind,
            [(n, f"tx-{job_id}-{n}") for n in names],
            self.now,
            pace=Pace(**kw),
            owner="admin",
            unknown=unknown,
        )
        self.drain()

    def requests(self, certname: str | None = None) -> list[msg.NonBlockingRequest]:
        return [
            m
            for c, m in self.sent
            if isinstance(m, msg.NonBlockingRequest) and certname in (None, c)
        ]

    def accept(self, certname: str, txid: str) -> None:
        self.core.receive(certname, msg.ProvisionalResponse(txid), self.now)
        self.drain()

    def finish(self, certname: str, txid: str, results: dict[str, Any] | None = None) -> None:
        self.core.receive(certname, msg.NonBlockingResponse(txid, results or {}), self.now)
        self.drain()

    def run_all_sent(self) -> None:
        """Every request sent and not answered yet: accepted and finished."""
        answered = {(e.certname, e.details.get("transaction_id")) for e in self.final_events()}
        for request in self.requests():
            certname = request.transaction_id.split("-", 2)[2]
            if (certname, request.transaction_id) not in answered:
                self.accept(certname, request.transaction_id)
                self.finish(certname, request.transaction_id)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.core.tick(self.now)
        self.drain()

    def events(self, job_id: int | None = None) -> list[str]:
        return [e.type for e in self.written.events if job_id in (None, e.job_id)]

    def final_events(self) -> list[Any]:
        finals = {"node_finished", "node_failed", "node_errored", "node_skipped"}
        return [e for e in self.written.events if e.type in finals]

    def node_state(self, job_id: int, certname: str) -> str:
        txid = f"tx-{job_id}-{certname}"
        return [u.state for u in self.written.nodes if u.transaction_id == txid][-1]

    def job_states(self, job_id: int) -> list[str]:
        return [u.state for u in self.written.jobs if u.job_id == job_id]


def names(n: int) -> list[str]:
    return [f"n{i:02d}" for i in range(n)]


# -- transitions --------------------------------------------------------------------------


def test_a_job_on_connected_nodes_sends_each_a_request_and_finishes_when_all_answer() -> None:
    w = World(connected=("a", "b"))
    w.add(1, ["a", "b"])
    assert [r.transaction_id for r in w.requests()] == ["tx-1-a", "tx-1-b"]
    assert w.job_states(1) == ["running"]
    w.accept("a", "tx-1-a")
    w.finish("a", "tx-1-a", {"_output": "hi"})
    w.finish("b", "tx-1-b", {"_error": {"msg": "no"}})
    assert w.events(1) == [
        "job_running",
        "node_running",
        "node_finished",
        "node_failed",
        "job_finished",
    ]
    assert w.job_states(1) == ["running", "failed"]
    assert w.written.acks == [("a", "tx-1-a"), ("b", "tx-1-b")]
    finished = w.written.events[-1]
    assert finished.details == {"state": "failed"}


def test_timestamps_are_the_core_s_own_started_once_and_finished_at_the_end() -> None:
    w = World(connected=("a",))
    w.add(1, ["a"])
    w.now += 2
    w.accept("a", "tx-1-a")
    w.now += 3
    w.finish("a", "tx-1-a")
    running, final = w.written.nodes
    assert running.started_at is not None and running.finished_at is None
    assert final.started_at == running.started_at
    assert final.finished_at is not None
    assert (final.finished_at - final.started_at).total_seconds() == 3


def test_unknown_and_offline_nodes_fail_at_once_with_the_reason() -> None:
    w = World(connected=("a",))
    w.add(1, ["a", "ghost", "away"], unknown=["ghost"])
    messages = {e.certname: e.message for e in w.final_events()}
    assert "unknown node ghost" in messages["ghost"]
    assert messages["away"] == "node away is not connected to the broker"
    assert w.requests() == [w.requests("a")[0]]


def test_a_node_no_implementation_fits_fails_without_a_request() -> None:
    w = World(connected=("a",))
    w.add(1, ["a"], kind=Echo(refuse=frozenset({"a"})))
    assert w.requests() == []
    assert w.final_events()[0].message == "nothing fits a"
    assert w.job_states(1) == ["running", "failed"]


def test_a_result_from_another_agent_is_not_believed() -> None:
    w = World(connected=("a", "b"))
    w.add(1, ["a"])
    w.finish("b", "tx-1-a")
    assert w.final_events() == []


def test_a_duplicate_result_is_acknowledged_again_and_changes_nothing() -> None:
    w = World(connected=("a",))
    w.add(1, ["a"])
    w.finish("a", "tx-1-a", {"x": 1})
    before = len(w.written.events)
    w.finish("a", "tx-1-a", {"x": 2})
    assert len(w.written.events) == before
    assert w.written.acks == [("a", "tx-1-a"), ("a", "tx-1-a")]


def test_an_rpc_error_ends_the_node_errored_with_the_description() -> None:
    w = World(connected=("a",))
    w.add(1, ["a"])
    w.core.receive("a", msg.RpcError("tx-1-a", "spool not writable"), w.now)
    w.drain()
    assert w.node_state(1, "a") == "errored"
    assert w.final_events()[0].message == "spool not writable"


def test_live_output_is_logged_up_to_a_cap_per_node() -> None:
    w = World(connected=("a",))
    w.add(1, ["a"])
    w.accept("a", "tx-1-a")
    chunk = "x" * 16_384
    for i in range(6):
        w.core.receive("a", msg.TaskOutput("tx-1-a", "stdout", i * 16_384, chunk), w.now)
    w.drain()
    outputs = [e for e in w.written.events if e.type == "node_output"]
    assert len(outputs) == 4
    assert sum(len(e.details["data"]) for e in outputs) == 64 * 1024
    assert outputs[-1].details.get("truncated") is True
    assert outputs[0].details == {"node": "a", "stream": "stdout", "data": chunk, "offset": 0}


# -- disconnects, resends, deadlines ----------------------------------------------------------


def test_a_node_that_drops_shows_when_it_is_given_up_and_is_resent_when_back() -> None:
    w = World(Limits(reconnect_grace=300), connected=("a",))
    w.add(1, ["a"])
    w.accept("a", "tx-1-a")
    w.core.disconnected("a", w.now)
    w.drain()
    dropped = w.written.events[-1]
    assert dropped.type == "node_disconnected"
    assert dropped.details["give_up_at"].endswith("Z")
    assert w.written.nodes[-1].give_up_at is not None
    w.advance(100)
    w.core.connected("a", w.now)
    w.drain()
    assert w.events()[-1] == "node_reconnected"
    assert w.written.nodes[-1].give_up_at is None
    assert len(w.requests("a")) == 2  # re-sent: the agent answers it from its spool
    w.advance(300)
    assert w.node_state(1, "a") == "running"  # the grace timer was cancelled


def test_a_node_that_stays_away_past_the_grace_ends_errored() -> None:
    w = World(Limits(reconnect_grace=300), connected=("a",))
    w.add(1, ["a"])
    w.accept("a", "tx-1-a")
    w.core.disconnected("a", w.now)
    w.advance(299)
    assert w.node_state(1, "a") == "running"
    w.advance(1)
    assert w.node_state(1, "a") == "errored"
    assert "did not come back within 5 min" in w.final_events()[0].message
    assert w.job_states(1)[-1] == "failed"


def test_a_late_result_replaces_the_given_up_state_and_corrects_the_job() -> None:
    w = World(Limits(reconnect_grace=10), connected=("a",))
    w.add(1, ["a"])
    w.accept("a", "tx-1-a")
    w.core.disconnected("a", w.now)
    w.advance(10)
    assert w.job_states(1)[-1] == "failed"
    w.core.connected("a", w.now)
    w.finish("a", "tx-1-a", {"_output": "ok"})
    assert w.node_state(1, "a") == "finished"
    assert w.job_states(1)[-1] == "finished"
    assert w.written.events[-1].details["late"] is True
    assert w.written.acks[-1] == ("a", "tx-1-a")


def test_a_bounced_request_starts_the_grace_period() -> None:
    w = World(connected=("a",))
    w.add(1, ["a"])
    sent_id = next(iter(w.core._sent))
    w.core.bounced(sent_id, w.now)
    w.drain()
    assert w.events()[-1] == "node_disconnected"


def test_an_agent_that_never_accepts_is_asked_twice_then_given_up() -> None:
    w = World(Limits(answer_timeout=60), connected=("a",))
    w.add(1, ["a"])
    w.advance(60)
    assert len(w.requests("a")) == 2
    w.advance(60)
    assert w.node_state(1, "a") == "errored"
    assert "did not accept the request within 1 min (sent 2 times)" in w.final_events()[0].message


def test_a_run_that_never_reports_is_given_up_after_its_timeout_and_a_margin() -> None:
    w = World(Limits(answer_timeout=60), connected=("a",))
    w.add(1, ["a"], node_timeout=600)
    w.accept("a", "tx-1-a")
    w.advance(659)
    assert w.node_state(1, "a") == "running"
    w.advance(1)
    assert w.node_state(1, "a") == "errored"
    assert "reported no result within 11 min" in w.final_events()[0].message


def test_every_sent_node_has_a_deadline_even_without_a_timeout() -> None:
    w = World(Limits(default_node_timeout=2400, answer_timeout=60), connected=("a",))
    w.add(1, ["a"])
    w.accept("a", "tx-1-a")
    assert w.core.next_timer() == T0 + 2460


# -- pace -------------------------------------------------------------------------------------


def test_concurrency_keeps_at_most_n_nodes_running() -> None:
    w = World(connected=tuple(names(10)))
    w.add(1, names(10), concurrency=3)
    assert len(w.requests()) == 3
    w.finish("n00", "tx-1-n00")
    assert len(w.requests()) == 4
    assert w.requests()[-1].transaction_id == "tx-1-n03"


def test_the_server_wide_cap_queues_later_jobs_as_ready() -> None:
    w = World(Limits(max_running=2), connected=("a", "b", "c"))
    w.add(1, ["a", "b"])
    w.add(2, ["c"])
    assert w.job_states(2) == ["ready"]
    assert w.events(2) == ["job_ready"]
    w.finish("a", "tx-1-a")
    assert w.job_states(2) == ["ready", "running"]
    assert w.requests("c")


def test_batches_start_when_the_previous_one_ended_after_the_sleep() -> None:
    w = World(connected=tuple(names(5)))
    w.add(1, names(5), batch=2, batch_sleep=30)
    assert [r.transaction_id for r in w.requests()] == ["tx-1-n00", "tx-1-n01"]
    w.finish("n00", "tx-1-n00")
    assert len(w.requests()) == 2  # n01 still runs
    w.finish("n01", "tx-1-n01")
    assert len(w.requests()) == 2  # sleeping
    w.advance(29)
    assert len(w.requests()) == 2
    w.advance(1)
    assert [r.transaction_id for r in w.requests()][2:] == ["tx-1-n02", "tx-1-n03"]


def test_fail_fast_starts_nothing_after_the_first_failure() -> None:
    w = World(connected=tuple(names(5)))
    w.add(1, names(5), concurrency=2, fail_fast=True)
    w.finish("n00", "tx-1-n00", {"_error": {"msg": "bad"}})
    w.finish("n01", "tx-1-n01")
    assert len(w.requests()) == 2
    states = Counter(w.node_state(1, n) for n in names(5))
    assert states == {"failed": 1, "finished": 1, "skipped": 3}
    assert w.job_states(1)[-1] == "failed"
    skipped = [e for e in w.final_events() if e.type == "node_skipped"]
    assert "n00 failed and the job is fail-fast" in skipped[0].message


def test_offline_nodes_with_a_ttl_wait_and_run_when_they_connect() -> None:
    w = World(connected=("a",))
    w.add(1, ["a", "late", "never"], offline_ttl=120)
    assert [r.transaction_id for r in w.requests()] == ["tx-1-a"]
    w.accept("a", "tx-1-a")
    w.advance(60)
    w.core.connected("late", w.now)
    w.drain()
    assert w.requests("late")
    w.accept("late", "tx-1-late")
    w.advance(60)
    assert w.node_state(1, "never") == "failed"
    (never,) = [e for e in w.final_events() if e.certname == "never"]
    assert "did not connect within the job's offline TTL of 2 min" in never.message


def test_a_job_timeout_kills_running_nodes_skips_the_rest_and_fails_the_job() -> None:
    w = World(connected=tuple(names(3)))
    w.add(1, names(3), concurrency=1, job_timeout=600)
    w.accept("n00", "tx-1-n00")
    w.advance(600)
    assert "job_aborted" in w.events(1)
    assert w.node_state(1, "n00") == "errored"
    assert w.node_state(1, "n01") == "skipped"
    assert w.job_states(1)[-1] == "failed"
    kills = [m for c, m in w.sent if isinstance(m, msg.BlockingRequest)]
    assert kills[0].action == "stop"
    assert kills[0].params["transaction_id"] == "tx-1-n00"


# -- stop -------------------------------------------------------------------------------------


def test_stop_skips_what_has_not_started_and_lets_running_nodes_finish() -> None:
    w = World(connected=tuple(names(4)))
    w.add(1, names(4), concurrency=2)
    assert w.core.stop(1, w.now, by="alice")
    w.drain()
    assert w.job_states(1)[-1] == "stopping"
    assert w.node_state(1, "n02") == "skipped"
    assert "stopped by alice" in w.final_events()[0].message
    w.finish("n00", "tx-1-n00")
    w.finish("n01", "tx-1-n01")
    assert len(w.requests()) == 2
    assert w.job_states(1)[-1] == "stopped"
    assert w.events(1)[-1] == "job_finished"


def test_stop_is_idempotent_and_a_forced_stop_kills_the_runs() -> None:
    w = World(connected=("a",))
    w.add(1, ["a"])
    w.accept("a", "tx-1-a")
    w.core.stop(1, w.now, by="alice")
    w.core.stop(1, w.now, by="alice")
    w.drain()
    assert w.events(1).count("job_stopping") == 1
    w.core.stop(1, w.now, by="bob", force=True)
    w.drain()
    assert w.node_state(1, "a") == "errored"
    assert w.final_events()[-1].message == "stopped by bob"
    assert w.job_states(1)[-1] == "stopped"
    (kill,) = [m for _, m in w.sent if isinstance(m, msg.BlockingRequest)]
    assert kill.params == {"transaction_id": "tx-1-a", "reason": "stopped by bob"}
    # the killed run's own result is recorded, the node stays errored
    w.finish("a", "tx-1-a", {"_error": {"kind": "podium.tasks/task-stopped"}})
    assert w.node_state(1, "a") == "errored"
    assert w.written.nodes[-1].result == {"_error": {"kind": "podium.tasks/task-stopped"}}
    assert not w.core.stop(1, w.now, by="alice")  # ended: nothing to stop here


# -- recovery ---------------------------------------------------------------------------------


def test_a_resumed_job_keeps_its_pace_and_resends_to_running_nodes_when_they_connect() -> None:
    w = World()
    w.core.resume_job(
        7,
        Echo(),
        [ResumedNode("a", "tx-7-a", "running", T0 - 5)]
        + [ResumedNode(n, f"tx-7-{n}", "new") for n in ("b", "c")],
        w.now,
        state="running",
        created=T0 - 10,
        started=T0 - 9,
        ended={"finished": 2},
        pace=Pace(concurrency=1),
    )
    w.drain()
    assert w.requests() == []
    for name in ("a", "b", "c"):
        w.core.connected(name, w.now)
    w.drain()
    assert [r.transaction_id for r in w.requests()] == ["tx-7-a"]  # concurrency 1
    w.finish("a", "tx-7-a")
    assert [r.transaction_id for r in w.requests()] == ["tx-7-a", "tx-7-b"]
    w.finish("b", "tx-7-b")
    w.finish("c", "tx-7-c")
    assert w.job_states(7)[-1] == "finished"


def test_a_job_resumed_while_stopping_ends_stopped() -> None:
    w = World(connected=("a",))
    w.core.resume_job(
        3,
        Echo(),
        [ResumedNode("a", "tx-3-a", "running", T0)],
        w.now,
        state="stopping",
        created=T0,
        started=T0,
        ended={"skipped": 4},
    )
    w.finish("a", "tx-3-a")
    assert w.job_states(3)[-1] == "stopped"


def test_nothing_starts_until_the_broker_inventory_is_known() -> None:
    w = World()
    w.core = JobCore(link_up=False)
    w.core.resume_job(
        3,
        Echo(),
        [ResumedNode("a", "tx-3-a", "new")],
        w.now,
        state="running",
        created=T0,
        started=T0,
        ended={},
    )
    w.drain()
    assert w.final_events() == []
    w.core.connected("a", w.now)
    w.drain()
    assert w.requests() == []
    w.core.link(True, w.now)
    w.drain()
    assert [r.transaction_id for r in w.requests()] == ["tx-3-a"]


def test_a_result_for_a_queued_node_sent_before_a_restart_ends_it() -> None:
    w = World()
    w.core = JobCore(link_up=False)  # the inventory is not known yet
    w.core.resume_job(
        3,
        Echo(),
        [ResumedNode("a", "tx-3-a", "new")],
        w.now,
        state="running",
        created=T0,
        started=T0,
        ended={},
        pace=Pace(concurrency=1),
    )
    w.finish("a", "tx-3-a")
    assert w.job_states(3)[-1] == "finished"


# -- properties over random event orders ------------------------------------------------------

_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            ["accept", "finish", "fail", "error", "drop", "back", "tick", "stop", "force", "dup"]
        ),
        st.integers(0, 5),
        st.integers(1, 400),
    ),
    max_size=60,
)


@settings(max_examples=600)
@given(
    actions=_ACTIONS,
    concurrency=st.one_of(st.none(), st.integers(1, 3)),
    batch=st.one_of(st.none(), st.integers(1, 4)),
    fail_fast=st.booleans(),
    ttl=st.one_of(st.none(), st.integers(1, 200)),
    max_running=st.integers(1, 8),
)
def test_no_node_ends_twice_and_counts_always_add_up(
    actions: list[tuple[str, int, int]],
    concurrency: int | None,
    batch: int | None,
    fail_fast: bool,
    ttl: int | None,
    max_running: int,
) -> None:
    nodes = names(6)
    w = World(
        Limits(max_running=max_running, reconnect_grace=100, answer_timeout=50),
        connected=tuple(nodes[:4]),
    )
    w.add(1, nodes, concurrency=concurrency, batch=batch, fail_fast=fail_fast, offline_ttl=ttl)
    w.add(2, nodes[:3])
    for action, index, seconds in actions:
        name = nodes[index]
        sent = {r.transaction_id for r in w.requests()}
        for job in (1, 2):
            txid = f"tx-{job}-{name}"
            if txid not in sent and action in ("accept", "finish", "fail", "dup", "error"):
                continue  # agents answer what they were sent (restarts are tested apart)
            if action == "accept":
                w.accept(name, txid)
            elif action in ("finish", "fail", "dup"):
                w.finish(name, txid, {"_error": {}} if action == "fail" else {})
            elif action == "error":
                w.core.receive(name, msg.RpcError(txid, "boom"), w.now)
            elif action == "drop":
                w.core.disconnected(name, w.now)
            elif action == "back":
                w.core.connected(name, w.now)
            elif action == "stop":
                w.core.stop(job, w.now, by="x")
            elif action == "force":
                w.core.stop(job, w.now, by="x", force=True)
        if action == "tick":
            w.advance(seconds)
        w.drain()
        # the server-wide cap is never exceeded
        assert w.core.running_count <= max_running
    # Let every timer run out: every job ends.
    for _ in range(20):
        when = w.core.next_timer()
        if when is None:
            break
        w.advance(when - w.now + 1)
    finals: Counter[tuple[int, str]] = Counter()
    for event in w.final_events():
        if not event.details.get("late"):
            finals[(event.job_id, event.certname)] += 1
    assert all(n == 1 for n in finals.values()), finals
    for job, count in ((1, 6), (2, 3)):
        ended = [k for k in finals if k[0] == job]
        state = w.core.job_state(job)
        if state is None:  # the job ended: every node did, once, and one job_finished
            assert len(ended) == count
            assert w.events(job).count("job_finished") == 1
        else:
            assert len(ended) < count


@settings(max_examples=200)
@given(
    n=st.integers(1, 12),
    concurrency=st.integers(1, 4),
    order=st.randoms(use_true_random=False),
)
def test_concurrency_holds_in_the_event_log_whatever_order_results_come_in(
    n: int, concurrency: int, order: Any
) -> None:
    nodes = names(n)
    w = World(connected=tuple(nodes))
    w.add(1, nodes, concurrency=concurrency)
    while w.core.job_state(1) is not None:
        answered = {e.certname for e in w.final_events()}
        outstanding = [r for r in w.requests() if r.transaction_id.split("-", 2)[2] not in answered]
        request = order.choice(outstanding)
        name = request.transaction_id.split("-", 2)[2]
        w.accept(name, request.transaction_id)
        w.finish(name, request.transaction_id)
    live, peak = 0, 0
    for event in w.written.events:
        if event.type == "node_running":
            live += 1
            peak = max(peak, live)
        elif event.type == "node_finished":
            live -= 1
    assert peak <= concurrency
    assert Counter(w.events(1))["node_finished"] == n


@pytest.mark.parametrize("percent", [10, 50, 100])
def test_a_percentage_batch_is_a_share_of_the_job_s_nodes(percent: int) -> None:
    from podium.jobs.kinds import batch_size

    assert batch_size(f"{percent}%", 20) == 20 * percent // 100
    assert batch_size("1%", 5) == 1


def test_after_a_restart_nodes_not_started_wait_for_their_agents_to_reconnect() -> None:
    w = World(Limits(reconnect_grace=300))
    w.core = JobCore(Limits(reconnect_grace=300), link_up=False)
    w.core.resume_job(
        4,
        Echo(),
        [ResumedNode(n, f"tx-4-{n}", "new") for n in ("a", "b")],
        w.now,
        state="running",
        created=T0,
        started=T0,
        ended={},
    )
    w.core.link(True, w.now)  # the inventory lists neither agent yet
    w.drain()
    assert w.final_events() == []
    w.core.connected("a", w.now + 10)
    w.drain()
    assert [r.transaction_id for r in w.requests()] == ["tx-4-a"]
    w.advance(300)
    (gone,) = [e for e in w.final_events() if e.certname == "b"]
    assert gone.message == "node b did not connect within 5 min of a server restart"
