"""A run's journal: what the loop records, in its own words, and when it must be durable.

The loop tells the run's journal what happened (`reply_received`, `call_started`,
`call_held`, `call_finished`, `violation`, `step_committed`, `stopped`, ...) and awaits
`flush` at the durability points; it builds no store write itself. A run without a store has
a `NullJournal`, which records nothing. `Journal` turns the records into the store's events
(`engine.store.events`), buffered and appended, one event per durability point:

- before a tool with side effects runs (its "started" record must be on disk first), and
  before any tool runs while a side-effect call's result is still buffered (`flush_due`):
  `calls_started`, with the step's reply if it is not on disk yet;
- at the end of every step, before the next model call: `step_committed`;
- when the run pauses or stops, and when its task is cancelled: `paused` / `stopped`.

Every append is fenced by the run's lease: a process whose lease was taken over appends
nothing more, so it cannot record or start a call. The lease is renewed by a heartbeat every
third of its length while the run waits (a model call, a slow tool), and by the flush before
a tool runs when more than half of it has passed since (`stale`).

So a step whose calls are idempotent costs one transaction (one row), a step with one
side-effect call two. What stays in the buffer until the step commit (the reply, the records
of idempotent calls and of violations) is lost with the process; a resume then asks the model
again and re-runs the idempotent calls, which is what it does for an interrupted idempotent
call anyway.

`GroupCommit` collects the appends that all runs of one event loop make during one loop
iteration and commits them in a single transaction; every run still waits for its own append
to be committed before it goes on.
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
from engine.store.errors import LeaseLost, StoreError
from engine.store.protocol import LEASE_SECONDS, Append, Store
from engine.store.status import RunStatus
from engine.tools import ToolResult

if TYPE_CHECKING:
    from engine.runtime.agent import Agent
    from engine.runtime.agents import AgentLink
    from engine.store.records import AgentRecord

__all__ = ["GroupCommit", "Journal", "NullJournal", "RunJournal", "status_for"]

# How each stop reason is filed in the store's run status.
_STATUS = {
    StopReason.END_TURN: RunStatus.FINISHED,
    StopReason.TERMINAL_TOOL: RunStatus.FINISHED,
    StopReason.DEAD_END: RunStatus.FINISHED,
    StopReason.STEP_LIMIT: RunStatus.FINISHED,
    StopReason.AWAITING_APPROVAL: RunStatus.AWAITING_APPROVAL,
    StopReason.AWAITING_DECISION: RunStatus.AWAITING_DECISION,
    StopReason.AWAITING_AGENTS: RunStatus.AWAITING_AGENTS,
    StopReason.ERROR: RunStatus.FAILED,
    StopReason.CANCELLED: RunStatus.CANCELLED,
    StopReason.FORCING_IGNORED: RunStatus.FAILED,
}


def status_for(stop: StopReason) -> RunStatus:
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
    """Commits the appends handed to `write` during one event-loop iteration together.

    Runs on the event loop's thread: the commit blocks the loop for one transaction, as a
    direct store call would, but one transaction now carries the steps of every run that
    reached a durability point in that iteration.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[Append, asyncio.Future[None]]] = []
        self._scheduled = False
        self.transactions = 0  # commits made (for benchmarks and tests)
        self.batches = 0  # run appends committed in them

    async def write(self, append: Append) -> None:
        """Commit `append`; returns once it is committed (or raises why not)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((append, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit)
        await future

    def _commit(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        try:
            errors = self.store.append([append for append, _ in pending])
        except Exception as exc:
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            return
        self.transactions += 1
        self.batches += len(pending)
        for (_, future), error in zip(pending, errors, strict=True):
            if future.done():  # its run was cancelled meanwhile; the write stands
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


_Draft = dict[str, Any]  # an event as the store takes it: its model's fields, kind and version


def _draft(kind: str, fields: dict[str, Any]) -> _Draft:
    fields["kind"] = kind
    fields["version"] = 1
    return fields


class Journal:
    """A stored run's journal: its records buffered as events until `flush` appends them."""

    __slots__ = (
        "_beat",
        "_calls",
        "_dump",
        "_events",
        "_group",
        "_next_event",
        "_position",
        "_release",
        "_reply",
        "_seq",
        "_staged",
        "_totals",
        "fresh_until",
        "lease",
        "owner",
        "run_id",
        "store",
        "urgent",
    )

    durable = True

    def __init__(
        self,
        store: Store,
        run_id: str,
        owner: str,
        group: GroupCommit | None = None,
        *,
        lease: float | None,
        dump: Callable[[Any], Any] | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.owner = owner
        self._group = group
        # The lease length while it is held (None: released, nothing more is written).
        self.lease = lease
        # Until when (time.monotonic) the lease is known to be held: its last renewal.
        self.fresh_until = time.monotonic() + lease if lease is not None else 0.0
        self._beat: asyncio.TimerHandle | None = None
        # The buffer: finished events, and the open step's reply and call records.
        self._events: list[_Draft] = []
        self._reply: dict[str, Any] | None = None
        self._calls: list[dict[str, Any]] = []
        self._seq = 0  # the open step's number
        # The number of the next event: this journal's lease makes it the run's only writer,
        # so it numbers its appends itself (`Append.seq`; None: the store numbers them).
        self._next_event: int | None = 0
        self._release = False  # give the lease up with the next append
        # True while the buffer holds a side-effect call's result: on disk before any
        # other tool runs.
        self.urgent = False
        self._dump = dump  # the machine's `dump` (a position as stored)
        self._position: tuple[Any, Any] = (None, None)  # (position, its dump)
        # Where the run stands as committed (for a pause or stop event's totals), and as it
        # will once the buffered step commit is (None: nothing buffered).
        self._totals: dict[str, Any] = {"steps": 0, "input_tokens": 0, "output_tokens": 0}
        self._staged: dict[str, Any] | None = None

    # -- opening -----------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        store: Store,
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
        link: AgentLink | None = None,
    ) -> Journal:
        """Record a new run (with its first message) and hold it: the run exists in the
        store before its first model call, leased to `owner` (default: a new id)."""
        from engine.store.ids import new_owner_id, new_run_id

        seconds = resolve_lease_seconds(lease_seconds)
        record = store.save_agent(agent.name, agent.rules_text, agent.rules_path)
        journal = cls(
            store,
            run_id or new_run_id(),
            owner or new_owner_id(),
            group,
            lease=seconds,
            dump=agent.machine.dump,
        )
        journal._position = (position, position_dump)
        journal._totals["position"] = position_dump
        created = run_created(record, model, options, first, position_dump, link)
        journal._events.append(created)
        await journal.flush(renew=True)  # the new run's first lease
        return journal

    @classmethod
    def resume(
        cls,
        store: Store,
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
        from engine.store.ids import new_owner_id

        seconds = resolve_lease_seconds(lease_seconds)
        owner = owner or new_owner_id()
        store.claim_run(run_id, owner, seconds=seconds)
        try:
            state, pending = load_state(store, run_id, agent, owner)
        except BaseException:
            with suppress(Exception):  # the error being raised says what went wrong
                store.release_run(run_id, owner)
            raise
        journal = cls(store, state.run_id, owner, group, lease=seconds, dump=agent.machine.dump)
        journal._totals = _totals(state, journal._dumped(state.position))
        journal._seq = state.seq
        journal._next_event = state.next_event
        return journal, state, pending

    # -- what happened -----------------------------------------------------------------

    def step_started(self) -> datetime | None:
        """The time a step starts, as recorded with it."""
        return datetime.now(UTC)

    def reply_received(self, state: RunState, step: PendingStep) -> None:
        """The reply of `step` arrived: recorded with the step's first append."""
        self._seq = step.seq
        self._reply = reply_to_dict(step.reply, step.message)
        state.next_message += 1

    def call_started(
        self, step: PendingStep, index: int, call: ToolCall, arguments: Any, side_effects: bool
    ) -> None:
        """Call `index` of `step` is about to run (`flush_due` says whether it must be on
        disk first)."""
        self._open(step.seq, step.call_keys[index], index, call, arguments, side_effects)

    async def call_held(
        self, step: PendingStep, index: int, call: ToolCall, arguments: Any, side_effects: bool
    ) -> None:
        """Call `index` of `step` waits for approval: on disk when this returns (a reviewer
        may act on it at once)."""
        key = step.call_keys[index]
        self._open(step.seq, key, index, call, arguments, side_effects)
        self._calls[-1]["status"] = "awaiting_approval"
        await self.flush()

    def _open(
        self,
        seq: int,
        key: str,
        index: int,
        call: ToolCall,
        arguments: Any,
        side_effects: bool,
        **more: Any,
    ) -> None:
        self._seq = seq
        self._calls.append(
            {
                "id": key,
                "status": "started",
                "step": seq,
                "index": index,
                "tool": call.name,
                "arguments_raw": call.arguments,
                "arguments": arguments,
                "side_effects": side_effects,
                **more,
            }
        )

    def call_approved(self, key: str) -> None:
        """An approved call starts running."""
        self._calls.append({"id": key, "status": "started"})

    def call_finished(self, key: str, result: ToolResult, side_effects: bool) -> None:
        """A call returned (or raised: `result.is_error`)."""
        self._calls.append(
            {
                "id": key,
                "status": "error" if result.is_error else "finished",
                "done": True,
                "result": result.output,
                "is_error": result.is_error,
                "duration_ms": result.duration_ms,
            }
        )
        if side_effects:
            self.urgent = True

    def call_failed(self, key: str, message: str) -> None:
        """A side-effect call interrupted by a crash is given up as failed (a decision)."""
        self._close_open()
        decided = {"call": key, "decision": "mark_failed", "by": self.owner, "result": message}
        self._events.append(_draft("decided", decided))
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
        self._open(
            seq,
            key,
            index,
            call,
            None,
            side_effects,
            violation=message,
            done=True,
            result=message,
            is_error=True,
        )
        self._calls[-1]["status"] = "violation"

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
        reply = step.reply
        usage = reply.usage
        recorded = {
            "seq": step.seq,
            "position_before": self._dumped(step.position_before),
            "position_after": position,
            "allowed": step.gate.allowed,
            "force": step.gate.force,
            "forced_tool": step.gate.forced_tool,
            "tool_choice": reply.tool_choice_sent,
            "reply": self._reply or reply_to_dict(reply, step.message),
            "decision": decision,
            "reason": reason,
            "started_at": step.started_at,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
        }
        self._commit_step(recorded, [message_to_dict(m) for m in messages])
        state.next_message += len(messages)
        self._position = (state.position, position)
        self._staged = _totals(state, position)
        if stop is not None:
            self._stop(stop, error)

    def _commit_step(self, recorded: dict[str, Any], messages: list[Any], **more: Any) -> None:
        self._reply = None
        calls, self._calls = self._calls, []
        event = {"step": recorded, "calls": calls, "messages": messages, **more}
        self._events.append(_draft("step_committed", event))

    async def stopped(self, stop: StopReason, error: str | None = None) -> None:
        """The run stops (or pauses) outside a step commit: on disk, lease given up."""
        self._stop(stop, error if stop is StopReason.ERROR else None)
        await self.flush()

    async def malformed_step(
        self, state: RunState, gate: Gate, started: datetime | None, exc: MalformedReply
    ) -> None:
        """A step whose reply was no reply: committed with the server's body as its reply
        (no message in the history); the run stops with an error, on disk."""
        position = self._dumped(state.position)
        recorded = {
            "seq": state.seq,
            "position_before": position,
            "position_after": position,
            "allowed": gate.allowed,
            "force": gate.force,
            "forced_tool": gate.forced_tool,
            "tool_choice": exc.tool_choice_sent,
            "reply": {"role": "assistant", "malformed": exc.raw, "error": exc.message},
            "decision": "stop",
            "reason": "malformed_reply",
            "started_at": started or datetime.now(UTC),
        }
        self._commit_step(recorded, [], reply_in_history=False)
        self._staged = {**self._totals, "steps": state.seq + 1}
        self._stop(StopReason.ERROR, str(exc))
        await self.flush()

    def cancelled(self) -> None:
        """The run's task is being cancelled: whatever is buffered is committed with the
        status, at once, on this thread (the task must not wait for a group commit)."""
        self._stop(StopReason.CANCELLED, None)
        self.flush_now()

    def abandoned(self, exc: BaseException) -> None:
        """An error the loop does not handle ends it: the run stays resumable; the lease is
        given up if it is still this process's (nothing buffered is written)."""
        if self.lease is None or isinstance(exc, LeaseLost):
            return
        self._drop()
        self._release = True
        with suppress(Exception):
            self.flush_now()

    def refused(self, exc: BaseException) -> bool:
        """Whether `exc` is the store refusing this run's write (the run then stops on
        record, `store_failed`), rather than a lost lease (the run is another process's)."""
        return isinstance(exc, StoreError) and not isinstance(exc, LeaseLost)

    def store_failed(self, error: str) -> None:
        """After a refused write: what was buffered is dropped, the stop recorded and the
        lease given up, if the store takes them (resumable from the last committed step)."""
        self._drop()  # what the store refused is not sent again
        self._stop(StopReason.ERROR, error)
        with suppress(Exception):  # the store is gone: the result says why
            self.flush_now()

    # -- the buffer --------------------------------------------------------------------

    def _stop(self, stop: StopReason, error: str | None) -> None:
        """Buffer the pause or stop event; the lease is given up with it."""
        self._close_open()
        status = status_for(stop)
        end: dict[str, Any] = {"status": status, "stop_reason": stop.value}
        end["totals"] = dict(self._staged or self._totals)
        if status.is_terminal:
            self._events.append(_draft("stopped", {**end, "error": error}))
        else:
            self._events.append(_draft("paused", end))
        if self.lease is not None:
            self._release = True

    def _close_open(self) -> None:
        """The open step's reply and calls as a `calls_started` event."""
        if self._reply is not None or self._calls:
            opened = {"step": self._seq, "reply": self._reply, "calls": self._calls}
            self._events.append(_draft("calls_started", opened))
            self._reply, self._calls = None, []

    def _drop(self) -> None:
        self._events, self._calls, self._reply, self._staged = [], [], None, None
        self.urgent = False

    def _committed(self, append: Append, fresh: float) -> None:
        """The append is on disk: what it says is where the run stands."""
        if self._next_event is not None:
            self._next_event += len(append.events)
        self.fresh_until = max(self.fresh_until, fresh)
        if self._staged is not None:
            self._totals, self._staged = self._staged, None

    def _dumped(self, position: Any) -> Any:
        known, dumped = self._position
        if known is position and dumped is not None:
            return dumped
        assert self._dump is not None
        return self._dump(position)

    # -- durability --------------------------------------------------------------------

    def flush_due(self, side_effects: bool) -> bool:
        """Whether the buffer must be on disk before the next call runs: a side effect must
        be on record as started before it happens, and an earlier side effect's result
        before anything else runs; and no tool runs under a lease that may have lapsed (the
        flush renews it, or says it is lost)."""
        return side_effects or self.urgent or self.stale()

    def _take(self, renew: bool) -> tuple[Append | None, float]:
        """The buffer as one append (None: nothing to write), and the lease's new fresh_until
        once it is committed (0: not renewed)."""
        self._close_open()
        lease = self.lease
        # The fence proves the lease is held; it is renewed only when more than half of it
        # has passed (the heartbeat renews it otherwise), or for a new run (its first).
        renewing = lease is not None and (self.stale() or (renew and self._creating()))
        if not self._events and not renewing and not self._release:
            return None, 0.0
        events, self._events = self._events, []
        release, self._release = self._release, False
        if release:
            self.lease = None
        self.urgent = False
        seconds = lease if renewing else None
        append = Append(
            self.run_id,
            self.owner,
            events,
            lease_seconds=seconds,
            release=release,
            seq=self._next_event,
        )
        return append, (time.monotonic() + lease if renewing and lease else 0.0)

    def _creating(self) -> bool:
        return any(event["kind"] == "run_created" for event in self._events)

    async def flush(self, *, renew: bool = False) -> None:
        """Append the buffer (one transaction, possibly shared with other runs). `renew`:
        the lease must be fresh when this returns (before a tool runs): renewed when more
        than half of it has passed, else proven held by the append's fence."""
        append, fresh = self._take(renew)
        if append is None:
            return
        try:
            if self._group is None:
                _raise_first(self.store.append([append]))
            else:
                await self._group.write(append)
        except BaseException:
            self._lost_count()
            raise
        self._committed(append, fresh)

    def flush_now(self) -> None:
        """Append the buffer at once, on this thread (for a task being cancelled)."""
        append, fresh = self._take(False)
        if append is not None:
            try:
                _raise_first(self.store.append([append]))
            except BaseException:
                self._lost_count()
                raise
            self._committed(append, fresh)

    def _lost_count(self) -> None:
        # After a failed append the journal cannot be sure of the run's next number (someone
        # may have written behind its back, which is what the failure may be saying): the
        # store numbers what it still records, e.g. the stop that says why.
        self._next_event = None

    def stale(self) -> bool:
        """Whether the lease must be renewed before a tool runs: more than half of it has
        passed since it was last renewed (a heartbeat that could not run, e.g. while a
        blocking tool held the event loop)."""
        lease = self.lease
        return lease is not None and time.monotonic() > self.fresh_until - lease / 2

    # -- the heartbeat -----------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Renew the lease every third of its length until `stop_heartbeat` (or release)."""
        if self.lease is not None:
            loop = asyncio.get_running_loop()
            self._beat = loop.call_later(self.lease / 3, self._heartbeat)

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
        # A renewal in the last third counts.
        if now > self.fresh_until - lease * 2 / 3:
            try:
                self.store.renew_lease(self.run_id, self.owner, seconds=lease)
            except Exception:
                # Lost, or the store is unreachable: the next append (fenced) says which
                # and stops the run; the heartbeat keeps trying meanwhile.
                pass
            else:
                self.fresh_until = max(self.fresh_until, now + lease)
        loop = asyncio.get_running_loop()
        self._beat = loop.call_later(lease / 3, self._heartbeat)


def run_created(
    agent: AgentRecord,
    model: str,
    options: dict[str, Any],
    first: Message,
    position_dump: Any,
    link: AgentLink | None = None,
) -> dict[str, Any]:
    """The `run_created` event of a new run of the stored `agent` (draft form)."""
    created = {
        "agent_id": agent.id,
        "rules_hash": agent.rules_hash,
        "model": model,
        "input": first.text or "",
        "options": options,
        "position": position_dump,
        "messages": [message_to_dict(first)],
    }
    if link is not None and link.parent_run_id is not None:
        created.update(
            parent_run_id=link.parent_run_id,
            parent_call_id=link.parent_call_id,
            depth=link.depth,
        )
    return _draft("run_created", created)


def _totals(state: RunState, position: Any) -> dict[str, Any]:
    usage = state.usage
    return {
        "steps": state.seq,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "position": position,
    }


def _raise_first(errors: Sequence[StoreError | None]) -> None:
    for error in errors:
        if error is not None:
            raise error


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
    return lease_seconds_from_env() or LEASE_SECONDS
