"""Bad input gets one precise message, the documented exit code, and loses nothing.

Exit codes (README, "Exit codes"): 1 when toolfsm did its job and found errors, 2 when the
command could not start (bad usage). Every case here goes through the real command line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from engine.cli import app

ROOT = Path(__file__).parent.parent
SCREENING = ROOT / "rules" / "screening.yaml"
EXAMPLE = ROOT / "examples" / "screening"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_keys_and_a_private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("TOOLFSM_DB", str(tmp_path / "runs.db"))
    monkeypatch.setenv("COLUMNS", "300")  # one error, one line


def invoke(*args: str | Path) -> Result:
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    return result


def usage_error(result: Result, *fragments: str) -> None:
    """Exit 2 with exactly one `toolfsm: error: ...` line naming every fragment."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("toolfsm: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    """A copy of the screening example (rules, tools, script) to spoil one part at a time."""
    folder = tmp_path / "agent"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder / "agent.yaml"


def assert_no_runs() -> None:
    listed = invoke("runs", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []


# -- rule files -----------------------------------------------------------------------


def test_malformed_yaml_is_an_error_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "version: 1\nagent: a\ntools: [a, b\nrules: []\n")
    for command in (["validate"], ["check"], ["graph"], ["trace"], ["export", "--letta"]):
        result = invoke(command[0], path, *command[1:])
        assert result.exit_code == 1, (command, result.output)
        assert f"{path}:4:6: error[E001]: malformed YAML" in result.output, command


def test_unknown_tool_in_a_rule_names_the_closest_tool(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.yaml", "version: 1\nagent: a\ntools: [search]\nrules:\n  - init: serch\n"
    )
    result = invoke("validate", path)
    assert result.exit_code == 1
    assert f"{path}:5:11: error[E021]: rule names tool 'serch'" in result.stdout
    assert "hint: did you mean 'search'?" in result.stdout


def test_contradictory_rules_name_both_rules(tmp_path: Path) -> None:
    text = "version: 1\nagent: a\ntools: [a, b]\nrules:\n  - terminal: a\n  - continue: a\n"
    path = write(tmp_path / "a.yaml", text)
    result = invoke("validate", path)
    assert result.exit_code == 1
    assert f"{path}:6:5: error[E023]: 'a' is both terminal (line 5) and continue" in result.stdout


def test_a_file_that_is_not_utf8_is_an_error_at_the_byte(tmp_path: Path) -> None:
    path = write(tmp_path / "latin.yaml", b"version: 1\nagent: caf\xe9\n")
    result = invoke("validate", path)
    assert result.exit_code == 1
    expected = "error[E000]: file is not UTF-8 text: byte 0xE9 at offset 21"
    assert f"{path}:2:11: {expected}" in result.stdout
    usage_error(invoke("import", path), f"{path}: file is not UTF-8 text: byte 0xE9 at offset 21")


def test_a_folder_where_a_rule_file_is_needed(tmp_path: Path) -> None:
    folder = tmp_path / "rules.yaml"
    folder.mkdir()
    for command in (["graph"], ["trace"], ["explain", "a"], ["export", "--letta"]):
        result = invoke(command[0], folder, *command[1:])
        usage_error(result, f"{folder} is a folder, not a rule file")
    usage_error(invoke("run", folder), f"{folder} is a folder, not an agent file")
    usage_error(invoke("import", folder), f"{folder} is a folder, not a Letta JSON file")


def test_a_folder_with_no_rule_file_is_not_a_clean_pass(tmp_path: Path) -> None:
    (tmp_path / "ci.yaml").write_text("jobs: {}\n")
    for command in ("validate", "check"):
        usage_error(invoke(command, tmp_path), f"no rule file in {tmp_path}")


def test_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    usage_error(invoke("validate", missing), f"no such file or folder: {missing}")
    usage_error(invoke("check", missing), f"no such file or folder: {missing}")
    for command in ("graph", "trace", "run"):
        usage_error(invoke(command, missing), f"no such file: {missing}")
    usage_error(invoke("import", missing), f"no such file: {missing}")


# -- trace and explain ----------------------------------------------------------------


def test_trace_with_an_unknown_tool_suggests_the_closest(tmp_path: Path) -> None:
    result = invoke("trace", SCREENING, "retrieve_candidate", "evaluate_candidat=true")
    usage_error(
        result,
        "step 2 'evaluate_candidat=true': the agent has no tool 'evaluate_candidat'",
        "did you mean 'evaluate_candidate'?",
    )
    assert result.stdout == ""  # no partial trace


def test_trace_with_a_malformed_step() -> None:
    usage_error(invoke("trace", SCREENING, "=true"), "step 1 '=true'", "`tool=OUTPUT`")


def test_explain_an_unknown_tool() -> None:
    usage_error(
        invoke("explain", SCREENING, "send_mail"),
        "TOOL: the agent has no tool 'send_mail'; did you mean 'send_email'?",
    )


# -- toolfsm check --------------------------------------------------------------------


def test_check_max_states_must_be_positive() -> None:
    result = invoke("check", SCREENING, "--max-states", "0")
    assert result.exit_code == 2 and "--max-states" in result.output


def test_check_with_a_tiny_bound_says_the_check_is_incomplete() -> None:
    result = invoke("check", SCREENING, "--max-states", "1")
    assert result.exit_code == 1
    assert "error[C190]: exploration stopped at 1 positions" in result.stdout
    assert "hint: raise the bound with --max-states" in result.stdout


# -- toolfsm import -------------------------------------------------------------------


def test_import_of_malformed_json_writes_nothing(tmp_path: Path) -> None:
    source = write(tmp_path / "agent.af", '{"agents": [')
    out = tmp_path / "out.yaml"
    usage_error(invoke("import", source, "-o", out), f"{source}:1:13: not JSON")
    assert not out.exists()


def test_import_of_an_agent_file_with_no_agents(tmp_path: Path) -> None:
    source = write(tmp_path / "agent.af", '{"agents": [], "tools": []}')
    usage_error(invoke("import", source), "the agent file lists no agents")


def test_import_of_an_unknown_rule_type_keeps_it_as_a_comment(tmp_path: Path) -> None:
    rules = [{"type": "frobnicate", "tool_name": "a"}, {"type": "exit_loop", "tool_name": "a"}]
    source = write(tmp_path / "tool_rules.json", json.dumps(rules))
    out = tmp_path / "rules.yaml"
    result = invoke("import", source, "-o", out)
    assert result.exit_code == 1
    assert "lossy: tool_rules[0]: unknown rule type 'frobnicate'" in result.stderr
    assert result.stderr.strip().endswith("--allow-lossy accepts it")
    # Nothing is lost: the rule is in the written file, as a comment with its JSON.
    text = out.read_text()
    assert "# NOT TRANSLATED tool_rules[0]: unknown rule type 'frobnicate'" in text
    assert '"frobnicate"' in text
    assert invoke("validate", out).exit_code == 0


# -- toolfsm run ----------------------------------------------------------------------


def test_run_with_an_unknown_provider(agent: Path) -> None:
    usage_error(invoke("run", agent, "--model", "nope:x"), "unknown provider 'nope:x'")
    assert_no_runs()


@pytest.mark.parametrize(
    ("model", "variable"),
    [
        ("openai:gpt-4.1-mini", "OPENAI_API_KEY"),
        ("anthropic:claude-sonnet-4-0", "ANTHROPIC_API_KEY"),
    ],
)
def test_run_without_an_api_key_stores_no_run(agent: Path, model: str, variable: str) -> None:
    usage_error(invoke("run", agent, "--model", model), f"set the {variable} environment variable")
    assert_no_runs()


def test_run_with_an_invalid_agent_file_prints_its_diagnostics(agent: Path) -> None:
    agent.write_text(
        agent.read_text().replace("- init: load_application", "- init: load_aplication")
    )
    result = invoke("run", agent)
    assert result.exit_code == 1
    assert f"{agent}:" in result.stderr and "error[E021]" in result.stderr
    assert "hint: did you mean 'load_application'?" in result.stderr
    assert_no_runs()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("nosuch://x", "no database driver for 'nosuch'"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/x", "connection failed"),
    ],
)
def test_run_with_a_bad_db_url(agent: Path, url: str, fragment: str) -> None:
    result = invoke("run", agent, "--db", url)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"toolfsm: error: run store unavailable at {url}")
    assert fragment in result.stderr and "hint: " in result.stderr
    listed = invoke("runs", "list", "--db", url)
    assert listed.exit_code == 2 and listed.stderr == result.stderr


def test_run_with_a_tools_module_that_does_not_exist(agent: Path) -> None:
    missing = agent.parent / "nope.py"
    usage_error(invoke("run", agent, "--tools", missing), f"tools module '{missing}' not found")
    usage_error(invoke("run", agent, "--tools", "no_such_module_xyz"), "no_such_module_xyz")
    assert_no_runs()


def test_run_with_a_tools_module_that_fails_to_import(agent: Path) -> None:
    failing = write(agent.parent / "failing.py", "raise RuntimeError('boom at import')\n")
    usage_error(invoke("run", agent, "--tools", failing), f"{failing}", "boom at import")
    assert_no_runs()


def test_run_with_a_tools_module_that_lacks_a_declared_tool(agent: Path) -> None:
    partial = write(
        agent.parent / "partial.py",
        "def load_application(application_id: str) -> dict:\n    return {}\n",
    )
    usage_error(
        invoke("run", agent, "--tools", partial),
        "no function for tool(s) check_requirements, schedule_interview, send_rejection",
    )
    assert_no_runs()


def test_run_with_a_malformed_script(agent: Path) -> None:
    script = write(agent.parent / "script.yaml", "replies:\n  - [unclosed\n")
    usage_error(invoke("run", agent), f"{script}:3:1: not valid YAML/JSON: expected ',' or ']'")
    write(script, "- 3\n")
    usage_error(invoke("run", agent), f"script {script}, reply #0: expected a mapping, got int")
    assert_no_runs()
