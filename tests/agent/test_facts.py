import logging
from pathlib import Path
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


# -- layers, size, change detection, settings ----------------------------------------


def test_external_facts_override_core_ones_and_the_facts_file_overrides_both(tmp_path):
    from podium.agent.facts import gather

    factsdir = tmp_path / "facts.d"
    factsdir.mkdir()
    (factsdir / "site.json").write_text('{"timezone": "Mars/Olympus", "role": "db"}')
    facts_file = tmp_path / "facts.json"
    facts_file.write_text('{"role": "web"}')
    facts = gather("web-01", facts_file, factsdirs=[factsdir], use_facter=False)
    assert facts["timezone"] == "Mars/Olympus"
    assert facts["role"] == "web"
    assert facts["os"]["family"] == "Debian"


def test_certname_and_the_agent_version_cannot_be_overridden(tmp_path):
    from podium import __version__
    from podium.agent.facts import gather

    facts_file = tmp_path / "facts.json"
    facts_file.write_text('{"certname": "db-01", "podium_agent_version": "9.9"}')
    facts = gather("web-01", facts_file, use_facter=False)
    assert (facts["certname"], facts["podium_agent_version"]) == ("web-01", __version__)


def test_facts_over_the_limit_lose_their_largest_external_facts_first(caplog):
    from podium.agent.facts import fit

    facts = {
        "certname": "web-01",
        "podium_agent_version": "0.1.0",
        "os": {"family": "Debian"},
        "mountpoints": {f"/m{i}": {"size": "1.00 GiB"} for i in range(40)},
        "huge": "x" * 900,
        "big": "y" * 600,
        "small": "z",
    }
    with caplog.at_level(logging.WARNING):
        fitted = fit(facts, limit=1200, external={"huge", "big", "small"})
    assert "huge" not in fitted and "big" not in fitted
    assert fitted["small"] == "z" and "mountpoints" in fitted
    assert "leaving out the external fact 'huge'" in caplog.text
    assert "'big'" in caplog.text
    tight = fit(facts, limit=200, external={"huge", "big", "small"})
    assert "mountpoints" not in tight  # then the largest core facts
    assert tight["certname"] == "web-01" and tight["podium_agent_version"] == "0.1.0"
    assert fit(facts, limit=10**6) == facts


def test_volatile_facts_are_left_out_of_the_comparison():
    from podium.agent.facts import fingerprint, stable

    facts = {
        "os": {"family": "Debian"},
        "system_uptime": {"seconds": 10},
        "load_averages": {"1m": 0.5},
        "processors": {"count": 2, "speed": "2.60 GHz"},
        "memory": {"system": {"total_bytes": 100, "available_bytes": 40, "used": "60 bytes"}},
        "mountpoints": {"/": {"size_bytes": 100, "used_bytes": 5, "capacity": "5%"}},
    }
    assert stable(facts) == {
        "os": {"family": "Debian"},
        "processors": {"count": 2},
        "memory": {"system": {"total_bytes": 100}},
        "mountpoints": {"/": {"size_bytes": 100}},
    }
    later = {
        **facts,
        "system_uptime": {"seconds": 1810},
        "memory": {"system": {"total_bytes": 100, "available_bytes": 30, "used": "70 bytes"}},
    }
    assert fingerprint(later) == fingerprint(facts)
    assert fingerprint({**facts, "os": {"family": "RedHat"}}) != fingerprint(facts)
    assert facts["system_uptime"] == {"seconds": 10}  # the facts themselves are untouched


def test_facts_are_due_when_they_changed_or_every_nth_check():
    from podium.agent.facts import FactsTracker

    tracker = FactsTracker(refresh_every=3)
    facts = {"os": {"family": "Debian"}, "system_uptime": {"seconds": 1}}
    assert tracker.due(facts)  # never sent
    tracker.sent(facts)
    assert not tracker.due({**facts, "system_uptime": {"seconds": 2}})
    assert not tracker.due(facts)
    assert tracker.due(facts)  # the third check since the send refreshes the volatile ones
    tracker.sent(facts)
    assert tracker.due({**facts, "role": "web"})


def test_the_facts_settings_have_defaults_and_are_checked(tmp_path):
    import pytest

    from podium.agent.config import SYSTEM_FACTS_DIR, load
    from podium.errors import ConfigError

    base = {
        "server_url": "https://p:8143",
        "brokers": ["wss://p:8142/pcp/v2"],
        "certname": "web-01",
    }
    config = load(None, {**base, "vardir": tmp_path})
    assert config.facts_interval == 1800.0
    assert config.facts_dirs == (tmp_path / "facts.d", SYSTEM_FACTS_DIR)
    settings = tmp_path / "agent.toml"
    settings.write_text('factsdir = ["/srv/facts", "/etc/facts"]\nfacts_interval = 60\n')
    config = load(settings, base)
    assert config.facts_dirs == (Path("/srv/facts"), Path("/etc/facts"))
    assert config.facts_interval == 60
    assert load(None, {**base, "factsdir": "/one"}).facts_dirs == (Path("/one"),)
    with pytest.raises(ConfigError, match="facts_interval is a number of seconds"):
        load(None, {**base, "facts_interval": 0})
    with pytest.raises(ConfigError, match="factsdir is a folder or a list of folders"):
        load(None, {**base, "factsdir": 3})
    reading = load(None, {"certname": "web-01"}, connection=False)
    assert reading.brokers == ()
