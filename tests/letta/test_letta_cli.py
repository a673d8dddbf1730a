"""`toolfsm import` / `toolfsm export` end to end: files written, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from engine.cli import app
from engine.language.loader import read_rule_file

FIXTURES = Path(__file__).parent / "fixtures"
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_import_several_agents_into_a_folder(tmp_path: Path) -> None:
    result = _run("import", FIXTURES / "support.af", "-o", f"{tmp_path}/out/")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["support_bot.yaml", "triage.yaml"]
    for name in written:
        assert read_rule_file(tmp_path / "out" / name).ok


def test_import_several_agents_with_a_pattern(tmp_path: Path) -> None:
    result = _run(
        "import", FIXTURES / "support_double_encoded.af", "-o", f"{tmp_path}/rules-{{agent}}.yaml"
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rules-triage.yaml").exists()
    assert (tmp_path / "rules-support_bot.yaml").exists()


def test_import_agents_of_one_name_get_numbered_files(tmp_path: Path) -> None:
    document = json.loads((FIXTURES / "support.af").read_text())
    for agent in document["agents"]:
        agent["name"] = "bot/one"  # the same name, not file-name safe
    source = tmp_path / "twins.af"
    source.write_text(json.dumps(document))
    result = _run("import", source, "-o", f"{tmp_path}/out/")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "bot-one-2.yaml",
        "bot-one.yaml",
    ]
    pattern = _run("import", source, "-o", f"{tmp_path}/rules-{{agent}}.yaml")
    assert pattern.exit_code == 0, pattern.output
    assert (tmp_path / "rules-bot-one.yaml").exists() and (
        tmp_path / "rules-bot-one-2.yaml"
    ).exists()


def test_import_several_agents_needs_a_folder_pattern_or_agent(tmp_path: Path) -> None:
    result = _run("import", FIXTURES / "support.af", "-o", tmp_path / "one.yaml")
    assert result.exit_code == 2
    assert "--agent NAME" in result.output
    assert _run("import", FIXTURES / "support.af").exit_code == 2


def test_import_one_agent_by_name_or_id(tmp_path: Path) -> None:
    out = tmp_path / "triage.yaml"
    assert _run("import", FIXTURES / "support.af", "--agent", "triage", "-o", out).exit_code == 0
    assert read_rule_file(out).spec.agent == "triage"
    result = _run("import", FIXTURES / "support.af", "--agent", "agent-0")
    assert result.exit_code == 0
    assert "agent: support_bot" in result.stdout
    missing = _run("import", FIXTURES / "support.af", "--agent", "nobody")
    assert missing.exit_code == 2 and "agents: support_bot, triage" in missing.output


def test_lossy_import_writes_the_file_and_exits_1_unless_allowed(tmp_path: Path) -> None:
    out = tmp_path / "messy.yaml"
    result = _run("import", FIXTURES / "lossy.af", "-o", out)
    assert result.exit_code == 1
    assert "lossy: tool_rules[2]: names 'web_search'" in result.output
    assert "NOT TRANSLATED" in out.read_text() and read_rule_file(out).ok
    assert _run("import", FIXTURES / "lossy.af", "-o", out, "--allow-lossy").exit_code == 0


def test_import_of_a_bad_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.af"
    bad.write_text("{nope")
    result = _run("import", bad)
    assert result.exit_code == 2 and "not JSON" in result.output
    assert _run("import", tmp_path / "missing.af").exit_code == 2


def test_export_then_import_round_trip_through_the_cli(tmp_path: Path) -> None:
    rules_yaml = tmp_path / "bot.yaml"
    assert (
        _run(
            "import", FIXTURES / "support.af", "--agent", "support_bot", "-o", rules_yaml
        ).exit_code
        == 0
    )
    bare = tmp_path / "rules.json"
    result = _run("export", rules_yaml, "--letta", "-o", bare)
    assert result.exit_code == 0, result.output
    exported = json.loads(bare.read_text())
    original = json.loads((FIXTURES / "support_tool_rules.json").read_text())
    assert len(exported) == len(original)
    agent_json = tmp_path / "agent.json"
    assert _run("export", rules_yaml, "--letta", "--agent-json", "-o", agent_json).exit_code == 0
    again = tmp_path / "again.yaml"
    assert _run("import", agent_json, "-o", again).exit_code == 0
    assert read_rule_file(again).spec == read_rule_file(rules_yaml).spec


def test_lossy_export_warns_and_exits_1_unless_allowed(tmp_path: Path) -> None:
    rules_yaml = tmp_path / "native.yaml"
    rules_yaml.write_text(
        "version: 1\nagent: n\ntools: [a, b]\nrules:\n  - after: a\n    on_output: {true: b}\n"
    )
    result = _run("export", rules_yaml, "--letta")
    assert result.exit_code == 1
    assert "lossy: rule #1 (conditional) on a: the boolean case True" in result.output
    assert json.loads(result.stdout)[0]["child_output_mapping"] == {"true": "b"}
    assert _run("export", rules_yaml, "--letta", "--allow-lossy").exit_code == 0


def test_export_needs_the_format_and_a_valid_file(tmp_path: Path) -> None:
    rules_yaml = tmp_path / "broken.yaml"
    rules_yaml.write_text("version: 1\nagent: n\ntools: [a]\nrules:\n  - terminal: zz\n")
    assert _run("export", rules_yaml).exit_code == 2
    result = _run("export", rules_yaml, "--letta")
    assert result.exit_code == 1 and "E021" in result.output
