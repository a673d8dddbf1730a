"""benchmarks/loop.py runs end to end with small sizes (--json): the keys issue 11's targets
read, and the figures derived from others. Checked for shape and sign only: timings are the
machine's, never asserted. About 2 s, so in the default suite."""

from __future__ import annotations

import pytest

from tests._benchmarks import assert_numbers, run_json

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
    figures = run_json("loop", *small)
    assert_numbers(
        figures, (*TARGET_KEYS, "sqlite_commit_in_loop_us", "floor_in_loop_us"), positive=False
    )
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
