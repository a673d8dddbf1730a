"""toolfsm: tool rules for LLM agents, compiled to an explicit finite-state machine.

The public API, by the order data flows through it:

    read_rule_file / load_rules / parse_rules   YAML -> RuleFile (spec + diagnostics)
    compile_rules                               RuleFile -> Machine (immutable, shared)
    Machine, Position, Gate, Verdict            gating: allowed tools, forcing, continue/stop
    Reason, StopReason                          why a run goes on or stops
    explain                                     why a tool is (not) allowed, with rule locations
    Diagnostic, SourceSpan                      problems, with FILE:LINE:COL
    ToolfsmError, RuleFileError                 the exception tree
"""

from engine.compiler import compile_rules
from engine.errors import Diagnostic, RuleFileError, SourceSpan, ToolfsmError
from engine.explain import explain
from engine.loader import RuleFile, load_rules, parse_rules, read_rule_file
from engine.machine import Gate, Machine, Position, Reason, StopReason, Verdict

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
