"""benchmarks/temporal.py runs end to end (--json --quick): its own dev server, an in-process
worker, then one and two `toolfsm worker` processes. The figures are checked for shape and
sign only: timings are the machine's, never asserted."""

from __future__ import annotations

import pytest

from tests._benchmarks import assert_numbers, run_json

pytest.importorskip("temporalio")

pytestmark = pytest.mark.slow

FIGURES = (
    "step_overhead_ms",
    "noop_activity_round_trip_ms",
    "ratio",
    "scripted_step_overhead_ms",
    "heartbeat_noop_round_trip_ms",
    "step_cpu_ms",
    "throughput_one_worker_steps_s",
    "throughput_two_workers_steps_s",
    "two_worker_speedup",
    "history_bytes_per_step",
)


def test_quick_json_run_prints_one_object_of_positive_figures() -> None:
    figures = run_json("temporal", "--quick")
    assert_numbers(figures, FIGURES, positive=True)
    assert figures["ratio"] == pytest.approx(
        figures["step_overhead_ms"] / (2 * figures["noop_activity_round_trip_ms"]), abs=0.02
    )
    assert "process" in figures["workers"]
