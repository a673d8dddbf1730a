"""The step loop: gate -> request -> reply -> judge and execute each call -> advance -> persist.

One async generator, `Runner._events`, is the loop of `run`, `stream` and both resumes (`run`
and `resume` keep its `Stopped` event). One step is one model call, in named phases: gate and
ask the model, settle each call in order (judge it, hold it for approval, execute it, record
it), conclude (the decision) and commit.

Its life in the store (so a killed process loses nothing committed; the loop tells the run's
journal what happened, and the journal commits at these points only; a run without a store
has a `NullJournal`):

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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from pydantic_core import to_jsonable_python

from engine.machine import Gate, Position, Reason, StopReason, Verdict
from engine.machine.trace import violation_message
from engine.providers.base import (
    Message,
    ModelReply,
    ModelRequest,
    Provider,
    TextChunk,
    ToolCall,
    ToolCallChunk,
    Usage,
    stream_reply,
    tool_message,
)
from engine.providers.errors import MalformedReply, ProviderError
from engine.runtime.agent import Agent
from engine.runtime.agents import AgentDirectory, AgentLink, Waiting, call_agents
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
    ToolCallDelta,
    ToolCallStarted,
    ToolResultEvent,
    Violation,
)
from engine.runtime.journal import GroupCommit, Journal, NullJournal, RunJournal, status_for
from engine.runtime.state import PendingStep, RunState
from engine.runtime.tracing import configured_tracer, traced
from engine.store.status import CallStatus

if TYPE_CHECKING:
    from engine.store.protocol import Store
from engine.tools import HEARTBEAT_PARAM, ArgumentError, Tool, ToolResult

__all__ = ["Decision", "Runner", "status_for"]

Decision = Literal["retry", "fail"]

# The journal of every run without a store (it holds nothing).
_NULL_JOURNAL = NullJournal()

# What a way into the loop hands it (see `Runner._events`).
_Setup = tuple[RunState, PendingStep | None, RunJournal, RunStarted]


@dataclass(slots=True)
class _Batch:
    """A step's calls being settled: where the machine stands after each, what the model is
    told, and (once concluded) the step's decision."""

    step: PendingStep
    position: Position
    results: list[Message] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    cut: Verdict | None = None  # a stop that ends the batch (terminal tool, dead end)
    cut_tool: str = ""
    decision: str = "continue"
    reason: str = ""


class _Admit(Enum):
    """What becomes of a call that passed judgement (see `Runner._admit`)."""

    RUN = "run"
    HOLD = "hold"
    FAILED = "failed"


# What the model is told of a side-effect call a crash interrupted, given up by decision.
_INTERRUPTED = (
    "the call was interrupted (the process stopped while it ran) and was marked failed; it "
    "may or may not have taken effect"
)


def _reentrant(runner: Runner, call: ToolCall) -> bool:
    """Whether a call cut off by a crash or a pause is entered again on resume (an agent
    call: it finds the runs it started) instead of waiting for a decision."""
    tool = runner.agent.tools.get(call.name)
    return tool is not None and tool.agent_call is not None


async def _outcome_and_texts(events: AsyncIterator[Event]) -> tuple[RunResult, list[str]]:
    """How a run ended, and the model's texts (whole replies: a run, not a stream)."""
    result, texts = None, []
    async for event in events:
        if type(event) is TextDelta:
            texts.append(event.text)
        elif type(event) is Stopped:
            result = event.result
    assert result is not None
    return result, texts


async def _outcome(events: AsyncIterator[Event]) -> RunResult:
    """How a run ended: its `Stopped` event's result (the other events are ignored)."""
    result = None
    async for event in events:
        if type(event) is Stopped:
            result = event.result
    assert result is not None
    return result


def _reply_events(step: PendingStep, streamed: bool) -> tuple[Event, ...]:
    """What the events show of a step's reply once it is complete: the provider's notice
    (stored with the reply: `runs show` prints it with the step) and, when the reply was not
    streamed (its pieces shown as they came), the model's text."""
    reply = step.reply
    events: tuple[Event, ...] = ()
    if reply.notice is not None:
        events += (Notice(step.seq, reply.notice),)
    if reply.text and not streamed:
        events += (TextDelta(step.seq, reply.text),)
    return events


class _Pause(Exception):
    """Internal: the pending step cannot finish now (approval or decision needed)."""

    def __init__(self, stop: StopReason, call_key: str) -> None:
        self.stop = stop
        self.call_key = call_key


class Runner:
    """Runs an agent with a provider, persisting to a `Store` (or nowhere, `store=None`).

    `stream(input)` yields events as the run goes; `run(input)` returns the `RunResult`.
    `resume_stream(run_id)` / `resume(run_id)` continue a stored run (see `engine.runtime.resume`
    for rebuilding agent and provider in a new process).
    """

    def __init__(
        self,
        agent: Agent,
        provider: Provider,
        *,
        store: Store | None = None,
        max_steps: int | None = None,
        model: str | None = None,
        options: dict[str, Any] | None = None,
        group_commit: GroupCommit | None = None,
        owner: str | None = None,
        lease_seconds: float | None = None,
        max_argument_bytes: int | None = None,
        agents: AgentDirectory | None = None,
        link: AgentLink | None = None,
        tracer_provider: Any = None,
    ) -> None:
        """`group_commit` (one per event loop and store, shared by the runners of many
        concurrent runs) makes their store writes share transactions; without it each run
        commits on its own.

        A stored run is run under a lease (see `Store.claim_run`): `owner` is the id it is
        held by (default: a new one per run started or resumed; give the one `approve` or
        `deny` claimed with, to resume under it), `lease_seconds` how long it lasts unless
        renewed (default: $TOOLFSM_LEASE_SECONDS, else `engine.store.LEASE_SECONDS`).

        `max_argument_bytes` caps a call's raw arguments (default: the agent's
        `run.max_argument_bytes`); a larger call is refused and stored truncated.

        `agents` are the agents the agent's agent tools may message (`engine.runtime.agents`);
        `link` places this run under its caller's (a callee's run; None: nobody called it).

        `tracer_provider`: an OpenTelemetry `TracerProvider` the run's spans go to (default:
        the one `OTEL_TRACES_EXPORTER` configures, or the application's global one; none:
        no tracing, at no cost; see `engine.runtime.tracing`)."""
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
        self.agents = agents
        self.link = link or AgentLink()
        self._tracer = configured_tracer(tracer_provider)

    # -- public entry points ---------------------------------------------------------------

    async def run(self, input: str, *, run_id: str | None = None) -> RunResult:
        """Start a new run with the user message `input` and return how it ended."""
        return await _outcome(self._loop(partial(self._start, input, run_id), None, deltas=False))

    def run_sync(self, input: str, *, run_id: str | None = None) -> RunResult:
        """`run` for code without an event loop: runs to the end and returns the `RunResult`
        (`EventLoopRunningError` inside a running loop; see `engine.runtime.sync`)."""
        from engine.runtime.sync import call_sync

        start = partial(self.run, input, run_id=run_id)
        return call_sync(start, "Runner.run_sync()", "await runner.run(input)")

    async def run_message(
        self, first: Message, *, run_id: str | None = None
    ) -> tuple[RunResult, list[str]]:
        """Start a run whose first message is `first` (a callee's system-role message): how
        it ended, and the texts of the model's replies."""
        start = partial(self._start, first, run_id)
        return await _outcome_and_texts(self._loop(start, None, deltas=False))

    async def resume_texts(self, run_id: str) -> tuple[RunResult, list[str]]:
        """`resume`, with the texts of the model's replies in this stretch of the run."""
        resume = partial(self._resume, run_id)
        return await _outcome_and_texts(self._loop(resume, None, deltas=False))

    async def resume(self, run_id: str, *, decision: Decision | None = None) -> RunResult:
        """`resume_stream` without the events: how the run (or this stretch of it) ended."""
        return await _outcome(self._loop(partial(self._resume, run_id), decision, deltas=False))

    def stream(self, input: str, *, run_id: str | None = None) -> AsyncIterator[Event]:
        """Start a new run with the user message `input`; its events as they happen."""
        return self._loop(partial(self._start, input, run_id), None, deltas=True)

    def resume_stream(
        self, run_id: str, *, decision: Decision | None = None
    ) -> AsyncIterator[Event]:
        """Continue a stored run from its last committed step (and its pending step, if any).

        `decision` settles a side-effect call interrupted by a crash: "retry" runs it again,
        "fail" records it as failed and tells the model so.
        """
        return self._loop(partial(self._resume, run_id), decision, deltas=True)

    def _loop(
        self, setup: Callable[[], Awaitable[_Setup]], decision: Decision | None, *, deltas: bool
    ) -> AsyncIterator[Event]:
        """The loop's events, turned into spans on the way when tracing is on."""
        events = self._events(setup, decision, deltas=deltas)
        if self._tracer is None:
            return events
        start = self._machine.dump(self._machine.start())
        return traced(
            events,
            self._tracer,
            model=self.model,
            start_position=start,
            store=self.store,
            streamed=deltas,
        )

    # The two ways into the loop.

    async def _start(self, input: str | Message, run_id: str | None) -> _Setup:
        machine = self._machine
        position = machine.start()
        first = input if isinstance(input, Message) else Message(role="user", text=input)
        journal: RunJournal = _NULL_JOURNAL
        if self.store is not None:
            options = {**self.options, "tools": self.agent.tools_ref, "max_steps": self.max_steps}
            if self.agents is not None:
                options.setdefault("agents", self.agents.as_option())
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
                link=self.link,
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
    # One async generator (`_events`) is the loop of `run`, `stream` and both resumes; `run`
    # and `resume` read its `Stopped` event only. A step's phases: gate and ask
    # (`_cannot_step`, `_ask_model`, `_received`), settle each call (`_settle`: judge,
    # hold for approval, execute, record), conclude and commit (`_conclude`, `_commit`).

    async def _events(
        self, setup: Callable[[], Awaitable[_Setup]], decision: Decision | None, *, deltas: bool
    ) -> AsyncIterator[Event]:
        """The run's events; with `deltas` (a stream), the model's reply as it arrives too
        (`run` and `resume` ask for whole replies: no one reads the parts)."""
        # The setup coroutine is made when the stream is first iterated: a stream never
        # iterated leaves no coroutine behind that was never awaited.
        state, pending, journal, opening = await setup()
        del setup
        yield opening
        del opening
        journal.start_heartbeat()
        try:
            while True:
                step, pending = pending, None
                if step is None:
                    gate = self._machine.gate(state.position)
                    cannot = self._cannot_step(state, gate)
                    if cannot is not None:
                        yield await self._stop(state, journal, *cannot)
                        return
                    yield StepStarted(state.seq, gate.allowed, gate.force, gate.forced_tool)
                    started = journal.step_started()
                    request = self.agent.request(gate, tuple(state.messages))
                    try:
                        if not deltas:
                            reply = await self._ask_model(request, state)
                        else:  # a stream: the reply's pieces are shown as they arrive
                            async for item in self._stream_model(request, state.seq):
                                if isinstance(item, ModelReply):
                                    reply = item
                                else:
                                    yield item
                    except MalformedReply as exc:
                        # The server answered, with something that is no reply: kept as a
                        # step of its own, the run's last (resume asks the model again).
                        yield await self._malformed_step(state, journal, gate, started, exc)
                        return
                    except ProviderError as exc:
                        yield await self._stop(state, journal, StopReason.ERROR, str(exc))
                        return
                    del request
                    step = self._received(state, journal, gate, reply, started)
                    del reply, gate
                    for event in _reply_events(step, deltas):
                        yield event
                batch = _Batch(step, step.position_before)
                try:
                    async for event in self._settle(state, batch, decision, journal):
                        yield event
                except _Pause as pause:
                    # The paused step is not committed (its tokens reach the run's totals in
                    # the store when it is), but the model was paid for it: count it here.
                    usage = step.reply.usage
                    yield await self._stop(
                        state, journal, pause.stop, pending_call=pause.call_key, pending_usage=usage
                    )
                    return
                decision = None  # a decision settles one interrupted call only
                stop, nag = self._conclude(state, batch)
                if nag is not None:
                    yield Notice(step.seq, nag)
                committed = await self._commit(state, batch, stop, journal)
                # Not kept through the next model call (a long wait, when many runs share
                # the loop): what dies young costs the garbage collector next to nothing.
                del step, batch
                yield committed
                if stop is not None:
                    yield Stopped(self._result(state, stop))
                    return
        except asyncio.CancelledError:
            journal.cancelled()
            raise
        except Exception as exc:
            if not journal.refused(exc):
                # An error the loop does not handle (the store went away, the lease was
                # lost): the run stays resumable (the lease given up if it is still ours).
                journal.abandoned(exc)
                raise
            # A refused write of this run's owner: the run stops here, on record.
            error = f"the store refused a write: {exc}"
            journal.store_failed(error)
            yield Stopped(self._result(state, StopReason.ERROR, error))
        finally:
            journal.stop_heartbeat()

    def _cannot_step(self, state: RunState, gate: Gate) -> tuple[StopReason, str | None] | None:
        """Why the run cannot take another step (None: it can)."""
        if state.seq >= self.max_steps:
            return StopReason.STEP_LIMIT, None
        # No tool allowed: a dead end where a call is forced (or a required tool is
        # pending); else an answer-only step (the request offers no tool).
        if not gate.allowed and self._machine.dead_end(state.position):
            return StopReason.DEAD_END, "no tool is allowed"
        return None

    async def _ask_model(self, request: ModelRequest, state: RunState) -> ModelReply:
        """The provider asked for a step's whole reply (`run`, `resume`: a run nobody watches
        pays nothing for streaming). `state` says which run and step it is for (a Temporal
        run's model activity reads the messages from the store by them)."""
        return await self.provider.complete(request)

    async def _stream_model(
        self, request: ModelRequest, seq: int
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ModelReply]:
        """The provider asked for a step's reply as it arrives (`stream`, `resume_stream`):
        its pieces as TextDelta and ToolCallDelta events, then the ModelReply, last. The
        pieces are not stored: the reply is, whole, as `_ask_model`'s."""
        calls: dict[int, tuple[str | None, str | None]] = {}  # index -> (call id, tool)
        items = stream_reply(self.provider, request)
        try:
            async for item in items:
                if isinstance(item, TextChunk):
                    yield TextDelta(seq, item.text)
                elif isinstance(item, ToolCallChunk):
                    known_id, known_tool = calls.get(item.index, (None, None))
                    call = calls[item.index] = (item.id or known_id, item.name or known_tool)
                    yield ToolCallDelta(seq, item.index, call[0], call[1], item.arguments)
                else:
                    yield item
        finally:
            await items.aclose()  # (a stream cut short closes its response)

    def _received(
        self,
        state: RunState,
        journal: RunJournal,
        gate: Gate,
        reply: ModelReply,
        started: datetime | None,
    ) -> PendingStep:
        """The step a reply makes, recorded (its calls are not settled yet)."""
        # Before anything stores it or sends it on: oversized arguments cut down.
        reply = cap_arguments(reply, self.max_argument_bytes)
        step = PendingStep(
            state.seq,
            state.position,
            gate,
            reply,
            started,
            state.call_keys(state.seq, reply.tool_calls),
            None,  # nothing recorded: a fresh step
            reply.to_message(),
        )
        journal.reply_received(state, step)
        if reply.text:
            state.last_text = reply.text
        return step

    async def _settle(
        self,
        state: RunState,
        batch: _Batch,
        decision: Decision | None,
        journal: RunJournal,
    ) -> AsyncIterator[Event]:
        """Judge, execute (or replay) each call of a step in order; `batch` keeps where the
        machine ends up and what the model is told. Yields the calls' events; raises
        `_Pause` when a call cannot run now."""
        step = batch.step
        recorded = step.recorded
        for index, call in enumerate(step.reply.tool_calls):
            key = step.call_keys[index]
            record = recorded.get(key) if recorded is not None else None
            tool: Tool | None = None
            if batch.cut is not None:
                problem: str | None = (
                    f"not executed: the run ended after {batch.cut_tool} ({batch.cut.reason})"
                )
            elif record is not None and record.finished_at is not None:
                # Settled before a crash or a pause: replay it from the store.
                self._replay(batch, call, record)
                yield ToolCallStarted(step.seq, key, call.name, record.arguments or {}, True)
                yield ToolResultEvent(
                    step.seq, key, call.name, record.result, record.is_error, record.duration_ms
                )
                continue
            else:
                problem, tool, arguments, beat = self._judge(batch.position, call)
            if problem is not None:
                self._refuse(batch, journal, index, call, record, problem)
                yield Violation(step.seq, key, call.name, problem)
                continue
            assert tool is not None
            # The arguments as stored and streamed.
            stored_args = to_jsonable_python(arguments, fallback=str)
            if record is not None:  # approved with edits: it runs with the reviewer's
                arguments, stored_args = self._approved_arguments(
                    batch, tool, record, arguments, stored_args
                )
            side_effects = not tool.idempotent
            admitted = self._admit(
                journal, step, index, call, record, stored_args, side_effects, decision
            )
            if admitted is _Admit.HOLD:
                # On disk before anyone is told: a reviewer may act on the event at once.
                await journal.call_held(step, index, call, stored_args, side_effects)
                yield ApprovalRequested(state.run_id, step.seq, key, call.name, stored_args)
                raise _Pause(StopReason.AWAITING_APPROVAL, key)
            if admitted is _Admit.FAILED:
                batch.results.append(tool_message(call.id, _INTERRUPTED, True))
                yield ToolResultEvent(step.seq, key, call.name, _INTERRUPTED, True, None)
                continue
            if journal.flush_due(side_effects):
                await journal.flush(renew=True)
            yield ToolCallStarted(step.seq, key, call.name, stored_args, False)
            # An inline tool runs here and now; any other is awaited.
            running = self._execute(state, key, tool, arguments)
            result = running if isinstance(running, ToolResult) else await running
            if isinstance(result, Waiting):
                # A callee paused: this call finishes when it is resumed (re-entered).
                raise _Pause(StopReason.AWAITING_AGENTS, key)
            journal.call_finished(key, result, side_effects)
            batch.results.append(tool_message(call.id, result.text(), result.is_error))
            self._advance(batch, call, result.output, beat)
            yield ToolResultEvent(
                step.seq, key, call.name, result.output, result.is_error, result.duration_ms
            )

    def _execute(
        self, state: RunState, key: str, tool: Tool, arguments: dict[str, Any]
    ) -> ToolResult | Awaitable[ToolResult | Waiting]:
        """A call run: an agent tool with the run's context; any other as the tool runs
        (an inline one's result at once, else what to await for it)."""
        if tool.agent_call is not None:
            return call_agents(self, state.run_id, key, tool, arguments)
        return tool.execute_now(arguments)

    def _judge(
        self, position: Position, call: ToolCall
    ) -> tuple[str | None, Tool | None, dict[str, Any], bool | None]:
        """Judge a call against the machine at `position`: (why it is refused, or None; the
        tool; its parsed arguments; its heartbeat flag)."""
        machine = self._machine
        tool = self.agent.tools.get(call.name)
        gate = machine.gate(position)
        # (`allowed` is the gate's mask as names: the machine's is_allowed, one call less)
        if tool is None or call.name not in gate.allowed:
            return violation_message(machine, position, call.name), None, {}, None
        problem = cap_violation(call.arguments)
        if problem is not None:
            return problem, None, {}, None
        prefill = gate.prefill.get(call.name) if gate.prefill else None
        try:
            arguments, beat = tool.parse(call.arguments, prefill=prefill, heartbeat=self._heartbeat)
        except ArgumentError as exc:
            return f"{exc}; the call was not executed", None, {}, None
        return None, tool, arguments, beat

    def _approved_arguments(
        self, batch: _Batch, tool: Tool, record: Any, arguments: Any, stored: Any
    ) -> tuple[Any, Any]:
        """A recorded call's (arguments, stored arguments): for an approved one, the edited
        ones the approval recorded (checked then against the schema and the prefill; parsed
        again here for the tool's own types); else those the model gave."""
        if record.status != CallStatus.APPROVED or record.arguments in (None, stored):
            return arguments, stored
        gate = self._machine.gate(batch.position)
        prefill = gate.prefill.get(tool.name) if gate.prefill else None
        edited, _ = tool.parse(json.dumps(record.arguments), prefill=prefill)
        return edited, to_jsonable_python(edited, fallback=str)

    def _refuse(
        self,
        batch: _Batch,
        journal: RunJournal,
        index: int,
        call: ToolCall,
        record: Any,
        problem: str,
    ) -> None:
        """A call that is not executed: the model is told why (recorded once)."""
        step = batch.step
        if record is None:
            side_effects = self._side_effects(call.name)
            journal.violation(step.seq, index, step.call_keys[index], call, problem, side_effects)
        batch.results.append(tool_message(call.id, problem, True))

    def _replay(self, batch: _Batch, call: ToolCall, record: Any) -> None:
        """A call settled before a crash or a pause, as the store has it."""
        batch.results.append(tool_message(call.id, _as_text(record.result), record.is_error))
        if record.status in (CallStatus.FINISHED, CallStatus.ERROR):
            self._advance(batch, call, record.result, self._beat_of(call))

    def _admit(
        self,
        journal: RunJournal,
        step: PendingStep,
        index: int,
        call: ToolCall,
        record: Any,
        arguments: Any,
        side_effects: bool,
        decision: Decision | None,
    ) -> _Admit:
        """Whether a call that passed judgement runs now (recorded as started), waits for a
        reviewer (`HOLD`), or was interrupted by a crash and is given up (`FAILED`); raises
        `_Pause` when it waits for a decision already asked for."""
        key = step.call_keys[index]
        if call.name in self._machine.approval:
            status = record.status if record is not None else None
            if status is None:
                if self._machine.needs_approval(call.name, arguments):
                    return _Admit.HOLD
                journal.call_started(step, index, call, arguments, side_effects)
                return _Admit.RUN
            if status == CallStatus.AWAITING_APPROVAL:
                raise _Pause(StopReason.AWAITING_APPROVAL, key)
            if status == CallStatus.APPROVED:
                journal.call_approved(key)
                return _Admit.RUN
            # started after approval, then interrupted: as any interrupted call
        if record is None:
            journal.call_started(step, index, call, arguments, side_effects)
            return _Admit.RUN
        if record.status == CallStatus.STARTED and side_effects and not _reentrant(self, call):
            # Started before a crash, never finished: run again or given up, as decided.
            if decision is None:
                raise _Pause(StopReason.AWAITING_DECISION, key)
            if decision == "fail":
                journal.call_failed(key, _INTERRUPTED)
                return _Admit.FAILED
        return _Admit.RUN

    def _advance(self, batch: _Batch, call: ToolCall, output: Any, beat: bool | None) -> None:
        """Move the machine on past a call that ran (or ran before a crash)."""
        machine = self._machine
        batch.position = machine.advance(batch.position, call.name, output)
        verdict = machine.after_call(batch.position, call.name, heartbeat=beat)
        batch.verdicts.append(verdict)
        if _cuts(verdict):
            batch.cut, batch.cut_tool = verdict, call.name

    def _conclude(self, state: RunState, batch: _Batch) -> tuple[StopReason | None, str | None]:
        """Decide how the run goes on after a settled step, and move `state` past it:
        (the stop reason, None: it goes on; the message for the model, if any)."""
        step = batch.step
        decision, reason, stop, nag = self._decide(step, batch.position, batch.verdicts, batch.cut)
        if reason == "forced_call_missing":
            state.forced_misses += 1
            if state.forced_misses > MAX_FORCED_REASKS:
                # The server does not honour forcing and the model keeps answering in text:
                # re-asking for ever would only burn the step limit.
                decision, stop, nag = "stop", StopReason.FORCING_IGNORED, None
        else:
            state.forced_misses = 0
        if nag:
            batch.results.append(Message(role="user", text=nag))
        if stop is None and step.seq + 1 >= self.max_steps:
            decision, reason, stop = "stop", StopReason.STEP_LIMIT.value, StopReason.STEP_LIMIT
        batch.decision, batch.reason = decision, reason
        state.messages.append(step.message or step.reply.to_message())
        state.messages.extend(batch.results)
        state.position = batch.position
        state.seq = step.seq + 1
        state.usage = state.usage + step.reply.usage
        return stop, nag or None

    async def _commit(
        self,
        state: RunState,
        batch: _Batch,
        stop: StopReason | None,
        journal: RunJournal,
    ) -> StepCommitted:
        """Record the step, durably before the next model call; its event."""
        step = batch.step
        dumped = self._machine.dump(batch.position)
        journal.step_committed(
            state,
            step,
            dumped,
            batch.decision,
            batch.reason,
            batch.results,
            stop,
            _STOP_ERRORS.get(stop) if stop is not None else None,
        )
        await journal.flush()
        return StepCommitted(step.seq, batch.decision, batch.reason, dumped, step.reply.usage)

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
            return "stop", cut.reason.value, cut.stop_reason, None
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
            return "continue", verdict.reason.value, None, verdict.message
        return "stop", verdict.reason.value, verdict.stop_reason, None

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


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
