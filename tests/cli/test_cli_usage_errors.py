"""The CLI refuses bad arguments itself, before any request, in the style of every
other error: ``podium <command>: <sentence>`` and exit code 1."""

from __future__ import annotations

import pytest

from podium.cli import job as cli_job
from podium.cli.main import main


@pytest.fixture(autouse=True)
def no_requests(monkeypatch):
    class Unreachable:
        @classmethod
        def from_args(cls, *args, **kwargs):
            raise AssertionError("an argument error must be caught before any request")

    monkeypatch.setattr(cli_job, "ApiClient", Unreachable)


def refused(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.mark.parametrize("given", ["0", "-3", "1001", "ten", "2.5"])
def test_a_limit_that_is_not_from_1_to_1000_is_refused_in_one_sentence(given, capsys):
    err = refused(["job", "show", "--limit", given], capsys)
    assert err == f"podium job: --limit must be a whole number from 1 to 1000, not {given!r}\n"


@pytest.mark.parametrize("given", ["abc", "12a", "-1", "١٢"])
def test_a_job_id_that_is_not_a_number_is_refused_like_the_server_refuses_it(given, capsys):
    err = refused(["job", "show", given], capsys)
    assert err == (
        f"podium job: no job {given!r}: job ids are numbers, as `podium job show` lists them\n"
    )


def test_an_option_type_error_without_the_options_name_gets_it(capsys):
    err = refused(["task", "run", "podium::echo", "--nodes", "a", "--timeout", "0"], capsys)
    assert err == "podium task: --timeout: the timeout must be at least 1 second\n"


def test_argparses_own_errors_take_the_same_form_and_point_at_help(capsys):
    err = refused(["job"], capsys)
    assert err == (
        "podium job: the following arguments are required: SUBCOMMAND (see podium job --help)\n"
    )
    err = refused(["job", "show", "1", "stray=1"], capsys)
    assert err == "podium job: unrecognized arguments: stray=1 (see podium job --help)\n"
    assert "usage:" not in err


def test_control_characters_in_a_refused_argument_do_not_reach_the_terminal(capsys):
    err = refused(["job", "show", "1", "\x1b]0;owned\x07"], capsys)
    assert err == (
        "podium job: unrecognized arguments: \ufffd]0;owned\ufffd (see podium job --help)\n"
    )


def test_help_still_prints_usage_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["job", "show", "--help"])
    assert exited.value.code == 0
    assert "usage: podium job show" in capsys.readouterr().out
