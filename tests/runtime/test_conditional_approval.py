"""Richer approvals, end to end through the CLI: `requires_approval` with `when:` (a JSON
Schema over the call's arguments), `runs approve --arguments` (edits checked against the
tool's schema and the rules' prefill) and the audit record `runs show` prints."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest

from engine import compile_rules, parse_rules
from tests.runtime._cli import ledger, make_workdir, only_run, toolfsm

AGENT = """\
version: 1
agent: refunds
tools: [lookup, refund, finish]
rules:
  - init: lookup
  - after: lookup
    allow: refund
    args: {refund: {currency: EUR}}
  - requires_approval: refund
    when: {properties: {amount: {exclusiveMinimum: 100}}}
  - terminal: finish
run:
  input: Refund order O-1.
"""

TOOLS = """\
import os


def _note(entry: str) -> None:
    with open(os.environ["LEDGER"], "a") as f:
        f.write(entry + "\\n")


def lookup(order_id: str) -> str:
    _note(f"lookup:{order_id}")
    return "order found"


def refund(order_id: str, amount: float, currency: str) -> str:
    _note(f"refund:{order_id}:{amount}:{currency}")
    return f"refunded {amount} {currency}"


def finish(note: str) -> str:
    _note("finish")
    return note
"""


def _script(amount: float) -> list[dict[str, object]]:
    return [
        {"call": "lookup", "args": {"order_id": "O-1"}},
        {"call": "refund", "args": {"order_id": "O-1", "amount": amount, "currency": "USD"}},
        {"call": "finish", "args": {"note": "done"}},
    ]


def _workdir(tmp_path: Path, amount: float) -> Path:
    return make_workdir(tmp_path, AGENT, TOOLS, _script(amount))


def test_a_call_below_the_threshold_runs_without_approval(tmp_path: Path) -> None:
    workdir = _workdir(tmp_path, 40)
    out = toolfsm(workdir, "run", "agent.yaml").stdout
    assert "stopped: terminal_tool" in out and "needs approval" not in out
    # The rules' prefilled currency won over the model's.
    assert ledger(workdir) == ["lookup:O-1", "refund:O-1:40.0:EUR", "finish"]
    assert only_run(workdir).decisions == ()


@pytest.fixture
def paused(tmp_path: Path) -> tuple[Path, str]:
    """A run held for the approval of a refund of 150 (above the `when:` threshold)."""
    workdir = _workdir(tmp_path, 150)
    out = toolfsm(workdir, "run", "agent.yaml").stdout
    assert "stopped: awaiting_approval" in out
    assert ledger(workdir) == ["lookup:O-1"]
    return workdir, only_run(workdir).run.id


def test_above_the_threshold_approved_with_edits_runs_the_edit(paused: tuple[Path, str]) -> None:
    workdir, run_id = paused
    edit = json.dumps({"order_id": "O-1", "amount": 120})
    out = toolfsm(workdir, "runs", "approve", run_id, "--arguments", edit, "--by", "lead").stdout
    assert "approved call_2 (refund)" in out and "stopped: terminal_tool" in out
    # The edited amount ran, once; the prefilled currency still applies.
    assert ledger(workdir) == ["lookup:O-1", "refund:O-1:120.0:EUR", "finish"]
    snap = only_run(workdir)
    (decision,) = snap.decisions
    assert (decision.call_id, decision.decision, decision.reviewer) == ("call_2", "approve", "lead")
    assert decision.arguments_before == {"order_id": "O-1", "amount": 150.0, "currency": "EUR"}
    assert decision.arguments_after == {"order_id": "O-1", "amount": 120.0, "currency": "EUR"}
    refund = next(c for c in snap.calls if c.tool == "refund")
    assert refund.arguments == decision.arguments_after and refund.result == "refunded 120.0 EUR"

    shown = toolfsm(workdir, "runs", "show", run_id).stdout.splitlines()
    at = shown.index("decisions")
    assert shown[at + 1].endswith("  approve call_2 by lead")
    assert shown[at + 1][2:21] == f"{decision.decided_at:%Y-%m-%d %H:%M:%S}"
    assert shown[at + 2] == '    arguments before: order_id="O-1", amount=150.0, currency="EUR"'
    assert shown[at + 3] == '    arguments after:  order_id="O-1", amount=120.0, currency="EUR"'
    as_json = json.loads(toolfsm(workdir, "runs", "show", run_id, "--json").stdout)
    assert as_json["decisions"][0]["reviewer"] == "lead"


EDITS_REFUSED = [
    (
        {"order_id": "O-1", "amount": "lots"},
        "the edit is refused: invalid arguments for 'refund': amount: Input should be a valid",
    ),
    (
        {"order_id": "O-1", "amount": 90, "currency": "USD"},
        'argument \'currency\' is prefilled by the rules to "EUR"; the edit sets it to "USD"',
    ),
    ({"order_id": "O-1", "amount": 90, "bogus": 1}, "bogus"),
    ({"amount": 90}, "order_id"),
]


def test_an_edit_that_breaks_the_schema_or_the_rules_is_refused(paused: tuple[Path, str]) -> None:
    workdir, run_id = paused
    for edit, reason in EDITS_REFUSED:
        failed = toolfsm(
            workdir, "runs", "approve", run_id, "--arguments", json.dumps(edit), code=2
        )
        (line,) = failed.stderr.splitlines()
        assert line.startswith(f"toolfsm: error: run {run_id}: call call_2 (refund): "), line
        assert reason in line, line
    for given, says in (("{", "--arguments is not valid JSON"), ("[1]", "a JSON object")):
        failed = toolfsm(workdir, "runs", "approve", run_id, "--arguments", given, code=2)
        assert says in failed.stderr
    # Nothing was recorded: the call still waits, nothing ran, the run can still be approved.
    snap = only_run(workdir)
    assert snap.run.status == "awaiting_approval" and snap.decisions == ()
    assert ledger(workdir) == ["lookup:O-1"]
    toolfsm(workdir, "runs", "approve", run_id)
    assert ledger(workdir)[1] == "refund:O-1:150.0:EUR"


def test_a_denial_is_recorded_with_the_os_user(paused: tuple[Path, str]) -> None:
    workdir, run_id = paused
    # (the scripted model then calls finish where the rules force a refund: it runs out)
    toolfsm(workdir, "runs", "deny", run_id, "--reason", "too much", code=1)
    (decision,) = only_run(workdir).decisions
    assert (decision.decision, decision.reason) == ("deny", "too much")
    assert decision.reviewer == getpass.getuser() and decision.arguments_after is None
    shown = toolfsm(workdir, "runs", "show", run_id).stdout
    assert f"deny call_2 by {getpass.getuser()}: too much" in shown
    assert ledger(workdir) == ["lookup:O-1"]


def test_the_machine_reads_when_and_check_treats_it_as_may_need_approval(
    tmp_path: Path,
) -> None:
    machine = compile_rules(parse_rules(AGENT, "agent.yaml"))
    assert "refund" in machine.approval  # may need approval
    assert machine.needs_approval("refund", {"amount": 100.5})
    assert not machine.needs_approval("refund", {"amount": 100})
    assert not machine.needs_approval("lookup", {"amount": 500})
    # A forced position where the only tool may need approval is no C120 (it does not pause
    # every time); without `when:` it is.
    workdir = _workdir(tmp_path, 1)
    checked = toolfsm(workdir, "check", "agent.yaml", "--format", "json", code=None).stdout
    assert "C120" not in checked
    # Letta's requires_approval has no condition: the export says what it loses.
    exported = toolfsm(workdir, "export", "agent.yaml", "--letta", code=1)
    assert (
        "rule #3 (requires_approval): `when:` dropped (Letta's requires_approval has no "
        "condition): every call of refund would need approval"
    ) in exported.stderr + exported.stdout
    (workdir / "always.yaml").write_text(AGENT.replace("    when:", "    # when:"))
    checked = toolfsm(workdir, "check", "always.yaml", "--format", "json", code=None).stdout
    assert "C120" in checked


@pytest.mark.parametrize(
    ("when", "says"),
    [
        ("{properties: {amount: {exclusiveMinimum: x}}}", "`when:` is not a valid JSON Schema"),
        ("{properties: {amuont: {minimum: 1}}}", "`when:` names 'amuont', which is not a"),
        ("{$ref: 'https://example.com/s.json'}", "`when:` is not a valid JSON Schema"),
    ],
)
def test_a_bad_when_is_an_error_at_its_line(tmp_path: Path, when: str, says: str) -> None:
    text = AGENT.replace("{properties: {amount: {exclusiveMinimum: 100}}}", when).replace(
        "tools: [lookup, refund, finish]", TYPED_TOOLS
    )
    workdir = make_workdir(tmp_path, text, TOOLS)
    failed = toolfsm(workdir, "validate", "agent.yaml", code=1)
    assert "E033" in failed.stdout and says in failed.stdout, failed.stdout
    line = text.splitlines().index(f"    when: {when}") + 1
    assert f"agent.yaml:{line}:" in failed.stdout


TYPED_TOOLS = """tools:
  - lookup
  - name: refund
    parameters:
      type: object
      properties: {order_id: {type: string}, amount: {type: number}, currency: {type: string}}
  - finish"""
