"""Letta agent files with multi-agent tools and tags (issue 13): imported with them, run
offline through the CLI, and exported back with Letta's tool type."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from engine.cli import app
from engine.language.loader import read_rule_file
from engine.store import open_store

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()
TAGS_TOOL = "send_message_to_agents_matching_tags"


def test_multi_agent_tools_and_tags_import_run_and_export(tmp_path: Path) -> None:
    out = tmp_path / "agents"
    result = runner.invoke(app, ["import", str(FIXTURES / "multi_agent.af"), "-o", f"{out}/"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["backend.yaml", "docs.yaml", "supervisor.yaml"]
    text = (out / "supervisor.yaml").read_text(encoding="utf-8")
    assert "tags: [lead]\n" in text and f"  - {TAGS_TOOL}\n" in text
    supervisor = read_rule_file(out / "supervisor.yaml").require()
    decl = supervisor.tool_decls()[0]
    assert decl.name == TAGS_TOOL and decl.parameters is not None  # the built-in's own
    assert set(decl.parameters["properties"]) == {"message", "match_all", "match_some"}
    assert read_rule_file(out / "backend.yaml").require().tags == ["reviewer", "backend"]

    # Run the imported agents offline: each in a folder of its own, with its tools and script.
    for name, tools, script in [
        (
            "supervisor",
            "def decide(verdict: str) -> str:\n    return verdict\n",
            "replies:\n"
            f"  - call: {TAGS_TOOL}\n"
            "    args: {message: review it, match_all: [reviewer], match_some: [backend]}\n"
            "  - call: decide\n    args: {verdict: approved}\n",
        ),
        ("backend", "def read_diff() -> str:\n    return 'diff'\n", "replies:\n  - text: fine\n"),
        ("docs", "def read_diff() -> str:\n    return 'diff'\n", "replies:\n  - text: no docs\n"),
    ]:
        folder = tmp_path / "run" / name
        folder.mkdir(parents=True)
        (out / f"{name}.yaml").rename(folder / "agent.yaml")
        (folder / "tools.py").write_text(tools, encoding="utf-8")
        (folder / "script.yaml").write_text(script, encoding="utf-8")
    db = tmp_path / "runs.db"
    root = tmp_path / "run"
    result = runner.invoke(
        app,
        ["run", str(root / "supervisor" / "agent.yaml"), "--input", "go", "--db", str(db),
         "--agents", str(root / "backend"), "--agents", str(root / "docs" / "agent.yaml")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    store = open_store(str(db))
    try:
        (boss,) = [r for r in store.list_runs() if r.parent_run_id is None]
        ask = store.load_run(boss.id).calls[0]
        assert [(e["agent_id"], e["response"]) for e in json.loads(ask.result)] == [
            ("backend", ["fine"])
        ]
    finally:
        store.close()

    exported = runner.invoke(
        app, ["export", str(root / "supervisor" / "agent.yaml"), "--letta", "--agent-json"]
    )
    assert exported.exit_code == 0, exported.output
    document = json.loads(exported.stdout)
    assert document["tags"] == ["lead"]
    tool = next(t for t in document["tools"] if t["name"] == TAGS_TOOL)
    assert tool["tool_type"] == "letta_multi_agent_core"
    assert document["tool_rules"][0] == {
        "tool_name": TAGS_TOOL,
        "type": "run_first",
        "prompt_template": None,
    }


def test_a_yaml_native_agent_tool_exports_as_lossy(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    result = runner.invoke(
        app, ["export", str(repo / "examples/review/agent.yaml"), "--letta", "--agent-json"]
    )
    assert result.exit_code == 1
    assert "lossy: tool 'ask_reviewers' messages the agents its `agents:` query matches" in (
        result.output
    )
