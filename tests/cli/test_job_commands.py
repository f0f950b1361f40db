"""``task run``'s pace and display flags, ``job show|stop|rerun``, and Ctrl+C while a
job is followed; all against a fake API client that records what was asked."""

from __future__ import annotations

import io
import json

import pytest

from podium.cli import job as cli_job
from podium.cli.main import main
from podium.cli.watch import ERROR, OK, SOME_FAILED, PlainScreen, follow
from podium.errors import NotPermitted, PodiumError


def events(*specs):
    """Event views numbered from 1: ``("node_running", {"node": "a"})`` …"""
    return [
        {"id": str(i), "type": t, "timestamp": "", "message": "", "details": d}
        for i, (t, d) in enumerate(specs, 1)
    ]


def job_view(name="12", nodes=3, state="finished", node_states=None, **options):
    return {
        "id": f"https://x/jobs/{name}",
        "name": name,
        "state": state,
        "type": "task",
        "command": "task",
        "options": {"task": "podium::echo", "scope": {"nodes": ["a", "b", "c"]}, **options},
        "owner": {"login": "admin"},
        "description": "",
        "environment": {"name": "production"},
        "node_count": nodes,
        "node_states": node_states if node_states is not None else {"finished": nodes},
        "timestamp": "2026-05-09T07:35:25Z",
        "created_timestamp": "2026-05-09T07:35:20Z",
        "started_timestamp": "2026-05-09T07:35:21Z",
        "finished_timestamp": "2026-05-09T07:35:25Z",
        "duration": 4.0,
    }


class FakeClient:
    """Answers ``call`` from ``answers`` (path → payload, a list for one per call, an
    exception to raise) and ``stream_events`` from ``streams``: one script per time the
    stream is opened, each a list of events and exceptions to raise there."""

    def __init__(self, answers, streams=()):
        self.answers = answers
        self.streams = [list(s) for s in streams]
        self.calls = []
        self.opened = []
        self.closed = False

    def call(self, method, path, **kwargs):
        self.calls.append((method, path, kwargs))
        answer = self.answers[path]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def stream_events(self, job_id, last_event_id=None):
        self.opened.append((job_id, last_event_id))
        for item in self.streams.pop(0):
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self.closed = True

    def posted(self, path):
        return [kw.get("json") for m, p, kw in self.calls if m == "POST" and p == path]


@pytest.fixture
def api(monkeypatch):
    def install(fake):
        monkeypatch.setattr(cli_job.ApiClient, "from_args", classmethod(lambda cls, args: fake))
        return fake

    return install


RUN = events(
    ("job_running", {}),
    ("node_running", {"node": "a"}),
    ("node_finished", {"node": "a", "result": {"_output": "hi\n"}}),
    ("node_skipped", {"node": "b", "message": "not started: the job was stopped by admin"}),
    ("node_skipped", {"node": "c", "message": "not started: the job was stopped by admin"}),
    ("job_finished", {"state": "stopped"}),
)
STOPPED = job_view(state="stopped", node_states={"finished": 1, "skipped": 2})
STOPPING = {"job": {"id": "u", "name": "12", "state": "stopping", "nodes": {"running": 1}}}


def test_the_first_ctrl_c_stops_the_job_and_keeps_following_it():
    fake = FakeClient(
        {"/jobs/12": STOPPED, "/command/stop": STOPPING},
        streams=[[*RUN[:2], KeyboardInterrupt()], RUN[2:]],
    )
    out = io.StringIO()
    code = follow(fake, "12", out=out)
    assert fake.posted("/command/stop") == [{"job": "12", "force": False}]
    assert fake.opened == [("12", None), ("12", "2")]  # taken up after the last event
    text = out.getvalue()
    assert (
        "Stopping job 12: nothing new starts; running nodes finish. "
        "Ctrl+C again to stop watching.\n"
    ) in text
    assert "Finished on node a\n" in text
    assert "Job stopped. 1/3 nodes succeeded.\n" in text
    assert code == SOME_FAILED


def test_a_second_ctrl_c_stops_watching_and_says_how_to_see_the_job_later():
    fake = FakeClient(
        {"/jobs/12": STOPPED, "/command/stop": STOPPING},
        streams=[[RUN[0], KeyboardInterrupt()], [RUN[1], KeyboardInterrupt()]],
    )
    out = io.StringIO()
    assert follow(fake, "12", out=out) == ERROR
    assert out.getvalue().endswith(
        "\nStopped watching job 12; it goes on. See it with: podium job show 12\n"
    )
    assert len(fake.posted("/command/stop")) == 1
    assert "Job stopped" not in out.getvalue()


def test_a_ctrl_c_while_the_stop_is_being_sent_stops_watching():
    fake = FakeClient(
        {"/jobs/12": STOPPED, "/command/stop": KeyboardInterrupt()},
        streams=[[RUN[0], KeyboardInterrupt()]],
    )
    out = io.StringIO()
    assert follow(fake, "12", out=out) == ERROR
    assert "Stopped watching job 12" in out.getvalue()


def test_a_stop_the_server_refuses_is_said_and_watching_goes_on():
    refused = NotPermitted("admin may not stop job 12")
    fake = FakeClient(
        {"/jobs/12": STOPPED, "/command/stop": refused},
        streams=[[RUN[0], KeyboardInterrupt()], RUN[1:]],
    )
    out = io.StringIO()
    assert follow(fake, "12", out=out) == SOME_FAILED
    assert "Could not stop job 12: admin may not stop job 12 (still watching" in out.getvalue()


def test_json_output_is_one_event_a_line_and_messages_go_to_stderr():
    fake = FakeClient(
        {"/jobs/12": STOPPED, "/command/stop": STOPPING},
        streams=[[*RUN[:3], KeyboardInterrupt()], RUN[3:]],
    )
    out, err = io.StringIO(), io.StringIO()
    assert follow(fake, "12", out=out, err=err, as_json=True) == SOME_FAILED
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["type"] for e in lines] == [e["type"] for e in RUN]
    assert all(e["job"] == "12" for e in lines)
    assert lines[2]["details"]["result"] == {"_output": "hi\n"}
    assert "Stopping job 12" in err.getvalue()


def test_piped_output_has_no_escape_codes():
    node = {"node": "a", "message": "boom"}
    fake = FakeClient(
        {"/jobs/12": job_view(nodes=1, state="failed", node_states={"failed": 1})},
        streams=[events(("node_failed", node), ("job_finished", {"state": "failed"}))],
    )
    out = io.StringIO()
    follow(fake, "12", out=out)
    assert "\x1b" not in out.getvalue()
    assert "Failed on a\n  Error: boom\n" in out.getvalue()


def run_main(argv, fake, api):
    api(fake)
    return main(argv)


def test_task_run_sends_the_pace_flags_and_follows_the_job(api, capsys):
    fake = FakeClient(
        {
            "/command/task": {"job": {"id": "u", "name": "12"}},
            "/jobs/12": job_view(nodes=3, concurrency=5),
        },
        streams=[[*RUN[:3], *events(("job_finished", {"state": "finished"}))]],
    )
    argv = ["task", "run", "podium::echo", "--nodes", "a,b,c", "--concurrency", "5",
            "--batch", "10%", "--batch-sleep", "2.5", "--fail-fast", "--timeout", "60",
            "--job-timeout", "5m", "--offline-ttl", "2h"]  # fmt: skip
    assert run_main(argv, fake, api) == OK
    [body] = fake.posted("/command/task")
    assert body == {
        "task": "podium::echo",
        "params": {},
        "scope": {"nodes": ["a", "b", "c"]},
        "environment": "production",
        "noop": False,
        "description": "",
        "concurrency": 5,
        "batch": "10%",
        "batch_sleep": 2.5,
        "timeout": 60,
        "job_timeout": 300,
        "offline_ttl": 7200,
        "fail_fast": True,
    }
    out = capsys.readouterr().out
    assert out.startswith("Starting job ...\nNew job ID: 12\nEnvironment: production\n")
    assert "Concurrency: 5\n" in out
    assert "Nodes: 3\n" in out
    assert fake.closed


def test_task_run_without_pace_flags_sends_none_of_them(api, capsys):
    fake = FakeClient(
        {"/command/task": {"job": {"id": "u", "name": "12"}}, "/jobs/12": job_view(nodes=1)},
        streams=[events(("job_finished", {"state": "finished"}))],
    )
    run_main(["task", "run", "podium::echo", "--nodes", "a", "--batch", "4"], fake, api)
    [body] = fake.posted("/command/task")
    assert body["batch"] == 4
    assert not {"concurrency", "batch_sleep", "fail_fast", "job_timeout", "offline_ttl"} & set(body)


def test_task_run_with_json_format_prints_only_event_lines(api, capsys):
    fake = FakeClient(
        {"/command/task": {"job": {"id": "u", "name": "12"}}, "/jobs/12": STOPPED},
        streams=[RUN],
    )
    code = run_main(["task", "run", "podium::echo", "--nodes", "a", "--format", "json"], fake, api)
    assert code == SOME_FAILED
    out = capsys.readouterr().out
    assert [json.loads(line)["id"] for line in out.splitlines()] == [e["id"] for e in RUN]


def refused(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


RUN_ARGS = ["task", "run", "podium::echo", "--nodes", "a"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--batch", "0"],
            "--batch: give the batch as a number of nodes of at least 1 (10) or a share of "
            "them from 1% to 100% (25%), not '0'",
        ),
        (
            ["--batch", "150%"],
            "--batch: a batch of 150% is not a share of the nodes: give 1% to 100%",
        ),
        (["--batch", "0%"], "--batch: a batch of 0% is not a share of the nodes: give 1% to 100%"),
        (
            ["--offline-ttl", "5x"],
            "--offline-ttl: '5x' is not a duration: give seconds (90) or a number with s, m, "
            "h or d (30s, 5m, 2h, 1d)",
        ),
        (["--job-timeout", "0"], "--job-timeout: the job timeout must be at least 1 second"),
        (["--concurrency", "0"], "--concurrency must be a whole number of at least 1, not '0'"),
        (
            ["--batch-sleep", "-1"],
            "--batch-sleep: give the time between batches as seconds of 0 or more (30, 2.5) "
            "or a duration (5m), not '-1'",
        ),
        (
            ["--timeout", "soon"],
            "--timeout: 'soon' is not a whole number of seconds (or a "
            "duration: seconds (90) or a number with s, m, h or d (30s, 5m, 2h, 1d))",
        ),
    ],
)
def test_bad_pace_flags_are_refused_in_one_sentence(flags, message, capsys):
    assert refused([*RUN_ARGS, *flags], capsys) == f"podium task: {message}\n"


@pytest.mark.parametrize(
    ("given", "value"),
    [("90", 90), ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400)],
)
def test_durations_take_seconds_or_a_unit(given, value, api):
    fake = FakeClient(
        {"/command/task": {"job": {"id": "u", "name": "12"}}, "/jobs/12": job_view(nodes=1)},
        streams=[events(("job_finished", {"state": "finished"}))],
    )
    run_main([*RUN_ARGS, "--offline-ttl", given, "--format", "json"], fake, api)
    assert fake.posted("/command/task")[0]["offline_ttl"] == value


def test_job_stop_asks_the_server_and_says_what_happens(api, capsys):
    fake = FakeClient({"/command/stop": STOPPING})
    assert run_main(["job", "stop", "12"], fake, api) == OK
    assert fake.posted("/command/stop") == [{"job": "12", "force": False}]
    assert capsys.readouterr().out == (
        "Job 12 is stopping (1 running): nothing new starts; running nodes finish "
        "(podium job stop 12 --force kills them).\n"
    )
    fake = FakeClient({"/command/stop": STOPPING})
    run_main(["job", "stop", "12", "--force"], fake, api)
    assert fake.posted("/command/stop") == [{"job": "12", "force": True}]
    assert "its running tasks are being killed" in capsys.readouterr().out
    ended = {"job": {"id": "u", "name": "12", "state": "finished", "nodes": {"finished": 3}}}
    run_main(["job", "stop", "12"], FakeClient({"/command/stop": ended}), api)
    assert capsys.readouterr().out == "Job 12 had already ended: finished (3 finished).\n"


def test_job_rerun_starts_a_new_job_and_follows_it(api, capsys):
    fake = FakeClient(
        {
            "/command/rerun": {"job": {"id": "u", "name": "13"}},
            "/jobs/13": job_view(name="13", nodes=2, node_states={"finished": 2}),
        },
        streams=[
            events(
                ("node_output", {"node": "b", "stream": "stdout", "data": "live\n", "offset": 0}),
                ("node_finished", {"node": "b", "result": {"_output": "live\n"}}),
                ("node_finished", {"node": "c", "result": {"_output": "live\n"}}),
                ("job_finished", {"state": "finished"}),
            )
        ],
    )
    assert run_main(["job", "rerun", "12", "--only-failed", "--stream"], fake, api) == OK
    assert fake.posted("/command/rerun") == [{"job": "12", "only_failed": True}]
    assert fake.opened == [("13", None)]
    out = capsys.readouterr().out
    assert out.startswith("Running job 12 again on the nodes that did not succeed ...\n")
    assert "New job ID: 13\n" in out
    assert "b | live\n" in out
    assert "Job completed. 2/2 nodes succeeded." in out


def test_job_rerun_of_a_job_where_nothing_failed_says_so(api, capsys):
    empty = PodiumError(
        "job 12 has no failed, errored or skipped node", kind="puppetlabs.orchestrator/empty-target"
    )
    assert (
        run_main(
            ["job", "rerun", "12", "--only-failed"], FakeClient({"/command/rerun": empty}), api
        )
        == 1
    )
    assert capsys.readouterr().err == "podium job: job 12 has no failed, errored or skipped node\n"


def test_the_job_list_shows_task_and_target_and_passes_the_filters(api, capsys):
    query_job = job_view(name="11")
    query_job["options"]["scope"] = {"query": 'inventory[certname] { facts.os.family = "Debian" }'}
    many = job_view(name="12")
    many["options"]["scope"] = {"nodes": [f"web{i:02d}" for i in range(10)]}
    group = job_view(name="10")
    group["options"]["scope"] = {"node_group": "f00d"}
    fake = FakeClient({"/jobs": {"items": [many, query_job, group], "pagination": {"total": 3}}})
    argv = ["job", "show", "--state", "failed", "--owner", "eve"]
    assert run_main(argv, fake, api) == OK
    assert fake.calls[0][2]["params"] == {"limit": 25, "state": "failed", "owner": "eve"}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "TYPE", "TASK", "TARGET", "OWNER", "NODES",
                                "TIMESTAMP", "DESCRIPTION"]  # fmt: skip
    assert "podium::echo  web00, web01, web02 +7 more" in lines[1]
    assert "query: inventory[certname] { facts.os.family =…" in lines[2]
    assert "group: f00d" in lines[3]


def test_showing_a_job_gives_its_options_a_node_table_and_the_results(api, capsys):
    job = job_view(
        nodes=3,
        state="running",
        node_states={"finished": 1, "running": 2},
        concurrency=2,
        batch=2,
        fail_fast=True,
        offline_ttl=600,
    )
    nodes = [
        {"name": "a", "state": "finished", "duration": 1.25, "result": {"_output": "hi\n"},
         "details": {}, "disconnected": None},
        {"name": "b", "state": "running", "duration": None, "result": None, "details": {},
         "disconnected": {"since": "2099-06-15T11:59:00Z", "give_up_at": "2099-06-15T12:00:00Z"}},
        {"name": "c", "state": "running", "duration": None, "result": None, "details": {},
         "disconnected": None},
    ]  # fmt: skip
    fake = FakeClient(
        {"/jobs/12": job, "/jobs/12/nodes": {"items": nodes, "pagination": {"total": 3}}}
    )
    assert run_main(["job", "show", "12"], fake, api) == OK
    out = capsys.readouterr().out
    assert "  Target:      a, b, c\n" in out
    assert (
        "  Options:     concurrency 2; batches: 2 nodes at a time; fail fast: nothing new "
        "starts after a node fails; offline nodes: waited for up to 10m, then failed\n"
    ) in out
    assert "  Nodes:       3 (1 finished, 2 running)\n" in out
    table = out[out.index("NODE") :].splitlines()
    assert table[0].split() == ["NODE", "STATE", "DURATION", "MESSAGE"]
    assert table[1].split() == ["a", "finished", "1.2s"]
    assert "disconnected, given up at 2099-06-15" in table[2]
    assert out.endswith("Finished on node a\n  STDOUT:\n    hi\nRunning on b\nRunning on c\n")


def test_a_large_job_shows_its_first_nodes_and_json_pages_through_all(api, capsys):
    def node(i):
        return {"name": f"n{i}", "state": "finished", "duration": 1.0,
                "result": {"_output": "ok\n"}, "details": {}}  # fmt: skip

    first = {"items": [node(i) for i in range(1000)], "pagination": {"total": 2500}}
    job = job_view(nodes=2500)
    fake = FakeClient({"/jobs/12": job, "/jobs/12/nodes": first})
    run_main(["job", "show", "12"], fake, api)
    out = capsys.readouterr().out
    assert "(1000 of 2500 nodes shown; all of them: podium job show 12 --format json)" in out
    assert out.count("    ok\n") == 1  # identical results grouped
    pages = [
        first,
        {"items": [node(i) for i in range(1000, 2000)], "pagination": {"total": 2500}},
        {"items": [node(i) for i in range(2000, 2500)], "pagination": {"total": 2500}},
    ]
    fake = FakeClient({"/jobs/12": job, "/jobs/12/nodes": pages})
    run_main(["job", "show", "12", "--format", "json"], fake, api)
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["nodes"]) == 2500
    offsets = [kw["params"].get("offset", 0) for m, p, kw in fake.calls if p.endswith("/nodes")]
    assert offsets == [0, 1000, 2000]


def test_a_plain_screen_is_used_for_a_pipe():
    from podium.cli.watch import open_screen

    assert isinstance(open_screen(io.StringIO()), PlainScreen)
