"""Fixtures for the task catalogue tests: code directories written from a dict."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

Tree = Mapping[str, "str | bytes"]
WriteTree = Callable[[Path, Tree], Path]


def _write_tree(root: Path, files: Tree) -> Path:
    """Write ``{"relative/path": content}`` under ``root``; returns ``root``."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


@pytest.fixture(scope="session")
def write_tree() -> WriteTree:
    """``write_tree(root, {"relative/path": content})`` → root."""
    return _write_tree


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[[Tree], Path]:
    """Write a tree under a fresh folder and return the folder."""
    counter = iter(range(1_000_000))

    def make(files: Tree) -> Path:
        return _write_tree(tmp_path / f"tree{next(counter)}", files)

    return make
