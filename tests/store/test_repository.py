"""The Store's jobs, job nodes, events and inventory, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from podium.errors import NotFound, ValidationError
from podium.store import JOB_ORDERINGS, JobUpdate, NewEvent, NodeUpdate, Store

from .updates import moved

T0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def certnames(count: int) -> list[str]:
    return [f"node{i:05d}.example.com" for i in range(count)]


def create_job(
    store: Store,
    names: Sequence[str] = ("a.example.com", "b.example.com", "c.example.com"),
    *,
    prefix: str = "tx",
    created: datetime = T0,
    **fields: Any,
) -> int:
    job: dict[str, Any] = {
        "type": "task",
        "owner": "admin",
        "environment": "production",
        "description": "",
        "options": {"task": "package", "params": {"name": "openssl"}},
    }
    job.update(fields)
    return store.create_job(**job, nodes=[(name, f"{prefix}-{name}") for name in names], at=created)


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements sent to the database meanwhile (an executemany counts once)."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(store._engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(store._engine, "before_cursor_execute", record)


def writes(sent: list[str]) -> list[str]:
    return [s for s in sent if s.split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]


# Creating jobs


def test_a_job_on_ten_thousand_nodes_is_written_in_a_handful_of_statements(store: Store) -> None:
    names = certnames(10_000)
    with statements(store) as sent:
        job_id = create_job(store, names)
    assert len(sent) <= 4
    assert len(writes(sent)) == 2  # the job, then all its nodes at once

    job = store.get_job(job_id)
    assert (job.state, job.node_count, job.node_states) == ("new", 10_000, {"new": 10_000})
    nodes, total = store.job_nodes(job_id, limit=3)
    assert total == 10_000
    assert [n.certname for n in nodes] == names[:3]
    assert nodes[0].transaction_id == f"tx-{names[0]}"


def test_a_new_job_keeps_what_it_was_created_with(store: Store) -> None:
    options = {"task": "service", "params": {"action": "restart", "names": ["nginx", "ñ"]}}
    job_id = create_job(
        store,
        ["a.example.com"],
        type="plan_task",
        owner="ops",
        environment="staging",
        description="Restart the web tier",
        options=options,
    )
    job = store.get_job(job_id)
    assert (job.id, job.type, job.state) == (job_id, "plan_task", "new")
    assert (job.owner, job.environment, job.description) == (
        "ops",
        "staging",
        "Restart the web tier",
    )
    assert job.options == options
    assert (job.created_at, job.started_at, job.finished_at) == (T0, None, None)


def test_job_ids_keep_growing(store: Store) -> None:
    first = create_job(store, prefix="one")
    second = create_job(store, prefix="two")
    assert second > first


def test_a_certname_listed_twice_in_one_job_is_refused(store: Store) -> None:
    with pytest.raises(ValidationError, match=r"'a.example.com' appears twice"):
        store.create_job(
            type="task",
            owner="admin",
            environment="production",
            description="",
            options={},
            nodes=[("a.example.com", "tx-1"), ("a.example.com", "tx-2")],
            at=T0,
        )
    assert store.list_jobs()[1] == 0


def test_a_transaction_id_of_another_job_is_refused_and_nothing_is_written(store: Store) -> None:
    create_job(store, ["a.example.com"], prefix="same")
    with pytest.raises(ValidationError, match=r"transaction id .* already used"):
        create_job(store, ["a.example.com"], prefix="same")
    assert store.list_jobs()[1] == 1


# Job state


def test_a_job_keeps_its_first_start_and_takes_each_end_it_is_given(store: Store) -> None:
    job_id = create_job(store)
    store.set_job_state(JobUpdate(job_id, "ready"))
    assert store.get_job(job_id).started_at is None
    store.set_job_state(JobUpdate(job_id, "running", started_at=at(2)))
    store.set_job_state(JobUpdate(job_id, "running", started_at=at(3)))
    store.set_job_state(JobUpdate(job_id, "finished", finished_at=at(4)))
    job = store.get_job(job_id)
    assert (job.state, job.started_at, job.finished_at) == ("finished", at(2), at(4))

    # A late result corrects the outcome: a new end replaces, no end keeps the stored one.
    store.set_job_state(JobUpdate(job_id, "failed", finished_at=at(5)))
    assert store.get_job(job_id).finished_at == at(5)
    store.set_job_state(JobUpdate(job_id, "finished"))
    job = store.get_job(job_id)
    assert (job.state, job.started_at, job.finished_at) == ("finished", at(2), at(5))


def test_the_store_takes_a_jobs_timestamps_from_the_update_not_from_its_state(
    store: Store,
) -> None:
    job_id = create_job(store)
    store.set_job_state(JobUpdate(job_id, "running"))
    store.set_job_state(JobUpdate(job_id, "stopped"))
    job = store.get_job(job_id)
    assert (job.state, job.started_at, job.finished_at) == ("stopped", None, None)


def test_setting_the_state_of_an_unknown_job_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as raised:
        store.set_job_state(JobUpdate(404, "running", started_at=T0))
    assert raised.value.kind == "puppetlabs.orchestrator/unknown-job"


def test_an_unknown_job_is_not_found_with_the_orchestrator_kind(store: Store) -> None:
    for read in (
        lambda: store.get_job(404),
        lambda: store.job_nodes(404),
        lambda: store.job_events(404),
        lambda: store.job_report(404),
    ):
        with pytest.raises(NotFound) as raised:
            read()
        error = raised.value
        assert isinstance(error, KeyError)
        assert error.to_dict() == {
            "kind": "puppetlabs.orchestrator/unknown-job",
            "msg": "No job exists with id 404",
            "details": {"id": 404},
        }
        assert error.status == 404


# Node updates


def test_node_updates_record_start_finish_result_and_message(store: Store) -> None:
    job_id = create_job(store, ["a.example.com"])
    result = {
        "_output": "Grüße, 世界 🌍\nline two",
        "exit_code": 0,
        "nested": {"list": [1, 2.5, None, True, {"deep": ["ünïcødé"]}], "empty": {}},
    }
    store.apply_node_updates([moved("tx-a.example.com", "running", at(1))])
    node = store.node_by_transaction("tx-a.example.com")
    assert node is not None
    assert (node.state, node.started_at, node.finished_at) == ("running", at(1), None)

    store.apply_node_updates(
        [moved("tx-a.example.com", "finished", at(2), result=result, message="done")]
    )
    node = store.node_by_transaction("tx-a.example.com")
    assert node is not None
    assert (node.job_id, node.certname, node.state) == (job_id, "a.example.com", "finished")
    assert (node.started_at, node.finished_at) == (at(1), at(2))
    assert node.result == result
    assert node.message == "done"


def test_the_store_takes_a_nodes_timestamps_from_the_update_not_from_its_state(
    store: Store,
) -> None:
    create_job(store, ["a.example.com", "b.example.com"])
    store.apply_node_updates(
        [
            NodeUpdate("tx-a.example.com", "skipped", finished_at=at(5)),
            NodeUpdate("tx-b.example.com", "running"),
        ]
    )
    a = store.node_by_transaction("tx-a.example.com")
    b = store.node_by_transaction("tx-b.example.com")
    assert a is not None and b is not None
    assert (a.state, a.started_at, a.finished_at) == ("skipped", None, at(5))
    assert (b.state, b.started_at, b.finished_at) == ("running", None, None)


def test_a_nodes_start_is_kept_once_set_and_its_end_is_replaced(store: Store) -> None:
    create_job(store, ["a.example.com"])
    store.apply_node_updates([NodeUpdate("tx-a.example.com", "running", started_at=at(1))])
    store.apply_node_updates(
        [NodeUpdate("tx-a.example.com", "errored", started_at=at(2), finished_at=at(3))]
    )
    node = store.node_by_transaction("tx-a.example.com")
    assert node is not None
    assert (node.state, node.started_at, node.finished_at) == ("errored", at(1), at(3))

    # A result that arrives after the node was given up on replaces the end...
    store.apply_node_updates([NodeUpdate("tx-a.example.com", "finished", finished_at=at(9))])
    node = store.node_by_transaction("tx-a.example.com")
    assert node is not None
    assert (node.state, node.started_at, node.finished_at) == ("finished", at(1), at(9))
    # ...and an update without one leaves it alone.
    store.apply_node_updates([NodeUpdate("tx-a.example.com", "finished")])
    node = store.node_by_transaction("tx-a.example.com")
    assert node is not None and node.finished_at == at(9)


def test_every_node_update_writes_give_up_at_and_none_clears_it(store: Store) -> None:
    create_job(store, ["a.example.com"])
    running = NodeUpdate("tx-a.example.com", "running", started_at=at(1))
    store.apply_node_updates([running])
    node = store.node_by_transaction("tx-a.example.com")
    assert node is not None and node.give_up_at is None

    # The agent dropped: the node is given up on at 301 s unless it is back.
    store.apply_node_updates([NodeUpdate("tx-a.example.com", "running", give_up_at=at(301))])
    node = store.node_by_transaction("tx-a.example.com")
    assert node is not None
    assert (node.state, node.started_at, node.give_up_at) == ("running", at(1), at(301))
    store.apply_node_updates([NodeUpdate("tx-a.example.com", "running", give_up_at=at(400))])
    node = store.node_by_transaction("tx-a.example.com")
    assert node is not None and node.give_up_at == at(400)

    # It reconnected: the next update (which names no give_up_at) clears it.
    store.apply_node_updates([running])
    node = store.node_by_transaction("tx-a.example.com")
    assert node is not None
    assert (node.state, node.started_at, node.give_up_at) == ("running", at(1), None)


def test_later_updates_keep_the_first_start_and_what_they_do_not_set(store: Store) -> None:
    create_job(store, ["a.example.com"])
    store.apply_node_updates(
        [moved("tx-a.example.com", "running", at(1), result={"pid": 42}, message="queued")]
    )
    store.apply_node_updates([moved("tx-a.example.com", "running", at(2))])
    node = store.node_by_transaction("tx-a.example.com")
    assert node is not None
    assert (node.started_at, node.result, node.message) == (at(1), {"pid": 42}, "queued")


def test_updates_of_one_node_in_one_batch_apply_in_order(store: Store) -> None:
    create_job(store, ["a.example.com", "b.example.com"])
    store.apply_node_updates(
        [
            moved("tx-b.example.com", "running", at(1)),
            moved("tx-a.example.com", "running", at(1)),
            moved("tx-b.example.com", "failed", at(2), message="exit 1"),
            moved("tx-a.example.com", "finished", at(3)),
        ]
    )
    nodes, _ = store.job_nodes(store.list_jobs()[0][0].id)
    assert [(n.certname, n.state, n.finished_at) for n in nodes] == [
        ("a.example.com", "finished", at(3)),
        ("b.example.com", "failed", at(2)),
    ]


def test_updates_for_unknown_transaction_ids_are_ignored(store: Store) -> None:
    job_id = create_job(store, ["a.example.com"])
    store.apply_node_updates([moved("tx-nobody", "finished", at(1))])
    assert store.get_job(job_id).node_states == {"new": 1}
    assert store.node_by_transaction("tx-nobody") is None


def test_node_states_count_the_nodes_in_each_state_they_are_in(store: Store) -> None:
    job_id = create_job(store, certnames(6))
    names = certnames(6)
    store.apply_node_updates(
        [moved(f"tx-{n}", "running", at(1)) for n in names[:5]]
        + [moved(f"tx-{n}", "finished", at(2)) for n in names[:3]]
        + [moved(f"tx-{names[3]}", "failed", at(2))]
    )
    assert store.get_job(job_id).node_states == {"finished": 3, "failed": 1, "running": 1, "new": 1}


def test_five_thousand_node_updates_are_one_statement_each(store: Store) -> None:
    names = certnames(5_000)
    job_id = create_job(store, names)
    running = [moved(f"tx-{n}", "running", at(1)) for n in names]
    finished = [
        moved(f"tx-{n}", "finished", at(2 + i / 1000), result={"exit_code": 0, "n": i})
        for i, n in enumerate(names)
    ]
    with statements(store) as sent:
        store.apply_node_updates(running)
    assert len(writes(sent)) == 1
    # (How fast they are is bench/fanout.py's to measure.)
    with statements(store) as sent:
        store.apply_node_updates(finished)
    assert len(writes(sent)) == 1
    assert store.get_job(job_id).node_states == {"finished": 5_000}


def test_node_updates_from_several_threads_at_once_all_land(store: Store) -> None:
    names = certnames(1_200)
    job_id = create_job(store, names)
    threads_count, batch = 6, 50
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_count + 1)

    def worker(index: int) -> None:
        mine = names[index::threads_count]
        barrier.wait()
        try:
            for start in range(0, len(mine), batch):
                chunk = mine[start : start + batch]
                store.apply_node_updates([moved(f"tx-{n}", "running", at(1)) for n in chunk])
                store.apply_node_updates(
                    [moved(f"tx-{n}", "finished", at(2), result={"by": index}) for n in chunk]
                )
        except BaseException as error:
            errors.append(error)

    def reader() -> None:
        barrier.wait()
        try:
            for _ in range(20):
                assert sum(store.get_job(job_id).node_states.values()) == len(names)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    threads.append(threading.Thread(target=reader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert store.get_job(job_id).node_states == {"finished": len(names)}
    nodes, _ = store.job_nodes(job_id)
    assert all(n.result == {"by": i % threads_count} for i, n in enumerate(nodes))


# One flush of the job core: nodes, events and jobs together


def flush_of(job_id: int) -> tuple[list[NodeUpdate], list[NewEvent], list[JobUpdate]]:
    """What the job core writes when a job's two nodes start at once."""
    nodes = [
        moved("tx-a.example.com", "running", at(1)),
        moved("tx-b.example.com", "running", at(1)),
    ]
    events = [
        NewEvent(job_id, "job_running", at(1), message=f"job {job_id} running"),
        NewEvent(job_id, "node_running", at(1), certname="a.example.com"),
        NewEvent(job_id, "node_running", at(1), certname="b.example.com"),
    ]
    return nodes, events, [JobUpdate(job_id, "running", started_at=at(1))]


def test_job_changes_are_written_together_in_one_transaction(store: Store) -> None:
    job_id = create_job(store, ["a.example.com", "b.example.com"])
    nodes, events, jobs = flush_of(job_id)
    commits: list[object] = []

    def committed(connection: Any) -> None:
        commits.append(connection)

    event.listen(store._engine, "commit", committed)
    try:
        with statements(store) as sent:
            store.write_job_changes(nodes, events, jobs)
    finally:
        event.remove(store._engine, "commit", committed)
    assert len(writes(sent)) == 3  # the nodes at once, the events at once, the job
    assert len(commits) == 1
    job = store.get_job(job_id)
    assert (job.state, job.started_at, job.node_states) == ("running", at(1), {"running": 2})
    assert [e.type for e in store.job_events(job_id)] == [
        "job_running",
        "node_running",
        "node_running",
    ]


def test_a_flush_naming_an_unknown_job_stores_none_of_its_changes(store: Store) -> None:
    job_id = create_job(store, ["a.example.com", "b.example.com"])
    nodes, events, jobs = flush_of(job_id)
    with pytest.raises(NotFound) as raised:
        store.write_job_changes(nodes, events, [*jobs, JobUpdate(404, "running")])
    assert raised.value.kind == "puppetlabs.orchestrator/unknown-job"
    job = store.get_job(job_id)
    assert (job.state, job.started_at, job.node_states) == ("new", None, {"new": 2})
    assert store.job_events(job_id) == []


def test_a_flush_with_an_event_of_an_unknown_job_stores_none_of_its_changes(
    store: Store,
) -> None:
    job_id = create_job(store, ["a.example.com", "b.example.com"])
    nodes, events, jobs = flush_of(job_id)
    with pytest.raises(NotFound) as raised:
        store.write_job_changes(nodes, [*events, NewEvent(404, "node_running", at(1))], jobs)
    assert raised.value.details == {"id": 404}
    assert store.get_job(job_id).node_states == {"new": 2}
    assert store.job_events(job_id) == []


def test_writing_a_flush_again_after_a_failure_stores_each_event_once(store: Store) -> None:
    job_id = create_job(store, ["a.example.com", "b.example.com"])
    nodes, events, jobs = flush_of(job_id)
    with pytest.raises(NotFound):
        store.write_job_changes(nodes, events, [JobUpdate(404, "running"), *jobs])
    # The job service keeps a flush that failed and writes it again (here, without the
    # update that broke it): nothing of the first attempt is left to double.
    store.write_job_changes(nodes, events, jobs)
    stored = store.job_events(job_id)
    assert [(e.type, e.certname) for e in stored] == [
        ("job_running", None),
        ("node_running", "a.example.com"),
        ("node_running", "b.example.com"),
    ]
    assert store.get_job(job_id).node_states == {"running": 2}


def test_an_empty_flush_writes_nothing(store: Store) -> None:
    with statements(store) as sent:
        store.write_job_changes([], [], [])
    assert sent == []


# Reading jobs and their nodes


def test_list_jobs_gives_a_page_and_the_total(store: Store) -> None:
    ids = [create_job(store, prefix=f"j{i}", created=at(i)) for i in range(7)]
    page, total = store.list_jobs(limit=3, offset=2)
    assert total == 7
    assert [j.id for j in page] == list(reversed(ids))[2:5]  # newest first by default
    assert store.list_jobs(limit=3, offset=6)[0][0].id == ids[0]
    assert store.list_jobs(limit=3, offset=7) == ([], 7)
    assert page[0].node_states == {"new": 3}


@pytest.mark.parametrize("order_by", list(JOB_ORDERINGS))
def test_list_jobs_orders_by_each_column_the_api_offers(store: Store, order_by: str) -> None:
    specs = [  # owner, environment, description (the name), state, created
        ("carol", "production", "b-deploy", "running", at(2)),
        ("alice", "staging", "c-patch", "finished", at(3)),
        ("bob", "dev", "a-audit", "new", at(1)),
    ]
    ids = {}
    for i, (owner, environment, description, state, created) in enumerate(specs):
        job_id = create_job(
            store,
            prefix=f"j{i}",
            owner=owner,
            environment=environment,
            description=description,
            created=created,
        )
        store.set_job_state(JobUpdate(job_id, state))
        ids[owner] = job_id
    expected = {
        "owner": ["alice", "bob", "carol"],
        "timestamp": ["bob", "carol", "alice"],
        "environment": ["bob", "carol", "alice"],  # dev, production, staging
        "name": ["bob", "carol", "alice"],  # a-audit, b-deploy, c-patch
        "state": ["alice", "bob", "carol"],  # finished, new, running
    }[order_by]
    ascending, _ = store.list_jobs(order_by=order_by, order="asc")
    descending, _ = store.list_jobs(order_by=order_by, order="desc")
    assert [j.id for j in ascending] == [ids[o] for o in expected]
    assert [j.id for j in descending] == [ids[o] for o in reversed(expected)]


def test_list_jobs_filters_by_type(store: Store) -> None:
    create_job(store, prefix="t1", type="task")
    deploy = create_job(store, prefix="d1", type="deploy")
    create_job(store, prefix="t2", type="task")
    jobs, total = store.list_jobs(type="deploy")
    assert ([j.id for j in jobs], total) == ([deploy], 1)
    assert store.list_jobs(type="task")[1] == 2
    assert store.list_jobs(type="plan_task") == ([], 0)


def test_list_jobs_filters_by_state_and_owner_and_counts_what_matches(store: Store) -> None:
    specs = [
        ("alice", "running"),
        ("bob", "running"),
        ("alice", "finished"),
        ("alice", "running"),
        ("carol", "failed"),
    ]
    ids = []
    for i, (owner, state) in enumerate(specs):
        job_id = create_job(store, prefix=f"j{i}", owner=owner, created=at(i))
        store.set_job_state(JobUpdate(job_id, state))
        ids.append(job_id)

    running, total = store.list_jobs(state="running", order="asc")
    assert ([j.id for j in running], total) == ([ids[0], ids[1], ids[3]], 3)
    alices, total = store.list_jobs(owner="alice", order="asc")
    assert ([j.id for j in alices], total) == ([ids[0], ids[2], ids[3]], 3)
    both, total = store.list_jobs(owner="alice", state="running", limit=1, order="asc")
    assert ([j.id for j in both], total) == ([ids[0]], 2)  # the total counts every page
    assert store.list_jobs(owner="alice", state="running", offset=1)[0][0].id == ids[0]
    assert store.list_jobs(owner="carol", state="running") == ([], 0)
    assert store.list_jobs(owner="nobody") == ([], 0)
    assert store.list_jobs(type="task", state="failed")[1] == 1
    assert store.list_jobs(type="deploy", state="failed") == ([], 0)


def test_list_jobs_refuses_an_unknown_order_by_and_names_the_valid_ones(store: Store) -> None:
    with pytest.raises(ValidationError) as raised:
        store.list_jobs(order_by="created_at")
    error = raised.value
    assert error.msg == (
        "cannot order jobs by 'created_at': use one of owner, timestamp, environment, name, state"
    )
    assert error.kind == "puppetlabs.orchestrator/query-error"
    assert error.details == {"parameter": "order_by"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"order": "up"}, r"order must be 'asc' or 'desc', not 'up'"),
        ({"limit": -1}, r"limit must be 0 or more"),
        ({"offset": -5}, r"offset must be 0 or more"),
    ],
)
def test_list_jobs_refuses_bad_paging_and_order(
    store: Store, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        store.list_jobs(**arguments)


def test_job_nodes_filter_by_state_and_page_with_the_total(store: Store) -> None:
    names = certnames(10)
    job_id = create_job(store, list(reversed(names)))
    store.apply_node_updates([moved(f"tx-{n}", "failed", at(1)) for n in names[::2]])

    failed, total = store.job_nodes(job_id, state="failed", limit=2, offset=1)
    assert total == 5
    assert [n.certname for n in failed] == [names[2], names[4]]
    rest, total = store.job_nodes(job_id, state="failed", offset=3)
    assert ([n.certname for n in rest], total) == ([names[6], names[8]], 5)
    everything, total = store.job_nodes(job_id)
    assert [n.certname for n in everything] == names and total == 10
    assert store.job_nodes(job_id, state="finished") == ([], 0)


def test_job_report_gives_each_node_with_the_ids_of_its_events(store: Store) -> None:
    job_id = create_job(store, ["c.example.com", "a.example.com", "b.example.com"])
    other = create_job(store, ["a.example.com"], prefix="other")
    store.write_job_changes(
        [moved("tx-a.example.com", "finished", at(2)), moved("tx-b.example.com", "running", at(1))],
        [
            NewEvent(job_id, "job_running", at(1)),
            NewEvent(job_id, "node_running", at(1), certname="a.example.com"),
            NewEvent(other, "node_running", at(1), certname="a.example.com"),
            NewEvent(job_id, "node_running", at(1), certname="b.example.com"),
            NewEvent(job_id, "node_finished", at(2), certname="a.example.com"),
        ],
    )
    ids = [e.id for e in store.job_events(job_id)]
    nodes, events = store.job_report(job_id)
    assert [(n.certname, n.state, n.finished_at) for n in nodes] == [
        ("a.example.com", "finished", at(2)),
        ("b.example.com", "running", None),
        ("c.example.com", "new", None),
    ]
    # Job-wide events and the other job's are no node's; a node without any has none.
    assert events == {"a.example.com": [ids[1], ids[3]], "b.example.com": [ids[2]]}
    with pytest.raises(NotFound):
        store.job_report(404)


def test_node_by_transaction_finds_the_node_of_any_job(store: Store) -> None:
    first = create_job(store, ["a.example.com"], prefix="one")
    second = create_job(store, ["a.example.com"], prefix="two")
    one = store.node_by_transaction("one-a.example.com")
    two = store.node_by_transaction("two-a.example.com")
    assert one is not None and two is not None
    assert (one.job_id, two.job_id) == (first, second)
    assert (two.state, two.result, two.message) == ("new", None, None)


def test_unfinished_jobs_and_nodes_leave_out_the_terminal_ones(store: Store) -> None:
    ids = {}
    for state in ("new", "running", "stopping", "stopped", "finished", "failed"):
        ids[state] = create_job(store, ["a.example.com", "b.example.com"], prefix=state)
        store.set_job_state(JobUpdate(ids[state], state))
    assert [j.id for j in store.unfinished_jobs()] == [ids["new"], ids["running"], ids["stopping"]]

    job_id = create_job(store, certnames(6), prefix="nodes")
    states = ["new", "running", "finished", "failed", "errored", "skipped"]
    store.apply_node_updates(
        [moved(f"nodes-{n}", s, at(2)) for n, s in zip(certnames(6), states, strict=True)]
    )
    unfinished = store.unfinished_nodes(job_id)
    assert [(n.certname, n.state) for n in unfinished] == [
        (certnames(6)[0], "new"),
        (certnames(6)[1], "running"),
    ]
    assert store.unfinished_nodes(404) == []


# Events


def test_events_are_read_from_a_start_id_in_order(store: Store) -> None:
    mine = create_job(store, prefix="mine")
    other = create_job(store, prefix="other")
    store.add_events(
        [
            NewEvent(mine, "job_created", at(0), message="Job created", details={"by": "admin"}),
            NewEvent(other, "job_created", at(0)),
            NewEvent(mine, "node_running", at(1), certname="a.example.com"),
            NewEvent(mine, "node_finished", at(2), certname="a.example.com", message="ok"),
            NewEvent(other, "node_running", at(2), certname="b.example.com"),
        ]
    )
    events = store.job_events(mine)
    assert [e.type for e in events] == ["job_created", "node_running", "node_finished"]
    assert [e.id for e in events] == sorted(e.id for e in events)
    first = events[0]
    assert (first.job_id, first.certname, first.timestamp) == (mine, None, at(0))
    assert (first.message, first.details) == ("Job created", {"by": "admin"})
    assert (events[1].certname, events[1].message, events[1].details) == ("a.example.com", "", {})

    since = store.job_events(mine, start=events[1].id)
    assert [e.id for e in since] == [events[1].id, events[2].id]
    assert [e.id for e in store.job_events(mine, start=events[1].id, limit=1)] == [events[1].id]
    assert store.job_events(mine, start=events[2].id + 100) == []


def test_events_of_an_unknown_job_are_refused_and_none_are_written(store: Store) -> None:
    job_id = create_job(store)
    with pytest.raises(NotFound) as raised:
        store.add_events([NewEvent(job_id, "job_created", at(0)), NewEvent(404, "oops", at(0))])
    assert raised.value.kind == "puppetlabs.orchestrator/unknown-job"
    assert store.job_events(job_id) == []


# Inventory


def test_record_facts_adds_a_node_then_updates_its_facts_and_last_seen(store: Store) -> None:
    store.record_facts("web1.example.com", {"os": {"family": "Debian"}, "cpus": 2}, at(1))
    store.record_facts("web1.example.com", {"os": {"family": "Debian"}, "cpus": 4}, at(5))
    node = store.get_node("web1.example.com")
    assert node.facts == {"os": {"family": "Debian"}, "cpus": 4}
    assert (node.first_seen, node.last_seen, node.facts_timestamp) == (at(1), at(5), at(5))


def test_facts_of_many_nodes_are_stored_in_one_write(store: Store) -> None:
    store.record_facts("b.example.com", {"old": True}, at(1))
    with statements(store) as sent:
        store.record_facts_many(
            [("b.example.com", {"kernel": "Linux"}, at(3)), ("a.example.com", {"x": [1]}, at(3))]
        )
    assert len(writes(sent)) == 1
    a, b = store.list_nodes()
    assert (a.certname, a.facts, a.first_seen) == ("a.example.com", {"x": [1]}, at(3))
    assert (b.certname, b.facts, b.first_seen, b.last_seen) == (
        "b.example.com",
        {"kernel": "Linux"},
        at(1),
        at(3),
    )


def test_touch_nodes_adds_new_nodes_and_moves_last_seen_of_known_ones(store: Store) -> None:
    store.record_facts("known.example.com", {"kernel": "Linux"}, at(1))
    with statements(store) as sent:
        store.touch_nodes(["new.example.com", "known.example.com", "new.example.com"], at(9))
    assert len(writes(sent)) == 1
    known, new = store.list_nodes()
    assert (known.certname, known.facts, known.first_seen, known.last_seen) == (
        "known.example.com",
        {"kernel": "Linux"},
        at(1),
        at(9),
    )
    assert known.facts_timestamp == at(1)
    assert (new.certname, new.facts, new.facts_timestamp) == ("new.example.com", {}, None)
    assert (new.first_seen, new.last_seen) == (at(9), at(9))


def test_an_unknown_node_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match=r"No information is known about node ghost.example.com"):
        store.get_node("ghost.example.com")


def test_known_certnames_are_the_subset_the_inventory_holds(store: Store) -> None:
    names = certnames(2_500)
    store.touch_nodes(names[::2], at(1))
    asked = [*names, "ghost.example.com"]
    assert store.known_certnames(asked) == set(names[::2])
    assert store.known_certnames([]) == set()
    assert [n.certname for n in store.list_nodes()] == names[::2]


# Retention


def test_purge_deletes_jobs_that_ended_before_the_cutoff_with_their_nodes_and_events(
    store: Store,
) -> None:
    old = create_job(store, ["a.example.com"], prefix="old", created=at(1))
    store.apply_node_updates([moved("old-a.example.com", "finished", at(2), result={})])
    store.add_events([NewEvent(old, "job_finished", at(2))])
    store.set_job_state(JobUpdate(old, "finished", finished_at=at(2)))
    recent = create_job(store, ["a.example.com"], prefix="new", created=at(1))
    store.set_job_state(JobUpdate(recent, "finished", finished_at=at(20)))
    running = create_job(store, ["b.example.com"], prefix="run", created=at(1))

    assert store.purge_jobs(finished_before=at(10)) == 1
    with pytest.raises(NotFound):
        store.get_job(old)
    assert store.node_by_transaction("old-a.example.com") is None
    assert [store.get_job(j).id for j in (recent, running)] == [recent, running]
    assert store.purge_jobs(finished_before=at(10)) == 0
