"""Shared helpers for the analysis tests: case files and trace replay."""

from __future__ import annotations

from pathlib import Path

from engine.machine import Machine
from engine.machine.trace import TraceRow, TraceStep, trace

CASES = Path(__file__).parent / "cases"


def replay(machine: Machine, steps: tuple[str, ...]) -> list[TraceRow]:
    """Replay a printed counterexample as `toolfsm trace` would, insisting every step is legal."""
    rows = trace(machine, [TraceStep.parse(s) for s in steps])
    violations = [row.violation for row in rows if row.violation]
    assert not violations, violations
    return rows
