"""`toolfsm check` as a library call: validate, explore, find, prove assertions, apply silences.

Silences (`silence:` in the rule file) hide warnings by code, each with a reason. Errors
cannot be silenced (C198), and a silence that hides nothing is itself a warning (C199), so
stale silences do not pile up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.analysis.assertions import check_assertions
from engine.analysis.explore import LIVE_LIMIT, Graph, explore
from engine.analysis.findings import Finding, find
from engine.errors import Diagnostic, Severity
from engine.language.loader import RuleFile, read_rule_file
from engine.language.yamltree import SourceMap
from engine.machine import Machine
from engine.machine.compiler import compile_rules

ERROR_CODES = frozenset(
    {"C101", "C105", "C107", "C110", "C190", "C198"} | {f"A10{i}" for i in range(8)}
)


@dataclass
class CheckResult:
    """Everything `toolfsm check` found in one rule file."""

    path: str
    diagnostics: list[Diagnostic]  # what is reported: validation + findings, minus silenced
    findings: list[Finding] = field(default_factory=list)  # check and assertion findings
    silenced: list[tuple[Diagnostic, str]] = field(default_factory=list)  # (warning, reason)
    graph: Graph | None = None
    seconds: float = 0.0

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def states(self) -> int:
        return len(self.graph) if self.graph is not None else 0

    def codes(self) -> list[str]:
        return [d.code for d in self.diagnostics]

    def finding(self, code: str) -> Finding:
        """The first finding with `code` (KeyError when there is none); handy in tests."""
        for item in self.findings:
            if item.code == code:
                return item
        raise KeyError(code)


def _sorted(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(diagnostics, key=lambda d: (d.span.line, d.span.column, d.code))


def check_machine(
    machine: Machine, source: SourceMap | None = None, *, max_states: int = LIVE_LIMIT
) -> CheckResult:
    """Explore a compiled machine and report its findings and failed assertions."""
    started = time.perf_counter()
    graph = explore(machine, max_states=max_states)
    findings = find(graph, source)
    findings += check_assertions(graph, source)
    seconds = time.perf_counter() - started
    return CheckResult(
        machine.source_path,
        [f.diagnostic for f in findings],
        findings=findings,
        graph=graph,
        seconds=seconds,
    )


def _apply_silences(rule_file: RuleFile, result: CheckResult) -> None:
    assert rule_file.spec is not None
    silences = rule_file.spec.silence
    if not silences:
        return
    reasons = {s.code: s.reason for s in silences}
    kept: list[Diagnostic] = []
    used: set[str] = set()
    for diagnostic in result.diagnostics:
        if not diagnostic.is_error and diagnostic.code in reasons:
            used.add(diagnostic.code)
            result.silenced.append((diagnostic, reasons[diagnostic.code]))
        else:
            kept.append(diagnostic)
    for index, silence in enumerate(silences):
        span = rule_file.source.span(("silence", index))
        if silence.code in ERROR_CODES or silence.code.startswith("E"):
            kept.append(
                Diagnostic(
                    Severity.ERROR,
                    "C198",
                    f"{silence.code} is an error and cannot be silenced; fix the rule file",
                    span,
                )
            )
        elif silence.code not in used:
            kept.append(
                Diagnostic(
                    Severity.WARNING,
                    "C199",
                    f"this silence of {silence.code} hides nothing; remove it",
                    span,
                )
            )
    result.diagnostics = kept


def check_rule_file(rule_file: RuleFile, *, max_states: int = LIVE_LIMIT) -> CheckResult:
    """Validate, then (when valid) check a rule file; silences applied."""
    if not rule_file.ok:
        return CheckResult(rule_file.path, _sorted(list(rule_file.diagnostics)))
    machine = compile_rules(rule_file)
    result = check_machine(machine, rule_file.source, max_states=max_states)
    result.diagnostics = [*rule_file.diagnostics, *result.diagnostics]
    _apply_silences(rule_file, result)
    result.diagnostics = _sorted(result.diagnostics)
    return result


def check_path(path: str | Path, *, max_states: int = LIVE_LIMIT) -> CheckResult:
    """Read a rule file from disk and check it."""
    return check_rule_file(read_rule_file(path), max_states=max_states)
