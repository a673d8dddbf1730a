"""`load_agent(path, tools=...)`: the documented forms of `tools` (issue 10, section 5)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from engine.errors import ToolfsmError
from engine.runtime.agent import load_agent
from engine.tools import ToolRegistry, tool

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "examples" / "screening" / "agent.yaml"
TOOLS = REPO / "examples" / "screening" / "tools.py"
NAMES = ("load_application", "check_requirements", "schedule_interview", "send_rejection")


def _module():
    spec = importlib.util.spec_from_file_location("screening_tools_for_test", TOOLS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_list_of_functions() -> None:
    module = _module()
    functions = [getattr(module, name) for name in reversed(NAMES)]  # any order
    agent = load_agent(AGENT, tools=functions)
    assert tuple(agent.tools.names()) == NAMES
    assert agent.tools["check_requirements"].fn is module.check_requirements


def test_a_function_named_by_the_tool_decorator() -> None:
    module = _module()

    @tool(name="send_rejection")
    def turn_down(application_id: str) -> str:
        """Reject a candidate."""
        return "rejected"

    functions = [getattr(module, n) for n in NAMES if n != "send_rejection"] + [turn_down]
    assert load_agent(AGENT, tools=functions).tools["send_rejection"].fn is turn_down


@pytest.mark.parametrize("form", ["module", "path", "str"])
def test_a_module_or_a_path(form: str) -> None:
    tools = {"module": _module(), "path": TOOLS, "str": str(TOOLS)}[form]
    agent = load_agent(AGENT, tools=tools)
    assert tuple(agent.tools.names()) == NAMES


def test_a_registry_still_works_and_a_missing_function_is_named() -> None:
    agent = load_agent(AGENT, tools=TOOLS)
    assert load_agent(AGENT, tools=agent.tools).tools is agent.tools
    assert isinstance(agent.tools, ToolRegistry)
    module = _module()
    with pytest.raises(ToolfsmError, match="schedule_interview"):
        load_agent(AGENT, tools=[module.load_application, module.check_requirements])
    with pytest.raises(ToolfsmError, match="not a function"):
        load_agent(AGENT, tools=[module.load_application, 42])
