"""OpenTelemetry spans of a run, read off its event stream (optional extra `toolfsm[otel]`).

The loop does not know about tracing: when tracing is on, `traced` wraps the run's event
stream and turns the events into spans as they pass; when it is off, nothing is wrapped and a
step pays nothing. Tracing is on when a `Runner` is given a `tracer_provider`, when the
standard `OTEL_TRACES_EXPORTER` names an exporter (`console`, `otlp`; the other `OTEL_*`
variables configure it, as the SDK reads them), or when the application has set a global
tracer provider of its own. `OTEL_SDK_DISABLED=true` turns it off.

The spans follow the OpenTelemetry GenAI semantic conventions where they have a name:

    invoke_agent {agent}      a run (or a resumed stretch of it)
      toolfsm.step {n}        a step: its gate (allowed tools, forcing), the position before
                              and after, the decision
        chat {model}          the model request (CLIENT): model, token usage
        execute_tool {tool}   a tool call: name, call id (a replayed call is marked)

Span events: `toolfsm.violation` and `toolfsm.approval_requested` on the step,
`toolfsm.decision` (who decided what, with edits or not) on the resumed run's span.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import MissingExtraError
from engine.runtime.events import (
    ApprovalRequested,
    Event,
    Notice,
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

if TYPE_CHECKING:
    from engine.store.protocol import Store

__all__ = ["SCOPE", "configured_tracer", "traced"]

# The instrumentation scope the spans are reported under.
SCOPE = "toolfsm"

# The SDK provider built from OTEL_TRACES_EXPORTER, once per process.
_FROM_ENV: Any = None


def _provider_from_env(exporter: str) -> Any:
    """A TracerProvider with the exporters OTEL_TRACES_EXPORTER names (comma-separated),
    batched and flushed at exit; its resource from OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES (the SDK reads them)."""
    global _FROM_ENV
    if _FROM_ENV is not None:
        return _FROM_ENV
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise MissingExtraError("OTEL_TRACES_EXPORTER", "otel") from None
    provider = TracerProvider(resource=Resource.create({"service.name": _service_name()}))
    for name in (n.strip() for n in exporter.split(",")):
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                raise MissingExtraError("OTEL_TRACES_EXPORTER=otlp", "otel") from None
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name not in ("", "none"):
            from engine.errors import ToolfsmError

            raise ToolfsmError(
                f"OTEL_TRACES_EXPORTER={exporter!r}: toolfsm knows the exporters console, "
                "otlp and none"
            )
    atexit.register(provider.shutdown)
    _FROM_ENV = provider
    return provider


def _service_name() -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or "toolfsm"


def configured_tracer(tracer_provider: Any = None) -> Any:
    """The tracer a run reports to, or None when tracing is off (then nothing is imported:
    no cost without the extra or without an exporter)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if tracer_provider is None:
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if exporter and exporter != "none":
            tracer_provider = _provider_from_env(exporter)
        elif "opentelemetry.trace" in sys.modules:
            # The application set up OpenTelemetry itself: report to its global provider.
            from opentelemetry import trace

            tracer_provider = trace.get_tracer_provider()
            if type(tracer_provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
                return None
        else:
            return None
    from engine.meta import version

    return tracer_provider.get_tracer(SCOPE, version())


@dataclass
class _Spans:
    """The spans open while a run's events pass, and what they need to be finished."""

    tracer: Any
    provider: str
    model: str
    store: Store | None
    start_position: dict[str, Any]
    streamed: bool
    run: Any = None
    step: Any = None
    chat: Any = None
    chat_done_ns: int | None = None
    tools: dict[str, Any] = field(default_factory=dict)
    position: dict[str, Any] | None = None

    def child(self, parent: Any, name: str, attributes: dict[str, Any], kind: Any = None) -> Any:
        from opentelemetry import trace

        context = trace.set_span_in_context(parent)
        kind = kind if kind is not None else trace.SpanKind.INTERNAL
        return self.tracer.start_span(name, context=context, kind=kind, attributes=attributes)

    def on(self, event: Event) -> None:
        # The reply is complete at the first event that is not one of its streamed pieces
        # (a whole reply's text comes after it is complete).
        if (
            self.chat is not None
            and self.chat_done_ns is None
            and not (self.streamed and isinstance(event, TextDelta | ToolCallDelta))
        ):
            self.chat_done_ns = time.time_ns()
        if self.step is None and isinstance(event, _IN_A_STEP):
            self._resumed_step(event.seq)
        handle = _HANDLERS.get(type(event))
        if handle is not None:
            handle(self, event)

    def _tool_started(self, event: ToolCallStarted) -> None:
        self.tools[event.call_id] = self.child(
            self.step or self.run,
            f"execute_tool {event.tool}",
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": event.tool,
                "gen_ai.tool.call.id": event.call_id,
                "gen_ai.tool.type": "function",
                "toolfsm.call.replayed": event.replayed,
            },
        )

    def _violation(self, event: Violation) -> None:
        self._step_event(
            "toolfsm.violation",
            {
                "gen_ai.tool.name": event.tool,
                "gen_ai.tool.call.id": event.call_id,
                "toolfsm.violation.message": event.message,
            },
        )

    def _held(self, event: ApprovalRequested) -> None:
        self._step_event(
            "toolfsm.approval_requested",
            {"gen_ai.tool.name": event.tool, "gen_ai.tool.call.id": event.call_id},
        )

    def _notice(self, event: Notice) -> None:
        self._step_event("toolfsm.notice", {"toolfsm.notice.text": event.text})

    def _committed(self, event: StepCommitted) -> None:
        self._step_done(event.position, event.decision, event.reason, event.usage)

    def _run_started(self, event: RunStarted) -> None:
        from opentelemetry import trace

        self.position = self.start_position
        self.run = self.tracer.start_span(
            f"invoke_agent {event.agent}",
            kind=trace.SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": event.agent,
                "gen_ai.conversation.id": event.run_id,
                "gen_ai.provider.name": self.provider,
                "gen_ai.request.model": self.model,
                "toolfsm.run.id": event.run_id,
                "toolfsm.run.resumed": event.resumed,
            },
        )
        if event.resumed and self.store is not None:
            self._decisions(event.run_id)

    def _decisions(self, run_id: str) -> None:
        """The decisions this resume acts on (those on the calls of the step not committed
        yet), as events of the run's span."""
        assert self.store is not None
        snapshot = self.store.load_run(run_id)
        if isinstance(snapshot.run.position, dict):
            self.position = snapshot.run.position
        step = snapshot.run.steps_count
        pending = {c.call_id for c in snapshot.calls if c.step_seq >= step}
        for decision in snapshot.decisions:
            if decision.call_id in pending:
                attributes = {
                    "gen_ai.tool.call.id": decision.call_id,
                    "toolfsm.decision": decision.decision,
                    "toolfsm.decision.by": decision.reviewer or "",
                    "toolfsm.decision.edited": decision.arguments_after is not None,
                }
                if decision.reason:
                    attributes["toolfsm.decision.reason"] = decision.reason
                at = int(decision.decided_at.timestamp() * 1e9)
                self.run.add_event("toolfsm.decision", attributes, timestamp=at)

    def _step_started(self, event: StepStarted) -> None:
        self.step = self.child(
            self.run,
            f"toolfsm.step {event.seq}",
            {
                "toolfsm.step.seq": event.seq,
                "toolfsm.step.allowed": list(event.allowed),
                "toolfsm.step.forced": event.force,
                "toolfsm.step.forced_tool": event.forced_tool or "",
                "toolfsm.position.before": _node(self.position),
            },
        )
        from opentelemetry import trace

        self.chat_done_ns = None
        self.chat = self.child(
            self.step,
            f"chat {self.model}",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": self.provider,
                "gen_ai.request.model": self.model,
            },
            trace.SpanKind.CLIENT,
        )

    def _resumed_step(self, seq: int) -> None:
        """The step a resume finishes (it has no `StepStarted`: its reply is stored)."""
        self.step = self.child(
            self.run,
            f"toolfsm.step {seq}",
            {
                "toolfsm.step.seq": seq,
                "toolfsm.step.resumed": True,
                "toolfsm.position.before": _node(self.position),
            },
        )

    def _tool_done(self, event: ToolResultEvent) -> None:
        span = self.tools.pop(event.call_id, None)
        if span is None:
            return
        if event.is_error:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("error.type", "tool_error")
            span.set_status(Status(StatusCode.ERROR, _text(event.output)))
        if event.duration_ms is not None:
            span.set_attribute("toolfsm.call.duration_ms", event.duration_ms)
        span.end()

    def _step_event(self, name: str, attributes: dict[str, Any]) -> None:
        (self.step or self.run).add_event(name, attributes)

    def _end_chat(self, usage: Any) -> None:
        if self.chat is None:
            return
        if usage is not None:
            self.chat.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            self.chat.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        self.chat.end(end_time=self.chat_done_ns)
        self.chat = None

    def _step_done(
        self, position: dict[str, Any] | None, decision: str, reason: str, usage: Any
    ) -> None:
        self._end_chat(usage)
        for span in self.tools.values():
            span.end()
        self.tools.clear()
        if self.step is None:
            return
        if position is not None:
            self.position = position
        self.step.set_attribute("toolfsm.position.after", _node(self.position))
        self.step.set_attribute("toolfsm.step.decision", decision)
        if reason:
            self.step.set_attribute("toolfsm.step.reason", reason)
        self.step.end()
        self.step = None

    def _stopped(self, event: Stopped) -> None:
        result = event.result
        stop = str(result.stop_reason)
        # A paused (or failed) step: its reply was paid for, its tokens are the result's.
        self._step_done(None, "stop", stop, result.pending_usage)
        run = self.run
        run.set_attribute("toolfsm.run.stop_reason", stop)
        run.set_attribute("toolfsm.run.steps", result.steps)
        run.set_attribute("gen_ai.usage.input_tokens", result.usage.input_tokens)
        run.set_attribute("gen_ai.usage.output_tokens", result.usage.output_tokens)
        if result.error:
            from opentelemetry.trace import Status, StatusCode

            run.set_attribute("error.type", stop)
            run.set_status(Status(StatusCode.ERROR, result.error))
        run.end()
        self.run = None

    def abandon(self, exc: BaseException | None) -> None:
        """End what is still open (the consumer stopped early, or the loop raised)."""
        for span in [*self.tools.values(), self.chat, self.step, self.run]:
            if span is None:
                continue
            if exc is not None and not isinstance(exc, GeneratorExit):
                span.record_exception(exc)
                from opentelemetry.trace import Status, StatusCode

                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
        self.tools.clear()
        self.chat = self.step = self.run = None


# What each kind of event does to the spans (the others, the reply's pieces, nothing).
_HANDLERS: dict[type, Callable[[_Spans, Any], None]] = {
    RunStarted: _Spans._run_started,
    StepStarted: _Spans._step_started,
    ToolCallStarted: _Spans._tool_started,
    ToolResultEvent: _Spans._tool_done,
    Violation: _Spans._violation,
    ApprovalRequested: _Spans._held,
    Notice: _Spans._notice,
    StepCommitted: _Spans._committed,
    Stopped: _Spans._stopped,
}

# The events of a step's calls (and its commit): a resumed step's first opens its span.
_IN_A_STEP = (ToolCallStarted, ToolResultEvent, Violation, ApprovalRequested, StepCommitted)


def _node(position: Any) -> str:
    return str(position.get("node", "")) if isinstance(position, dict) else ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


async def traced(
    events: AsyncIterator[Event],
    tracer: Any,
    *,
    model: str,
    start_position: dict[str, Any],
    store: Store | None,
    streamed: bool,
) -> AsyncIterator[Event]:
    """`events`, unchanged, with spans made of them on the way (see the module docstring)."""
    provider, _, name = model.partition(":")
    spans = _Spans(tracer, provider, name or provider, store, start_position, streamed)
    failure: BaseException | None = None
    try:
        async for event in events:
            spans.on(event)
            yield event
    except BaseException as exc:
        failure = exc
        raise
    finally:
        spans.abandon(failure)
        await events.aclose()  # type: ignore[attr-defined]
