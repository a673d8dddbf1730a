"""The command line's conventions, through the installed `toolfsm` script in subprocesses:
`--version`, `-q`/`-v`, `-` for standard input, one error style, shell completion, and a core
that imports neither the LLM SDKs nor Hypothesis (they are extras)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests._inprocess import toolfsm_in_process

ROOT = Path(__file__).parent.parent
TOOLFSM = Path(sys.executable).parent / "toolfsm"
SCREENING = ROOT / "rules" / "screening.yaml"
BROKEN = """\
version: 1
agent: broken
tools: [search, answer]
rules:
  - init: serch
"""


def toolfsm(
    *args: str | Path,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """The console script in a subprocess with `process=True` (what is about the process:
    `--version` before any import, shell completion, an SDK hidden by sitecustomize); in
    this process otherwise (tests/_inprocess.py)."""
    if not process:
        result = toolfsm_in_process(
            [str(a) for a in args],
            env={**os.environ, **(env or {})},
            cwd=os.getcwd(),
            input=(stdin or "").encode(),
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result
    result = subprocess.run(
        [str(TOOLFSM), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("toolfsm: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == ""


def test_version_is_the_installed_distributions() -> None:
    result = toolfsm("--version", process=True)
    assert result.returncode == 0
    assert result.stdout == f"toolfsm {version('toolfsm')}\n"


def test_usage_errors_and_toolfsm_errors_share_one_style(tmp_path: Path) -> None:
    one_error_line(toolfsm("validate", "--no-such-option", SCREENING), "--no-such-option")
    one_error_line(toolfsm("validate"), "missing argument", "toolfsm validate --help")
    one_error_line(toolfsm("validate", "-f", "xml", SCREENING), "'xml'", "--format")
    one_error_line(toolfsm("no-such-command"), "no-such-command")
    one_error_line(toolfsm("validate", tmp_path / "missing.yaml"), "no such file or folder")
    one_error_line(toolfsm("-q", "-v", "validate", SCREENING), "'-q' / '-v'", "not both")


def test_dash_reads_the_rule_file_from_standard_input() -> None:
    for command in ("validate", "check"):
        result = toolfsm(command, "-", stdin=BROKEN)
        assert result.returncode == 1, result.stderr
        assert result.stdout.startswith("<stdin>:5:11: error[E021]: "), result.stdout
        assert "did you mean 'search'?" in result.stdout
    good = toolfsm("check", "-", "--format", "json", stdin=SCREENING.read_text())
    assert good.returncode == 0 and json.loads(good.stdout) == []
    one_error_line(toolfsm("validate", "-", "-", stdin=BROKEN), "standard input")


def test_quiet_prints_only_findings_and_verbose_each_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    normal = toolfsm("validate", broken, SCREENING)
    assert "2 file(s) checked: 1 error(s), 0 warning(s)" in normal.stderr
    quiet = toolfsm("-q", "validate", broken, SCREENING)
    assert quiet.returncode == 1 and quiet.stderr == ""
    assert quiet.stdout == normal.stdout
    verbose = toolfsm("--verbose", "check", broken, SCREENING)
    assert f"{broken}: 1 error(s), 0 warning(s)" in verbose.stderr.splitlines()
    assert f"{SCREENING}: 0 error(s), 0 warning(s)" in verbose.stderr.splitlines()


def test_shell_completion_is_available() -> None:
    script = toolfsm("--show-completion", env={"SHELL": "/bin/bash"}, process=True)
    assert script.returncode == 0 and "_TOOLFSM_COMPLETE" in script.stdout, script.stderr
    words = toolfsm(
        env={"_TOOLFSM_COMPLETE": "complete_bash", "COMP_WORDS": "toolfsm va", "COMP_CWORD": "1"},
        process=True,
    )
    assert "validate" in words.stdout.split()


def _modules_after(argv_lists: list[list[str]], cwd: Path) -> set[str]:
    """Top-level modules imported by running these toolfsm commands in one process."""
    code = (
        "import json, sys\n"
        "from engine.cli import run_cli\n"
        f"for argv in {argv_lists!r}:\n"
        "    run_cli(argv)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.__stderr__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=False,
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_the_core_imports_no_llm_sdk_and_no_hypothesis(tmp_path: Path) -> None:
    rules = str(SCREENING)
    exported = str(tmp_path / "tool_rules.json")
    commands = [
        ["validate", rules],
        ["check", rules],
        ["graph", rules],
        ["trace", rules, "retrieve_candidate"],
        ["explain", rules, "send_email"],
        ["simulate", rules, "--runs", "5", "--no-progress"],
        ["export", rules, "--letta", "-o", exported],
        ["import", exported, "-o", str(tmp_path / "imported.yaml")],
        [
            "run",
            str(ROOT / "examples" / "screening" / "agent.yaml"),
            "--db",
            str(tmp_path / "runs.db"),
        ],
        ["runs", "list", "--db", str(tmp_path / "runs.db")],
        ["runs", "show", "--db", str(tmp_path / "runs.db")],
    ]
    imported = _modules_after(commands, tmp_path)
    assert "engine" in imported and "sqlalchemy" in imported  # the commands did run
    assert not imported & {"openai", "anthropic", "hypothesis"}


def test_version_imports_neither_typer_nor_rich_nor_the_store() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['toolfsm', '--version']\n"
        "from engine.entry import main\n"
        "main()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = done.stdout.splitlines()[-1]
    for heavy in ("typer", "rich", "sqlalchemy", "pydantic", "yaml"):
        assert f"'{heavy}'" not in modules


@pytest.mark.parametrize(
    ("model", "extra", "sdk"),
    [("openai:gpt-4.1-mini", "openai", "openai"), ("anthropic:claude-x", "anthropic", "anthropic")],
)
def test_a_missing_provider_extra_is_one_line_naming_it(
    tmp_path: Path, model: str, extra: str, sdk: str
) -> None:
    # The SDK made unimportable, as in an install without the extra.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(f"import sys\nsys.modules[{sdk!r}] = None\n")
    result = toolfsm(
        "run",
        ROOT / "examples" / "screening" / "agent.yaml",
        "--model",
        model,
        "--db",
        tmp_path / "runs.db",
        env={"PYTHONPATH": str(hide), "OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"},
        process=True,
    )
    name = {"openai": "OpenAI", "anthropic": "Anthropic"}[extra]
    assert result.stderr == (
        f"toolfsm: error: the {name} provider needs: pip install 'toolfsm[{extra}]'\n"
    )
    assert result.returncode == 2


def test_the_hypothesis_strategies_name_their_extra_when_it_is_missing(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['hypothesis'] = None\n")
    code = (
        "import engine.testing\n"
        "try:\n"
        "    engine.testing.traces\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)])},
        check=True,
    )
    assert done.stdout == (
        "engine.testing (Hypothesis strategies) needs: pip install 'toolfsm[testing]'\n"
    )


def test_output_is_not_wrapped_or_cut_when_not_a_terminal(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    agent = ROOT / "examples" / "screening" / "agent.yaml"
    words = " ".join(f"word{i}" for i in range(40))  # far wider than 80 columns
    run = toolfsm("run", agent, "--db", db, "--input", f"Please screen A-1043. {words}")
    assert run.returncode == 0, run.stderr
    script = (agent.parent / "script.yaml").resolve()
    assert any(f"model scripted:{script}" in line for line in run.stdout.splitlines())
    listed = toolfsm("runs", "list", "--db", db).stdout
    (record,) = json.loads(toolfsm("runs", "list", "--db", db, "--json").stdout)
    assert record["run_id"] in listed  # the whole id, not a 12-character prefix
    shown = toolfsm("runs", "show", "--db", db).stdout.splitlines()
    assert f"input: Please screen A-1043. {words}" in shown
    support = toolfsm("run", ROOT / "examples" / "support" / "agent.yaml", "--db", db).stdout
    results = [line for line in support.splitlines() if line.startswith("  ← {")]
    assert results and all(line.endswith("}") for line in results)  # not cut at 160 characters


def test_runs_list_and_show_print_json_records(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    done = toolfsm("run", ROOT / "examples" / "support" / "agent.yaml", "--db", db)
    assert done.returncode == 0, done.stderr
    (listed,) = json.loads(toolfsm("runs", "list", "--db", db, "--json").stdout)
    shown = json.loads(toolfsm("runs", "show", listed["run_id"], "--db", db, "--json").stdout)
    for record in (listed, shown):
        assert record["agent"] == "support"
        assert (record["status"], record["stop_reason"]) == ("awaiting_approval",) * 2
        assert record["parent_run_id"] is None
        calls = [call for step in record["steps"] for call in step["calls"]]
        assert [(c["tool"], c["status"]) for c in calls] == [
            ("refund", "violation"),
            ("lookup_order", "finished"),
        ]
        assert calls[1]["arguments"] == {"order_id": "O-5531"}
        assert calls[1]["result"]["order_id"] == "O-5531"
        (waiting,) = record["pending_calls"]
        assert (waiting["tool"], waiting["status"]) == ("refund", "awaiting_approval")
    assert shown["agent_record"]["name"] == "support" and shown["messages"]


def test_a_command_group_alone_prints_its_help_once() -> None:
    for args in ([], ["runs"]):
        result = toolfsm(*args)
        assert result.returncode == 2
        assert (result.stdout + result.stderr).count("Usage: toolfsm") == 1


def test_format_json_is_one_document_also_for_the_command_lines_own_errors() -> None:
    # Click refuses these before the command runs (an option out of range, a missing
    # argument, an unknown option): the document must come all the same, saying what the
    # error line says.
    for args, fragment in (
        (("check", SCREENING, "--max-states", "0", "--format", "json"), "'--max-states'"),
        (("validate", "--format=json"), "missing argument"),
        (("-q", "check", "-fjson", SCREENING, "--no-such-option"), "--no-such-option"),
        (("-q", "-v", "check", SCREENING, "--format", "json"), "'-q' / '-v'"),
    ):
        result = toolfsm(*args)
        assert result.returncode == 2, result.stderr
        (record,) = json.loads(result.stdout)
        assert (record["code"], record["severity"], record["file"]) == ("usage", "error", None)
        assert fragment in record["message"]
        assert result.stderr == f"toolfsm: error: {record['message']}\n"
    # Text stays text: the last --format is text, or the command's --format has no json.
    one_error_line(
        toolfsm("check", SCREENING, "-f", "json", "-f", "text", "--max-states", "0"),
        "--max-states",
    )
    one_error_line(toolfsm("graph", SCREENING, "--format", "json"), "'json'")
