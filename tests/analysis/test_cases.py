"""Each finding and assertion kind: a failing case file (finding, location, trace) and a twin."""

from __future__ import annotations

import pytest

from engine.analysis import check_path
from engine.language.loader import read_rule_file
from engine.machine.compiler import compile_rules
from tests.analysis.helpers import CASES, replay

# file stem, code, (line, column) of the finding, its counterexample trace (None: none)
FAILING = [
    ("c101_dead_end", "C101", (8, 5), ("research", "publish")),
    ("c102_unreachable_tool", "C102", (3, 20), None),
    ("c103_rule_never_fires", "C103", (8, 5), None),
    ("c104_shadowed_case", "C104", (9, 7), None),
    ("c105_required_unreachable", "C105", (11, 5), ()),
    ("c106_unused_child", "C106", (6, 20), None),
    ("c107_max_calls_conflict", "C107", (8, 5), ("think", "think")),
    ("c108_strict_dead_end", "C108", (5, 5), ("lookup=other",)),
    ("c110_trap", "C110", (5, 5), ()),
    ("c120_approval_forced", "C120", (5, 5), ("draft",)),
    ("c121_terminal_never_ends", "C121", (8, 5), None),
    ("a100_unknown_tool", "A100", (7, 21), None),
    ("a101_never", "A101", (7, 5), ("delete_all",)),
    ("a102_never_after", "A102", (7, 5), ("send", "edit")),
    ("a103_only_after", "A103", (7, 5), ("charge",)),
    ("a104_always_before", "A104", (8, 5), ("search",)),
    ("a105_at_most", "A105", (7, 5), ("search", "search", "search")),
    ("a106_eventually", "A106", (7, 5), ()),
    ("a107_ends_with", "A107", (8, 5), ("search",)),
]

PASSING = [stem + "_ok" for stem, *_ in FAILING if (CASES / f"{stem}_ok.yaml").exists()] + [
    "c120_approval_silenced",
    "answer_only_search_once",
]


@pytest.mark.parametrize(("stem", "code", "where", "expected_trace"), FAILING)
def test_failing_case_reports_the_finding_where_and_how(
    stem: str, code: str, where: tuple[int, int], expected_trace: tuple[str, ...] | None
) -> None:
    result = check_path(CASES / f"{stem}.yaml")
    matching = [d for d in result.diagnostics if d.code == code]
    assert len(matching) == 1, result.diagnostics
    diagnostic = matching[0]
    assert (diagnostic.span.line, diagnostic.span.column) == where
    assert diagnostic.trace == expected_trace
    if expected_trace is not None:
        finding = result.finding(code)
        machine = compile_rules(read_rule_file(CASES / f"{stem}.yaml"))
        rows = replay(machine, expected_trace)
        assert rows[-1].position == finding.position
    assert result.ok == (diagnostic.severity == "warning")


@pytest.mark.parametrize("stem", PASSING)
def test_passing_twin_is_clean(stem: str) -> None:
    result = check_path(CASES / f"{stem}.yaml")
    assert result.diagnostics == []
    assert result.ok


def test_every_failing_case_has_a_twin() -> None:
    missing = [s for s, *_ in FAILING if s != "a100_unknown_tool" and f"{s}_ok" not in PASSING]
    assert missing == []


@pytest.mark.parametrize(
    ("stem", "code"), [("c101_dead_end", "C101"), ("c108_strict_dead_end", "C108")]
)
def test_dead_end_trace_replays_to_a_dead_end(stem: str, code: str) -> None:
    result = check_path(CASES / f"{stem}.yaml")
    machine = compile_rules(read_rule_file(CASES / f"{stem}.yaml"))
    rows = replay(machine, result.finding(code).trace or ())
    assert rows[-1].reason == "dead_end"
    assert rows[-1].allowed == ()


def test_silenced_warning_is_kept_with_its_reason() -> None:
    result = check_path(CASES / "c120_approval_silenced.yaml")
    assert [(d.code, reason) for d, reason in result.silenced] == [
        ("C120", "every draft must be reviewed by an editor before it goes out")
    ]


def test_errors_cannot_be_silenced_and_stale_silences_are_reported(tmp_path) -> None:
    path = tmp_path / "silences.yaml"
    path.write_text(
        (CASES / "c110_trap.yaml").read_text()
        + "silence:\n  - code: C110\n    reason: no\n  - code: C104\n    reason: stale\n"
    )
    result = check_path(path)
    codes = result.codes()
    assert "C110" in codes  # still reported
    assert "C198" in codes and "C199" in codes
    lines = {d.code: d.span.line for d in result.diagnostics}
    assert lines["C198"] == 12 and lines["C199"] == 14


def test_invalid_file_reports_validation_errors_only(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nagent: x\ntools: [a]\nrules:\n  - terminal: b\n")
    result = check_path(path)
    assert [d.code for d in result.diagnostics] == ["E021"]
    assert result.graph is None


def test_bound_is_reported_clearly(tmp_path) -> None:
    result = check_path(CASES / "c105_required_unreachable_ok.yaml", max_states=2)
    bound = result.finding("C190")
    assert bound.diagnostic.is_error
    assert "--max-states" in (bound.diagnostic.hint or "")
    assert result.states == 2


def test_heartbeat_mode_counts_a_call_without_heartbeat_as_an_end() -> None:
    assert check_path(CASES / "heartbeat_ends_default_trap.yaml").codes() == ["C110"]
    result = check_path(CASES / "heartbeat_ends.yaml")
    assert result.diagnostics == []
    graph = result.graph
    assert graph is not None
    machine = graph.machine
    ends = 0
    for p in range(len(graph)):
        for step_id, target in graph.out(p):
            if target == -1:  # END
                step = graph.steps[step_id]
                new = machine.advance(graph.position(p), step.tool, step.output)
                verdict = machine.after_call(new, step.tool, heartbeat=False)
                assert verdict.stop_reason is not None and verdict.reason == "no_heartbeat"
                ends += 1
    assert ends == 1  # `act` can end the run; `plan` has a child rule and always goes on
