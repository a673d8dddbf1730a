"""benchmarks/temporal.py runs end to end (--json --quick): its own dev server, an in-process
worker, then one and two `toolfsm worker` processes. The figures are checked for shape and
sign only: timings are the machine's, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("temporalio")

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "temporal.py"

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
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)  # the whole of stdout: one JSON object
    assert isinstance(figures, dict)
    for key in FIGURES:
        value = figures[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)
    assert figures["ratio"] == pytest.approx(
        figures["step_overhead_ms"] / (2 * figures["noop_activity_round_trip_ms"]), abs=0.02
    )
    assert "process" in figures["workers"]
