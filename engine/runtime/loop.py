"""The step loop: gate -> request -> reply -> judge and execute each call -> advance -> persist.

One step is one model call. Its life in the store (so a killed process loses nothing committed;
the writes go through the run's `Journal`, which commits them at these points only):

1. before a call with side effects runs, the reply (as an assistant message) and the call's
   "started" record are committed together; the call's result is committed with the next
   write, at the latest before another tool runs;
2. calls of idempotent tools and violations are recorded with the step commit (a crash before
   it makes a resume ask the model again, and re-run the idempotent calls);
3. the step itself (gate, reply, positions, decision, call results) is committed in one
   transaction with the tool-result messages, before the next model call.

A step whose reply is stored but which is not committed is *pending*; resuming a run (after a
crash, an approval, a denial or a decision) finishes the pending step from its stored reply
and call records: settled calls are replayed from the store (the machine is advanced again
with their stored outputs), the others are judged and executed as in a fresh step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from datetime import datetime
from functools import partial
from typing import Any, Literal, get_args

from pydantic_core import to_jsonable_python

from engine.machine import Position, Reason, StopReason, Verdict
from engine.machine.trace import violation_message
from engine.providers.base import (
    Message,
    ModelReply,
    ModelRequest,
    Provider,
    ToolCall,
    Usage,
    frozen_builder,
    tool_message,
)
from engine.providers.errors import MalformedReply, ProviderError
from engine.runtime.agent import Agent
from engine.runtime.caps import cap_arguments, cap_violation
from engine.runtime.events import (
    ApprovalRequested,
    Event,
    Notice,
    RunResult,
    RunStarted,
    StepCommitted,
    StepStarted,
    Stopped,
    TextDelta,
    ToolCallStarted,
    ToolResultEvent,
    Violation,
)
from engine.runtime.journal import GroupCommit, Journal, NullJournal, RunJournal, status_for
from engine.runtime.state import PendingStep, RunState
from engine.tools import HEARTBEAT_PARAM, ArgumentError, ToolResult

__all__ = ["Decision", "Runner", "status_for"]

Decision = Literal["retry", "fail"]

# The journal of every run without a store (it holds nothing).
_NULL_JOURNAL = NullJournal()

# What a way into the loop hands it, and the loop itself (see `Runner._steps`).
_Setup = tuple[RunState, PendingStep | None, RunJournal, RunStarted]
_Steps = Generator[Any, Any, None]

# Everything the loop yields that is not an awaitable (no event type has subclasses).
_EVENT_TYPES: frozenset[type] = frozenset(get_args(Event))

# The events of every step (stream), built without their __init__ (see frozen_builder).
_step_started = frozen_builder(StepStarted)
_call_started = frozen_builder(ToolCallStarted)
_call_result = frozen_builder(ToolResultEvent)
_step_committed = frozen_builder(StepCommitted)


class _Pause(Exception):
    """Internal: the pending step cannot finish now (approval or decision needed)."""

    def __init__(self, stop: StopReason, call_key: str) -> None:
        self.stop = stop
        self.call_key = call_key


class Runner:
    """Runs an agent with a provider, persisting to a `RunStore` (or nowhere, `store=None`).

    `stream(input)` yields events as the run goes; `run(input)` returns the `RunResult`.
    `resume_stream(run_id)` / `resume(run_id)` continue a stored run (see `engine.runtime.resume`
    for rebuilding agent and provider in a new process).
    """

    def __init__(
        self,
        agent: Agent,
        provider: Provider,
        *,
        store: Any = None,
        max_steps: int | None = None,
        model: str | None = None,
        options: dict[str, Any] | None = None,
        group_commit: GroupCommit | None = None,
        owner: str | None = None,
        lease_seconds: float | None = None,
        max_argument_bytes: int | None = None,
    ) -> None:
        """`group_commit` (one per event loop and store, shared by the runners of many
        concurrent runs) makes their store writes share transactions; without it each run
        commits on its own.

        A stored run is run under a lease (see `RunStore.claim_run`): `owner` is the id it is
        held by (default: a new one per run started or resumed; give the one `approve` or
        `deny` claimed with, to resume under it), `lease_seconds` how long it lasts unless
        renewed (default: $TOOLFSM_LEASE_SECONDS, else `engine.store.LEASE_SECONDS`).

        `max_argument_bytes` caps a call's raw arguments (default: the agent's
        `run.max_argument_bytes`); a larger call is refused and stored truncated."""
        self.agent = agent
        self.provider = provider
        self.store = store
        self.max_steps = max_steps or agent.settings.max_steps
        self.max_argument_bytes = max_argument_bytes or agent.settings.max_argument_bytes
        provider_name: str = getattr(provider, "name", type(provider).__name__)
        self.model = model or provider_name
        # Stored with the run so `toolfsm runs resume` can rebuild tools and provider.
        self.options = dict(options or {})
        self.group_commit = group_commit
        self._machine = agent.machine
        self._heartbeat = agent.heartbeat
        self._owner = owner
        self._lease_seconds = lease_seconds

    # -- public entry points ---------------------------------------------------------------

    def run(self, input: str, *, run_id: str | None = None) -> Coroutine[Any, Any, RunResult]:
        """Start a new run with the user message `input` and return how it ended (a coroutine:
        `await runner.run(...)`)."""
        return self._quietly(self._start, (input, run_id), None)

    def run_sync(self, input: str, *, run_id: str | None = None) -> RunResult:
        """`run` for code without an event loop: runs to the end and returns the `RunResult`
        (`EventLoopRunningError` inside a running loop; see `engine.runtime.sync`)."""
        from engine.runtime.sync import call_sync

        start = partial(self.run, input, run_id=run_id)
        return call_sync(start, "Runner.run_sync()", "await runner.run(input)")

    def resume(
        self, run_id: str, *, decision: Decision | None = None
    ) -> Coroutine[Any, Any, RunResult]:
        """`resume_stream` without the events: how the run (or this stretch of it) ended."""
        return self._quietly(self._resume, (run_id,), decision)

    def stream(self, input: str, *, run_id: str | None = None) -> AsyncIterator[Event]:
        """Start a new run with the user message `input`."""
        return self._stream(partial(self._start, input, run_id), None)

    def resume_stream(
        self, run_id: str, *, decision: Decision | None = None
    ) -> AsyncIterator[Event]:
        """Continue a stored run from its last committed step (and its pending step, if any).

        `decision` settles a side-effect call interrupted by a crash: "retry" runs it again,
        "fail" records it as failed and tells the model so.
        """
        return self._stream(partial(self._resume, run_id), decision)

    # The loop itself (`_steps`) is a plain generator: it yields events, and awaitables for
    # its driver to await and send back the result of (an exception is thrown back in). Two
    # drivers: `_quietly` (run/resume: a coroutine, which keeps the Stopped event's result)
    # and `_stream` (an async generator, which hands every event on). A plain generator
    # costs less per step than an async one, and a quiet run owns no async generator (nor
    # the objects the event loop keeps to finalise one). run/resume hand back `_quietly`'s
    # coroutine itself: one coroutine less per run.

    async def _quietly(
        self,
        setup: Callable[..., Awaitable[_Setup]],
        args: tuple[Any, ...],
        decision: Decision | None,
    ) -> RunResult:
        steps = self._steps(setup(*args), decision, quiet=True)
        del setup, args  # (a bound method: not kept for the run's whole life)
        result = None
        try:
            item = next(steps)
            while True:
                if type(item) in _EVENT_TYPES:
                    if type(item) is Stopped:
                        result = item.result
                    item = next(steps)
                else:
                    try:
                        value = await item
                    except BaseException as exc:
                        item = steps.throw(exc)
                    else:
                        item = steps.send(value)
                        value = None  # not kept through the next await
        except StopIteration:
            pass
        assert result is not None
        return result

    async def _stream(
        self, setup: Callable[[], Awaitable[_Setup]], decision: Decision | None
    ) -> AsyncIterator[Event]:
        # The setup coroutine is made when the stream is first iterated: a stream never
        # iterated leaves no coroutine behind that was never awaited.
        steps = self._steps(setup(), decision, quiet=False)
        try:
            item = next(steps)
            while True:
                if type(item) in _EVENT_TYPES:
                    yield item
                    item = next(steps)
                else:
                    try:
                        value = await item
                    except BaseException as exc:
                        item = steps.throw(exc)
                    else:
                        item = steps.send(value)
                        value = None  # not kept through the next await
        except StopIteration:
            return
        finally:
            steps.close()

    # The two ways into the loop.

    async def _start(self, input: str, run_id: str | None) -> _Setup:
        machine = self._machine
        position = machine.start()
        first = Message(role="user", text=input)
        journal: RunJournal = _NULL_JOURNAL
        if self.store is not None:
            options = {**self.options, "tools": self.agent.tools_ref, "max_steps": self.max_steps}
            journal = await Journal.create(
                self.store,
                self.group_commit,
                agent=self.agent,
                model=self.model,
                options=options,
                first=first,
                position=position,
                position_dump=machine.dump(position),
                run_id=run_id,
                owner=self._owner,
                lease_seconds=self._lease_seconds,
            )
            run_id = journal.run_id
        state = RunState(run_id or "memory", position, [first], next_message=1)
        return state, None, journal, RunStarted(state.run_id, self.agent.name, self.model)

    async def _resume(self, run_id: str) -> _Setup:
        if self.store is None:
            raise RuntimeError("resuming needs a store")
        journal, state, pending = Journal.resume(
            self.store,
            self.group_commit,
            run_id=run_id,
            agent=self.agent,
            owner=self._owner,
            lease_seconds=self._lease_seconds,
        )
        started = RunStarted(state.run_id, self.agent.name, self.model, resumed=True)
        return state, pending, journal, started

    # -- the loop ----------------------------------------------------------------------

    def _steps(self, setup: Awaitable[_Setup], decision: Decision | None, *, quiet: bool) -> _Steps:
        """The loop (`yield awaitable` stands for `await awaitable`, see `_quietly`). `quiet`
        (for `run`/`resume`, which look at the `Stopped` event only) skips building and
        yielding the other events: the run is the same, its store records the same, and no
        one pays for events no one reads."""
        state, pending, journal, opening = yield setup
        del setup
        if not quiet:
            yield opening
        del opening
        machine = self._machine
        journal.start_heartbeat()
        try:
            while True:
                if pending is None:
                    if state.seq >= self.max_steps:
                        yield (yield self._stop(state, journal, StopReason.STEP_LIMIT))
                        return
                    gate = machine.gate(state.position)
                    # No tool allowed: a dead end where a call is forced (or a required tool
                    # is pending); else an answer-only step (the request offers no tool).
                    if not gate.allowed and machine.dead_end(state.position):
                        yield (
                            yield self._stop(
                                state, journal, StopReason.DEAD_END, "no tool is allowed"
                            )
                        )
                        return
                    if not quiet:
                        yield _step_started(state.seq, gate.allowed, gate.force, gate.forced_tool)
                    request = self.agent.request(gate, tuple(state.messages))
                    started = journal.step_started()
                    try:
                        reply = yield self._ask_model(request)
                    except MalformedReply as exc:
                        # The server answered, with something that is no reply: kept as a
                        # step of its own, the run's last (resume asks the model again).
                        yield (yield self._malformed_step(state, journal, gate, started, exc))
                        return
                    except ProviderError as exc:
                        yield (yield self._stop(state, journal, StopReason.ERROR, str(exc)))
                        return
                    del request  # the provider is done with it; so is the loop
                    # Before anything stores it or sends it on: oversized arguments cut down.
                    reply = cap_arguments(reply, self.max_argument_bytes)
                    pending = PendingStep(
                        state.seq,
                        state.position,
                        gate,
                        reply,
                        started,
                        state.call_keys(state.seq, reply.tool_calls),
                        None,  # nothing recorded: a fresh step
                        reply.to_message(),
                    )
                    journal.reply_received(state, pending)
                    if reply.notice is not None and not quiet:
                        # (stored with the reply: `runs show` prints it with the step)
                        yield Notice(state.seq, reply.notice)
                    if reply.text:
                        state.last_text = reply.text
                        if not quiet:
                            yield TextDelta(state.seq, reply.text)
                    del reply, gate
                step = pending
                pending = None
                try:
                    verdict_stop, committed = yield from self._settle(
                        state, step, decision, journal, quiet
                    )
                except _Pause as pause:
                    # The paused step is not committed (its tokens reach the run's totals in
                    # the store when it is), but the model was paid for it: count it here.
                    yield (
                        yield self._stop(
                            state,
                            journal,
                            pause.stop,
                            pending_call=pause.call_key,
                            pending_usage=step.reply.usage,
                        )
                    )
                    return
                decision = None  # a decision settles one interrupted call only
                # Not kept through the next model call (a long wait, when many runs share
                # the loop): what dies young costs the garbage collector next to nothing.
                del step
                if not quiet:
                    yield committed
                if verdict_stop is not None:
                    yield Stopped(self._result(state, verdict_stop))
                    return
        except asyncio.CancelledError:
            journal.cancelled()
            raise
        except Exception as exc:
            if journal.refused(exc):
                # A refused write of this run's owner: the run stops here, on record.
                error = f"the store refused a write: {exc}"
                journal.store_failed(error)
                yield Stopped(self._result(state, StopReason.ERROR, error))
                return
            # An error the loop does not handle (the store went away, the lease was lost): the
            # run stays resumable (the lease given up if it is still this process's).
            journal.abandoned(exc)
            raise
        finally:
            journal.stop_heartbeat()

    def _ask_model(self, request: ModelRequest) -> Awaitable[ModelReply]:
        """The one place the provider is asked for a step's reply (awaited by the driver)."""
        return self.provider.complete(request)

    def _settle(
        self,
        state: RunState,
        step: PendingStep,
        decision: Decision | None,
        journal: RunJournal,
        quiet: bool,
    ) -> Generator[Any, Any, tuple[StopReason | None, StepCommitted | None]]:
        """Judge, execute (or replay) each call of a step in order, then commit the step.

        Yields the step's events (none when `quiet`, but `ApprovalRequested`) and the
        awaitables to await (`yield awaitable` stands for `await awaitable`, see `_steps`);
        returns the stop reason (None: the run goes on) and the `StepCommitted` event (None
        when quiet without a store).
        """
        machine = self._machine
        run_id = state.run_id
        reply = step.reply
        recorded = step.recorded
        position = step.position_before
        results: list[Message] = []
        verdicts: list[Verdict] = []
        cut: Verdict | None = None  # a stop that ends the batch (terminal tool, dead end)
        cut_tool = ""
        for index, call in enumerate(reply.tool_calls):
            key = step.call_keys[index]
            record = recorded.get(key) if recorded is not None else None
            if cut is not None:
                message = f"not executed: the run ended after {cut_tool} ({cut.reason})"
                if record is None:
                    journal.violation(
                        step.seq, index, key, call, message, self._side_effects(call.name)
                    )
                results.append(tool_message(call.id, message, True))
                if not quiet:
                    yield Violation(step.seq, key, call.name, message)
                continue
            if record is not None and record.finished_at is not None:
                # Settled before a crash or a pause: replay it from the store.
                results.append(tool_message(call.id, _as_text(record.result), record.is_error))
                if not quiet:
                    yield ToolCallStarted(step.seq, key, call.name, record.arguments or {}, True)
                    yield ToolResultEvent(
                        step.seq, key, call.name, record.result, record.is_error, record.duration_ms
                    )
                if record.status in ("finished", "error"):
                    position = machine.advance(position, call.name, record.result)
                    verdict = machine.after_call(position, call.name, heartbeat=self._beat_of(call))
                    verdicts.append(verdict)
                    if _cuts(verdict):
                        cut, cut_tool = verdict, call.name
                continue
            # Judge the call against the machine at the current position.
            tool = self.agent.tools.get(call.name)
            problem: str | None = None
            arguments: dict[str, Any] = {}
            beat: bool | None = None
            gate = machine.gate(position)
            # (`allowed` is the gate's mask as names: the machine's is_allowed, one call less)
            if tool is None or call.name not in gate.allowed:
                problem = violation_message(machine, position, call.name)
            elif (problem := cap_violation(call.arguments)) is not None:
                pass
            else:
                prefill = gate.prefill.get(call.name) if gate.prefill else None
                try:
                    arguments, beat = tool.parse(
                        call.arguments, prefill=prefill, heartbeat=self._heartbeat
                    )
                except ArgumentError as exc:
                    problem = f"{exc}; the call was not executed"
            if problem is not None:
                if record is None:
                    journal.violation(
                        step.seq, index, key, call, problem, self._side_effects(call.name)
                    )
                results.append(tool_message(call.id, problem, True))
                if not quiet:
                    yield Violation(step.seq, key, call.name, problem)
                continue
            assert tool is not None
            # The arguments as stored and streamed: not needed by a quiet run without a store.
            stored_args: Any = (
                to_jsonable_python(arguments, fallback=str)
                if journal.durable or not quiet
                else None
            )
            side_effects = not tool.idempotent
            if call.name in machine.approval:
                status = record.status if record is not None else None
                if status is None:
                    # On disk before anyone is told: a reviewer may act on the event at once.
                    yield journal.call_held(step, index, call, stored_args, side_effects)
                    yield ApprovalRequested(run_id, step.seq, key, call.name, stored_args)
                    raise _Pause(StopReason.AWAITING_APPROVAL, key)
                if status == "awaiting_approval":
                    raise _Pause(StopReason.AWAITING_APPROVAL, key)
                # approved (or started after approval, then interrupted): runs below
                if status == "approved":
                    journal.call_approved(key)
                    record = None
            if record is not None and record.status == "started":
                # Started before a crash, never finished.
                if side_effects and decision is None:
                    raise _Pause(StopReason.AWAITING_DECISION, key)
                if side_effects and decision == "fail":
                    message = (
                        "the call was interrupted (the process stopped while it ran) and was "
                        "marked failed; it may or may not have taken effect"
                    )
                    journal.call_failed(key, message)
                    results.append(tool_message(call.id, message, True))
                    if not quiet:
                        yield ToolResultEvent(step.seq, key, call.name, message, True, None)
                    continue
            elif record is None and call.name not in machine.approval:
                journal.call_started(step, index, call, stored_args, side_effects)
            if journal.flush_due(side_effects):
                yield journal.flush(renew=True)
            if not quiet:
                yield _call_started(step.seq, key, call.name, stored_args, False)
            # An inline tool runs here and now; any other is awaited (see `_steps`).
            result = tool.execute_now(arguments)
            if type(result) is not ToolResult:
                result = yield result
            journal.call_finished(key, result, side_effects)
            results.append(tool_message(call.id, result.text(), result.is_error))
            if not quiet:
                yield _call_result(
                    step.seq, key, call.name, result.output, result.is_error, result.duration_ms
                )
            position = machine.advance(position, call.name, result.output)
            verdict = machine.after_call(position, call.name, heartbeat=beat)
            verdicts.append(verdict)
            if _cuts(verdict):
                cut, cut_tool = verdict, call.name

        decision_text, reason, stop, nag = self._decide(step, position, verdicts, cut)
        if reason == "forced_call_missing":
            state.forced_misses += 1
            if state.forced_misses > MAX_FORCED_REASKS:
                # The server does not honour forcing and the model keeps answering in text:
                # re-asking for ever would only burn the step limit.
                decision_text, stop, nag = "stop", StopReason.FORCING_IGNORED, None
        else:
            state.forced_misses = 0
        new_messages = results
        if nag:
            new_messages.append(Message(role="user", text=nag))
            if not quiet:
                yield Notice(step.seq, nag)
        if stop is None and step.seq + 1 >= self.max_steps:
            decision_text, reason, stop = "stop", StopReason.STEP_LIMIT.value, StopReason.STEP_LIMIT
        usage = reply.usage
        state.messages.append(step.message or reply.to_message())
        state.messages.extend(new_messages)
        state.position = position
        state.seq = step.seq + 1
        state.usage = state.usage + usage
        dumped = machine.dump(position) if journal.durable or not quiet else None
        journal.step_committed(
            state, step, dumped, decision_text, reason, new_messages, stop, _STOP_ERRORS.get(stop)
        )
        if journal.durable:
            yield journal.flush()
        return stop, (
            None if dumped is None else _step_committed(step.seq, decision_text, reason, dumped)
        )

    def _decide(
        self,
        step: PendingStep,
        position: Position,
        verdicts: list[Verdict],
        cut: Verdict | None,
    ) -> tuple[Literal["continue", "stop"], str, StopReason | None, str | None]:
        """(decision, reason, stop reason or None, message for the model) after a step."""
        machine = self._machine
        if cut is not None:
            return "stop", _VALUE[cut.reason], cut.stop_reason, None
        if not step.reply.tool_calls:
            if step.gate.force:
                # The provider did not enforce the forced call (or could not): the model
                # must not slip past an init/child rule by answering in text.
                allowed = ", ".join(step.gate.allowed)
                return (
                    "continue",
                    "forced_call_missing",
                    None,
                    f"A tool call is required now. Call one of: {allowed}.",
                )
            verdict = machine.after_text(position)
        elif verdicts:
            # The last verdict that goes on, else the last one.
            last = verdicts[-1]
            verdict = last if last.continues else next((v for v in verdicts if v.continues), last)
        else:
            # Every call was rejected (violation, denial, failure): the model gets the errors
            # and another turn (at an answer-only position: to answer, until the step limit).
            return "continue", "no_call_executed", None, None
        if verdict.continues:
            return "continue", _VALUE[verdict.reason], None, verdict.message
        return "stop", _VALUE[verdict.reason], verdict.stop_reason, None

    def _beat_of(self, call: ToolCall) -> bool | None:
        if not self._heartbeat:
            return None
        try:
            value = json.loads(call.arguments)
        except ValueError:
            return False
        return isinstance(value, dict) and value.get(HEARTBEAT_PARAM) is True

    def _side_effects(self, name: str) -> bool:
        """Whether a call of `name` would have side effects (an unknown tool: no)."""
        tool = self.agent.tools.get(name)
        return tool is not None and not tool.idempotent

    async def _stop(
        self,
        state: RunState,
        journal: RunJournal,
        stop: StopReason,
        error: str | None = None,
        *,
        pending_call: str | None = None,
        pending_usage: Usage | None = None,
    ) -> Stopped:
        """Record a stop that happens outside a step commit (before a call, or a pause)."""
        await journal.stopped(stop, error)
        return Stopped(self._result(state, stop, error, pending_call, pending_usage))

    async def _malformed_step(
        self,
        state: RunState,
        journal: RunJournal,
        gate: Any,
        started: datetime | None,
        exc: MalformedReply,
    ) -> Stopped:
        """Commit the step of a malformed reply (the server's body as its reply, no message
        in the history) and stop the run with an error."""
        await journal.malformed_step(state, gate, started, exc)
        state.seq += 1
        return Stopped(self._result(state, StopReason.ERROR, str(exc)))

    def _result(
        self,
        state: RunState,
        stop: StopReason,
        error: str | None = None,
        pending_call: str | None = None,
        pending_usage: Usage | None = None,
    ) -> RunResult:
        return RunResult(
            run_id=state.run_id,
            stop_reason=stop,
            steps=state.seq,
            usage=state.usage if pending_usage is None else state.usage + pending_usage,
            error=error if error is not None else _STOP_ERRORS.get(stop),
            text=state.last_text,
            position=self._machine.dump(state.position),
            pending_call=pending_call,
            pending_usage=pending_usage,
        )


# Steps in a row answered without a tool call where the rules force one, re-asked each time
# ("A tool call is required now"), before the run stops with forcing_ignored.
MAX_FORCED_REASKS = 2

# The error recorded with a stop that is not a provider's or the store's.
_STOP_ERRORS = {
    StopReason.FORCING_IGNORED: (
        f"the model answered without a tool call {MAX_FORCED_REASKS + 1} times in a row where "
        "the rules require one: the server does not honour a forced tool_choice (toolfsm "
        "offered only the allowed tools and re-asked); try another model or chat template"
    ),
}


def _cuts(verdict: Verdict) -> bool:
    return not verdict.continues and verdict.reason in _CUTTING


_CUTTING = (Reason.TERMINAL_TOOL, Reason.DEAD_END)
# A reason's value, by dict: an enum's `.value` is a Python-level property, ten times slower.
_VALUE: dict[Reason, str] = {reason: reason.value for reason in Reason}


# One encoder (json.dumps with options builds one per call).
_to_text = json.JSONEncoder(ensure_ascii=False).encode


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else _to_text(value)
