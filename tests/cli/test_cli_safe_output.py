"""What nodes and users wrote reaches the terminal without its control characters, and
task results print as JSON; exercised with fabricated API payloads."""

from __future__ import annotations

import io
import re

import pytest

from podium.cli import job as cli_job
from podium.cli.client import clean_line, clean_text
from podium.cli.job import _result_lines, print_node, watch
from podium.cli.main import main
from podium.errors import NotFound

RETITLE = "\x1b]0;owned\x07"  # OSC 0: sets the terminal's title
# Every control character but the newline: what must never reach the terminal.
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


class FakeApi:
    """Answers ``call`` from a dict of path → payload (a list: one payload per call)."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def call(self, method, path, **kwargs):
        self.calls.append((method, path, kwargs))
        answer = self.answers[path]
        if isinstance(answer, Exception):
            raise answer
        return answer.pop(0) if isinstance(answer, list) else answer

    def stream_events(self, job_id, last_event_id=None):
        """The events of the pages of ``/jobs/ID/events``, as the stream gives them."""
        while True:
            page = self.call("GET", f"/jobs/{job_id}/events")
            yield from page["items"]
            if page["job_state"] in cli_job.TERMINAL and not page["items"]:
                return


@pytest.fixture
def api(monkeypatch):
    """Install a FakeApi as the job command's client; returns a function to set it up."""

    def install(answers):
        fake = FakeApi(answers)
        monkeypatch.setattr(cli_job.ApiClient, "from_args", classmethod(lambda cls, args: fake))
        return fake

    return install


def test_clean_text_replaces_escape_bel_cr_and_c1_but_keeps_newlines_and_tabs():
    assert clean_text(f"a{RETITLE}b\rc\x08d\x9b31m\x7fe\tf\ng") == (
        "a\ufffd]0;owned\ufffdb\ufffdc\ufffdd\ufffd31m\ufffde\tf\ng"
    )
    assert clean_line("row\nforged\trow") == "row\ufffdforged\ufffdrow"
    assert clean_text("lone \ud800 surrogate") == "lone \ufffd surrogate"


def test_structured_results_print_as_indented_json_and_scalars_as_json():
    result = {
        "packages": {"nginx": "1.24", "ports": [80, 443]},
        "hosts": ["a", "b"],
        "empty": {},
        "ok": True,
        "missing": None,
        "count": 3,
        "ratio": 0.5,
        "note": "all good",
        "lines": "first\nsecond\n",
    }
    assert _result_lines(result) == [
        "  packages :",
        "    {",
        '      "nginx": "1.24",',
        '      "ports": [',
        "        80,",
        "        443",
        "      ]",
        "    }",
        "  hosts :",
        "    [",
        '      "a",',
        '      "b"',
        "    ]",
        "  empty : {}",
        "  ok : true",
        "  missing : null",
        "  count : 3",
        "  ratio : 0.5",
        "  note : all good",
        "  lines :",
        "    first",
        "    second",
    ]


def test_control_characters_in_results_never_reach_the_output():
    result = {
        "_output": f"started{RETITLE}\r\nprogress\rdone\n",
        "_error": {"msg": f"it broke\n{RETITLE}again", "kind": "x"},
        f"key{RETITLE}": f"value{RETITLE}",
        "nested": {"title": RETITLE, "csi": "\x9b2J"},
    }
    lines = _result_lines(result)
    assert not any(CONTROL.search(line) or "\n" in line for line in lines)
    assert lines[:4] == ["  STDOUT:", "    started\ufffd]0;owned\ufffd", "    progress", "    done"]
    assert lines[4:7] == ["  Error:", "    it broke", "    \ufffd]0;owned\ufffdagain"]
    assert "  key\ufffd]0;owned\ufffd : value\ufffd]0;owned\ufffd" in lines
    assert '      "title": "\\u001b]0;owned\\u0007",' in lines  # JSON escapes C0 itself
    assert '      "csi": "\ufffd2J"' in lines


def test_print_node_cleans_the_node_name_and_its_error_message():
    out = io.StringIO()
    print_node(
        {
            "name": f"web-01{RETITLE}",
            "state": "failed",
            "details": {"message": f"exit 3{RETITLE}"},
            "result": {"_error": {"msg": "shown once, in details"}, "exit_code": 3},
        },
        out,
    )
    assert out.getvalue() == (
        "Failed on web-01\ufffd]0;owned\ufffd\n"
        "  Error: exit 3\ufffd]0;owned\ufffd\n"
        "  exit_code : 3\n"
    )


def test_watching_a_job_cleans_what_the_nodes_sent():
    events = {
        "items": [
            {"type": "node_running", "details": {"node": f"db{RETITLE}"}},
            {
                "type": "node_finished",
                "details": {"node": f"db{RETITLE}", "result": {"_output": f"hi{RETITLE}\n"}},
            },
        ],
        "next-events": {"event": "3"},
        "job_state": "finished",
    }
    done = {"items": [], "next-events": {"event": "3"}, "job_state": "finished"}
    job = {"node_states": {"finished": 1}, "node_count": 1, "duration": 0.25, "state": "finished"}
    fake = FakeApi({"/jobs/7/events": [events, done], "/jobs/7": job})
    out = io.StringIO()
    assert watch(fake, "7", out=out) == 0  # type: ignore[arg-type]
    text = out.getvalue()
    assert not CONTROL.search(text)
    assert text.startswith(
        "Started on db\ufffd]0;owned\ufffd ...\n"
        "Finished on node db\ufffd]0;owned\ufffd\n"
        "  STDOUT:\n"
        "    hi\ufffd]0;owned\ufffd\n"
    )


def listed_job(name, description, login="admin"):
    return {
        "name": name,
        "state": "finished",
        "type": "task",
        "owner": {"login": login},
        "node_count": 1,
        "timestamp": "2026-05-09T07:35:25Z",
        "description": description,
    }


def test_the_job_table_keeps_one_row_per_job_whatever_the_description(api, capsys):
    api(
        {
            "/jobs": {
                "items": [
                    listed_job("2", "deploy\n9  finished  task  root  1  forged row"),
                    listed_job("1", f"plain{RETITLE}", login=f"eve{RETITLE}"),
                ],
                "pagination": {"total": 2},
            }
        }
    )
    assert main(["job", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # the header and two jobs
    assert lines[1].startswith("2 ") and lines[1].endswith(
        "deploy 9 finished task root 1 forged row"
    )
    assert lines[2].startswith("1 ") and "eve\ufffd]0;owned\ufffd" in lines[2]
    assert not any(CONTROL.search(line) for line in lines)


def test_showing_one_job_cleans_its_fields_and_its_nodes(api, capsys):
    job = {
        **listed_job("5", f"two\nlines{RETITLE}"),
        "options": {"task": "podium::echo"},
        "environment": {"name": f"production{RETITLE}"},
        "created_timestamp": "2026-05-09T07:35:25Z",
        "duration": 1.5,
        "node_states": {"finished": 1},
    }
    node = {
        "name": f"web-01{RETITLE}",
        "state": "finished",
        "result": {"_output": f"hello{RETITLE}\n", "facts": {"os": "debian"}},
    }
    api({"/jobs/5": job, "/jobs/5/nodes": {"items": [node]}})
    assert main(["job", "show", "5"]) == 0
    out = capsys.readouterr().out
    assert not CONTROL.search(out)
    assert "  Description: two lines\ufffd]0;owned\ufffd\n" in out
    assert "  Environment: production\ufffd]0;owned\ufffd\n" in out
    assert out.endswith(
        "Finished on node web-01\ufffd]0;owned\ufffd\n"
        "  STDOUT:\n"
        "    hello\ufffd]0;owned\ufffd\n"
        "  facts :\n"
        "    {\n"
        '      "os": "debian"\n'
        "    }\n"
    )


def test_an_error_message_from_the_server_is_cleaned_before_it_is_printed(api, capsys):
    api({"/jobs/8": NotFound(f"no job 8 on {RETITLE}")})
    assert main(["job", "show", "8"]) == 1
    assert capsys.readouterr().err == "podium job: no job 8 on \ufffd]0;owned\ufffd\n"
