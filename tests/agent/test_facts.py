import logging
from typing import Any

from podium.agent.facts import gather


def test_core_facts_describe_the_node(tmp_path):
    facts = gather("web-01", None)
    assert facts["certname"] == "web-01"
    assert facts["processors"]["count"] >= 1
    assert facts["os"]["family"]


def test_a_facts_file_adds_facts_and_a_broken_one_is_ignored_with_a_warning(tmp_path, caplog):
    good = tmp_path / "facts.json"
    good.write_text('{"role": "web", "os": {"family": "Custom"}}')
    facts = gather("web-01", good)
    assert facts["role"] == "web"
    assert facts["os"] == {"family": "Custom"}
    broken = tmp_path / "broken.json"
    broken.write_text('{"role": "web",')
    with caplog.at_level(logging.WARNING):
        facts = gather("web-01", broken)
    assert "role" not in facts
    assert "ignoring facts file" in caplog.text


def test_features_say_what_the_node_can_run_tasks_with():
    from pathlib import Path

    from podium.agent.facts import PUPPET_BIN, features

    def which(found: set[str]) -> Any:
        return lambda name: f"/usr/bin/{name}" if name in found else None

    nothing = features(which=which(set()), exists=lambda path: False, posix=True)
    assert nothing == ["shell"]
    everything = features(
        which=which({"pwsh", "python3", "puppet"}), exists=lambda path: False, posix=True
    )
    assert everything == ["powershell", "puppet-agent", "python", "shell"]
    packaged = features(which=which(set()), exists=lambda path: path == PUPPET_BIN, posix=False)
    assert packaged == ["puppet-agent"]
    assert isinstance(PUPPET_BIN, Path)
    assert "shell" in features()  # this test machine
