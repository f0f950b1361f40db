from pathlib import Path

import pytest

from podium.agent.config import load
from podium.errors import ConfigError

FLAGS = {"certname": None, "server_url": None, "brokers": None, "vardir": None}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_settings_come_from_the_file_and_flags_win(tmp_path):
    path = write(
        tmp_path,
        'certname = "web-01"\nserver_url = "https://podium:8143"\n'
        'brokers = ["wss://a:8142/pcp/v2", "wss://b:8142/pcp/v2"]\nconcurrency = 3\n'
        "spool_ttl = 7\n",
    )
    config = load(path, {**FLAGS, "certname": "web-02", "vardir": tmp_path / "var"})
    assert config.certname == "web-02"
    assert config.brokers == ("wss://a:8142/pcp/v2", "wss://b:8142/pcp/v2")
    assert config.concurrency == 3
    assert config.spool_ttl.days == 7
    assert config.cert_path == tmp_path / "var" / "ssl" / "certs" / "web-02.pem"


def test_an_unknown_setting_is_named_with_the_known_ones(tmp_path):
    path = write(tmp_path, 'server_url = "https://x"\nbrokers = "wss://x"\nbrokr = 1\n')
    with pytest.raises(ConfigError, match=r"unknown agent setting.*brokr.*known settings"):
        load(path, FLAGS)


def test_a_missing_server_url_says_which_flag_to_give(tmp_path):
    with pytest.raises(ConfigError, match="--server-url"):
        load(None, {**FLAGS, "brokers": ["wss://x"]})


def test_a_bad_certname_or_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="certname 'Web 01' is not valid"):
        load(
            None, {**FLAGS, "certname": "Web 01", "server_url": "https://x", "brokers": ["wss://x"]}
        )
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(tmp_path, "certname = "), FLAGS)
    with pytest.raises(ConfigError, match="cannot read agent config"):
        load(tmp_path / "missing.toml", FLAGS)


def test_the_spool_and_cache_ttls_are_days(tmp_path):
    base = 'server_url = "https://x"\nbrokers = "wss://x"\n'
    config = load(write(tmp_path, base + "cache_ttl = 3\n"), FLAGS)
    assert config.cache_ttl.days == 3
    assert config.spool_ttl.days == 14
    assert (
        load(None, {**FLAGS, "server_url": "https://x", "brokers": ["wss://x"]}).cache_ttl.days
        == 14
    )
    with pytest.raises(ConfigError, match="cache_ttl is a number of days greater than 0"):
        load(write(tmp_path, base + "cache_ttl = 0\n"), FLAGS)
    with pytest.raises(ConfigError, match="spool_ttl is a number of days"):
        load(write(tmp_path, base + 'spool_ttl = "a week"\n'), FLAGS)
