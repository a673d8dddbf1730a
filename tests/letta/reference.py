"""A naive interpreter of Letta's tool rules, written straight from the reference text.

It recomputes everything from the run's history at every step, the way Letta's solver does
(no compilation, no tables), so comparing it with toolfsm's compiled machine tests the import
and the compiler together. The project's documented deviations are switches:
`letta_fallback=True` gives Letta's own behaviour for an empty allowed set (every tool again);
the default gives toolfsm's (a dead end: nothing allowed, and the run stops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHILD_LIKE = ("constrain_child_tools", "conditional", "parent_last_tool")


@dataclass
class LettaRun:
    """One run of an agent with `tools` under the raw Letta `rules`."""

    tools: list[str]
    rules: list[dict[str, Any]]
    letta_fallback: bool = False
    history: list[str] = field(default_factory=list)
    last_output: str | None = None

    def _of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rules if r["type"] == kind]

    # -- the allowed set (reference: "How the allowed set is computed") ----------------

    def _contribution(self, rule: dict[str, Any], last: str | None) -> set[str]:
        everything = set(self.tools)
        kind, tool = rule["type"], rule["tool_name"]
        if kind == "constrain_child_tools":
            return set(rule["children"]) if last == tool else everything
        if kind == "parent_last_tool":
            return set(rule["children"]) if last == tool else everything - set(rule["children"])
        if kind == "conditional":
            if last != tool:
                return everything
            for key, child in rule["child_output_mapping"].items():
                if str(self.last_output) == str(key):  # JSON keys are strings: exact match
                    return {child}
            if rule.get("require_output_mapping"):
                return set()
            return {rule["default_child"]} if rule.get("default_child") else everything
        if kind == "max_count_per_step":
            if self.history.count(tool) >= rule["max_count_limit"]:
                return everything - {tool}
            return everything
        return everything  # terminal, continue, required, approval: no effect on the set

    def allowed(self) -> list[str]:
        """The allowed tools, in declaration order (toolfsm's stable order)."""
        init = self._of("run_first")
        if not self.history and init:
            chosen = {r["tool_name"] for r in init}
        else:
            last = self.history[-1] if self.history else None
            chosen = set(self.tools)
            for rule in self.rules:
                chosen &= self._contribution(rule, last)
        if not chosen and self.letta_fallback:
            chosen = set(self.tools)  # Letta silently offers every tool again
        return [t for t in self.tools if t in chosen]

    def forced(self) -> bool:
        if not self.history:
            return bool(self._of("run_first"))
        return any(
            r["tool_name"] == self.history[-1] for r in self.rules if r["type"] in CHILD_LIKE
        )

    def forced_tool(self) -> str | None:
        allowed = self.allowed()
        return allowed[0] if self.forced() and len(allowed) == 1 else None

    def prefill(self) -> dict[str, dict[str, Any]]:
        """Prefilled arguments of the active rules; a later rule wins key by key."""
        merged: dict[str, dict[str, Any]] = {}
        if not self.history:
            for rule in self._of("run_first"):
                if rule.get("args"):
                    merged.setdefault(rule["tool_name"], {}).update(rule["args"])
            return merged
        for rule in self._of("constrain_child_tools"):
            if rule["tool_name"] == self.history[-1]:
                for node in rule.get("child_arg_nodes") or []:
                    if node.get("args"):
                        merged.setdefault(node["name"], {}).update(node["args"])
        return merged

    # -- calls and verdicts (reference: "After a tool call: continue or stop") ---------

    def pending_required(self) -> list[str]:
        required = {r["tool_name"] for r in self._of("required_before_exit")}
        return [t for t in self.tools if t in required and t not in self.history]

    def call(self, tool: str, output: str | None = None) -> bool:
        """Call `tool`; False (and nothing changes) when it is not allowed: a violation."""
        if tool not in self.allowed():
            return False
        self.history.append(tool)
        self.last_output = output
        return True

    def _go_on(self) -> str:
        # toolfsm's deviation: going on with nothing allowed is a dead end (the run stops)
        # where a call is forced or a required tool is pending; otherwise it is answer-only
        # (the run goes on to ask for the final answer, with no tool offered).
        if (
            not self.letta_fallback
            and not self.allowed()
            and (self.forced() or self.pending_required())
        ):
            return "stop"
        return "continue"

    def _may_stop(self) -> str:
        return self._go_on() if self.pending_required() else "stop"

    def after_call(self, tool: str, heartbeat: bool | None = None) -> str:
        """ "continue" or "stop" after `tool` ran (it is the last entry of the history)."""
        names = {
            kind: {r["tool_name"] for r in self._of(kind)}
            for kind in (
                "exit_loop",
                "continue_loop",
                "constrain_child_tools",
                "conditional",
                "max_count_per_step",
            )
        }
        if tool in names["exit_loop"]:
            return self._may_stop()
        if (
            tool in names["constrain_child_tools"]
            or tool in names["conditional"]
            or tool in names["max_count_per_step"]
            or tool in names["continue_loop"]
            or heartbeat is None
            or heartbeat
        ):
            return self._go_on()
        return self._may_stop()

    def after_text(self) -> str:
        """ "continue" or "stop" after a reply without a tool call."""
        return self._may_stop()


def import_machine(tools: list[str], rules: list[dict[str, Any]], name: str = "agent") -> Any:
    """Import Letta rules for an agent with `tools` (through the JSON text, as the CLI does)
    and compile the written rule file: (Imported, Machine)."""
    import json

    from engine.language.loader import parse_rules
    from engine.letta import import_letta
    from engine.machine.compiler import compile_rules

    document = {"name": name, "tools": list(tools), "tool_rules": rules}
    (imported,) = import_letta(json.dumps(document), f"{name}.json")
    rule_file = parse_rules(imported.text, f"{name}.yaml")
    assert rule_file.ok, [str(d) for d in rule_file.diagnostics]
    return imported, compile_rules(rule_file)
