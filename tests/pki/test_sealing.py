"""Sealed values: what a job keeps of its task input, unreadable without the server's key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podium.errors import ConfigError, PKIError
from podium.pki.sealing import Sealer, load_or_create_key


def test_a_sealed_value_opens_with_the_same_key_and_purpose(tmp_path: Path) -> None:
    sealer = Sealer(load_or_create_key(tmp_path / "sealing.key"))
    value = {"password": "hunter2", "n": [1, 2.5, None]}
    text = sealer.seal(value, purpose="job input")
    assert "hunter2" not in text
    assert sealer.open(text, purpose="job input") == value


def test_sealing_the_same_value_twice_gives_different_text(tmp_path: Path) -> None:
    sealer = Sealer(load_or_create_key(tmp_path / "k"))
    assert sealer.seal("x", purpose="p") != sealer.seal("x", purpose="p")


@pytest.mark.parametrize("change", ["other key", "other purpose", "altered"])
def test_a_value_sealed_otherwise_or_altered_does_not_open(tmp_path: Path, change: str) -> None:
    sealer = Sealer(load_or_create_key(tmp_path / "k"))
    text = sealer.seal({"a": 1}, purpose="p")
    purpose = "p"
    if change == "other key":
        sealer = Sealer(load_or_create_key(tmp_path / "k2"))
    elif change == "other purpose":
        purpose = "q"
    else:
        text = text[:-6] + ("A" if text[-6] != "A" else "B") + text[-5:]
    with pytest.raises(PKIError, match="cannot be opened"):
        sealer.open(text, purpose=purpose)


def test_the_key_is_made_once_and_only_its_owner_may_read_it(tmp_path: Path) -> None:
    path = tmp_path / "sealing.key"
    key = load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key(path)


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sealing.key"
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not a sealing key"):
        load_or_create_key(path)
