"""The live display's logic, fed event views as the server streams them: what it prints,
what it counts, how it groups identical results, and the exit code."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import pytest

from podium.cli.watch import (
    ERROR,
    NO_ANSWER,
    OK,
    SOME_FAILED,
    JobDisplay,
    Line,
    PlainScreen,
    RichScreen,
    closing_lines,
    exit_code,
    header_lines,
    node_results,
)

RETITLE = "\x1b]0;owned\x07"
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
NOW = datetime(2026, 5, 9, 12, 0, 2, tzinfo=UTC)


class Events:
    """Event views with increasing ids, as ``/jobs/:id/events`` numbers them."""

    def __init__(self) -> None:
        self.next_id = 0

    def __call__(self, type_: str, **details: object) -> dict[str, object]:
        self.next_id += 1
        return {"id": str(self.next_id), "type": type_, "timestamp": "", "details": details}


def display(nodes: int, **kwargs: object) -> JobDisplay:
    return JobDisplay(
        {"name": "12", "node_count": nodes},
        now=lambda: NOW,
        tz=UTC,
        **kwargs,  # type: ignore[arg-type]
    )


def texts(lines: list[Line]) -> list[str]:
    return [line.text for line in lines]


def feed_all(view: JobDisplay, events: list[dict[str, object]]) -> list[str]:
    out: list[str] = []
    for event in events:
        out.extend(texts(view.feed(event)))
    return out


def test_a_small_job_prints_every_node_as_it_starts_and_ends():
    ev = Events()
    view = display(2)
    printed = feed_all(
        view,
        [
            ev("job_running"),
            ev("node_running", node="web01"),
            ev("node_running", node="web02"),
            ev("node_finished", node="web01", result={"_output": "hi\n"}),
            ev("node_finished", node="web02", result={"_output": "hi\n"}),
            ev("job_finished", state="finished"),
        ],
    )
    assert printed == [
        "Started on web01 ...",
        "Started on web02 ...",
        "Finished on node web01",
        "  STDOUT:",
        "    hi",
        "Finished on node web02",
        "  STDOUT:",
        "    hi",
    ]
    assert view.done and view.state == "finished"
    assert view.summary() == []  # every node was printed: nothing to sum up


def test_a_large_job_prints_each_distinct_result_once_then_a_summary_by_result():
    ev = Events()
    view = display(1000)
    events = [ev("job_running")]
    for i in range(1000):
        name = f"web{i:04d}"
        events.append(ev("node_running", node=name))
        if i % 100 == 7:
            # the node's own name in its message: still the same failure
            events.append(ev("node_failed", node=name, message=f"unknown node {name}"))
        else:
            events.append(ev("node_finished", node=name, result={"_output": "ok\n"}))
    events.append(ev("job_finished", state="failed"))
    printed = feed_all(view, events)
    assert printed == [
        "Finished on node web0000",
        "  STDOUT:",
        "    ok",
        "Failed on web0007",
        "  Error: unknown node web0007",
    ]
    assert texts(view.summary()) == [
        "",
        "Summary by result:",
        "  990 nodes finished like web0000: web0000, web0001, web0002, web0003, web0004 "
        "and 985 more",
        "  10 nodes failed like web0007: web0007, web0107, web0207, web0307, web0407 and 5 more",
    ]
    assert dict(view.tally()) == {
        "running": 0,
        "finished": 990,
        "failed": 10,
        "errored": 0,
        "skipped": 0,
        "disconnected": 0,
    }
    assert view.ended == 1000


def test_verbose_prints_every_node_of_a_large_job():
    ev = Events()
    view = display(100, verbose=True)
    printed = feed_all(
        view, [ev("node_finished", node=f"n{i}", result={"x": 1}) for i in range(100)]
    )
    assert printed.count("  x : 1") == 100
    assert view.summary() == []


def test_failures_are_red_and_skipped_nodes_muted():
    ev = Events()
    view = display(3)
    lines = view.feed(ev("node_errored", node="a", message="stopped by admin"))
    lines += view.feed(ev("node_skipped", node="b", message="not started: the job was stopped"))
    lines += view.feed(ev("node_finished", node="c", result={"ok": True}))
    assert [(line.text, line.style) for line in lines] == [
        ("Failed on a", "error"),
        ("  Error: stopped by admin", "error"),
        ("Skipped on b", "muted"),
        ("  Note: not started: the job was stopped", "muted"),
        ("Finished on node c", ""),
        ("  ok : true", ""),
    ]


def test_distinct_results_past_the_limit_are_summed_up_not_printed():
    ev = Events()
    view = display(500)
    printed = feed_all(
        view, [ev("node_finished", node=f"n{i}", result={"value": i}) for i in range(500)]
    )
    assert printed.count("  value : 0") == 1
    assert sum(1 for t in printed if t.startswith("Finished on node")) == 20
    summary = texts(view.summary())
    assert "  1 node finished with a result not shown: n20" in summary
    assert summary[-1] == "  and 460 more results on 460 nodes: podium job show 12 --format json"
    assert len(summary) < 30  # a screenful


def test_a_disconnect_says_when_the_node_is_given_up_and_is_counted():
    ev = Events()
    view = display(4)
    view.feed(ev("node_running", node="web01"))
    lines = view.feed(ev("node_disconnected", node="web01", give_up_at="2026-05-09T12:05:01Z"))
    assert lines == [
        Line("web01 disconnected; given up at 12:05:01 (in 4m 59s) unless it reconnects", "warning")
    ]
    assert dict(view.tally())["disconnected"] == 1
    assert dict(view.tally())["running"] == 1
    assert texts(view.feed(ev("node_reconnected", node="web01"))) == ["web01 reconnected"]
    assert dict(view.tally())["disconnected"] == 0
    view.feed(ev("node_disconnected", node="web01", give_up_at="2026-05-09T12:05:01Z"))
    view.feed(ev("node_errored", node="web01", message="gave up"))
    assert dict(view.tally())["disconnected"] == 0  # ended: no longer counted as away


def test_disconnects_of_a_large_job_are_listed_up_to_a_limit_then_counted():
    ev = Events()
    view = display(1000)
    printed = feed_all(
        view,
        [
            ev("node_disconnected", node=f"n{i}", give_up_at="2026-05-09T12:05:01Z")
            for i in range(50)
        ],
    )
    assert len(printed) == 21
    assert printed[-1].startswith("More nodes disconnected; they are counted, not listed")
    assert dict(view.tally())["disconnected"] == 50


def test_streamed_output_is_prefixed_by_node_and_buffered_to_whole_lines():
    ev = Events()
    view = display(2, stream=True)
    printed = feed_all(
        view,
        [
            ev("node_output", node="web01", stream="stdout", data="hel", offset=0),
            ev("node_output", node="web02", stream="stdout", data="other\n", offset=0),
            ev("node_output", node="web01", stream="stdout", data="lo\r\nwor", offset=3),
            ev("node_output", node="web01", stream="stderr", data="oops\n", offset=0),
            ev("node_output", node="web01", stream="stdout", data="ld\ntail", offset=10),
            # the node ends: its partial line is printed before its result
            ev("node_finished", node="web01", result={"_output": "hello\nworld\ntail"}),
            ev("node_output", node="web02", stream="stderr", data="no newline", offset=6),
            ev("job_finished", state="finished"),
        ],
    )
    assert printed == [
        "web02 | other",
        "web01 | hello",
        "web01 ! oops",
        "web01 | world",
        "web01 | tail",
        "Finished on node web01",  # its _output was printed live: not again
        "web02 ! no newline",
    ]


def test_without_stream_output_events_print_nothing():
    ev = Events()
    view = display(1)
    assert view.feed(ev("node_output", node="a", stream="stdout", data="x\n", offset=0)) == []


def test_stderr_lines_have_their_own_mark_and_style():
    ev = Events()
    view = display(1, stream=True)
    assert view.feed(ev("node_output", node="a", stream="stderr", data="bad\n", offset=0)) == [
        Line("a ! bad", "stderr")
    ]


def test_a_very_long_line_without_a_newline_is_printed_in_pieces():
    ev = Events()
    view = display(1, stream=True)
    lines = view.feed(ev("node_output", node="a", stream="stdout", data="x" * 10_000, offset=0))
    assert [len(line.text) for line in lines] == [4 + 4096, 4 + 4096]
    assert texts(view.feed(ev("job_finished", state="finished"))) == ["a | " + "x" * 1808]


def test_control_characters_never_reach_the_output():
    ev = Events()
    view = display(3, stream=True)
    node = f"db{RETITLE}"
    printed = feed_all(
        view,
        [
            ev("node_running", node=node),
            ev("node_output", node=node, stream="stdout", data=f"a{RETITLE}b\rc\n", offset=0),
            ev("node_disconnected", node=node, give_up_at="2026-05-09T12:05:01Z"),
            ev("node_reconnected", node=node),
            ev("job_stopping", by=f"eve{RETITLE}", force=False),
            ev("node_failed", node=node, message=f"bad{RETITLE}", result={"k": f"v{RETITLE}"}),
            ev("job_aborted", reason=f"late{RETITLE}"),
            ev("job_finished", state="failed"),
        ],
    )
    assert printed
    assert not any(CONTROL.search(text) for text in printed)
    assert "db\ufffd]0;owned\ufffd | a\ufffd]0;owned\ufffdb\ufffdc" in printed


def test_an_event_fed_twice_changes_nothing():
    ev = Events()
    view = display(2)
    started = ev("node_running", node="a")
    ended = ev("node_finished", node="a", result={"x": 1})
    assert view.feed(started)
    assert view.feed(ended)
    assert view.feed(started) == []
    assert view.feed(ended) == []
    assert dict(view.tally())["finished"] == 1
    assert dict(view.tally())["running"] == 0


def test_a_late_result_moves_a_given_up_node_to_its_real_state():
    ev = Events()
    view = display(20)
    view.feed(ev("node_errored", node="a", message="gave up on a: it did not reconnect"))
    view.feed(ev("node_finished", node="b", result={"x": 1}))
    view.feed(ev("node_finished", node="a", result={"x": 1}, late=True))
    assert dict(view.tally())["errored"] == 0
    assert dict(view.tally())["finished"] == 2
    assert texts(view.summary())[-1] == "  2 nodes finished like b: b, a"


def test_job_level_events_are_said_plainly():
    ev = Events()
    view = display(2)
    assert texts(view.feed(ev("job_ready")))[0].startswith("Job 12 is waiting")
    assert texts(view.feed(ev("job_stopping", by="admin", force=False))) == [
        "Job 12 is stopping (by admin): nothing new starts; running nodes finish."
    ]
    assert texts(view.feed(ev("job_stopping", by="admin", force=True))) == [
        "Job 12 is stopping (by admin, forced): running tasks are killed."
    ]
    assert view.feed(ev("job_aborted", reason="the job did not finish within 5m")) == [
        Line("Job 12 aborted: the job did not finish within 5m", "error")
    ]


def test_the_header_names_the_job_its_environment_pace_and_nodes():
    job = {
        "name": "12",
        "node_count": 10,
        "environment": {"name": "production"},
        "options": {
            "concurrency": 5,
            "batch": "25%",
            "batch_sleep": 30,
            "fail_fast": True,
            "timeout": 60,
            "job_timeout": 300,
            "offline_ttl": 600,
        },
    }
    assert texts(header_lines(job)) == [
        "New job ID: 12",
        "Environment: production",
        "Concurrency: 5",
        "Batches: 25% of the nodes at a time, 30s between batches",
        "Fail fast: nothing new starts after a node fails",
        "Timeouts: 1m a node, 5m the job",
        "Offline nodes: waited for up to 10m, then failed",
        "Nodes: 10",
    ]
    bare = {"name": "3", "node_count": 1, "environment": {"name": "dev"}, "options": {}}
    assert texts(header_lines(bare, query="nodes {}")) == [
        "New job ID: 3",
        "Environment: dev",
        "Query: nodes {}",
        "Concurrency: server default",
        "Nodes: 1",
    ]


def job_view(states, total, state="finished"):
    return {
        "name": "12",
        "node_states": states,
        "node_count": total,
        "duration": 2.5,
        "state": state,
    }


@pytest.mark.parametrize(
    ("states", "total", "answered", "code"),
    [
        ({"finished": 10}, 10, True, OK),
        ({"finished": 8, "failed": 2}, 10, True, SOME_FAILED),
        ({"failed": 2}, 2, True, SOME_FAILED),  # they ran and returned an error
        ({"errored": 2}, 2, False, NO_ANSWER),
        ({}, 0, False, ERROR),  # nothing targeted
    ],
)
def test_exit_codes_follow_choria(states, total, answered, code):
    assert exit_code(job_view(states, total), answered=answered) == code


def test_the_exit_code_counts_a_failure_with_a_result_as_an_answer():
    ev = Events()
    view = display(2)
    view.feed(ev("node_failed", node="a", message="unknown node a"))
    assert view.exit_code(job_view({"failed": 2}, 2, "failed")) == NO_ANSWER
    view.feed(ev("node_failed", node="b", result={"_error": {"msg": "exit 1"}}))
    assert view.exit_code(job_view({"failed": 2}, 2, "failed")) == SOME_FAILED


def test_the_closing_lines_say_completed_or_stopped_and_how_to_rerun():
    assert texts(closing_lines(job_view({"finished": 8, "failed": 2}, 10, "failed"))) == [
        "",
        "Job completed. 8/10 nodes succeeded.",
        "Duration: 2.500 s",
        "Run the nodes that did not succeed again: podium job rerun 12 --only-failed",
    ]
    stopped = closing_lines(job_view({"finished": 3, "skipped": 7}, 10, "stopped"))
    assert stopped[1] == Line("Job stopped. 3/10 nodes succeeded.", "warning")
    assert texts(closing_lines(job_view({"finished": 1}, 1)))[1:] == [
        "Job completed. 1/1 nodes succeeded.",
        "Duration: 2.500 s",
    ]


def test_job_show_groups_the_results_of_a_large_job_as_the_live_display_does():
    nodes = [
        {"name": f"n{i}", "state": "finished", "result": {"_output": "same\n"}} for i in range(30)
    ]
    lines = texts(node_results({"name": "4", "node_count": 30}, nodes))
    assert lines[:3] == ["Finished on node n0", "  STDOUT:", "    same"]
    assert lines[-1] == "  30 nodes finished like n0: n0, n1, n2, n3, n4 and 25 more"
    every = texts(node_results({"name": "4", "node_count": 30}, nodes, verbose=True))
    assert every.count("    same") == 30


def test_the_plain_screen_writes_lines_without_escape_codes():
    out = io.StringIO()
    screen = PlainScreen(out)
    view = display(1)
    screen.start(view)
    screen.print([Line("Failed on a", "error"), Line("fine")])
    screen.update(view)
    screen.stop()
    assert out.getvalue() == "Failed on a\nfine\n"


def test_the_rich_screen_draws_a_progress_bar_and_colours_failures_on_a_terminal():
    out = io.StringIO()
    screen = RichScreen(out, force_terminal=True)
    ev = Events()
    view = display(2)
    screen.start(view)
    view.feed(ev("node_running", node="a"))
    screen.update(view)
    screen.print(view.feed(ev("node_failed", node="a", message="boom")))
    screen.update(view)
    screen.stop()
    text = out.getvalue()
    assert "\x1b[31mFailed on a" in text  # red
    assert "1/2" in text  # the bar's count
    assert "1 failed" in text
