"""Simulate a run through a machine without an LLM: the engine of `toolfsm trace`.

A step is a tool name and the output it returned. Each row says where the run stands after
the step: the allowed tools, forcing, the continue/stop verdict, and the violation when the
step was not allowed (a violating call does not enter the history, as in the reference).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.machine import Machine, Position


@dataclass(frozen=True)
class TraceStep:
    tool: str
    output: Any = None

    @classmethod
    def parse(cls, text: str) -> TraceStep:
        """`tool` or `tool=OUTPUT` (OUTPUT is the tool's return value, as text)."""
        tool, sep, output = text.partition("=")
        return cls(tool.strip(), output if sep else None)


@dataclass(frozen=True)
class TraceRow:
    after: str | None
    output: Any
    position: Position
    node: str
    allowed: tuple[str, ...]
    force: bool
    forced_tool: str | None
    decision: str | None
    reason: str | None
    message: str | None
    violation: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "after": self.after,
            "output": self.output,
            "node": self.node,
            "allowed": list(self.allowed),
            "force": self.force,
            "forced_tool": self.forced_tool,
            "decision": self.decision,
            "reason": self.reason,
            "message": self.message,
            "violation": self.violation,
        }


def _row(machine: Machine, position: Position, step: TraceStep | None, **verdict: Any) -> TraceRow:
    gate = machine.gate(position)
    return TraceRow(
        after=step.tool if step else None,
        output=step.output if step else None,
        position=position,
        node=machine.nodes[position.node].name,
        allowed=gate.allowed,
        force=gate.force,
        forced_tool=gate.forced_tool,
        decision=verdict.get("decision"),
        reason=verdict.get("reason"),
        message=verdict.get("message"),
        violation=verdict.get("violation"),
    )


def violation_message(machine: Machine, position: Position, tool: str) -> str:
    """The error a violating call gets back: the allowed tools and the rules that forbid it."""
    from engine.machine.explain import explain  # explain is the slow path; keep it off import time

    gate = machine.gate(position)
    allowed = ", ".join(gate.allowed) or (
        "none (dead end)"
        if machine.dead_end(position)
        else "none (answer only: reply without a tool call)"
    )
    if tool not in machine.tool_index:
        return f"unknown tool {tool!r}; allowed now: {allowed}"
    blame = [f"{ref.span}: {text}" for ref, text in explain(machine, position, tool).reasons if ref]
    why = "; ".join(blame)
    return f"{tool!r} is not allowed now; allowed: {allowed}" + (f" ({why})" if why else "")


def trace(
    machine: Machine, steps: Iterable[TraceStep | str], *, heartbeat: bool | None = None
) -> list[TraceRow]:
    """Rows for the start position and after each step: a `TraceStep`, or its text form
    (`tool` or `tool=OUTPUT`, as `toolfsm trace` takes it)."""
    position = machine.start()
    rows = [_row(machine, position, None)]
    for item in steps:
        step = TraceStep.parse(item) if isinstance(item, str) else item
        if not machine.is_allowed(position, step.tool):
            message = violation_message(machine, position, step.tool)
            rows.append(
                _row(
                    machine,
                    position,
                    step,
                    decision="continue",
                    reason="violation",
                    violation=message,
                )
            )
            continue
        position = machine.advance(position, step.tool, step.output)
        verdict = machine.after_call(position, step.tool, heartbeat=heartbeat)
        rows.append(
            _row(
                machine,
                position,
                step,
                decision=verdict.decision,
                reason=str(verdict.reason),
                message=verdict.message,
            )
        )
    return rows
