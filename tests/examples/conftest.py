"""Fixtures for the example tests: a CLI runner bound to a fresh SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from _example_cli import Cli


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "runs.db")
