"""`toolfsm validate | graph | trace | explain` through the real command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app

ROOT = Path(__file__).parent.parent
RULES = ROOT / "rules"
BROKEN = ROOT / "tests" / "broken"
runner = CliRunner()

GOOD = """\
version: 1
agent: cli
tools: [search, fetch, answer, refine]
rules:
  - after: search
    on_output: {true: fetch}
    default: answer
  - only_after: fetch
    tools: refine
  - terminal: answer
"""


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    return path


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


# -- validate -------------------------------------------------------------------------


def test_validate_valid_files_and_folders_exit_0(good: Path) -> None:
    result = invoke("validate", good, RULES)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "4 file(s) checked: 0 error(s), 0 warning(s)" in result.stderr


def test_validate_broken_file_exits_1_with_location() -> None:
    path = BROKEN / "unknown_tool.yaml"
    result = invoke("validate", path)
    assert result.exit_code == 1
    assert f"{path}:8:21: error[E021]: rule names tool 'serach'" in result.stdout
    assert "hint: did you mean 'search'?" in result.stdout


def test_validate_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = invoke("validate", tmp_path / "missing.yaml")
    assert missing.exit_code == 2
    assert "no such file or folder" in missing.stderr
    assert invoke("validate", RULES, "--format", "xml").exit_code == 2
    assert invoke("validate").exit_code == 2


def test_validate_folder_finds_rule_files_and_skips_other_yaml(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "agent.yml").write_text(GOOD)
    (tmp_path / "ci.yaml").write_text("jobs:\n  test: {runs-on: ubuntu}\n")  # not a rule file
    (tmp_path / "bad.yaml").write_text(GOOD.replace("refine]", "refine, refine]"))
    result = invoke("validate", tmp_path, "--format", "json")
    assert result.exit_code == 1
    records = json.loads(result.stdout)
    assert {Path(r["file"]).name for r in records} == {"bad.yaml"}
    assert [r["code"] for r in records] == ["E020"]


def test_validate_warnings_alone_exit_0(tmp_path: Path) -> None:
    path = tmp_path / "warn.yaml"
    path.write_text(GOOD + "  - continue: search\n")  # redundant: W201
    result = invoke("validate", path)
    assert result.exit_code == 0
    assert "warning[W201]" in result.stdout


def test_validate_json_format() -> None:
    path = BROKEN / "several_problems.yaml"
    result = invoke("validate", path, "-f", "json")
    assert result.exit_code == 1
    records = json.loads(result.stdout)
    assert [(r["code"], r["line"], r["column"]) for r in records][:2] == [
        ("E020", 5, 25),
        ("E021", 8, 12),
    ]
    assert set(records[0]) == {
        "file",
        "line",
        "column",
        "severity",
        "code",
        "message",
        "hint",
        "rule",
    }
    assert records[1]["rule"] == 0 and records[1]["severity"] == "error"


GITHUB = re.compile(
    r"^::(error|warning) file=([^,]+),line=(\d+),col=(\d+)(?:,endLine=\d+,endColumn=\d+)?,"
    r"title=toolfsm \(([EW]\d{3})\)::.+$"
)


def test_validate_github_format() -> None:
    result = invoke(
        "validate", BROKEN / "several_problems.yaml", BROKEN / "duplicate_key.yaml", "-f", "github"
    )
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 7
    matches = [GITHUB.match(line) for line in lines]
    assert all(matches), lines
    assert matches[-1].groups()[1:] == (str(BROKEN / "duplicate_key.yaml"), "7", "5", "E004")
    assert matches[5].group(1) == "warning"


def test_validate_sarif_format() -> None:
    result = invoke("validate", BROKEN / "unknown_tool.yaml", "-f", "sarif")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["version"] == "2.1.0"
    (run,) = document["runs"]
    assert run["tool"]["driver"]["name"] == "toolfsm"
    (only,) = run["results"]
    assert only["ruleId"] == "E021" and only["level"] == "error"
    region = only["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 8, "startColumn": 21, "endLine": 8, "endColumn": 27}
    clean = json.loads(invoke("validate", RULES, "-f", "sarif").stdout)
    assert clean["version"] == "2.1.0" and clean["runs"][0]["results"] == []


# -- graph ----------------------------------------------------------------------------


def test_graph_mermaid_and_dot(good: Path) -> None:
    mermaid = invoke("graph", good)
    assert mermaid.exit_code == 0
    assert mermaid.stdout.startswith("stateDiagram-v2\n")
    assert "[*] --> s0" in mermaid.stdout
    assert "search=True" in mermaid.stdout  # the conditional's case edge
    dot = invoke("graph", good, "--format", "dot")
    assert dot.exit_code == 0
    assert dot.stdout.startswith("digraph toolfsm {")
    assert dot.stdout.rstrip().endswith("}")
    assert '"start"' in dot.stdout


def test_graph_of_a_broken_file_exits_1() -> None:
    result = invoke("graph", BROKEN / "duplicate_rule.yaml")
    assert result.exit_code == 1
    assert "E022" in result.stderr


# -- trace ----------------------------------------------------------------------------

TRACE_KEYS = {
    "after",
    "output",
    "allowed",
    "force",
    "forced_tool",
    "decision",
    "reason",
    "violation",
}


def test_trace_json_rows(good: Path) -> None:
    result = invoke("trace", good, "search=true", "answer", "fetch", "refine", "answer", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 6
    for row in rows:
        assert set(row) >= TRACE_KEYS
        assert set(row) - TRACE_KEYS <= {"node", "message"}  # documented extras
    start, searched, violation, fetched, refined, answered = rows
    assert start["after"] is None and start["decision"] is None and start["reason"] is None
    assert start["allowed"] == ["search", "fetch", "answer"]  # refine only right after fetch
    assert searched == {
        **searched,
        "after": "search",
        "output": "true",
        "allowed": ["fetch"],
        "force": True,
        "forced_tool": "fetch",
        "decision": "continue",
        "reason": "rule_continues",
        "violation": None,
    }
    # A violation is reported and does not enter the history: the allowed set is unchanged.
    assert violation["after"] == "answer" and violation["violation"]
    assert violation["decision"] == "continue" and violation["reason"] == "violation"
    assert violation["allowed"] == searched["allowed"]
    assert "allowed: fetch" in violation["violation"]
    assert fetched["allowed"] == ["refine"] and fetched["forced_tool"] == "refine"
    assert refined["allowed"] == start["allowed"] and refined["decision"] == "continue"
    assert answered["decision"] == "stop" and answered["reason"] == "terminal_tool"


def test_trace_text_and_heartbeat(good: Path) -> None:
    text = invoke("trace", good, "search=nope")
    assert text.exit_code == 0
    assert "allowed:  answer" in text.stdout and "forced:   answer" in text.stdout
    heartbeat = invoke("trace", good, "answer", "--heartbeat", "--json")
    assert json.loads(heartbeat.stdout)[1]["reason"] == "terminal_tool"
    plain = GOOD.replace("  - terminal: answer\n", "")
    path = good.with_name("plain.yaml")
    path.write_text(plain)
    rows = json.loads(invoke("trace", path, "answer", "--heartbeat", "--json").stdout)
    assert (rows[1]["decision"], rows[1]["reason"]) == ("stop", "no_heartbeat")


def test_trace_usage_errors(good: Path, tmp_path: Path) -> None:
    assert invoke("trace", good, "=x").exit_code == 2
    assert invoke("trace", tmp_path / "none.yaml").exit_code == 2
    assert invoke("trace", BROKEN / "unknown_tool.yaml").exit_code == 1


# -- explain --------------------------------------------------------------------------


def test_explain_names_the_rule_file_and_line(good: Path) -> None:
    result = invoke("explain", good, "answer", "search=true")
    assert result.exit_code == 0
    assert result.stdout.startswith("answer is NOT allowed at after:search=True")
    assert f"- {good}:5:5: after 'search', its output matched True" in result.stdout
    refine = invoke("explain", good, "refine")
    assert refine.stdout.startswith("refine is NOT allowed at start")
    assert f"- {good}:8:5: 'refine' may only be called right after 'fetch'" in refine.stdout
    noted = invoke("explain", good, "answer", "refine")
    assert "note: step 'refine' was not allowed and is ignored" in noted.stdout


# -- the installed entry point --------------------------------------------------------


def test_python_dash_m_engine_subprocess() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "engine", "validate", str(RULES)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "0 error(s)" in ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "engine", "validate", "-f", "github", str(BROKEN / "empty.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert bad.returncode == 1
    assert GITHUB.match(bad.stdout.strip())


def test_explain_at_the_start_says_nothing_was_called() -> None:
    result = invoke("explain", RULES / "support.yaml", "refund")
    assert "'refund' may only be called right after 'lookup_order', and no tool was called yet" in (
        result.stdout
    )
