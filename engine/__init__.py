"""toolfsm: tool rules for LLM agents, compiled to an explicit finite-state machine.

The public API, by the order data flows through it:

    read_rule_file / load_rules / parse_rules   YAML -> RuleFile (spec + diagnostics)
    compile_rules                               RuleFile -> Machine (immutable, shared)
    Machine, Position, Gate, Verdict            gating: allowed tools, forcing, continue/stop
    Reason, StopReason                          why a run goes on or stops
    explain                                     why a tool is (not) allowed, with rule locations
    Diagnostic, SourceSpan                      problems, with FILE:LINE:COL
    ToolfsmError, RuleFileError                 the exception tree

Names load on first use, so that `toolfsm --version` or a module that needs one part of the
package does not pay for importing pydantic and the rest.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.errors import Diagnostic, RuleFileError, SourceSpan, ToolfsmError
    from engine.language.loader import RuleFile, load_rules, parse_rules, read_rule_file
    from engine.machine import Gate, Machine, Position, Reason, StopReason, Verdict
    from engine.machine.compiler import compile_rules
    from engine.machine.explain import explain

_EXPORTS = {
    "compile_rules": "engine.machine.compiler",
    "Diagnostic": "engine.errors",
    "RuleFileError": "engine.errors",
    "SourceSpan": "engine.errors",
    "ToolfsmError": "engine.errors",
    "explain": "engine.machine.explain",
    "RuleFile": "engine.language.loader",
    "load_rules": "engine.language.loader",
    "parse_rules": "engine.language.loader",
    "read_rule_file": "engine.language.loader",
    "Gate": "engine.machine",
    "Machine": "engine.machine",
    "Position": "engine.machine",
    "Reason": "engine.machine",
    "StopReason": "engine.machine",
    "Verdict": "engine.machine",
}

__all__ = [
    "Diagnostic",
    "Gate",
    "Machine",
    "Position",
    "Reason",
    "RuleFile",
    "RuleFileError",
    "SourceSpan",
    "StopReason",
    "ToolfsmError",
    "Verdict",
    "compile_rules",
    "explain",
    "load_rules",
    "parse_rules",
    "read_rule_file",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
