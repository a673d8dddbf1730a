"""Many runs of one event loop sharing transactions through `GroupCommit`."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from engine.machine import StopReason
from engine.providers.scripted import ScriptedProvider
from engine.runtime import Runner
from engine.runtime.journal import GroupCommit
from engine.store.events import Decided
from tests.runtime._helpers import make_agent

AGENT = """
version: 1
agent: counter
tools: [tick, stop]
rules:
  - continue: tick
  - terminal: stop
"""


def tick(n: int) -> int:
    """Count."""
    return n


def stop() -> str:
    """Stop."""
    return "stopped"


def _script(steps: int) -> list[dict]:
    ticks = [{"call": "tick", "args": {"n": i}} for i in range(steps - 1)]
    return [*ticks, {"call": "stop", "args": {}}]


def test_concurrent_runs_share_transactions_and_each_step_is_committed(store) -> None:
    agent = make_agent(AGENT, tick, stop, idempotent=("tick",))
    group = GroupCommit(store)
    runs, steps = 20, 4

    async def main() -> list:
        async def one(i: int):
            runner = Runner(
                agent, ScriptedProvider(_script(steps)), store=store, group_commit=group
            )
            return await runner.run(f"run {i}")

        return await asyncio.gather(*(one(i) for i in range(runs)))

    results = asyncio.run(main())
    assert {r.stop_reason for r in results} == {StopReason.TERMINAL_TOOL}
    # One flush to create each run, one per step with an idempotent tick, two for the stop
    # (a side-effect call): far fewer transactions, since the runs step in lockstep.
    assert group.batches == runs * (1 + steps + 1)
    assert group.transactions < group.batches / 5
    for result in results:
        snap = store.load_run(result.run_id)
        assert [s.seq for s in snap.steps] == list(range(steps))
        assert [c.result for c in snap.calls if c.tool == "tick"] == list(range(steps - 1))
        assert [m.seq for m in snap.messages] == list(range(1 + 2 * steps))
        assert snap.run.status == "finished" and snap.pending_calls == ()


def test_a_failing_run_does_not_undo_the_others(store) -> None:
    agent = make_agent(AGENT, tick, stop)
    group = GroupCommit(store)

    class Conflicting(GroupCommit):
        """Commits through `group`, but adds a decision on a call that does not exist to
        run 0's step commits (the store refuses it: `CallNotFound`)."""

        async def write(self, append):
            if append.run_id == ids[0] and any(
                e["kind"] == "step_committed" for e in append.events
            ):
                bogus = Decided(call="no-such-call", decision="approve")
                append = replace(append, events=[*append.events, bogus])
            await group.write(append)

    ids = ["g-bad", "g-good-1", "g-good-2"]

    async def main() -> list:
        wrapper = Conflicting(store)

        async def one(run_id: str):
            runner = Runner(agent, ScriptedProvider(_script(2)), store=store, group_commit=wrapper)
            try:
                return await runner.run("go", run_id=run_id)
            except Exception as exc:  # the error is the result under test
                return exc

        return await asyncio.gather(*(one(i) for i in ids))

    bad, *good = asyncio.run(main())
    # The refused write stops that run (a conflict: nothing more written), not the others.
    assert bad.stop_reason is StopReason.ERROR
    assert bad.error.startswith("the store refused a write: ") and "no-such-call" in bad.error
    assert store.get_run(ids[0]).steps_count == 0
    for result in good:
        assert result.stop_reason is StopReason.TERMINAL_TOOL
        assert store.get_run(result.run_id).steps_count == 2
