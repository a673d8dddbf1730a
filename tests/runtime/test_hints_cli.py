"""Every command a hint names works: `run`, `runs resume / approve / deny / show` print what to
do next (`approve: toolfsm runs approve RUN`, ...), and each hint is followed here, each in a
copy of the store as it was, and the hints its output prints in turn, until the run is done.

The states: paused for approval; approved by a process that died before it ran the call;
killed during a side-effect call (then cut off: a decision); and what a double claim leaves
behind (the run says `awaiting_decision`, but the call finished).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from engine.runtime import approve
from engine.store import Append, open_store
from engine.store.events import CallEntry, CallsStarted, Paused, Totals
from tests.runtime._cli import (
    copy_workdir,
    env_for,
    hinted_commands,
    ledger,
    make_workdir,
    only_run,
    run_and_kill,
    toolfsm,
)
from tests.runtime.test_durability import AGENT, SCRIPT, TOOLS

APPROVAL_SCRIPT = [
    {"call": "lookup", "args": {"account": "a1"}},
    {"call": "approve_refund", "args": {"refund_id": "r1"}},
    {"call": "finish"},
]


class Follower:
    """Follows hints depth-first; `followed` is every command run, `ledgers` the ledger of
    every branch that ended without further hints."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.followed: list[tuple[str, ...]] = []
        self.ledgers: list[list[str]] = []
        self._seen: set[tuple[Path, tuple[str, ...]]] = set()
        self._done: set[Path] = set()
        self._branches = itertools.count()

    def follow(self, state: Path, output: str, depth: int = 4) -> None:
        hinted = hinted_commands(output)
        if all(c[:2] == ("runs", "show") for c in hinted) and state not in self._done:
            self._done.add(state)  # nothing left to do here: the run is over
            self.ledgers.append(ledger(state))
        commands = [c for c in hinted if (state, c) not in self._seen]
        for command in commands:
            self._seen.add((state, command))
            if command[:2] == ("runs", "show"):
                # Read-only: it prints the hints for this same state.
                shown = toolfsm(state, *command)
                self.followed.append(command)
                self.follow(state, shown.stdout, depth)
                continue
            assert depth > 0, f"still not done after following {self.followed}"
            branch = copy_workdir(state, self.tmp / f"branch{next(self._branches)}")
            done = toolfsm(branch, *command)  # exit 0, or the assertion says what it printed
            assert "error:" not in done.stderr, done.stderr
            self.followed.append(command)
            self.follow(branch, done.stdout + done.stderr, depth - 1)


@pytest.fixture
def follower(tmp_path: Path) -> Follower:
    return Follower(tmp_path / "branches")


def _verbs(commands: list[tuple[str, ...]]) -> set[str]:
    return {" ".join(c[:2]) + (f" {c[-1]}" if c[-1].startswith("--") else "") for c in commands}


def test_hints_of_a_run_paused_for_approval(tmp_path: Path, follower: Follower) -> None:
    workdir = make_workdir(tmp_path / "w", AGENT, TOOLS, APPROVAL_SCRIPT)
    paused = toolfsm(workdir, "run", "agent.yaml")
    assert "stopped: awaiting_approval" in paused.stdout
    follower.follow(workdir, paused.stdout)
    assert _verbs(follower.followed) == {"runs approve", "runs deny", "runs show"}
    # Approved: the refund ran once; denied: never.
    assert sorted(follower.ledgers) == [
        ["lookup:a1", "approve_refund:r1", "finish:"],
        ["lookup:a1", "finish:"],
    ]


def test_an_approval_recorded_by_a_process_that_died_is_continued_by_the_hint(
    tmp_path: Path, follower: Follower
) -> None:
    workdir = make_workdir(tmp_path / "w", AGENT, TOOLS, APPROVAL_SCRIPT)
    toolfsm(workdir, "run", "agent.yaml")
    run_id = only_run(workdir).run.id
    # What `runs approve` leaves when it dies right after recording the approval.
    with open_store(env_for(workdir)["TOOLFSM_DB"]) as store:
        approve(store, run_id)
    shown = toolfsm(workdir, "runs", "show", run_id)
    assert "approve:" not in shown.stdout and "deny:" not in shown.stdout
    assert f"resume:  toolfsm runs resume {run_id[:12]}" in shown.stdout
    # Approving again says what to do instead.
    again = toolfsm(workdir, "runs", "approve", run_id, code=2)
    assert f"continue with: toolfsm runs resume {run_id[:12]}" in again.stderr
    follower.follow(workdir, shown.stdout)
    assert _verbs(follower.followed) == {"runs resume", "runs show"}
    assert follower.ledgers == [["lookup:a1", "approve_refund:r1", "finish:"]]


def test_hints_after_a_kill_during_a_side_effect_call(tmp_path: Path, follower: Follower) -> None:
    workdir = make_workdir(tmp_path / "w", AGENT, TOOLS, SCRIPT)
    run_and_kill(workdir, "charge:c2")
    shown = toolfsm(workdir, "runs", "show")
    follower.follow(workdir, shown.stdout)
    # resume (the killed run), then the decision it asks for: both of its options.
    assert _verbs(follower.followed) == {
        "runs show",
        "runs resume",
        "runs resume --retry",
        "runs resume --mark-failed",
    }
    settled = ["lookup:a1", "charge:c1", "lookup:a2", "charge:c2"]
    assert sorted(follower.ledgers) == sorted(
        [[*settled, "charge:c2", "finish:"], [*settled, "finish:"]]
    )


def test_no_decision_is_asked_for_a_call_that_finished(tmp_path: Path, follower: Follower) -> None:
    workdir = make_workdir(tmp_path / "w", AGENT, TOOLS, SCRIPT)
    run_and_kill(workdir, "charge:c2")
    run_id = only_run(workdir).run.id
    # What two owners of one run left behind: one finished the call, the other marked the
    # run as waiting for a decision on it.
    with open_store(env_for(workdir)["TOOLFSM_DB"]) as store:
        snap = store.load_run(run_id)
        (cut,) = snap.pending_calls
        run = snap.run
        finished = CallEntry(id=cut.call_id, status="finished", done=True, result="charged 20")
        totals = Totals(
            steps=run.steps_count,
            input_tokens=run.input_tokens,
            output_tokens=run.output_tokens,
            position=run.position,
        )
        events = [
            CallsStarted(step=cut.step_seq, calls=[finished]),
            Paused(status="awaiting_decision", stop_reason="awaiting_decision", totals=totals),
        ]
        store.claim_run(run_id, "test:1:x")
        assert store.append([Append(run_id, "test:1:x", events, release=True)]) == [None]
    shown = toolfsm(workdir, "runs", "show", run_id)
    assert "decide:" not in shown.stdout and "--retry" not in shown.stdout
    follower.follow(workdir, shown.stdout)
    assert _verbs(follower.followed) == {"runs show", "runs resume"}
    assert follower.ledgers == [["lookup:a1", "charge:c1", "lookup:a2", "charge:c2", "finish:"]]
