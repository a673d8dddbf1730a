"""`toolfsm check` across agents (issue 13): C130-C134 and the printed call-tree bound,
through the command line, on agent files written for each case."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from engine.cli import app

runner = CliRunner()


def _agent(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"version: 1\nagent: {name}\n" + textwrap.dedent(text), encoding="utf-8")
    return path


def _boss(folder: Path, query: str, extra: str = "") -> Path:
    return _agent(
        folder,
        "boss",
        f"""\
        tools:
          - name: ask
            agents: {query}
          - done
        rules:
          - terminal: done
          - max_calls: 1
            tools: [ask]
        run: {{max_steps: 4{extra}}}
        """,
    )


def _worker(folder: Path, name: str, tags: str, extra: str = "", steps: int = 3) -> Path:
    return _agent(
        folder, name, f"tags: {tags}\ntools: [work]\nrun: {{max_steps: {steps}}}\n{extra}"
    )


def _records(folder: Path) -> list[dict[str, object]]:
    result = runner.invoke(app, ["check", str(folder), "--format", "json"])
    return [r for r in json.loads(result.stdout) if str(r["code"]).startswith("C13")]


def test_a_query_that_matches_no_agent_is_an_error(tmp_path: Path) -> None:
    _boss(tmp_path, "{match_all: [reviewer], match_some: [backend]}")
    _worker(tmp_path, "w", "[reviewer, frontend]")
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert "boss.yaml:5:13: error[C130]: ask: its tag query" in result.output
    # One file alone is checked on its own: nothing to match against, no finding.
    assert runner.invoke(app, ["check", str(tmp_path / "w.yaml")]).exit_code == 0


def test_more_matches_than_max_callees_is_a_warning(tmp_path: Path) -> None:
    _boss(tmp_path, "{match_all: [w], max_callees: 1}")
    _worker(tmp_path, "a", "[w]")
    _worker(tmp_path, "b", "[w]")
    (record,) = _records(tmp_path)
    assert (record["code"], record["severity"]) == ("C131", "warning")
    assert "never messaged: b" in str(record["message"])


def test_cycles_and_depth_beyond_the_limit_are_errors(tmp_path: Path) -> None:
    cyc = tmp_path / "cycle"
    cyc.mkdir()
    _agent(cyc, "x", "tags: [x]\ntools:\n  - name: ask\n    agents: {match_all: [y]}\n")
    _agent(cyc, "y", "tags: [y]\ntools:\n  - name: ask\n    agents: {match_all: [x]}\n")
    codes = sorted(str(r["code"]) for r in _records(cyc))
    assert codes == ["C132", "C132"]
    deep = tmp_path / "deep"
    deep.mkdir()
    # Each caller's own limit counts: mid may only start runs at depth 1, under boss it
    # would start them at depth 2.
    _boss(deep, "{match_all: [mid]}")
    mid = "tags: [mid]\ntools:\n  - name: ask\n    agents: {match_all: [leaf]}\n"
    _agent(deep, "mid", mid + "run: {max_agent_depth: 1}\n")
    _worker(deep, "leaf", "[leaf]")
    records = _records(deep)
    assert [r["code"] for r in records] == ["C133"]
    assert "boss -> mid -> leaf nests 2 deep, deeper than mid's run.max_agent_depth (1)" in str(
        records[0]["message"]
    )


def test_a_callee_that_can_pause_for_approval_is_a_warning(tmp_path: Path) -> None:
    _boss(tmp_path, "{match_all: [w]}")
    _worker(tmp_path, "w", "[w]", "rules:\n  - requires_approval: work\n")
    (record,) = _records(tmp_path)
    assert (record["code"], record["severity"]) == ("C134", "warning")
    assert "callee w can pause for approval (work): boss then waits on a human" in str(
        record["message"]
    )


def test_the_bound_on_the_call_tree_is_printed(tmp_path: Path) -> None:
    _boss(tmp_path, "{match_all: [w]}")
    _worker(tmp_path, "a", "[w]", steps=3)
    _worker(tmp_path, "b", "[w]", steps=5)
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 0
    # boss: 4 of its own, plus one call (max_calls: 1) of a (3) and b (5).
    assert "note: boss's call tree makes at most 12 model call(s)" in result.output
