"""An answer-only step as `toolfsm run` and `runs show` print it: the allowed set is named as
'none (answer only ...)', not left blank."""

from __future__ import annotations

from pathlib import Path

from _example_cli import Cli

AGENT = """\
version: 1
agent: search_once
tools: [search]
rules:
  - max_calls: 1
    tools: [search]
run:
  input: what is toolfsm?
"""

TOOLS = '''\
def search(query: str) -> str:
    """Search the web."""
    return "toolfsm compiles tool rules"
'''

SCRIPT = """\
- call: search
  args: {query: toolfsm}
- text: It compiles tool rules.
"""

ANSWER_ONLY = "none (answer only: reply without a tool call)"


def test_the_answer_only_step_is_named_in_the_live_view_and_in_runs_show(tmp_path: Path) -> None:
    for name, text in {"agent.yaml": AGENT, "tools.py": TOOLS, "script.yaml": SCRIPT}.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    cli = Cli(tmp_path / "runs.db")
    live = cli("run", str(tmp_path / "agent.yaml")).stdout.splitlines()
    assert "step 1  allowed: " + ANSWER_ONLY in live
    assert any(line.startswith("stopped: end_turn") for line in live)
    shown = cli("runs", "show").stdout.splitlines()
    assert "  allowed: " + ANSWER_ONLY in shown
