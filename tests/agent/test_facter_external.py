"""External facts from facts.d folders: each kind of file, broken ones, executables."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from podium.agent.facter import external


def executable(path: Path, script: str, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(mode)
    return path


@pytest.fixture
def factsdir(tmp_path: Path) -> Path:
    folder = tmp_path / "facts.d"
    folder.mkdir()
    return folder


def test_every_kind_of_external_fact_file_is_read(factsdir):
    (factsdir / "a.json").write_text('{"Datacenter": "ams1", "rack": {"row": 4, "unit": 12}}')
    (factsdir / "b.yaml").write_text("role: web\ntags:\n  - blue\n  - canary\nweight: 0.5\n")
    (factsdir / "c.yml").write_text("owner: team-a\nbackup: yes\n")
    (factsdir / "d.txt").write_text("env=production\n# not a fact\nnotes=a=b\n")
    executable(factsdir / "e.sh", "echo build=1234\necho 'Branch=main'\n")
    executable(factsdir / "f", 'echo \'{"app": {"version": "2.1", "ports": [80, 443]}}\'\n')
    executable(factsdir / "g", "printf 'cluster: east\\nnodes:\\n  - a\\n  - b\\n'\n")
    found = external.load([factsdir])
    assert found.facts == {
        "datacenter": "ams1",
        "rack": {"row": 4, "unit": 12},
        "role": "web",
        "tags": ["blue", "canary"],
        "weight": 0.5,
        "owner": "team-a",
        "backup": True,  # YAML 1.1, as Facter's Ruby reads it
        "env": "production",
        "notes": "a=b",
        "build": "1234",
        "branch": "main",
        "app": {"version": "2.1", "ports": [80, 443]},
        "cluster": "east",
        "nodes": ["a", "b"],
    }
    assert found.origin["role"] == factsdir / "b.yaml"
    assert found.origin["branch"] == factsdir / "e.sh"


def test_a_broken_file_is_skipped_with_a_warning_naming_it(factsdir, caplog):
    (factsdir / "bad.json").write_text('{"role": "web",')
    (factsdir / "list.yaml").write_text("- not\n- a mapping\n")
    (factsdir / "tabs.yaml").write_text("a: [unclosed\n")
    (factsdir / "nan.json").write_text('{"ratio": NaN}')
    (factsdir / "good.txt").write_text("env=staging\n")
    with caplog.at_level(logging.WARNING):
        found = external.load([factsdir])
    assert found.facts == {"env": "staging"}
    for name in ("bad.json", "list.yaml", "tabs.yaml", "nan.json"):
        assert str(factsdir / name) in caplog.text
    assert "it must hold a YAML mapping" in caplog.text


def test_an_executable_that_fails_hangs_or_floods_is_skipped(factsdir, caplog):
    executable(factsdir / "fails", "echo half=done\necho oops >&2\nexit 3\n")
    executable(factsdir / "hangs", "echo early=1\nexec sleep 30\n")
    executable(factsdir / "floods", "yes flood=1 | head -c 100000\n")
    executable(factsdir / "works", "echo fine=1\necho 'a warning' >&2\n")
    with caplog.at_level(logging.WARNING):
        found = external.load([factsdir], timeout=1.0, max_bytes=10_000)
    assert found.facts == {"fine": "1"}
    assert f"{factsdir / 'fails'}: it exited with status 3: oops" in caplog.text
    assert f"{factsdir / 'hangs'}: it did not finish within 1 s" in caplog.text
    assert f"{factsdir / 'floods'}: it printed more than 10000 bytes" in caplog.text
    assert "a warning" in caplog.text  # standard error is logged, as Facter does


def test_an_executable_that_closes_its_output_and_goes_on_is_stopped(factsdir, caplog):
    executable(factsdir / "detached", "echo a=1\nexec >&- 2>&-\nexec sleep 30\n")
    with caplog.at_level(logging.WARNING):
        found = external.load([factsdir], timeout=1.0)
    assert found.facts == {}
    assert "did not finish" in caplog.text


def test_hidden_files_and_other_files_are_not_facts(factsdir, caplog):
    (factsdir / ".hidden.json").write_text('{"hidden": true}')
    (factsdir / "README").write_text("not executable, not data\n")
    (factsdir / "sub.json").mkdir()
    with caplog.at_level(logging.WARNING):
        assert external.load([factsdir]).facts == {}
    assert caplog.text == ""


def test_an_executable_anyone_may_change_is_not_run(factsdir, caplog):
    marker = factsdir.parent / "ran"
    executable(factsdir / "open", f"touch {marker}\necho x=1\n", mode=0o777)
    with caplog.at_level(logging.WARNING):
        assert external.load([factsdir]).facts == {}
    assert not marker.exists()
    assert "anyone may change it" in caplog.text


def test_a_file_bigger_than_the_cap_is_skipped(factsdir, caplog):
    (factsdir / "big.json").write_text(json.dumps({"blob": "x" * 2000}))
    with caplog.at_level(logging.WARNING):
        assert external.load([factsdir], max_bytes=1000).facts == {}
    assert "bigger than 1000 bytes" in caplog.text


def test_later_files_and_folders_override_earlier_ones(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    (first / "a.txt").write_text("role=db\nsite=ams\n")
    (first / "b.txt").write_text("role=web\n")
    (second / "a.txt").write_text("site=fra\n")
    found = external.load([first, tmp_path / "missing", second])
    assert found.facts == {"role": "web", "site": "fra"}
    assert found.origin == {"role": first / "b.txt", "site": second / "a.txt"}


def test_yaml_timestamps_stay_strings_and_odd_values_become_json(factsdir):
    (factsdir / "a.yaml").write_text(
        "built: 2024-05-01 10:20:30\nday: 2024-05-01\nratio: .nan\n1: one\nnull: nothing\n"
        "ids: !!set {a, b}\n"
    )
    facts = external.load([factsdir]).facts
    assert facts["built"] == "2024-05-01 10:20:30"
    assert facts["day"] == "2024-05-01"
    assert facts["ratio"] is None
    assert facts["1"] == "one"
    assert facts["null"] == "nothing"
    assert sorted(facts["ids"]) == ["a", "b"]
    json.dumps(facts, allow_nan=False)


def test_a_yaml_alias_bomb_is_refused(factsdir, caplog):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, 9)]
    (factsdir / "bomb.yaml").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        assert external.load([factsdir]).facts == {}
    assert "more than 200000 values" in caplog.text


def test_key_value_lines_need_a_key_and_a_value():
    text = "a=1\nb==2\n=x\nc=\nnot a pair\n spaced = kept \n"
    assert external.parse_text(text) == {"a": "1", "b": "=2", " spaced ": " kept "}


def test_executable_output_is_json_key_value_or_yaml():
    assert external.parse_output('{"a": 1}\n') == {"a": 1}
    assert external.parse_output("a: 1\nb: c=d\n") == {"a": 1, "b": "c=d"}
    assert external.parse_output("a=1\nb: c=d\n") == {"a": "1", "b: c": "d"}  # as Facter
    assert external.parse_output("a=1\nb=x: y\n") == {"a": "1", "b": "x: y"}
    assert external.parse_output("just a sentence\n") == {}
    assert external.parse_output("") == {}


def test_yaml_is_not_imported_without_a_yaml_fact(tmp_path):
    folder = tmp_path / "facts.d"
    folder.mkdir()
    (folder / "a.json").write_text('{"a": 1}')
    (folder / "b.txt").write_text("b=2\n")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from podium.agent.facts import gather\n"
        f"facts = gather('web-01', factsdirs=[Path({str(folder)!r})])\n"
        "assert facts['a'] == 1 and facts['b'] == '2', facts\n"
        "print('yaml' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
