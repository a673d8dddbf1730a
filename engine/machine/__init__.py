"""The machine stage: a checked rule file compiled into an immutable machine, and what reads it.

    compiler   RuleFile -> Machine (nodes, per-node gates, counters)
    compiled   the compiled machine and the per-step hot path (gate, advance, verdicts)
    explain    why a tool is (not) allowed, with the rules responsible
    trace      replay calls through the machine without an LLM
    fsm        the machine as a `transitions` state machine, for inspection and drawing
    render/    one diagram renderer per format

This package's own names are the compiled machine's, so `from engine.machine import Machine`
loads only `compiled` (and the language modules it reads), not the compiler.
"""

from engine.machine.compiled import (
    Gate,
    Machine,
    Node,
    NotAllowedError,
    Position,
    Reason,
    RuleRef,
    StopReason,
    Verdict,
)

__all__ = [
    "Gate",
    "Machine",
    "Node",
    "NotAllowedError",
    "Position",
    "Reason",
    "RuleRef",
    "StopReason",
    "Verdict",
]
