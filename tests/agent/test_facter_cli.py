"""``podium facts``: the node's facts as its agent would send them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from podium import __version__
from podium.cli.facts import show
from podium.cli.main import main


@pytest.fixture
def factsdir(tmp_path: Path) -> Path:
    folder = tmp_path / "facts.d"
    folder.mkdir()
    (folder / "app.json").write_text('{"app": {"name": "shop", "ports": [80, 443]}}')
    (folder / "role.txt").write_text("role=web\n")
    return folder


def facts(*args: str) -> list[str]:
    return ["facts", "--certname", "web-01", *args]


def test_a_single_fact_is_printed_alone(factsdir, capsys):
    assert main(facts("--factsdir", str(factsdir), "os.family")) == 0
    assert capsys.readouterr().out == "Debian\n"


def test_several_facts_are_printed_by_name(factsdir, capsys):
    assert main(facts("--factsdir", str(factsdir), "os.family", "role", "app.ports.1")) == 0
    assert capsys.readouterr().out == "os.family => Debian\nrole => web\napp.ports.1 => 443\n"


def test_structured_values_are_printed_as_facter_prints_them(factsdir, capsys):
    assert main(facts("--factsdir", str(factsdir), "app")) == 0
    assert capsys.readouterr().out == (
        '{\n  name => "shop",\n  ports => [\n    80,\n    443\n  ]\n}\n'
    )


def test_json_output_has_the_named_facts_and_null_for_unknown_ones(factsdir, capsys):
    args = facts("--factsdir", str(factsdir), "--format", "json", "networking.interfaces.lo.ip")
    assert main([*args, "no.such.fact"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "networking.interfaces.lo.ip": "127.0.0.1",
        "no.such.fact": None,
    }


def test_all_the_facts_are_printed_as_the_agent_sends_them(factsdir, capsys):
    assert main(facts("--factsdir", str(factsdir), "--format", "json")) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["certname"] == "web-01"
    assert printed["podium_agent_version"] == __version__
    assert printed["role"] == "web"
    assert printed["os"]["family"] == "Debian"
    assert main(facts("--factsdir", str(factsdir))) == 0
    text = capsys.readouterr().out
    assert "certname => web-01\n" in text
    assert "os => {\n  architecture => " in text
    assert "role => web\n" in text


def test_the_agents_settings_say_where_external_facts_are(tmp_path, factsdir, capsys):
    settings = tmp_path / "agent.toml"
    settings.write_text(
        f'certname = "db-01"\nserver_url = "https://p:8143"\nbrokers = ["wss://p:8142/pcp/v2"]\n'
        f'factsdir = ["{factsdir}"]\nfacts_file = "{tmp_path / "extra.json"}"\n'
    )
    (tmp_path / "extra.json").write_text('{"role": "db"}')
    assert main(["facts", "--config", str(settings), "certname", "role", "app.name"]) == 0
    assert capsys.readouterr().out == "certname => db-01\nrole => db\napp.name => shop\n"


def test_the_default_folder_is_in_the_vardir(tmp_path, capsys):
    (tmp_path / "facts.d").mkdir()
    (tmp_path / "facts.d" / "site.txt").write_text("site=ams1\n")
    assert main(facts("--vardir", str(tmp_path), "site")) == 0
    assert capsys.readouterr().out == "ams1\n"


def test_an_unknown_fact_prints_an_empty_line(factsdir, capsys):
    assert main(facts("--factsdir", str(factsdir), "nothing")) == 0
    assert capsys.readouterr().out == "\n"


def test_dotted_names_find_keys_that_hold_dots():
    values = {"a.b": {"c": 1}, "list": [{"x": "y"}], "empty": {}}
    assert show(values, ["a.b.c"]) == "1\n"
    assert show(values, ["list.0.x"]) == "y\n"
    assert show(values, ["list.5"]) == "\n"
    assert show(values, ["empty"]) == "{}\n"
    assert show(values, ["a.b", "list"], fmt="json") == (
        '{\n  "a.b": {\n    "c": 1\n  },\n  "list": [\n    {\n      "x": "y"\n    }\n  ]\n}\n'
    )
