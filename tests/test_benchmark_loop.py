"""benchmarks/loop.py runs end to end with small sizes (--json): the keys issue 11's targets
read, and the figures derived from others. Checked for shape and sign only: timings are the
machine's, never asserted. About 2 s, so in the default suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "loop.py"

TARGET_KEYS = (
    "floor_us",
    "step_overhead_us",
    "persisted_ceiling_steps_s",
    "no_store_ceiling_steps_s",
    "ceiling_ratio",
    "gc_pause_ms_per_1000_steps",
)


def test_small_json_run_prints_the_target_figures() -> None:
    small = ["--runs", "3", "--steps", "5", "--concurrent", "20", "--concurrent-steps", "3"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", *small],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)  # the whole of stdout: one JSON object
    for key in (*TARGET_KEYS, "sqlite_commit_in_loop_us", "floor_in_loop_us"):
        value = figures[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert value >= 0, (key, value)
    assert figures["step_overhead_us"] > 0 and figures["floor_us"] > 0
    # 3 runs of 5 steps: the boundaries between 5 steps and the stop, per run.
    assert figures["steps_measured"] == 3 * 5
    assert figures["floor_us"] == pytest.approx(
        2 * figures["sqlite_commit_floor_us"] + figures["step_overhead_no_store_us"], abs=0.2
    )
    ratio = figures["persisted_ceiling_steps_s"] / figures["no_store_ceiling_steps_s"]
    assert figures["ceiling_ratio"] == pytest.approx(ratio, abs=0.01)
    # Every step of the concurrent runs went through the group commit.
    assert figures["group_commit_batches"] >= 20 * 3
