"""Property-test rule files and your own tools: Hypothesis strategies, a state machine, pytest.

    traces(machine, max_length=20)          valid traces (lists of TraceStep)
    invalid_steps(machine, max_length=20)   a valid prefix, then one forbidden call
    complete_runs(machine, max_length=20)   runs that end legitimately (Run)
    positions(machine, max_length=20)       reachable positions
    tool_state_machine(machine, tools, ...) a RuleBasedStateMachine driving your tools

The pytest plugin (`engine.testing.plugin`, registered as `toolfsm`) adds `--toolfsm` and
the fixtures `toolfsm_machine` and `toolfsm_check`. Names load lazily so that the plugin,
which pytest imports at start-up, stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "InvalidStep": "engine.testing.strategies",
    "Run": "engine.testing.strategies",
    "complete_runs": "engine.testing.strategies",
    "invalid_steps": "engine.testing.strategies",
    "positions": "engine.testing.strategies",
    "traces": "engine.testing.strategies",
    "tool_state_machine": "engine.testing.stateful",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine.testing' has no attribute {name!r}")
