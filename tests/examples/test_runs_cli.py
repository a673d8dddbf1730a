"""`toolfsm runs list` and `toolfsm runs show`: what a user reads after a run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _example_cli import Cli


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, str, str]:
    """A store with a finished screening run and a support run waiting for approval."""
    cli = Cli(Path(tmp_path_factory.mktemp("runs")) / "runs.db")
    cli("run", "examples/screening/agent.yaml")
    screening = cli.last_run().run.id
    cli("run", "examples/support/agent.yaml")
    support = cli.last_run().run.id
    return cli, screening, support


def test_list_shows_newest_first_with_status_and_counts(two_runs: tuple[Cli, str, str]) -> None:
    cli, screening, support = two_runs
    lines = cli("runs", "list").stdout.splitlines()
    rows = [line for line in lines if screening[:12] in line or support[:12] in line]
    assert len(rows) == 2
    assert support[:12] in rows[0] and screening[:12] in rows[1]
    cells = [c.strip() for c in rows[0].strip("│ ").split("│")]
    assert cells[:6] == [
        support,  # output is not a terminal: whole ids, usable as they are
        "support",
        "awaiting_approval",
        "awaiting_approval",
        "2",
        "1436/57",
    ]
    cells = [c.strip() for c in rows[1].strip("│ ").split("│")]
    assert cells[:6] == [screening, "screening", "finished", "terminal_tool", "3", "1430/75"]


def test_list_filters_and_json(two_runs: tuple[Cli, str, str]) -> None:
    cli, screening, support = two_runs
    waiting = json.loads(cli("runs", "list", "--status", "awaiting_approval", "--json").stdout)
    assert [r["id"] for r in waiting] == [support]
    by_agent = json.loads(cli("runs", "list", "--agent", "screening", "--json").stdout)
    assert [(r["id"], r["stop_reason"]) for r in by_agent] == [(screening, "terminal_tool")]
    none = cli("runs", "list", "--agent", "nobody").stdout
    assert none.strip() == f"no runs matching the filters in sqlite:///{cli.db}"


def test_show_prints_header_steps_calls_and_results(two_runs: tuple[Cli, str, str]) -> None:
    cli, screening, _ = two_runs
    out = cli("runs", "show", screening[:6]).stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"run {screening}  agent screening  model scripted:")
    assert lines[1].startswith(
        "status finished  stop reason terminal_tool  steps 3  tokens 1430 in / 75 out"
    )
    assert lines[2] == "input: Please screen application A-1042."
    assert (
        "step 1  after:load_application → after:check_requirements=True  continue (rule_continues)"
        in lines
    )
    assert "  allowed: check_requirements (forced: check_requirements)" in lines
    # The duration is the tool's real one (0 ms on an idle machine, more under load).
    assert re.search(
        r'^  call_2 check_requirements\(application_id="A-1042", role="backend-engineer"\) '
        r"\[finished\] \d+ ms$",
        out,
        re.MULTILINE,
    ), out
    assert "  model: All requirements are met; inviting the candidate." in lines
    assert (
        "    Interview booked for Ada Moreno on 2025-03-03T10:00 (confirmation IV-1042)." in lines
    )
    # A finished run needs nothing more.
    assert "approve:" not in out and "resume:" not in out


def test_show_of_a_paused_run_names_the_waiting_call_and_the_commands(
    two_runs: tuple[Cli, str, str],
) -> None:
    cli, _, support = two_runs
    lines = cli("runs", "show", support).stdout.splitlines()
    assert lines[1].startswith("status awaiting_approval  stop reason awaiting_approval  steps 2")
    # The violation, with its arguments as the model sent them and the rule it broke.
    violation = lines.index(
        '  call_1 refund(order_id="O-5531", amount=39.9, reason="lid cracked on delivery") [violation]'
    )
    assert "may only be called right after 'lookup_order'" in lines[violation + 1]
    assert "examples/support/agent.yaml:" in lines[violation + 1]
    # The refund of the uncommitted step waits.
    pending = lines.index("step 2  (not committed yet)")
    # The paused step's reply was stored before the tool was held back, and is shown.
    assert lines[pending + 1].startswith("  model: The order was delivered")
    assert lines[pending + 2].endswith("[awaiting_approval]") and "refund(" in lines[pending + 2]
    assert lines[-2:] == [
        f"approve: toolfsm runs approve {support[:12]}",
        f"deny:    toolfsm runs deny {support[:12]} --reason TEXT",
    ]


def test_show_json_is_the_stored_run(two_runs: tuple[Cli, str, str]) -> None:
    cli, screening, _ = two_runs
    data = json.loads(cli("runs", "show", screening, "--json").stdout)
    assert data["run"]["id"] == screening and len(data["steps"]) == 3
    assert [c["tool"] for c in data["calls"]] == [
        "load_application",
        "check_requirements",
        "schedule_interview",
    ]


def test_show_unknown_run_is_a_one_line_error(two_runs: tuple[Cli, str, str]) -> None:
    cli, _, _ = two_runs
    proc = cli("runs", "show", "ffffffffffff", check=None)
    assert proc.returncode != 0
    assert proc.stderr.startswith("toolfsm: error:") and "Traceback" not in proc.stderr
    assert "ffffffffffff" in proc.stderr


def test_show_without_an_id_shows_the_newest_run(two_runs: tuple[Cli, str, str]) -> None:
    cli, _, support = two_runs
    assert cli("runs", "show").stdout.startswith(f"run {support}  agent support")


def test_show_on_an_empty_store_says_so(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "empty.db")
    proc = cli("runs", "show", check=2)
    assert proc.stderr.strip() == f"toolfsm: error: no runs in sqlite:///{cli.db}"
