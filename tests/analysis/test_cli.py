"""`toolfsm check` and `toolfsm simulate` through the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from engine.cli import app
from tests.analysis.helpers import CASES

runner = CliRunner()


def test_check_exit_codes() -> None:
    assert runner.invoke(app, ["check", str(CASES / "c110_trap_ok.yaml")]).exit_code == 0
    assert runner.invoke(app, ["check", str(CASES / "c110_trap.yaml")]).exit_code == 1
    assert runner.invoke(app, ["check", str(CASES / "missing.yaml")]).exit_code == 2
    # warnings alone do not fail
    assert runner.invoke(app, ["check", str(CASES / "c102_unreachable_tool.yaml")]).exit_code == 0


def test_check_text_shows_location_and_trace() -> None:
    result = runner.invoke(app, ["check", str(CASES / "c107_max_calls_conflict.yaml")])
    assert "c107_max_calls_conflict.yaml:8:5: error[C107]" in result.output
    assert "  trace: think think" in result.output


def test_check_json_trace_replays_through_toolfsm_trace() -> None:
    path = str(CASES / "c108_strict_dead_end.yaml")
    result = runner.invoke(app, ["check", path, "--format", "json"])
    records = json.loads(result.stdout)
    (record,) = [r for r in records if r["code"] == "C108"]
    assert record["line"] == 5 and record["trace"] == ["lookup=other"]
    replay = runner.invoke(app, ["trace", path, *record["trace"], "--json"])
    rows = json.loads(replay.stdout)
    assert rows[-1]["reason"] == "dead_end" and rows[-1]["violation"] is None


def test_check_sarif_and_github_carry_the_trace() -> None:
    path = str(CASES / "a105_at_most.yaml")
    sarif = json.loads(runner.invoke(app, ["check", path, "-f", "sarif"]).stdout)
    (result,) = sarif["runs"][0]["results"]
    assert result["ruleId"] == "A105"
    assert result["properties"]["trace"] == ["search", "search", "search"]
    github = runner.invoke(app, ["check", path, "-f", "github"]).stdout
    assert github.startswith("::error file=")
    assert "trace: search search search" in github


def test_check_folder_and_silenced_listing() -> None:
    result = runner.invoke(
        app, ["check", str(CASES / "c120_approval_silenced.yaml"), "--show-silenced"]
    )
    assert result.exit_code == 0
    assert "silenced[C120]: every draft must be reviewed" in result.output
    folder = runner.invoke(app, ["check", str(CASES)])
    assert folder.exit_code == 1
    assert "error[C110]" in folder.output and "error[A101]" in folder.output


def test_simulate_is_seeded_and_reports_coverage() -> None:
    path = str(CASES / "c108_strict_dead_end.yaml")
    args = ["simulate", path, "--runs", "300", "--seed", "7", "--json"]
    first = json.loads(runner.invoke(app, args).stdout)
    second = json.loads(runner.invoke(app, args).stdout)
    assert first == second
    assert first["runs"] == 300 and sum(first["stop_reasons"].values()) == 300
    assert set(first["stop_reasons"]) <= {"end_turn", "terminal_tool", "dead_end", "step_limit"}
    assert first["stop_reasons"]["dead_end"] > 0  # the strict conditional is hit
    assert set(first["tools"]["called"]) == {"lookup", "answer", "send_message"}
    assert first["run_length"]["min"] >= 1
    assert sum(b["runs"] for b in first["run_length_histogram"]) == 300


def test_simulate_lists_what_was_never_reached() -> None:
    path = str(CASES / "c102_unreachable_tool.yaml")
    report = json.loads(runner.invoke(app, ["simulate", path, "-n", "50", "--json"]).stdout)
    assert report["tools"]["never"] == ["audit"]
    never_fired = [r["text"] for r in report["rules_never_fired"]]
    assert len(never_fired) == 1 and "audit" in never_fired[0]


def test_simulate_text_report() -> None:
    path = str(CASES / "c110_trap_ok.yaml")
    result = runner.invoke(app, ["simulate", path, "-n", "100", "--no-progress"])
    assert result.exit_code == 0
    assert "Stop reasons" in result.output and "Run length" in result.output


def test_simulate_with_tools_runs_them(tmp_path) -> None:
    (tmp_path / "agent.yaml").write_text(
        "version: 1\nagent: coin\ntools: [flip, win, lose]\nrules:\n"
        "  - init: flip\n  - after: flip\n    on_output: {heads: win, tails: lose}\n"
        "    strict: true\n  - terminal: [win, lose]\n"
    )
    (tmp_path / "tools.py").write_text(
        "import random\n"
        "CALLS = []\n"
        "def flip(bias: float) -> str:\n"
        "    CALLS.append(bias)\n"
        "    return 'heads' if random.random() < 0.5 else 'tails'\n"
        "def win() -> str:\n    return 'won'\n"
        "def lose(reason: str) -> str:\n    return 'lost: ' + reason\n"
    )
    args = ["simulate", str(tmp_path / "agent.yaml"), "-n", "40", "--json"]
    report = json.loads(runner.invoke(app, [*args, "--tools", str(tmp_path / "tools.py")]).stdout)
    # The real tool's output drives the branch: both terminals reached, never a dead end.
    assert set(report["stop_reasons"]) == {"terminal_tool"}
    assert report["tools"]["called"]["flip"] == 40
    assert report["tools"]["called"]["win"] + report["tools"]["called"]["lose"] == 40
    assert report["tool_errors"] == {} and report["argument_errors"] == {}
    # Without --tools the non-matching output is drawn too, so the strict rule dead-ends.
    offline = json.loads(runner.invoke(app, args).stdout)
    assert offline["stop_reasons"].get("dead_end", 0) > 0
    bad = runner.invoke(app, [*args, "--tools", str(tmp_path / "missing.py")])
    assert bad.exit_code == 2  # a tools module that cannot be loaded: usage, as for `run`


def test_check_accepts_an_answer_only_position_and_simulate_ends_there() -> None:
    # "Search once, then answer": after the search no tool is allowed and none is forced, so
    # the model is asked for its final answer. Not a dead end, not C107 (issue 10, section 2).
    path = str(CASES / "answer_only_search_once.yaml")
    result = runner.invoke(app, ["check", path, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    text = runner.invoke(app, ["trace", path, "search"]).output
    assert "allowed:  none: answer only" in text
    report = json.loads(runner.invoke(app, ["simulate", path, "--runs", "50", "--json"]).stdout)
    assert report["stop_reasons"] == {"end_turn": 50}
