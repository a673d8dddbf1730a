"""A run's journal: what the loop records, in its own words, and when it must be durable.

The loop tells the run's journal what happened (`reply_received`, `call_started`,
`call_held`, `call_finished`, `violation`, `step_committed`, `stopped`, ...) and awaits
`flush` at the durability points; it builds no store operation itself. A run without a store
has a `NullJournal`, which records nothing. `Journal` maps each record onto today's store
operations (`engine.store.writes`), buffered and committed, as one transaction, only where
durability matters:

- before a tool with side effects runs (its "started" record must be on disk first), and
  before any tool runs while a side-effect call's result is still buffered (`flush_due`);
- at the end of every step (`step_committed`), before the next model call;
- when the run stops or pauses, and when its task is cancelled.

Every batch is fenced by the run's lease (`KeepLease` first in it, or `ReleaseLease` last when
the run stops): a process whose lease was taken over writes nothing more, so it cannot record
or start a call; and every flush renews the lease. While the run waits (a model call, a slow
tool) a heartbeat renews it every third of its length.

So a step whose calls are idempotent costs one transaction, a step with one side-effect call
two. What stays in the buffer until the step commit (the reply, the records of idempotent
calls and of violations) is lost with the process; a resume then asks the model again and
re-runs the idempotent calls, which is what it does for an interrupted idempotent call anyway.

`GroupCommit` collects the flushes that all runs of one event loop make during one loop
iteration and commits them in a single transaction (`RunStore.write_many`); every run still
waits for its own flush to be committed before it goes on.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.machine import Gate, StopReason
from engine.providers.base import Message, ToolCall
from engine.providers.errors import MalformedReply
from engine.runtime.state import PendingStep, RunState, message_to_dict, reply_to_dict
from engine.tools import ToolResult

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported only when a run has a store
    from engine.runtime.agent import Agent
    from engine.store.writes import KeepLease, Op

__all__ = ["GroupCommit", "Journal", "NullJournal", "RunJournal", "status_for"]

# How each stop reason is filed in the store's run status.
_STATUS = {
    StopReason.END_TURN: "finished",
    StopReason.TERMINAL_TOOL: "finished",
    StopReason.DEAD_END: "finished",
    StopReason.STEP_LIMIT: "finished",
    StopReason.AWAITING_APPROVAL: "awaiting_approval",
    StopReason.AWAITING_DECISION: "awaiting_decision",
    StopReason.ERROR: "failed",
    StopReason.CANCELLED: "cancelled",
    StopReason.FORCING_IGNORED: "failed",
}


def status_for(stop: StopReason) -> str:
    """The store's run status for a stop reason."""
    return _STATUS[stop]


def lease_seconds_from_env() -> float | None:
    """$TOOLFSM_LEASE_SECONDS, when it is a positive number."""
    text = os.environ.get("TOOLFSM_LEASE_SECONDS", "").strip()
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and value > 0 else None


class GroupCommit:
    """Commits the batches handed to `write` during one event-loop iteration together.

    Runs on the event loop's thread: the commit blocks the loop for one transaction, as a
    direct store call would, but one transaction now carries the steps of every run that
    reached a durability point in that iteration.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._pending: list[tuple[str, Sequence[Op], asyncio.Future[None]]] = []
        self._scheduled = False
        self.transactions = 0  # commits made (for benchmarks and tests)
        self.batches = 0  # run batches committed in them

    async def write(self, run_id: str, ops: Sequence[Op]) -> None:
        """Commit `ops` for `run_id`; returns once they are committed (or raises why not)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((run_id, ops, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit)
        await future

    def _commit(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        try:
            errors = self.store.write_many([(run_id, ops) for run_id, ops, _ in pending])
        except Exception as exc:
            for _, _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        self.transactions += 1
        self.batches += len(pending)
        for (_, _, future), error in zip(pending, errors, strict=True):
            if future.done():  # its run was cancelled meanwhile; the write stands
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


class Journal:
    """A stored run's journal: its records as store operations, buffered until `flush`."""

    __slots__ = (
        "_allowed",
        "_beat",
        "_dump",
        "_group",
        "_position",
        "_reply",
        "_w",
        "fresh_until",
        "lease",
        "ops",
        "run_id",
        "store",
        "urgent",
    )

    durable = True

    def __init__(
        self,
        store: Any,
        run_id: str,
        group: GroupCommit | None = None,
        lease: KeepLease | None = None,
        dump: Callable[[Any], Any] | None = None,
    ) -> None:
        from engine.store import writes

        self._w = writes
        self.store = store
        self.run_id = run_id
        self._group = group
        self.ops: list[Op] = []
        # True while the buffer holds something a crash must not lose before another tool
        # runs: the result of a call with side effects.
        self.urgent = False
        # The lease every batch is fenced by and renews (None: not held, e.g. released).
        self.lease = lease
        # Until when (time.monotonic) the lease is known to be held: renewed by a write
        # that started before this minus its length.
        self.fresh_until = time.monotonic() + lease.seconds if lease is not None else 0.0
        self._beat: asyncio.TimerHandle | None = None
        # Encoded once and stored twice: the run's position (the last step's after, the next
        # one's before), and the pending step's reply (its message and the step), by seq.
        self._position: tuple[Any, Any] | None = None  # (position, Encoded)
        self._reply: tuple[int, Any] | None = None  # (seq, Encoded)
        # A gate's allowed tools as stored with each step: encoded once per gate.
        self._allowed: dict[tuple[str, ...], Any] = {}
        self._dump = dump  # the machine's `dump` (a position as stored)

    # -- opening -----------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        store: Any,
        group: GroupCommit | None,
        *,
        agent: Agent,
        model: str,
        options: dict[str, Any],
        first: Message,
        position: Any,
        position_dump: Any,
        run_id: str | None,
        owner: str | None,
        lease_seconds: float | None,
    ) -> Journal:
        """Record a new run (with its first message) and hold it: the run exists in the
        store before its first model call, leased to `owner` (default: a new id)."""
        from engine.store import new_owner_id, new_run_id

        w = cls._writes()
        seconds = resolve_lease_seconds(lease_seconds)
        owner = owner or new_owner_id()
        record = store.save_agent(agent.name, agent.rules_text, agent.rules_path)
        journal = cls(store, run_id or new_run_id(), group, dump=agent.machine.dump)
        encoded = w.Encoded(position_dump)
        journal._position = (position, encoded)
        journal.add(
            w.CreateRun(
                run_id=journal.run_id,
                agent_id=record.id,
                rules_hash=record.rules_hash,
                model=model,
                input=first.text or "",
                options=options,
                position=encoded,
                owner=owner,
                lease_seconds=seconds,
            )
        )
        journal.add(w.AppendMessages([message_to_dict(first)], 0))
        await journal.flush()
        journal.lease = w.KeepLease(owner, seconds)
        journal.fresh_until = time.monotonic() + seconds
        return journal

    @classmethod
    def resume(
        cls,
        store: Any,
        group: GroupCommit | None,
        *,
        run_id: str,
        agent: Agent,
        owner: str | None,
        lease_seconds: float | None,
    ) -> tuple[Journal, RunState, PendingStep | None]:
        """Claim a stored run (`RunClaimed` if another live process holds it, before
        anything is read) and load where it stands."""
        from engine.runtime.resume import load_state
        from engine.store import new_owner_id

        seconds = resolve_lease_seconds(lease_seconds)
        owner = owner or new_owner_id()
        store.claim_run(run_id, owner, seconds=seconds)
        try:
            state, pending = load_state(store, run_id, agent)
        except BaseException:
            with suppress(Exception):  # the error being raised says what went wrong
                store.release_run(run_id, owner)
            raise
        lease = cls._writes().KeepLease(owner, seconds)
        journal = cls(store, state.run_id, group, lease, agent.machine.dump)
        return journal, state, pending

    @staticmethod
    def _writes() -> Any:
        from engine.store import writes

        return writes

    # -- what happened -----------------------------------------------------------------

    def step_started(self) -> datetime | None:
        """The time a step starts, as recorded with it."""
        return datetime.now(UTC)

    def reply_received(self, state: RunState, step: PendingStep) -> None:
        """The reply of `step` arrived: stored as an assistant message tied to the step (a
        resume finds the reply of the step that is not committed by its number)."""
        w = self._w
        reply_json = w.Encoded(reply_to_dict(step.reply, step.message))
        self._reply = (step.seq, reply_json)
        self.ops.append(w.AppendMessages([reply_json], state.next_message, step.seq))
        state.next_message += 1

    def call_started(
        self, step: PendingStep, index: int, call: ToolCall, arguments: Any, side_effects: bool
    ) -> None:
        """Call `index` of `step` is about to run (`flush_due` says whether it must be on
        disk first)."""
        self.ops.append(
            self._start(step, index, call, arguments, side_effects, self._w.CallStatus.STARTED)
        )

    async def call_held(
        self, step: PendingStep, index: int, call: ToolCall, arguments: Any, side_effects: bool
    ) -> None:
        """Call `index` of `step` waits for approval: on disk when this returns (a reviewer
        may act on it at once)."""
        w = self._w
        self.ops.append(
            self._start(step, index, call, arguments, side_effects, w.CallStatus.AWAITING_APPROVAL)
        )
        await self.flush()

    def _start(
        self,
        step: PendingStep,
        index: int,
        call: ToolCall,
        arguments: Any,
        side_effects: bool,
        status: Any,
    ) -> Any:
        return self._w.StartCall(
            step.call_keys[index],
            step_seq=step.seq,
            batch_index=index,
            tool=call.name,
            arguments_raw=call.arguments,
            arguments=arguments,
            status=status,
            side_effects=side_effects,
        )

    def call_approved(self, key: str) -> None:
        """An approved call starts running."""
        self.ops.append(self._w.SetCallStatus(key, self._w.CallStatus.STARTED))

    def call_finished(self, key: str, result: ToolResult, side_effects: bool) -> None:
        """A call returned (or raised: `result.is_error`)."""
        w = self._w
        status = w.CallStatus.ERROR if result.is_error else w.CallStatus.FINISHED
        self.ops.append(
            w.FinishCall(key, status, result.output, result.is_error, result.duration_ms)
        )
        if side_effects:
            self.urgent = True

    def call_failed(self, key: str, message: str) -> None:
        """A side-effect call interrupted by a crash is given up as failed (a decision)."""
        w = self._w
        self.ops.append(w.FinishCall(key, w.CallStatus.FAILED, message, True))
        self.urgent = True

    def violation(
        self,
        seq: int,
        index: int,
        key: str,
        call: ToolCall,
        message: str,
        side_effects: bool,
    ) -> None:
        """Call `index` of step `seq` was refused, not executed, for `message`."""
        w = self._w
        self.ops.append(
            w.StartCall(
                key,
                step_seq=seq,
                batch_index=index,
                tool=call.name,
                arguments_raw=call.arguments,
                status=w.CallStatus.VIOLATION,
                violation=message,
                side_effects=side_effects,
            )
        )
        self.ops.append(w.FinishCall(key, w.CallStatus.VIOLATION, message, True))

    def step_committed(
        self,
        state: RunState,
        step: PendingStep,
        position: Any,
        decision: str,
        reason: str,
        messages: list[Message],
        stop: StopReason | None,
        error: str | None,
    ) -> None:
        """`step` is done: `state` stands at its end (`position`, the machine's dump of
        `state.position`), `messages` (the tool results and any nag) follow its reply.
        With `stop`, the run stops here (and gives its lease up). Durable after `flush`."""
        w = self._w
        reply = step.reply
        usage = reply.usage
        position_json = w.Encoded(position)
        before = self._encoded_position(step.position_before)
        self._position = (state.position, position_json)
        reply_json = self._reply[1] if self._reply and self._reply[0] == step.seq else None
        self._reply = None
        end: dict[str, Any] = {}
        if stop is not None:
            end = {"status": status_for(stop), "stop_reason": stop.value}
            if error is not None:
                end["error"] = error
        self.ops.append(
            w.CommitStep(
                # Built from the loop's own values: no validation pass needed.
                w.StepValues(
                    seq=step.seq,
                    position_before=before,
                    position_after=position_json,
                    allowed=self._allowed_json(step.gate.allowed),
                    force=step.gate.force,
                    forced_tool=step.gate.forced_tool,
                    tool_choice=reply.tool_choice_sent,
                    reply=reply_json or reply_to_dict(reply),
                    decision=decision,
                    reason=reason,
                    started_at=step.started_at,
                    finished_at=None,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                ),
                [message_to_dict(m) for m in messages],
                first_message_seq=state.next_message,
                **end,
            )
        )
        state.next_message += len(messages)
        if stop is not None:
            self._release()

    async def stopped(self, stop: StopReason, error: str | None = None) -> None:
        """The run stops (or pauses) outside a step commit: on disk, lease given up."""
        self.ops.append(
            self._w.UpdateRun(
                status=status_for(stop),
                stop_reason=stop.value,
                error=error if stop is StopReason.ERROR else None,
            )
        )
        self._release()
        await self.flush()

    async def malformed_step(
        self, state: RunState, gate: Gate, started: datetime | None, exc: MalformedReply
    ) -> None:
        """A step whose reply was no reply: committed with the server's body as its reply
        (no message in the history); the run stops with an error, on disk."""
        w = self._w
        position = self._encoded_position(state.position)
        self.ops.append(
            w.CommitStep(
                w.StepValues(
                    seq=state.seq,
                    position_before=position,
                    position_after=position,
                    allowed=self._allowed_json(gate.allowed),
                    force=gate.force,
                    forced_tool=gate.forced_tool,
                    tool_choice=exc.tool_choice_sent,
                    reply={"role": "assistant", "malformed": exc.raw, "error": exc.message},
                    decision="stop",
                    reason="malformed_reply",
                    started_at=started or datetime.now(UTC),
                    finished_at=None,
                    input_tokens=0,
                    output_tokens=0,
                ),
                [],
                first_message_seq=state.next_message,
                status=status_for(StopReason.ERROR),
                stop_reason=StopReason.ERROR.value,
                error=str(exc),
            )
        )
        self._release()
        await self.flush()

    def cancelled(self) -> None:
        """The run's task is being cancelled: whatever is buffered is committed with the
        status, at once, on this thread (the task must not wait for a group commit)."""
        self.ops.append(
            self._w.UpdateRun(status="cancelled", stop_reason=StopReason.CANCELLED.value)
        )
        self._release()
        self.flush_now()

    def abandoned(self, exc: BaseException) -> None:
        """An error the loop does not handle ends it: the run stays resumable; the lease is
        given up if it is still this process's (nothing buffered is written)."""
        from engine.store import LeaseLost

        if self.lease is None or isinstance(exc, LeaseLost):
            return
        self.ops = []
        self._release()
        with suppress(Exception):
            self.flush_now()

    def refused(self, exc: BaseException) -> bool:
        """Whether `exc` is the store refusing this run's write (the run then stops on
        record, `store_failed`), rather than a lost lease (the run is another process's)."""
        from engine.store import LeaseLost
        from engine.store.errors import StoreError

        return isinstance(exc, StoreError) and not isinstance(exc, LeaseLost)

    def store_failed(self, error: str) -> None:
        """After a refused write: what was buffered is dropped, the stop recorded and the
        lease given up, if the store takes them (resumable from the last committed step)."""
        self.ops = []  # what the store refused is not sent again
        self.ops.append(
            self._w.UpdateRun(
                status=status_for(StopReason.ERROR),
                stop_reason=StopReason.ERROR.value,
                error=error,
            )
        )
        self._release()
        with suppress(Exception):  # the store is gone: the result says why
            self.flush_now()

    def _release(self) -> None:
        """End the batch being written by giving the run's lease up (the run stops here)."""
        lease = self.lease
        if lease is not None:
            self.ops.append(self._w.ReleaseLease(lease.owner))
            self.lease = None

    def _encoded_position(self, position: Any) -> Any:
        cached = self._position
        if cached is not None and cached[0] is position:
            return cached[1]
        assert self._dump is not None
        return self._w.Encoded(self._dump(position))

    def _allowed_json(self, allowed: tuple[str, ...]) -> Any:
        encoded = self._allowed.get(allowed)
        if encoded is None:
            encoded = self._allowed[allowed] = self._w.Encoded(list(allowed))
        return encoded

    # -- durability --------------------------------------------------------------------

    def add(self, op: Op) -> None:
        self.ops.append(op)

    def flush_due(self, side_effects: bool) -> bool:
        """Whether the buffer must be on disk before the next call runs: a side effect must
        be on record as started before it happens, and an earlier side effect's result
        before anything else runs; and no tool runs under a lease that may have lapsed (the
        flush renews it, or says it is lost)."""
        return side_effects or self.urgent or self.stale()

    def _take(self) -> tuple[list[Op], float]:
        ops, self.ops = self.ops, []
        self.urgent = False
        lease = self.lease
        if lease is None:
            return ops, 0.0
        ops.insert(0, lease)
        return ops, time.monotonic() + lease.seconds

    async def flush(self, *, renew: bool = False) -> None:
        """Commit the buffer (one transaction, possibly shared with other runs); with
        `renew`, renew the lease even when nothing is buffered."""
        if not self.ops and not (renew and self.lease is not None):
            return
        ops, fresh = self._take()
        if self._group is None:
            self.store.write(self.run_id, ops)
        else:
            await self._group.write(self.run_id, ops)
        self.fresh_until = max(self.fresh_until, fresh)

    def flush_now(self) -> None:
        """Commit the buffer at once, on this thread (for a task being cancelled)."""
        if self.ops:
            ops, fresh = self._take()
            self.store.write(self.run_id, ops)
            self.fresh_until = max(self.fresh_until, fresh)

    def stale(self) -> bool:
        """Whether the lease must be renewed before a tool runs: more than half of it has
        passed since it was last confirmed (a heartbeat that could not run, e.g. while a
        blocking tool held the event loop)."""
        lease = self.lease
        return lease is not None and time.monotonic() > self.fresh_until - lease.seconds / 2

    # -- the heartbeat -----------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Renew the lease every third of its length until `stop_heartbeat` (or release)."""
        if self.lease is not None:
            loop = asyncio.get_running_loop()
            self._beat = loop.call_later(self.lease.seconds / 3, self._heartbeat)

    def stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None

    def _heartbeat(self) -> None:
        lease = self.lease
        if lease is None:
            self._beat = None
            return
        now = time.monotonic()
        # A write in the last third renewed it already.
        if now > self.fresh_until - lease.seconds * 2 / 3:
            try:
                self.store.write(self.run_id, [lease])
            except Exception:
                # Lost, or the store is unreachable: the next flush (fenced) says which and
                # stops the run; the heartbeat keeps trying meanwhile.
                pass
            else:
                self.fresh_until = max(self.fresh_until, now + lease.seconds)
        loop = asyncio.get_running_loop()
        self._beat = loop.call_later(lease.seconds / 3, self._heartbeat)


class NullJournal:
    """The journal of a run without a store: it records nothing, and nothing is ever due.

    The loop calls the same methods on it as on a `Journal`, so it has no branches for a run
    without a store; each method is a no-op (`flush` and the async ones return at once)."""

    __slots__ = ()

    durable = False

    def start_heartbeat(self) -> None:
        pass

    def stop_heartbeat(self) -> None:
        pass

    def step_started(self) -> datetime | None:
        return None

    def reply_received(self, state: RunState, step: PendingStep) -> None:
        pass

    def call_started(
        self, step: PendingStep, index: int, call: ToolCall, arguments: Any, side_effects: bool
    ) -> None:
        pass

    async def call_held(
        self, step: PendingStep, index: int, call: ToolCall, arguments: Any, side_effects: bool
    ) -> None:
        raise RuntimeError("approval needs a store to pause the run in")

    def call_approved(self, key: str) -> None:
        pass

    def call_finished(self, key: str, result: ToolResult, side_effects: bool) -> None:
        pass

    def call_failed(self, key: str, message: str) -> None:
        pass

    def violation(
        self,
        seq: int,
        index: int,
        key: str,
        call: ToolCall,
        message: str,
        side_effects: bool,
    ) -> None:
        pass

    def flush_due(self, side_effects: bool) -> bool:
        return False

    async def flush(self, *, renew: bool = False) -> None:
        pass

    def step_committed(
        self,
        state: RunState,
        step: PendingStep,
        position: Any,
        decision: str,
        reason: str,
        messages: list[Message],
        stop: StopReason | None,
        error: str | None,
    ) -> None:
        pass

    async def stopped(self, stop: StopReason, error: str | None = None) -> None:
        pass

    async def malformed_step(
        self, state: RunState, gate: Gate, started: datetime | None, exc: MalformedReply
    ) -> None:
        pass

    def cancelled(self) -> None:
        pass

    def abandoned(self, exc: BaseException) -> None:
        pass

    def refused(self, exc: BaseException) -> bool:
        return False

    def store_failed(self, error: str) -> None:
        pass


RunJournal = Journal | NullJournal
"""What the loop records through: a stored run's journal, or the null one."""


def resolve_lease_seconds(given: float | None) -> float:
    """A stored run's lease length: `given`, else $TOOLFSM_LEASE_SECONDS, else the store's
    default (`engine.store.LEASE_SECONDS`)."""
    if given:
        return given
    from engine.store import LEASE_SECONDS

    return lease_seconds_from_env() or LEASE_SECONDS
