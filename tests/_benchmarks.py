"""Running a script of benchmarks/ as a user would, for the tests that check its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_json(name: str, *args: str) -> dict[str, Any]:
    """The figures `benchmarks/NAME.py --json ARGS` prints: the whole of its stdout, one
    JSON object."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert isinstance(figures, dict), figures
    return figures


def assert_numbers(figures: dict[str, Any], keys: Iterable[str], *, positive: bool) -> None:
    """Each of `keys` is a number (not a bool), above zero or (not `positive`) not below."""
    for key in keys:
        value = figures[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert value > 0 if positive else value >= 0, (key, value)
