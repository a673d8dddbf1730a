"""OpenTelemetry spans of real runs, exported to the SDK's in-memory exporter: names,
GenAI attributes, parent/child links, span events; and no tracing (nothing wrapped, nothing
imported) when nothing is configured."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

import engine
from engine.runtime import approve

REPO = Path(__file__).resolve().parents[2]
SCREENING = REPO / "examples/screening"
SUPPORT = REPO / "examples/support"


@pytest.fixture
def exported() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _runner(agent_dir: Path, provider: TracerProvider, store: Any = None) -> engine.Runner:
    agent = engine.load_agent(agent_dir / "agent.yaml")
    model = engine.make_provider(f"scripted:{agent_dir / 'script.yaml'}")
    return engine.Runner(
        agent, model, store=store, model=f"scripted:{agent_dir.name}", tracer_provider=provider
    )


def _tree(spans: tuple[ReadableSpan, ...]) -> list[tuple[int, str]]:
    """(depth, name) of every span, parents before children, siblings by start time."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        by_parent.setdefault(parent, []).append(span)
    out: list[tuple[int, str]] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(by_parent.get(parent, []), key=lambda s: s.start_time or 0):
            out.append((depth, span.name))
            assert span.context is not None
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    assert len(out) == len(spans)  # every span hangs off the run's
    return out


def test_a_screening_run_exports_its_spans(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    result = _runner(SCREENING, provider).run_sync("Please screen application A-1042.")
    assert str(result.stop_reason) == "terminal_tool"
    spans = exporter.get_finished_spans()
    assert _tree(spans) == [
        (0, "invoke_agent screening"),
        (1, "toolfsm.step 0"),
        (2, "chat screening"),
        (2, "execute_tool load_application"),
        (1, "toolfsm.step 1"),
        (2, "chat screening"),
        (2, "execute_tool check_requirements"),
        (1, "toolfsm.step 2"),
        (2, "chat screening"),
        (2, "execute_tool schedule_interview"),
    ]
    by_name = {s.name: s for s in spans}
    run = by_name["invoke_agent screening"]
    assert run.attributes is not None
    assert dict(run.attributes) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "screening",
        "gen_ai.conversation.id": result.run_id,
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "screening",
        "toolfsm.run.id": result.run_id,
        "toolfsm.run.resumed": False,
        "toolfsm.run.stop_reason": "terminal_tool",
        "toolfsm.run.steps": 3,
        "gen_ai.usage.input_tokens": result.usage.input_tokens,
        "gen_ai.usage.output_tokens": result.usage.output_tokens,
    }
    steps = sorted((s for s in spans if s.name.startswith("toolfsm.step")), key=lambda s: s.name)
    first = dict(steps[0].attributes or {})
    assert first["toolfsm.step.allowed"] == ("load_application",)
    assert first["toolfsm.step.forced"] is True
    assert first["toolfsm.step.forced_tool"] == "load_application"
    assert first["toolfsm.position.before"] == "start"
    assert first["toolfsm.position.after"] == "after:load_application"
    assert first["toolfsm.step.decision"] == "continue"
    # Each step's position after is the next one's position before.
    for before, after in itertools.pairwise(steps):
        assert (
            dict(after.attributes or {})["toolfsm.position.before"]
            == dict(before.attributes or {})["toolfsm.position.after"]
        )
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert all(s.kind is SpanKind.CLIENT for s in chats)
    assert sum(dict(s.attributes or {})["gen_ai.usage.input_tokens"] for s in chats) == (
        result.usage.input_tokens
    )
    assert dict(chats[0].attributes or {})["gen_ai.operation.name"] == "chat"
    tool = by_name["execute_tool check_requirements"]
    attributes = dict(tool.attributes or {})
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "check_requirements"
    assert attributes["gen_ai.tool.call.id"] == "call_2"
    assert attributes["gen_ai.tool.type"] == "function"
    assert tool.status.status_code is StatusCode.UNSET
    # The model's span ends before its step's tools start.
    for step in steps:
        assert step.context is not None
        kids = [s for s in spans if s.parent and s.parent.span_id == step.context.span_id]
        chat = next(s for s in kids if s.name.startswith("chat"))
        assert all((chat.end_time or 0) <= (k.start_time or 0) for k in kids if k.name != chat.name)


def test_violation_approval_and_decision_are_span_events(
    exported: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    provider, exporter = exported
    store = engine.open_store(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        runner = _runner(SUPPORT, provider, store)
        paused = runner.run_sync("Ticket T-8812: refund the kettle, please.")
        assert str(paused.stop_reason) == "awaiting_approval"
        first = exporter.get_finished_spans()
        events = {e.name: e for s in first for e in s.events}
        violation = events["toolfsm.violation"]
        assert dict(violation.attributes or {})["gen_ai.tool.name"] == "refund"
        assert "may only be called right after" in str(
            dict(violation.attributes or {})["toolfsm.violation.message"]
        )
        held = events["toolfsm.approval_requested"]
        assert dict(held.attributes or {})["gen_ai.tool.call.id"] == paused.pending_call
        paused_step = next(s for s in first if s.name == "toolfsm.step 2")
        assert dict(paused_step.attributes or {})["toolfsm.step.reason"] == "awaiting_approval"
        exporter.clear()

        edit = {"order_id": "O-5531", "amount": 20.0, "reason": "goodwill"}
        approve(store, paused.run_id, arguments=edit, by="lead", agent=runner.agent)
        finished = asyncio.run(runner.resume(paused.run_id))
        assert str(finished.stop_reason) == "terminal_tool"
        second = exporter.get_finished_spans()
        (run,) = [s for s in second if s.name == "invoke_agent support"]
        assert dict(run.attributes or {})["toolfsm.run.resumed"] is True
        (decision,) = run.events
        assert decision.name == "toolfsm.decision"
        assert dict(decision.attributes or {}) == {
            "gen_ai.tool.call.id": paused.pending_call,
            "toolfsm.decision": "approve",
            "toolfsm.decision.by": "lead",
            "toolfsm.decision.edited": True,
        }
        # The approved call ran in the resumed step, a child of its span, with the edit.
        refund = next(s for s in second if s.name == "execute_tool refund")
        step = next(s for s in second if s.name == "toolfsm.step 2")
        assert refund.parent is not None and step.context is not None
        assert refund.parent.span_id == step.context.span_id
        assert dict(step.attributes or {})["toolfsm.position.before"] == "after:lookup_order"
        stored = store.load_run(paused.run_id)
        assert next(c for c in stored.calls if c.call_id == paused.pending_call).arguments == edit
    finally:
        store.close()


def test_nothing_configured_means_no_tracing_at_all() -> None:
    """Without a provider, an exporter or an application's own OpenTelemetry set-up, the
    loop's events are not wrapped and OpenTelemetry is never imported."""
    code = (
        "import sys, engine\n"
        "agent = engine.load_agent('examples/screening/agent.yaml')\n"
        "runner = engine.Runner(agent, engine.make_provider("
        "'scripted:examples/screening/script.yaml'))\n"
        "assert runner._tracer is None\n"
        "print(runner.run_sync('Please screen application A-1042.').stop_reason)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["terminal_tool", "[]"]


def test_otel_traces_exporter_console_prints_the_spans_from_the_cli(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="screening-demo",
        TOOLFSM_DB=f"sqlite:///{tmp_path / 'runs.db'}",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "run", "examples/screening/agent.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # The console exporter prints one JSON object per span.
    decoder = json.JSONDecoder()
    text, spans, at = proc.stdout, [], 0
    while (start := text.find("{\n", at)) >= 0:
        span, at = decoder.raw_decode(text, start)
        spans.append(span)
    names = [s["name"] for s in spans]
    assert names.count("invoke_agent screening") == 1 and names.count("toolfsm.step 0") == 1
    run = next(s for s in spans if s["name"] == "invoke_agent screening")
    assert run["resource"]["attributes"]["service.name"] == "screening-demo"
    assert run["attributes"]["gen_ai.operation.name"] == "invoke_agent"


def test_an_unknown_exporter_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_TRACES_EXPORTER"] = "zipkin"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "run",
            "examples/screening/agent.yaml",
            "--db",
            "sqlite:///:memory:",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "toolfsm: error: OTEL_TRACES_EXPORTER='zipkin': toolfsm knows the exporters console, "
        "otlp and none"
    )
