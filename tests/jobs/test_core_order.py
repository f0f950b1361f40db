"""Run order in the job core: nodes that run after others wait for them to finish, and
end skipped, saying why, when one did not; driven by an injected clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from itertools import pairwise
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

    def request(self, certname: str) -> dict[str, Any] | str:
        return {"task": "podium::echo"}

    def node_state(self, results: dict[str, Any]) -> str:
        return "failed" if "_error" in results else "finished"


class World:
    """A core, a clock, and everything the core has said so far."""

    def __init__(self, limits: Limits | None = None, connected: Collection[str] = ()) -> None:
        self.core = JobCore(limits, connected=connected)
        self.now = T0
        self.sent: list[str] = []  # transaction ids, in the order requests went out
        self.written = Changes()

    def drain(self) -> None:
        for out in self.core.sends():
            if isinstance(out.message, msg.NonBlockingRequest):
                self.sent.append(out.message.transaction_id)
        self.written.extend(self.core.changes())

    def add(
        self,
        names: list[str],
        after: Mapping[str, Collection[str]],
        *,
        job_id: int = 1,
        unknown: Collection[str] = (),
        **pace: Any,
    ) -> None:
        self.core.add_job(
            job_id,
            Echo(),
            [(n, tx(n, job_id)) for n in names],
            self.now,
            pace=Pace(**pace),
            unknown=unknown,
            after=after,
        )
        self.drain()

    def started(self) -> list[str]:
        """The certnames sent a request, in order."""
        return [t.split("-", 2)[2] for t in self.sent]

    def finish(self, name: str, *, fail: bool = False, job_id: int = 1) -> None:
        txid = tx(name, job_id)
        self.core.receive(name, msg.ProvisionalResponse(txid), self.now)
        results: dict[str, Any] = {"_error": {"msg": "no"}} if fail else {}
        self.core.receive(name, msg.NonBlockingResponse(txid, results), self.now)
        self.drain()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.core.tick(self.now)
        self.drain()

    def ended(self) -> dict[str, tuple[str, str]]:
        """certname → (final event, its message)."""
        finals = {"node_finished", "node_failed", "node_errored", "node_skipped"}
        return {
            e.details["node"]: (e.type, e.message) for e in self.written.events if e.type in finals
        }

    def events(self) -> list[str]:
        return [e.type for e in self.written.events]

    def job_state(self, job_id: int = 1) -> str:
        return [u.state for u in self.written.jobs if u.job_id == job_id][-1]


def tx(name: str, job_id: int = 1) -> str:
    return f"tx-{job_id}-{name}"


SHOP = ["lb", "web-1", "web-2", "db", "mail"]
SHOP_AFTER = {"web-1": ["db"], "web-2": ["db"], "lb": ["web-1", "web-2"]}


def test_a_node_starts_only_once_every_node_it_runs_after_has_finished() -> None:
    w = World(connected=SHOP)
    w.add(SHOP, SHOP_AFTER)
    assert w.started() == ["db", "mail"]  # mail runs after nothing: it starts at once
    w.finish("db")
    assert w.started() == ["db", "mail", "web-1", "web-2"]
    w.finish("web-1")
    assert "lb" not in w.started()  # web-2 is still running
    w.finish("web-2")
    assert w.started()[-1] == "lb"
    w.finish("lb")
    w.finish("mail")
    assert w.job_state() == "finished"
    assert {state for state, _ in w.ended().values()} == {"node_finished"}


def test_when_a_node_fails_the_nodes_after_it_end_skipped_naming_it_and_why() -> None:
    w = World(connected=SHOP)
    w.add(SHOP, SHOP_AFTER)
    w.finish("db", fail=True)
    ended = w.ended()
    assert ended["web-1"] == ("node_skipped", "not started: it runs after db, which failed")
    assert ended["web-2"] == ("node_skipped", "not started: it runs after db, which failed")
    assert ended["lb"][0] == "node_skipped"
    assert ended["lb"][1] in (
        f"not started: it runs after {web}, which was skipped because db failed"
        for web in ("web-1", "web-2")
    )
    assert w.started() == ["db", "mail"]
    w.finish("mail")  # a node outside the order runs as usual
    assert ended["db"][0] == "node_failed"
    assert w.ended()["mail"][0] == "node_finished"
    assert w.job_state() == "failed"


def test_one_failed_prerequisite_is_enough_to_skip_a_node() -> None:
    w = World(connected=SHOP)
    w.add(SHOP, SHOP_AFTER)
    w.finish("db")
    w.finish("web-1")
    w.finish("web-2", fail=True)
    assert w.ended()["lb"] == (
        "node_skipped",
        "not started: it runs after web-2, which failed",
    )
    assert "lb" not in w.started()


def test_nodes_waiting_for_others_take_no_place_under_the_concurrency() -> None:
    names = ["a", "b", "c", "d"]
    w = World(connected=names)
    w.add(names, {"b": ["a"]}, concurrency=2)
    assert w.started() == ["a", "c"]  # b waits for a, so c goes ahead
    w.finish("a")
    assert w.started() == ["a", "c", "d"]  # the freed place goes to the queue's head
    w.finish("c")
    assert w.started() == ["a", "c", "d", "b"]


def test_batches_count_the_nodes_that_start_not_those_waiting() -> None:
    names = ["a", "b", "c", "d"]
    w = World(connected=names)
    w.add(names, {"c": ["a"], "d": ["a"]}, batch=2)
    assert w.started() == ["a", "b"]
    w.finish("a")
    assert w.started() == ["a", "b"]  # the batch is not over while b runs
    w.finish("b")
    assert w.started() == ["a", "b", "c", "d"]


def test_an_errored_node_skips_the_nodes_after_it() -> None:
    w = World(Limits(reconnect_grace=60), connected=("db", "web"))
    w.add(["db", "web"], {"web": ["db"]})
    w.core.receive("db", msg.ProvisionalResponse(tx("db")), w.now)
    w.core.disconnected("db", w.now)
    w.advance(60)
    assert w.ended()["web"] == (
        "node_skipped",
        "not started: it runs after db, which errored",
    )


def test_an_unknown_node_fails_at_once_and_skips_the_nodes_after_it_wherever_listed() -> None:
    for names in (["web", "db"], ["db", "web"]):
        w = World(connected=("web",))
        w.add(names, {"web": ["db"]}, unknown=["db"])
        assert w.ended()["db"][0] == "node_failed"
        assert w.ended()["web"] == (
            "node_skipped",
            "not started: it runs after db, which failed",
        )
        assert w.started() == []
        assert w.job_state() == "failed"


def test_an_offline_prerequisite_that_never_connects_skips_its_dependants() -> None:
    w = World(connected=("web",))
    w.add(["db", "web"], {"web": ["db"]})
    assert w.ended()["db"] == ("node_failed", "node db is not connected to the broker")
    assert w.ended()["web"][1] == "not started: it runs after db, which failed"


def test_a_stop_skips_the_waiting_nodes_with_the_stop_s_reason() -> None:
    w = World(connected=SHOP)
    w.add(SHOP, SHOP_AFTER)
    w.core.stop(1, w.now, by="admin")
    w.drain()
    why = "not started: the job was stopped by admin"
    assert {w.ended()[n] for n in ("web-1", "web-2", "lb")} == {("node_skipped", why)}
    w.finish("db")
    w.finish("mail")
    assert w.started() == ["db", "mail"]  # nothing starts after the stop
    assert w.job_state() == "stopped"


def test_fail_fast_skips_the_nodes_after_the_failed_one_and_the_rest() -> None:
    names = ["a", "b", "c"]
    w = World(connected=names)
    w.add(names, {"b": ["a"]}, concurrency=1, fail_fast=True)
    w.finish("a", fail=True)
    assert w.ended()["b"][1] == "not started: it runs after a, which failed"
    assert w.ended()["c"][1] == "not started: node a failed and the job is fail-fast"
    assert w.job_state() == "failed"


def test_a_job_timeout_skips_the_waiting_nodes() -> None:
    w = World(connected=("a", "b"))
    w.add(["a", "b"], {"b": ["a"]}, job_timeout=60)
    w.advance(60)
    assert w.ended()["b"][0] == "node_skipped"
    assert "timeout" in w.ended()["b"][1]
    assert w.job_state() == "failed"


def test_names_outside_the_job_and_a_node_after_itself_impose_no_order() -> None:
    w = World(connected=("a", "b"))
    w.add(["a", "b"], {"a": ["elsewhere", "a"], "b": ["a", "a"], "ghost": ["b"]})
    assert w.started() == ["a"]
    w.finish("a")
    assert w.started() == ["a", "b"]  # b waited for a once, not twice
    w.finish("b")
    assert w.job_state() == "finished"


def test_a_cycle_is_refused_before_the_job_exists() -> None:
    w = World(connected=("a", "b", "c"))
    with pytest.raises(ValueError, match="cycle among a, b, c"):
        w.add(["a", "b", "c"], {"a": ["c"], "b": ["a"], "c": ["b"]})
    assert w.core.job_state(1) is None
    assert w.sent == [] and not w.written
    w.add(["a", "b", "c"], {"b": ["a"], "c": ["b"]})  # the same id is free for a job
    assert w.started() == ["a"]


def test_a_long_chain_is_skipped_in_one_go_when_its_first_node_fails() -> None:
    names = [f"n{i:05d}" for i in range(5000)]
    w = World(connected=names)
    w.add(names, {later: [earlier] for earlier, later in pairwise(names)})
    w.finish(names[0], fail=True)
    ended = w.ended()
    assert len(ended) == len(names)
    assert ended[names[1]][1] == f"not started: it runs after {names[0]}, which failed"
    assert ended[names[-1]][1] == (
        f"not started: it runs after {names[-2]}, which was skipped because {names[0]} failed"
    )
    assert w.job_state() == "failed"


# -- after a restart ---------------------------------------------------------------------------


def resume(
    w: World,
    nodes: list[ResumedNode],
    after: Mapping[str, Collection[str]],
    ended_nodes: Mapping[str, str],
) -> None:
    w.core.resume_job(
        1,
        Echo(),
        nodes,
        w.now,
        state="running",
        created=T0 - 10,
        started=T0 - 9,
        ended=Counter(ended_nodes.values()),
        after=after,
        ended_nodes=ended_nodes,
    )
    w.drain()


def test_a_resumed_job_starts_what_waited_for_nodes_that_finished_before_the_restart() -> None:
    w = World(connected=SHOP)
    new = [ResumedNode(n, tx(n), "new") for n in ("web-1", "web-2", "lb")]
    resume(w, new, SHOP_AFTER, {"db": "finished", "mail": "finished"})
    assert w.started() == ["web-1", "web-2"]
    w.finish("web-1")
    w.finish("web-2")
    assert w.started()[-1] == "lb"


def test_a_resumed_job_skips_at_once_what_waited_for_a_node_that_failed() -> None:
    w = World(connected=SHOP)
    new = [ResumedNode(n, tx(n), "new") for n in ("lb", "web-1", "web-2")]
    resume(w, new, SHOP_AFTER, {"db": "failed", "mail": "finished"})
    ended = w.ended()
    assert ended["web-1"] == ("node_skipped", "not started: it runs after db, which failed")
    assert ended["lb"][1].endswith("which was skipped because db failed")
    assert w.started() == []
    assert w.job_state() == "failed"


def test_a_resumed_job_holds_what_waits_for_a_node_still_running() -> None:
    w = World(connected=SHOP)
    nodes = [ResumedNode("db", tx("db"), "running", T0 - 5)] + [
        ResumedNode(n, tx(n), "new") for n in ("web-1", "web-2", "lb")
    ]
    resume(w, nodes, SHOP_AFTER, {"mail": "finished"})
    assert w.started() == ["db"]  # sent again: the agent answers from its spool
    w.finish("db")
    assert w.started() == ["db", "web-1", "web-2"]


# -- properties ------------------------------------------------------------------------------

DAGS = st.integers(1, 9).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))),
        st.permutations(range(n)),
    )
)


@settings(max_examples=300)
@given(
    dag=DAGS,
    failing=st.sets(st.integers(0, 8)),
    concurrency=st.one_of(st.none(), st.integers(1, 3)),
    order=st.randoms(use_true_random=False),
)
def test_nodes_start_only_after_their_prerequisites_finished_and_are_skipped_otherwise(
    dag: tuple[int, set[tuple[int, int]], list[int]],
    failing: set[int],
    concurrency: int | None,
    order: Any,
) -> None:
    n, pairs, listed = dag
    names = [f"n{i}" for i in range(n)]
    # An edge from a lower to a higher number: acyclic whatever the order listed.
    after: dict[str, list[str]] = {}
    for a, b in pairs:
        if a < b:
            after.setdefault(names[b], []).append(names[a])
    w = World(connected=names)
    w.add([names[i] for i in listed], after, concurrency=concurrency)
    finished: set[str] = set()
    running: list[str] = []
    while w.core.job_state(1) is not None:
        fresh = [s for s in w.started() if s not in running and s not in w.ended()]
        for name in fresh:
            assert set(after.get(name, ())) <= finished, name  # all it waits for finished
        running += fresh
        live = [r for r in running if r not in w.ended()]
        assert concurrency is None or len(live) <= concurrency
        assert live, "the job is stuck"
        name = order.choice(live)
        w.finish(name, fail=int(name[1:]) in failing)
        if int(name[1:]) not in failing:
            finished.add(name)
    ended = w.ended()
    assert len(ended) == n  # every node ended once
    for name in names:
        blocked = any(ended[p][0] != "node_finished" for p in after.get(name, ()))
        assert (ended[name][0] == "node_skipped") == blocked, name
        assert (name in w.started()) == (not blocked)


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["finish", "fail", "error", "drop", "back", "tick", "stop", "force"]),
        st.integers(0, 5),
        st.integers(1, 400),
    ),
    max_size=50,
)


@settings(max_examples=400)
@given(
    dag=DAGS,
    actions=ACTIONS,
    concurrency=st.one_of(st.none(), st.integers(1, 3)),
    batch=st.one_of(st.none(), st.integers(1, 3)),
    fail_fast=st.booleans(),
    ttl=st.one_of(st.none(), st.integers(1, 200)),
)
def test_whatever_happens_no_node_ends_twice_or_starts_early_and_the_job_ends(
    dag: tuple[int, set[tuple[int, int]], list[int]],
    actions: list[tuple[str, int, int]],
    concurrency: int | None,
    batch: int | None,
    fail_fast: bool,
    ttl: int | None,
) -> None:
    n, pairs, listed = dag
    names = [f"n{i}" for i in range(n)]
    after: dict[str, list[str]] = {}
    for a, b in pairs:
        if a < b:
            after.setdefault(names[b], []).append(names[a])
    w = World(
        Limits(reconnect_grace=100, answer_timeout=50),
        connected=names[: max(1, n - 2)],
    )
    w.add(
        [names[i] for i in listed],
        after,
        concurrency=concurrency,
        batch=batch,
        fail_fast=fail_fast,
        offline_ttl=ttl,
    )
    for action, index, seconds in actions:
        name = names[index % n]
        sent = tx(name) in w.sent
        if action in ("finish", "fail") and sent:
            w.finish(name, fail=action == "fail")
        elif action == "error" and sent:
            w.core.receive(name, msg.RpcError(tx(name), "boom"), w.now)
        elif action == "drop":
            w.core.disconnected(name, w.now)
        elif action == "back":
            w.core.connected(name, w.now)
        elif action == "stop":
            w.core.stop(1, w.now, by="x")
        elif action == "force":
            w.core.stop(1, w.now, by="x", force=True)
        elif action == "tick":
            w.advance(seconds)
        w.drain()
        # nothing was sent before every node it runs after had finished
        finished = {c for c, (e, _) in w.ended().items() if e == "node_finished"}
        for node in w.started():
            assert set(after.get(node, ())) <= finished, node
    for _ in range(20):  # every timer runs out: the job ends
        when = w.core.next_timer()
        if when is None:
            break
        w.advance(when - w.now + 1)
    finals = Counter(
        e.details["node"]
        for e in w.written.events
        if e.type in ("node_finished", "node_failed", "node_errored", "node_skipped")
        and not e.details.get("late")
    )
    assert all(count == 1 for count in finals.values()), finals
    assert w.core.job_state(1) is None
    assert len(finals) == n
    assert w.events().count("job_finished") == 1
