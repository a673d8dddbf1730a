"""What Letta's real agent files (letta-ai/agent-file) broke on import (issue 10, section 1).

The fixtures here are small agent files of our own with the shapes of the real ones: a tool
description with a character beyond U+FFFF (co-3's rocket emoji), a conditional on a tool that
returns a Python bool with the keys "True"/"False" (outreach_workflow_agent,
deep_research_agent), a `memgpt_agent` (void), and an agent whose only rules need approval.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import compile_rules, load_rules
from engine.language.loader import read_rule_file
from engine.machine import StopReason
from engine.providers.scripted import ScriptedProvider
from engine.runtime import Runner
from engine.runtime.agent import load_agent

REPO = Path(__file__).resolve().parents[2]
ROCKET = "\U0001f680"


def _tool(index: int, name: str, description: str = "", **props: str) -> dict[str, Any]:
    parameters = {
        "type": "object",
        "properties": {p: {"type": kind} for p, kind in props.items()},
        "required": list(props),
    }
    return {
        "id": f"tool-{index}",
        "name": name,
        "description": description,
        "tool_type": "custom",
        "source_code": f"def {name}(): ...",
        "json_schema": {"name": name, "description": description, "parameters": parameters},
    }


def _agent_file(
    path: Path,
    tools: list[dict[str, Any]],
    rules: list[dict[str, Any]],
    *,
    agent_type: str = "letta_v1_agent",
    description: str = "",
) -> Path:
    agent = {
        "id": "agent-0",
        "name": path.stem,
        "agent_type": agent_type,
        "description": description,
        "system": "You are an agent.",
        "tool_ids": [t["id"] for t in tools],
        "tool_rules": rules,
        "llm_config": {"model": "gpt-4.1", "parallel_tool_calls": True},
    }
    path.write_text(json.dumps({"agents": [agent], "tools": tools}), encoding="utf-8")
    return path


def toolfsm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )


# -- emoji ----------------------------------------------------------------------------------


def test_import_keeps_characters_beyond_the_basic_plane(tmp_path: Path) -> None:
    source = _agent_file(
        tmp_path / "co.af",
        [_tool(0, "post", f"Post an update {ROCKET}", text="string"), _tool(1, "send_message")],
        [{"tool_name": "send_message", "type": "exit_loop", "prompt_template": None}],
        description=f"A social agent {ROCKET}",
    )
    out = tmp_path / "co.yaml"
    result = toolfsm("import", source, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal" not in result.stderr
    rules = read_rule_file(out)
    assert rules.ok, rules.diagnostics
    assert rules.spec.description == f"A social agent {ROCKET}"
    assert rules.spec.tools[0].description == f"Post an update {ROCKET}"
    assert ROCKET in out.read_text(encoding="utf-8")


def test_validate_reads_a_json_style_surrogate_pair_escape(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "version: 1\nagent: rocket\n"
        'tools: [{name: launch, description: "Launch \\ud83d\\ude80 now"}]\n'
        'rules: [{terminal: launch, note: "\\uD83D\\uDE80"}]\n',
        encoding="utf-8",
    )
    result = toolfsm("validate", path)
    assert result.returncode == 0, result.stdout + result.stderr
    spec = load_rules(path).spec
    assert spec.tools[0].description == f"Launch {ROCKET} now"
    assert spec.rules[0].note == ROCKET


@pytest.mark.parametrize(
    ("escape", "column"), [("\\ud83d", 14), ("\\ude80\\ud83d", 14), ("\\U00110000", 20)]
)
def test_a_broken_unicode_escape_is_a_located_error(
    tmp_path: Path, escape: str, column: int
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(f'version: 1\nagent: "rocket {escape}"\ntools: [a]\n', encoding="utf-8")
    result = toolfsm("validate", path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{path}:2:" in result.stdout and "error[E001]" in result.stdout


# -- Python return values -------------------------------------------------------------------

# Letta's text of a return value is str() of it (a mapping read back from JSON first).
LETTA_TEXT = [
    (True, "True"),
    (False, "False"),
    (None, "None"),
    (7, "7"),
    (2.5, "2.5"),
    ("billing", "billing"),
    ({"ok": True, "n": None}, "{'ok': True, 'n': None}"),
    ([1, "a", False], "[1, 'a', False]"),
]


def _router(tmp_path: Path, keys: list[str], **kwargs: Any) -> Path:
    tools = [_tool(0, "route"), *(_tool(i + 1, f"to_{i}") for i in range(len(keys)))]
    tools.append(_tool(len(keys) + 1, "fallback"))
    rule = {
        "tool_name": "route",
        "type": "conditional",
        "child_output_mapping": {key: f"to_{i}" for i, key in enumerate(keys)},
        "default_child": "fallback",
        "require_output_mapping": False,
        "prompt_template": None,
    }
    source = _agent_file(tmp_path / "router.af", tools, [rule], **kwargs)
    out = tmp_path / "router.yaml"
    result = toolfsm("import", source, "-o", out)
    assert result.returncode == 0, result.stderr
    return out


def test_imported_cases_route_python_return_values_as_letta_does(tmp_path: Path) -> None:
    out = _router(tmp_path, [text for _, text in LETTA_TEXT] + ["true", "null"])
    assert "output_text: python" in out.read_text()
    machine = compile_rules(load_rules(out))
    start = machine.start()
    for index, (value, text) in enumerate(LETTA_TEXT):
        after = machine.advance(start, "route", value)
        assert machine.gate(after).allowed == (f"to_{index}",), (value, text)
    # Letta's keys "true" / "null" match no Python value: str(True) is "True", str(None) "None".
    assert machine.gate(machine.advance(start, "route", "true")).allowed == ("to_8",)
    assert machine.gate(machine.advance(start, "route", "maybe")).allowed == ("fallback",)


def test_an_imported_workflow_sends_the_email_when_the_tool_returns_true(
    tmp_path: Path,
) -> None:
    # outreach_workflow_agent: evaluate_candidate returns a bool; "True" -> send_email.
    tools = [
        _tool(0, "retrieve_candidate", candidate_name="string"),
        _tool(1, "evaluate_candidate"),
        _tool(2, "send_email", candidate_name="string"),
        _tool(3, "reject", candidate_name="string"),
    ]
    rules = [
        {"tool_name": "retrieve_candidate", "type": "run_first"},
        {"tool_name": "retrieve_candidate", "type": "constrain_child_tools",
         "children": ["evaluate_candidate"]},
        {"tool_name": "evaluate_candidate", "type": "conditional",
         "child_output_mapping": {"True": "send_email", "False": "reject"},
         "default_child": "reject"},
        {"tool_name": "reject", "type": "exit_loop"},
        {"tool_name": "send_email", "type": "exit_loop"},
    ]  # fmt: skip
    source = _agent_file(tmp_path / "outreach.af", tools, rules)
    out = tmp_path / "outreach.yaml"
    assert toolfsm("import", source, "-o", out).returncode == 0
    sent: list[str] = []

    def retrieve_candidate(candidate_name: str) -> str:
        return f"{candidate_name}: 5 years of Rust"

    def evaluate_candidate() -> bool:
        return True

    def send_email(candidate_name: str) -> str:
        sent.append(candidate_name)
        return "sent"

    def reject(candidate_name: str) -> str:
        return "rejected"

    agent = load_agent(out, tools=[retrieve_candidate, evaluate_candidate, send_email, reject])
    script = [
        {"call": "retrieve_candidate", "args": {"candidate_name": "Ada"}},
        {"call": "evaluate_candidate", "args": {}},
        {"expect_allowed": ["send_email"], "call": "send_email", "args": {"candidate_name": "Ada"}},
    ]
    result = asyncio.run(Runner(agent, ScriptedProvider(script)).run("Screen Ada."))
    assert result.stop_reason is StopReason.TERMINAL_TOOL
    assert sent == ["Ada"]


# -- loop mode and parallel calls -----------------------------------------------------------


@pytest.mark.parametrize(
    ("agent_type", "continuation"),
    [
        ("memgpt_agent", "heartbeat"),
        ("memgpt_v2_agent", "heartbeat"),
        ("letta_v1_agent", "default"),
        ("sleeptime_agent", "default"),
    ],
)
def test_import_carries_letta_loop_mode(tmp_path: Path, agent_type: str, continuation: str) -> None:
    out = _router(tmp_path, ["True"], agent_type=agent_type)
    spec = load_rules(out).spec
    assert spec.run.continuation == continuation
    assert spec.run.parallel_tool_calls is False  # a conditional rule: Letta turns them off
    assert spec.run.output_text == "python"


def test_approval_rules_alone_keep_parallel_tool_calls(tmp_path: Path) -> None:
    source = _agent_file(
        tmp_path / "pay.af",
        [_tool(0, "pay"), _tool(1, "send_message")],
        [{"tool_name": "pay", "type": "requires_approval"}],
    )
    out = tmp_path / "pay.yaml"
    assert toolfsm("import", source, "-o", out).returncode == 0
    spec = load_rules(out).spec
    assert spec.run.parallel_tool_calls is True
    assert "parallel_tool_calls" not in out.read_text()


# -- check's wording on a child rule of a terminal tool (void) -------------------------------


VOID_RULES = [
    {"tool_name": "send_message", "type": "constrain_child_tools", "children": ["annotate_ack"]},
    {"tool_name": "send_message", "type": "exit_loop"},
    {"tool_name": "annotate_ack", "type": "exit_loop"},
]


def test_c106_names_the_terminal_rule_as_the_cause(tmp_path: Path) -> None:
    source = _agent_file(
        tmp_path / "void.af",
        [_tool(0, "send_message"), _tool(1, "annotate_ack"), _tool(2, "search")],
        VOID_RULES,
        agent_type="memgpt_agent",
    )
    out = tmp_path / "void.yaml"
    assert toolfsm("import", source, "-o", out).returncode == 0
    result = toolfsm("check", out)
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [x for x in result.stdout.splitlines() if "C106" in x]
    assert "'send_message' is terminal: every call of it ends the run" in line
    assert "max_calls" not in line
