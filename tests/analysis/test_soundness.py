"""Soundness: the checker agrees with brute force over random rule sets, and its traces replay.

The brute force knows nothing of the explorer: it enumerates traces with `Machine.advance`,
`after_call` and `after_text` directly (outputs: each case key's text plus one that matches
none), memoising only (position, steps left) to stay polynomial.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from hypothesis import HealthCheck, assume, given, settings

from engine.analysis import DEAD_END_CODES, TRAP_CODES, check_machine, explore
from engine.analysis.explore import DEAD, END
from engine.language.outputs import output_text
from engine.machine import Machine, Position, Reason, StopReason
from tests.analysis.helpers import replay
from tests.analysis.rulesets import machines

BOUND = 14  # trace length bound; every drawn machine has fewer reachable positions
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


def _outputs(machine: Machine, tool: str) -> list[Any]:
    keys = machine.case_keys(tool)
    return [output_text(k) for k in keys] + ["zz-none"] if keys else [None]


class Brute:
    """Definition-driven search over all traces up to BOUND steps."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.outputs = {t: _outputs(machine, t) for t in machine.tools}
        self.reached: dict[Position, int] = {}
        self.dead_end = False
        self.can_end = lru_cache(maxsize=None)(self._can_end)
        self._visit(machine.start(), BOUND)

    def _moves(self, position: Position) -> list[tuple[str, Any, Position, Any]]:
        moves = []
        for tool in self.m.gate(position).allowed:
            for output in self.outputs[tool]:
                new = self.m.advance(position, tool, output)
                moves.append((tool, output, new, self.m.after_call(new, tool)))
        return moves

    def _visit(self, position: Position, left: int) -> None:
        if self.reached.get(position, -1) >= left:
            return
        self.reached[position] = left
        text = None if self.m.gate(position).force else self.m.after_text(position)
        if text is not None and text.stop_reason is StopReason.DEAD_END:
            self.dead_end = True
        for _, _, new, verdict in self._moves(position):
            if verdict.reason is Reason.DEAD_END:
                self.dead_end = True
            elif verdict.continues and left > 0:
                self._visit(new, left - 1)

    def _can_end(self, position: Position, left: int) -> bool:
        if not self.m.gate(position).force:
            verdict = self.m.after_text(position)
            if not verdict.continues and verdict.reason is Reason.END_TURN:
                return True
        if left == 0:
            return False
        for _, _, new, verdict in self._moves(position):
            if not verdict.continues and verdict.reason is Reason.TERMINAL_TOOL:
                return True
            if verdict.continues and self.can_end(new, left - 1):
                return True
        return False

    @property
    def trap(self) -> bool:
        return any(not self.can_end(p, BOUND) for p in self.reached)


@SETTINGS
@given(machines())
def test_dead_ends_and_traps_match_brute_force(machine: Machine) -> None:
    result = check_machine(machine)
    assume(result.states < BOUND)
    brute = Brute(machine)
    assert set(brute.reached) == {result.graph.position(p) for p in range(result.states)}
    codes = set(result.codes())
    found_dead = bool(codes & DEAD_END_CODES)
    found_trap = bool(codes & TRAP_CODES)
    assert found_dead == brute.dead_end
    assert (found_dead or found_trap) == (brute.dead_end or brute.trap)
    if not brute.dead_end:
        assert found_trap == brute.trap


@SETTINGS
@given(machines())
def test_every_counterexample_replays_to_its_position(machine: Machine) -> None:
    result = check_machine(machine)
    brute = Brute(machine)
    for finding in result.findings:
        if finding.trace is None:
            continue
        rows = replay(machine, finding.trace)
        assert rows[-1].position == finding.position
        if finding.code in DEAD_END_CODES:
            end = rows[-1]
            text_dead = machine.after_text(end.position).stop_reason is StopReason.DEAD_END
            assert end.reason == "dead_end" or text_dead
        if finding.code in TRAP_CODES:
            assert not brute.can_end(finding.position, BOUND)


@SETTINGS
@given(machines())
def test_kernel_agrees_with_the_machine_on_every_step(machine: Machine) -> None:
    graph = explore(machine)
    for p in range(len(graph)):
        position = graph.position(p)
        gate = machine.gate(position)
        assert graph.allowed[p] == gate.mask
        expected = sum(len(graph.steps_of[machine.tool_index[t]]) for t in gate.allowed)
        assert len(list(graph.out(p))) == expected
        for step_id, target in graph.out(p):
            step = graph.steps[step_id]
            new = machine.advance(position, step.tool, step.output)
            verdict = machine.after_call(new, step.tool)
            if target == END:
                assert verdict.stop_reason is StopReason.TERMINAL_TOOL
            elif target == DEAD:
                assert verdict.stop_reason is StopReason.DEAD_END
            else:
                assert verdict.continues and graph.position(target) == new
        if gate.force:
            assert not (graph.text_end[p] or graph.text_blocked[p] or graph.text_dead[p])
        else:
            verdict = machine.after_text(position)
            assert graph.text_end[p] == (verdict.stop_reason is StopReason.END_TURN)
            assert graph.text_blocked[p] == verdict.continues
            assert graph.text_dead[p] == (verdict.stop_reason is StopReason.DEAD_END)


def _violates(expect: Any, calls: list[str], ending: str | None, ended: bool) -> bool:
    """Whether a run (its calls; `ending`: the terminal tool or None for a reply) breaks it."""
    kind = next(
        k
        for k in (
            "never",
            "never_after",
            "only_after",
            "always_before",
            "at_most",
            "eventually",
            "ends_with",
        )
        if k in expect
    )
    subject = expect.get("tools", expect[kind])
    if kind == "never":
        return subject in calls
    if kind == "never_after":
        first = calls.index(expect[kind]) if expect[kind] in calls else len(calls)
        return subject in calls[first + 1 :]
    if kind == "only_after":
        if subject not in calls:
            return False
        index = calls.index(subject)
        return expect[kind] not in calls[:index]
    if kind == "at_most":
        return calls.count(subject) > expect["at_most"]
    if not ended:
        return False
    if kind == "always_before":
        before = calls[:-1] if ending is not None else calls
        return subject not in before
    if kind == "eventually":
        return subject not in calls
    return not calls or calls[-1] != subject  # ends_with


ASSERTION_BOUND = 6


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(machines(expect=True))
def test_assertions_match_bounded_enumeration(machine: Machine) -> None:
    result = check_machine(machine)
    raw = [e.model_dump(by_alias=True, exclude={"note"}) for e in machine.spec.expect]
    outputs = {t: _outputs(machine, t) for t in machine.tools}
    shortest: list[int | None] = [None] * len(raw)

    def note(calls: list[str], ending: str | None, ended: bool) -> None:
        for i, expect in enumerate(raw):
            if _violates(expect, calls, ending, ended):
                n = len(calls)
                if shortest[i] is None or n < shortest[i]:
                    shortest[i] = n

    def walk(position: Position, calls: list[str]) -> None:
        note(calls, None, False)
        if not machine.gate(position).force and machine.after_text(position).stop_reason is (
            StopReason.END_TURN
        ):
            note(calls, None, True)
        if len(calls) == ASSERTION_BOUND:
            return
        for tool in machine.gate(position).allowed:
            for output in outputs[tool]:
                new = machine.advance(position, tool, output)
                verdict = machine.after_call(new, tool)
                if verdict.continues:
                    walk(new, [*calls, tool])
                elif verdict.stop_reason is StopReason.TERMINAL_TOOL:
                    note([*calls, tool], tool, True)
                else:
                    note([*calls, tool], None, False)  # dead end: only call-time properties

    walk(machine.start(), [])
    reported = {f.expect: f for f in result.findings if f.expect is not None}
    for i, expect in enumerate(raw):
        if shortest[i] is not None:
            assert i in reported, (expect, shortest[i])
            assert len(reported[i].trace or ()) == shortest[i]
        elif i in reported:
            # Only a violation longer than the enumeration bound may escape it.
            assert len(reported[i].trace or ()) > ASSERTION_BOUND
        if i in reported:
            replay(machine, reported[i].trace or ())
