"""A Hypothesis `RuleBasedStateMachine` that drives your own tools through rule-respecting runs.

    Tools = tool_state_machine(machine, {"search": search, "answer": answer, ...},
                               args={"search": st.fixed_dictionaries({"q": st.text()})})

    class TestTools(Tools):
        @invariant()
        def cart_never_negative(self):
            assert self.tools_state.total >= 0

    TestTools.TestCase.settings = settings(max_examples=100)
    test_tools = TestTools.TestCase

Each Hypothesis step is one model action the rules allow: a call of an allowed tool (arguments
drawn from `args`, prefilled arguments applied as the runtime applies them, the output fed
back to the machine), a reply without a tool call where the gate does not force one, or, once
a run stopped, the start of a new run (tools keep their state across runs, as a deployed
agent's would). Anything your tools raise fails the test with the shortest sequence of calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

try:
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, precondition, rule
except ModuleNotFoundError as exc:  # an optional part: say which extra to install
    from engine.errors import MissingExtraError

    raise MissingExtraError("engine.testing (Hypothesis strategies)", "testing") from exc

from engine.errors import ToolfsmError
from engine.machine import Machine, StopReason

ToolFunctions = Mapping[str, Callable[..., Any]]


def tool_state_machine(
    machine: Machine,
    tools: ToolFunctions | Callable[[], ToolFunctions],
    *,
    args: Mapping[str, st.SearchStrategy[dict[str, Any]]] | None = None,
    max_steps: int = 50,
) -> type[RuleBasedStateMachine]:
    """A state machine class whose rules are the machine's tools, gated by its rules.

    `tools` maps every tool name to a callable (called with keyword arguments), or is a
    zero-argument factory returning such a mapping: it is called once per test case, so
    stateful tools start fresh. `args` gives a strategy of keyword-argument dicts per tool
    (default: no arguments). Instances expose `machine`, `position`, `stop` (the stop reason
    of the current run, None while it goes on), `history` (this run's (tool, args, output)
    calls), `runs` (runs finished) and `tools` (the mapping in use).
    """
    factory = tools if callable(tools) else (lambda: tools)
    sample = factory()
    missing = [t for t in machine.tools if t not in sample]
    if missing:
        raise ToolfsmError(f"no implementation given for tool(s): {', '.join(missing)}")
    strategies = dict(args or {})
    unknown = [t for t in strategies if t not in machine.tool_index]
    if unknown:
        raise ToolfsmError(f"`args` names tool(s) the agent does not have: {', '.join(unknown)}")

    def __init__(self: Any) -> None:
        RuleBasedStateMachine.__init__(self)
        self.machine = machine
        self.tools = factory()
        self.position = machine.start()
        self.stop = None
        self.history = []
        self.runs = 0
        self.steps = 0

    def _finish(self: Any, reason: StopReason | None) -> None:
        self.stop = reason

    def _call(self: Any, tool: str, arguments: dict[str, Any]) -> None:
        prefill = self.machine.gate(self.position).prefill.get(tool)
        if prefill:
            arguments = {**arguments, **prefill}
        output = self.tools[tool](**arguments)
        self.position = self.machine.advance(self.position, tool, output)
        self.history.append((tool, arguments, output))
        self.steps += 1
        verdict = self.machine.after_call(self.position, tool)
        if not verdict.continues:
            _finish(self, verdict.stop_reason)
        elif self.steps >= max_steps:
            _finish(self, StopReason.STEP_LIMIT)

    namespace: dict[str, Any] = {
        "__init__": __init__,
        "__doc__": f"Rule-respecting runs of the tools of {machine.agent!r}.",
    }

    def make_call(tool: str) -> Callable[..., None]:
        def call(self: Any, arguments: dict[str, Any]) -> None:
            _call(self, tool, arguments)

        def allowed(self: Any) -> bool:
            return self.stop is None and self.machine.is_allowed(self.position, tool)

        call.__name__ = "call_" + re.sub(r"\W", "_", tool)
        return precondition(allowed)(rule(arguments=strategies.get(tool, st.just({})))(call))

    for tool in machine.tools:
        function = make_call(tool)
        namespace[function.__name__] = function

    def may_reply(self: Any) -> bool:
        return self.stop is None and not self.machine.gate(self.position).force

    @precondition(may_reply)
    @rule()
    def reply_without_tool_call(self: Any) -> None:
        verdict = self.machine.after_text(self.position)
        self.steps += 1
        if not verdict.continues:
            _finish(self, verdict.stop_reason)
        elif self.steps >= max_steps:
            _finish(self, StopReason.STEP_LIMIT)

    @precondition(lambda self: self.stop is not None)
    @rule()
    def start_new_run(self: Any) -> None:
        self.position = self.machine.start()
        self.stop = None
        self.history = []
        self.steps = 0
        self.runs += 1

    namespace["reply_without_tool_call"] = reply_without_tool_call
    namespace["start_new_run"] = start_new_run
    name = "ToolRuns_" + re.sub(r"\W", "_", machine.agent)
    return type(name, (RuleBasedStateMachine,), namespace)
