"""`load_agent(path, tools=...)`: the documented forms of `tools` (issue 10, section 5)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.errors import ToolfsmError
from engine.runtime.agent import load_agent
from engine.tools import MissingToolsError, ToolRegistry, tool

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


# -- no `tools=`: the calling module's functions (issue 11) ----------------------------------

BOUND_AGENT = """\
version: 1
agent: bound
tools: [bound_lookup, bound_answer]
rules:
  - init: bound_lookup
  - terminal: bound_answer
"""


def bound_lookup(query: str) -> str:
    """Look something up (a tool of this test module, found by name)."""
    return f"found {query}"


@tool(name="bound_answer", idempotent=True)
def reply_with(text: str) -> str:
    """Answer (bound by its @tool name)."""
    return text


def _agent_file(folder: Path, text: str = BOUND_AGENT) -> Path:
    path = folder / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_calling_modules_functions_bind_by_name(tmp_path: Path) -> None:
    agent = load_agent(_agent_file(tmp_path))
    assert agent.tools.names() == ("bound_lookup", "bound_answer")
    assert agent.tools["bound_lookup"].fn is bound_lookup
    assert agent.tools["bound_answer"].fn is reply_with
    assert agent.tools["bound_answer"].idempotent
    assert agent.tools_ref == __file__  # stored with a run, so a resume finds them


def test_a_tools_py_beside_the_file_comes_before_the_calling_module(tmp_path: Path) -> None:
    (tmp_path / "tools.py").write_text(
        "def bound_lookup(query: str) -> str:\n    return 'beside'\n\n"
        "def bound_answer(text: str) -> str:\n    return text\n",
        encoding="utf-8",
    )
    agent = load_agent(_agent_file(tmp_path))
    assert agent.tools["bound_lookup"].fn is not bound_lookup
    assert agent.tools_ref == str(tmp_path / "tools.py")


def test_run_tools_module_comes_before_the_calling_module(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "def bound_lookup(query: str) -> str:\n    return 'mine'\n\n"
        "def bound_answer(text: str) -> str:\n    return text\n",
        encoding="utf-8",
    )
    text = BOUND_AGENT + "run:\n  tools_module: mine.py\n"
    agent = load_agent(_agent_file(tmp_path, text))
    assert agent.tools_ref == str(tmp_path / "mine.py")


def test_tools_missing_from_the_calling_module_are_named_with_every_place_looked_in(
    tmp_path: Path,
) -> None:
    text = BOUND_AGENT.replace("[bound_lookup, bound_answer]", "[bound_lookup, nowhere, gone]")
    text = text.replace("terminal: bound_answer", "terminal: gone")
    path = _agent_file(tmp_path, text)
    with pytest.raises(MissingToolsError) as caught:
        load_agent(path)
    error = caught.value
    assert error.tools == ("nowhere", "gone")
    assert error.places == (
        f"run.tools_module (not set), {tmp_path / 'tools.py'} (no such file)",
        __file__,
    )
    assert str(error) == (
        f"{path}: no function for tool(s) nowhere, gone (looked in: run.tools_module (not "
        f"set), {tmp_path / 'tools.py'} (no such file); {__file__}); define them there (a "
        "function of the same name, or one decorated with @tool(name=...)), or pass tools= "
        "to load_agent"
    )


def test_a_registry_or_a_list_missing_a_tool_is_named_as_such(tmp_path: Path) -> None:
    path = _agent_file(tmp_path)
    registry = ToolRegistry()
    registry.register(bound_lookup)
    with pytest.raises(MissingToolsError, match=r"bound_answer \(looked in: the ToolRegistry"):
        load_agent(path, tools=registry)
    with pytest.raises(MissingToolsError, match=r"bound_answer \(looked in: the functions given"):
        load_agent(path, tools=[bound_lookup])


def test_a_script_binds_its_own_tools_and_runs(tmp_path: Path) -> None:
    """A real process: a script beside its agent file, no tools.py, no list of tools."""
    _agent_file(tmp_path)
    (tmp_path / "script.py").write_text(
        textwrap.dedent(
            """\
            import engine

            @engine.tool
            def bound_lookup(query: str) -> str:
                return "found " + query

            @engine.tool(idempotent=True)
            def bound_answer(text: str) -> str:
                return text

            provider = engine.ScriptedProvider([
                {"call": "bound_lookup", "args": {"query": "q"}},
                {"call": "bound_answer", "args": {"text": "done"}},
            ])
            agent = engine.load_agent("agent.yaml")
            result = engine.Runner(agent, provider).run_sync("go")
            print(result.stop_reason, result.steps)
            """
        ),
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "script.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "terminal_tool 2\n"


def test_the_command_line_does_not_bind_its_own_module(tmp_path: Path, capsys) -> None:
    from engine.cli import run_cli

    assert run_cli(["run", str(_agent_file(tmp_path)), "--input", "go"]) == 2
    err = capsys.readouterr().err
    assert "no tools given: pass --tools MODULE, set run.tools_module" in err
