"""A run as a Temporal workflow: the loop of a local run, its I/O moved into activities.

`RunWorkflow` runs `TemporalRunner`, the local `Runner` with its seams replaced; the
compiled machine, gating and every loop decision run in the workflow and are deterministic.

- The run is created by the activity `toolfsm.create_run`, under the owner
  `temporal:<run id>`: whichever worker runs an activity of it writes as the workflow.
- Each model request is the activity `toolfsm.ask_model`. It reads the run's messages from
  the store by (run id, step): the conversation never travels in the workflow's history.
- Each tool call is the activity `toolfsm.run_tool`. A side-effect tool gets one attempt;
  interrupted (its worker killed), the run waits as `awaiting_decision` for `retry` or
  `fail`, as a local run does. An idempotent tool is retried by Temporal.
- The journal (`WorkflowJournal`) writes nothing itself: at each of a local run's
  durability points its append is queued, and the next activity writes the queue before it
  does anything else; `toolfsm.write` writes it when no activity follows (a pause, the
  end). A retried activity skips the appends its first attempt wrote.
- A held call (approval) or an interrupted one (decision) pauses the run as locally, on
  record; the decision comes as the workflow update `decide`, whose validator refuses a
  wrong call id while the run keeps waiting. The activity `toolfsm.decide` records it as
  `runs approve` does, and the loop goes on from the kept state like a local resume.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from engine.machine import StopReason
from engine.providers.base import Message, ModelReply, ModelRequest
from engine.providers.errors import MalformedReply, ProviderError
from engine.runtime.agent import Agent
from engine.runtime.agents import Waiting
from engine.runtime.events import RunResult, RunStarted
from engine.runtime.journal import Journal, RunJournal, status_for
from engine.runtime.loop import Decision as LocalDecision
from engine.runtime.loop import Runner, _Pause
from engine.runtime.state import PendingStep, RunState, reply_from_dict
from engine.store.protocol import NullStore
from engine.store.records import ToolCallRecord
from engine.temporal.shelf import shelf_for
from engine.temporal.wire import (
    WORKFLOW,
    CreateRun,
    DecideCall,
    Decided,
    Decision,
    ModelCall,
    RunSpec,
    ToolCallInput,
    ToolOutcome,
    WireAppend,
    owner_of,
)
from engine.tools import Tool, ToolResult

__all__ = ["RunWorkflow", "TemporalRunner", "WorkflowJournal"]

# Heartbeats every second; a worker that stops sending them for this long is dead, and its
# activity is tried again elsewhere (or, a side effect, left for a decision).
HEARTBEAT_TIMEOUT = timedelta(seconds=5)
MODEL_TIMEOUT = timedelta(minutes=10)
TOOL_TIMEOUT = timedelta(minutes=10)
STORE_TIMEOUT = timedelta(seconds=60)
# Model requests and idempotent tools: tried again after a worker died (a provider's own
# errors are not: the provider retried already, and the run stops with them as locally).
RETRIED = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=10,
    non_retryable_error_types=["ProviderError", "MalformedReply", "RunDiverged"],
)
ONCE = RetryPolicy(maximum_attempts=1)

_COMMANDS = {
    "approve": "runs approve",
    "deny": "runs deny",
    "retry": "runs resume --retry",
    "fail": "runs resume --mark-failed",
}
_PAUSES = (StopReason.AWAITING_APPROVAL, StopReason.AWAITING_DECISION)
_FITS = {
    StopReason.AWAITING_APPROVAL: ("approve", "deny"),
    StopReason.AWAITING_DECISION: ("retry", "fail"),
}


class WorkflowJournal(Journal):
    """A run's journal inside its workflow: each append is queued for the next activity to
    write (`take`), in order, before the activity does anything else. It holds no lease
    (the run's owner is the workflow's, for its whole life) and keeps no clock but the
    workflow's."""

    __slots__ = ("ended", "open_step", "queued")

    def __init__(self, run_id: str, agent: Agent) -> None:
        super().__init__(NullStore(), run_id, owner_of(run_id), lease=None, dump=agent.machine.dump)
        self.queued: list[WireAppend] = []
        self.open_step: PendingStep | None = None  # the step whose calls were last opened
        self.ended: StopReason | None = None  # the last pause or stop recorded

    def opened(self, position: Any, dumped: Any) -> None:
        """The run is created (its `run_created` is event 0)."""
        self._position = (position, dumped)
        self._totals["position"] = dumped
        self._next_event = 1

    def resumed(self, next_event: int) -> None:
        """A decision (and the run's `resumed`) was written by `toolfsm.decide`."""
        self._next_event = next_event

    def step_started(self) -> datetime | None:
        return workflow.now()

    def call_started(
        self, step: PendingStep, index: int, call: Any, arguments: Any, side_effects: bool
    ) -> None:
        self.open_step = step
        super().call_started(step, index, call, arguments, side_effects)

    async def call_held(
        self, step: PendingStep, index: int, call: Any, arguments: Any, side_effects: bool
    ) -> None:
        self.open_step = step
        await super().call_held(step, index, call, arguments, side_effects)

    def _stop(self, stop: StopReason, error: str | None) -> None:
        super()._stop(stop, error)
        self.ended = stop
        if status_for(stop).is_terminal:
            self._release = True  # the run's end gives it up (a pause keeps it)

    async def flush(self, *, renew: bool = False) -> None:
        self.flush_now()

    def flush_now(self) -> None:
        append, _ = self._take(False)
        if append is not None:
            self.queued.append(WireAppend.of(append))
            self._committed(append, 0.0)

    def take(self) -> list[WireAppend]:
        """The queued appends, for the next activity to write first."""
        queued, self.queued = self.queued, []
        return queued


class _Remote:
    """The model of a workflow's run: asked from the `toolfsm.ask_model` activity only
    (`TemporalRunner._ask_model`), never from the workflow."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def complete(self, request: ModelRequest) -> ModelReply:
        raise RuntimeError("a Temporal run asks its model from an activity (toolfsm.ask_model)")


class TemporalRunner(Runner):
    """The local loop with its I/O as activities (see the module's docstring)."""

    def __init__(self, agent: Agent, spec: RunSpec) -> None:
        super().__init__(
            agent,
            _Remote(spec.model),
            max_steps=spec.max_steps,
            model=spec.model,
            options=spec.options,
            owner=owner_of(spec.run_id),
        )
        self._tracer = None  # spans are a local run's; a workflow must not export from replay
        self.spec = spec
        self.journal = WorkflowJournal(spec.run_id, agent)
        self._kept: RunState | None = None  # the state a pause left
        self._decided: Decided | None = None

    async def start(self) -> RunResult:
        """The run from its start to its end or first pause, on record."""
        result = await self.run(self.spec.input, run_id=self.spec.run_id)
        await self._write_queued()
        return result

    async def go_on(self, decided: Decided) -> RunResult:
        """After a decision: on from the pause, to the end or the next pause."""
        self._decided = decided
        self.journal.resumed(decided.next_event)
        local: LocalDecision | None = None
        if decided.decision == "retry":
            local = "retry"
        elif decided.decision == "fail":
            local = "fail"
        result = await self.resume(self.spec.run_id, decision=local)
        await self._write_queued()
        return result

    async def cancelled(self) -> None:
        """The workflow is cancelled: the run stops as cancelled, on record (the loop records
        that itself when it is cancelled while it runs; a paused run is recorded here)."""
        ended = self.journal.ended
        if ended is None or not status_for(ended).is_terminal:
            self.journal.cancelled()
        await self._write_queued()

    # -- the seams -------------------------------------------------------------------

    async def _start(self, input: str | Message, run_id: str | None) -> Any:
        machine, spec = self._machine, self.spec
        position = machine.start()
        dumped = machine.dump(position)
        options = {**self.options, "tools": self.agent.tools_ref, "max_steps": self.max_steps}
        created = CreateRun(spec, self.journal.owner, dumped, options)
        await workflow.execute_activity(
            "toolfsm.create_run", created, start_to_close_timeout=STORE_TIMEOUT
        )
        self.journal.opened(position, dumped)
        first = input if isinstance(input, Message) else Message(role="user", text=input)
        state = RunState(spec.run_id, position, [first], next_message=1)
        return state, None, self.journal, RunStarted(spec.run_id, self.agent.name, self.model)

    async def _resume(self, run_id: str) -> Any:
        state, step, decided = self._kept, self.journal.open_step, self._decided
        assert state is not None and step is not None and decided is not None
        records = [ToolCallRecord.model_validate(c) for c in decided.step_calls]
        pending = PendingStep(
            step.seq,
            step.position_before,
            step.gate,
            step.reply,
            step.started_at,
            step.call_keys,
            {r.call_id: r for r in records},
            step.message,
        )
        started = RunStarted(run_id, self.agent.name, self.model, resumed=True)
        return state, pending, self.journal, started

    async def _ask_model(self, request: ModelRequest, state: RunState) -> ModelReply:
        spec = self.spec
        asked = ModelCall(
            spec.run_id,
            spec.agent,
            spec.rules_sha256,
            state.seq,
            self._machine.dump(state.position),
            len(state.messages),
            self.journal.take(),
        )
        try:
            reply = await workflow.execute_activity(
                "toolfsm.ask_model",
                asked,
                start_to_close_timeout=MODEL_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=RETRIED,
            )
        except ActivityError as exc:
            raise _provider_error(exc, self.model) from None
        return reply_from_dict(reply)

    def _execute(self, state: RunState, key: str, tool: Tool, arguments: dict[str, Any]) -> Any:
        return self._run_tool(key, tool, arguments)

    async def _run_tool(
        self, key: str, tool: Tool, arguments: dict[str, Any]
    ) -> ToolResult | Waiting:
        spec = self.spec
        call = ToolCallInput(
            spec.run_id,
            spec.agent,
            spec.rules_sha256,
            tool.name,
            to_jsonable_python(arguments, fallback=str),
            key,
            self.journal.take(),
        )
        # An agent tool's call is re-entrant (it finds the callee runs it started), so it is
        # tried again like an idempotent tool's.
        again = tool.idempotent or tool.agent_call is not None
        try:
            outcome = await workflow.execute_activity(
                "toolfsm.call_agents" if tool.agent_call is not None else "toolfsm.run_tool",
                call,
                result_type=ToolOutcome,
                start_to_close_timeout=TOOL_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=RETRIED if again else ONCE,
            )
        except ActivityError as exc:
            if again:
                return ToolResult(f"the tool could not be run: {_cause(exc)}", True, 0)
            # A side effect that may or may not have happened: a human decides, as locally.
            raise _Pause(StopReason.AWAITING_DECISION, key) from None
        if outcome.waiting is not None:
            return Waiting(tuple(outcome.waiting))
        return ToolResult(outcome.output, outcome.is_error, outcome.duration_ms)

    async def _stop(
        self,
        state: RunState,
        journal: RunJournal,
        stop: StopReason,
        error: str | None = None,
        **more: Any,
    ) -> Any:
        self._kept = state
        return await super()._stop(state, journal, stop, error, **more)

    async def _write_queued(self) -> None:
        writes = self.journal.take()
        if writes:
            await workflow.execute_activity(
                "toolfsm.write", writes, start_to_close_timeout=STORE_TIMEOUT
            )


def _cause(exc: ActivityError) -> str:
    cause = exc.cause
    return str(cause) if cause is not None else str(exc)


def _provider_error(exc: ActivityError, model: str) -> ProviderError:
    """The model activity's failure as the loop knows it: the provider's own error (the run
    stops with it, as locally), or a timeout when the activity could not finish."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type in ("ProviderError", "MalformedReply"):
        details = cause.details[0] if cause.details else {}
        if cause.type == "MalformedReply":
            return MalformedReply(
                details.get("message", cause.message),
                provider=details.get("provider", model),
                raw=details.get("raw", ""),
                tool_choice_sent=details.get("tool_choice_sent"),
            )
        return ProviderError(
            details.get("message", cause.message),
            provider=details.get("provider", model),
            kind=details.get("kind", "server_error"),
            retryable=details.get("retryable"),
            status_code=details.get("status_code"),
            request_id=details.get("request_id"),
        )
    return ProviderError(
        f"the model activity failed: {_cause(exc)}", provider=model, kind="timeout"
    )


@workflow.defn(name=WORKFLOW, sandboxed=False)
class RunWorkflow:
    """One toolfsm run: to its end, waiting for decisions on the way."""

    def __init__(self) -> None:
        self._waiting: tuple[StopReason, str] | None = None  # (why, the call waited on)
        self._decided: Decided | None = None
        self._spec: RunSpec | None = None

    @workflow.run
    async def run(self, spec: RunSpec) -> dict[str, Any]:
        self._spec = spec
        agent = shelf_for(workflow.info().task_queue).find(spec.agent, spec.rules_sha256)
        runner = TemporalRunner(agent, spec)
        try:
            result = await runner.start()
            while result.stop_reason in _PAUSES:
                self._waiting = (result.stop_reason, result.pending_call or "")
                await workflow.wait_condition(self._has_decision)
                decided, self._decided = self._decided, None
                assert decided is not None
                result = await runner.go_on(decided)
        except asyncio.CancelledError:
            # The workflow was cancelled (`temporal workflow cancel`, or a client's
            # handle.cancel()): on record as cancelled, as a local run's task is.
            self._waiting = None
            await runner.cancelled()
            raise
        return {
            "run_id": result.run_id,
            "stop_reason": result.stop_reason.value,
            "steps": result.steps,
            "error": result.error,
            "text": result.text,
        }

    def _has_decision(self) -> bool:
        return self._decided is not None

    @workflow.query(name="waiting")
    def waiting(self) -> dict[str, str] | None:
        """What the run waits on: {"stop_reason", "call_id"}, or None."""
        if self._waiting is None:
            return None
        return {"stop_reason": self._waiting[0].value, "call_id": self._waiting[1]}

    @workflow.update(name="decide")
    async def decide(self, decision: Decision) -> dict[str, Any]:
        """Record the decision, then let the run go on; returns the call's record."""
        waiting, spec = self._waiting, self._spec
        if waiting is None or spec is None:  # a second decision that passed validation too
            raise ApplicationError("the call was decided already", type="AlreadyDecided")
        self._waiting = None
        call = DecideCall(
            spec.run_id, spec.agent, spec.rules_sha256, owner_of(spec.run_id), waiting[1], decision
        )
        try:
            decided = await workflow.execute_activity(
                "toolfsm.decide", call, result_type=Decided, start_to_close_timeout=STORE_TIMEOUT
            )
        except ActivityError as exc:
            self._waiting = waiting  # refused (e.g. an edit that breaks the schema): still waits
            raise ApplicationError(_cause(exc), type="DecisionRefused") from None
        self._decided = decided
        step = next(
            (c["step_seq"] for c in decided.step_calls if c["call_id"] == decided.call_id), 0
        )
        return {
            "call_id": decided.call_id,
            "tool": decided.tool,
            "status": decided.status,
            "step": step,
        }

    @decide.validator
    def _check_decision(self, decision: Decision) -> None:
        check_decision(self._spec, self._waiting, decision)


def check_decision(
    spec: RunSpec | None, waiting: tuple[StopReason, str] | None, decision: Decision
) -> None:
    """Refuse a decision that does not fit what the run waits on (the run keeps waiting)."""
    run = spec.run_id if spec is not None else "?"
    if waiting is None:
        raise ValueError(f"run {run} is not waiting for a decision")
    why, call_id = waiting
    fits = _FITS[why]
    if decision.decision not in fits:
        verbs = " or ".join(_COMMANDS[v] for v in fits)
        raise ValueError(f"run {run} is {why.value} on call {call_id}: use {verbs}")
    if decision.call_id is not None and decision.call_id != call_id:
        raise ValueError(
            f"run {run}: no call {decision.call_id!r} awaits a decision (waiting: {call_id})"
        )
