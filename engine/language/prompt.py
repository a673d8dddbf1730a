"""One plain line per rule, for the system prompt (the model sees the rules it must obey)."""

from __future__ import annotations

from typing import Any

from engine.language import spec


def _names(tools: str | list[str]) -> str:
    return ", ".join(spec.as_tuple(tools))


def rule_line(rule: Any) -> str:
    """The prompt line of one rule, e.g. "After using X, you must use one of: Y, Z"."""
    match rule:
        case spec.InitRule():
            return f"Start by calling one of these tools: {_names(rule.init)}"
        case spec.ChildRule():
            return (
                f"After using {rule.after}, you must use one of these tools: {_names(rule.allow)}"
            )
        case spec.ConditionalRule():
            cases = "; ".join(f"if it returns {k!r}, call {v}" for k, v in rule.on_output.items())
            tail = f"; otherwise call {rule.default}" if rule.default else ""
            return f"After using {rule.after}, the next tool depends on its output: {cases}{tail}"
        case spec.ParentRule():
            return f"{_names(rule.tools)} can only be used right after {rule.only_after}"
        case spec.TerminalRule():
            return f"{_names(rule.terminal)} ends your response (yields control) when called"
        case spec.ContinueRule():
            return f"{_names(rule.continue_)} requires continuing your response when called"
        case spec.MaxCallsRule():
            return f"{_names(rule.tools)}: at most {rule.max_calls} use(s) per response"
        case spec.RequiredBeforeExitRule():
            return (
                f"{_names(rule.required_before_exit)} must be called before ending the conversation"
            )
        case spec.RequiresApprovalRule():
            some = " (for some arguments)" if rule.when is not None else ""
            return (
                f"{_names(rule.requires_approval)} requires approval by a human before it "
                f"runs{some}"
            )
    raise TypeError(f"not a rule: {rule!r}")  # pragma: no cover - the union is closed
