"""CI outputs checked by the real tools: SARIF by Microsoft's SARIF Multitool with GitHub's
ingestion rules, GitHub annotations by their documented form, and text output that never
starts a workflow command.

The Multitool (npm `@microsoft/sarif-multitool-linux`) is found through
`$TOOLFSM_SARIF_MULTITOOL`, else in the cache folder `.ci/run` installs it into. Without node
the test is skipped, saying so; `.ci/run` sets the variable, so in CI a missing Multitool fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from engine.codes import CODES

ROOT = Path(__file__).parent.parent
TOOLFSM = Path(sys.executable).parent / "toolfsm"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "toolfsm-ci"
DEFAULT_MULTITOOL = (
    CACHE / "sarif-multitool/node_modules/@microsoft/sarif-multitool-linux/Sarif.Multitool"
)

UNKNOWN_TOOL = """\
version: 1
agent: broken
tools: [search, answer]
rules:
  - after: search
    allow: [answer, serach]
"""
WARNINGS_ONLY = """\
version: 1
agent: warned
tools: [search, answer]
rules:
  - terminal: answer
  - terminal: [answer]
"""
CHECK_FINDING = """\
version: 1
agent: think
tools: [think, answer]
rules:
  - after: think
    allow: [think]
  - max_calls: 1
    tools: [think]
  - terminal: answer
"""
FAILED_EXPECT = """\
version: 1
agent: notes
tools: [search, answer]
rules:
  - terminal: answer
expect:
  - never: answer
    note: |
      answering is fine here
      ::warning::a workflow command hidden in a note
"""


def toolfsm(*args: str | Path, cwd: Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(TOOLFSM), *map(str, args)],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "with space.yaml").write_text(UNKNOWN_TOOL, encoding="utf-8")
    (tmp_path / "rules" / "warned.yaml").write_text(WARNINGS_ONLY, encoding="utf-8")
    (tmp_path / "rules" / "think.yaml").write_text(CHECK_FINDING, encoding="utf-8")
    (tmp_path / "rules" / "notes.yaml").write_text(FAILED_EXPECT, encoding="utf-8")
    return tmp_path


def multitool() -> Path:
    configured = os.environ.get("TOOLFSM_SARIF_MULTITOOL")
    if configured:
        assert Path(configured).is_file(), f"TOOLFSM_SARIF_MULTITOOL={configured} is missing"
        return Path(configured)
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the SARIF Multitool (npm) cannot run")
    if not DEFAULT_MULTITOOL.is_file():
        pytest.skip(
            "the SARIF Multitool is not installed: bash .ci/run installs it, or "
            f"npm install --prefix {DEFAULT_MULTITOOL.parents[3]} @microsoft/sarif-multitool-linux"
        )
    return DEFAULT_MULTITOOL


def sarif_logs(project: Path) -> dict[str, Path]:
    """SARIF from validate and check: relative paths, an absolute one, standard input."""
    absolute = project / "rules" / "think.yaml"
    outputs = {
        "validate": toolfsm("validate", "rules", "-f", "sarif", cwd=project),
        "check": toolfsm("check", "rules", "-f", "sarif", cwd=project),
        "absolute": toolfsm("check", absolute, "-f", "sarif", cwd=project),
        "stdin": toolfsm("validate", "-", "-f", "sarif", cwd=project, stdin=UNKNOWN_TOOL),
    }
    logs = {}
    for name, text in outputs.items():
        logs[name] = project / f"{name}.sarif"
        logs[name].write_text(text, encoding="utf-8")
    return logs


def test_sarif_passes_the_multitool_with_github_rules(project: Path) -> None:
    tool = multitool()
    for name, log in sarif_logs(project).items():
        report = project / f"{name}.validation.sarif"
        done = subprocess.run(
            [str(tool), "validate", str(log), "--rule-kind", "Sarif;Gh", "--output", str(report)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0 and report.is_file(), done.stdout + done.stderr
        results = json.loads(report.read_text(encoding="utf-8"))["runs"][0]["results"]
        problems = [
            f"{r['ruleId']} {r.get('level', 'warning')}: {r['message'].get('text', r['message'])}"
            for r in results
            if r.get("level", "warning") in ("error", "warning")
        ]
        assert problems == [], f"{name}: {problems}"


def test_sarif_carries_rule_metadata_uris_version_and_ends(project: Path) -> None:
    logs = sarif_logs(project)
    validate = json.loads(logs["validate"].read_text())["runs"][0]
    assert validate["tool"]["driver"]["version"] == version("toolfsm")
    rules = {rule["id"]: rule for rule in validate["tool"]["driver"]["rules"]}
    assert set(rules) == {"E021", "W201"}
    e021 = rules["E021"]
    assert e021["shortDescription"]["text"] == "A rule names a tool the agent does not have."
    assert e021["fullDescription"]["text"] and e021["name"] == "UndeclaredTool"
    assert "**E021" in e021["help"]["markdown"]
    assert e021["helpUri"].endswith("README.md#the-rule-language")
    located = {r["ruleId"]: r["locations"][0]["physicalLocation"] for r in validate["results"]}
    assert located["E021"]["artifactLocation"]["uri"] == "rules/with%20space.yaml"
    assert located["E021"]["region"] == {
        "startLine": 6,
        "startColumn": 21,
        "endLine": 6,
        "endColumn": 27,
    }
    results = json.loads(logs["absolute"].read_text())["runs"][0]["results"]
    c107 = next(r for r in results if r["ruleId"] == "C107")
    uri = c107["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == (project / "rules" / "think.yaml").as_uri()
    assert c107["properties"]["trace"] == ["think"]  # a finding keeps its counterexample


def test_every_code_the_engine_reports_is_described() -> None:
    reported = set()
    for source in (ROOT / "engine").rglob("*.py"):
        reported |= set(re.findall(r"[\"']([EWCA]\d{3})[\"']", source.read_text()))
    reported |= {f"A10{i}" for i in range(8)}  # built from the assertion kinds
    assert reported - set(CODES) == set()
    for info in CODES.values():
        assert info.summary and info.description and info.section and info.name.isidentifier()


GITHUB = re.compile(
    r"^::(?P<level>error|warning) file=(?P<file>[^,]+),line=(?P<line>\d+),col=(?P<col>\d+),"
    r"endLine=(?P<end_line>\d+),endColumn=(?P<end_col>\d+),title=toolfsm \((?P<code>[EWCA]\d{3})\)"
    r"::(?P<message>.+)$"
)


def test_github_annotations_have_end_positions_and_a_title(project: Path) -> None:
    lines = toolfsm("validate", "rules", "-f", "github", cwd=project).splitlines()
    matches = [GITHUB.match(line) for line in lines]
    assert all(matches), lines
    e021 = next(m for m in matches if m and m["code"] == "E021")
    assert (e021["file"], e021["line"], e021["col"]) == ("rules/with space.yaml", "6", "21")
    assert (e021["end_line"], e021["end_col"]) == ("6", "27")


def test_text_output_never_starts_a_workflow_command(project: Path) -> None:
    text = toolfsm("check", "rules/notes.yaml", cwd=project)
    assert "a workflow command hidden in a note" in text
    assert not [line for line in text.splitlines() if line.startswith("::")], text
    github = toolfsm("check", "rules/notes.yaml", "-f", "github", cwd=project)
    # In annotations the note is data: its newlines are escaped, nothing starts a line.
    assert len(github.splitlines()) == 1 and "%0A::warning::" in github
