"""A tool call's raw arguments have a size cap: above it the call is refused as a violation,
the model is told the cap, and the store keeps a truncated copy only."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from engine.providers.scripted import ScriptedProvider
from engine.runtime import Runner, Violation
from engine.store import SqlStore, open_store
from tests.runtime._helpers import make_agent, of

RAN: list[int] = []


def save(text: str) -> str:
    """Save a text."""
    RAN.append(len(text))
    return "saved"


def done() -> str:
    return "ok"


AGENT = """
version: 1
agent: saver
tools: [save, done]
rules:
  - terminal: done
"""
MB = 1024 * 1024


class Recording(ScriptedProvider):
    """The scripted model, keeping every request it was sent."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        super().__init__(replies)
        self.requests: list[Any] = []

    async def complete(self, request: Any) -> Any:
        self.requests.append(request)
        return await super().complete(request)


def _huge(size: int) -> str:
    return json.dumps({"text": "x" * size})


def _run(store: SqlStore | None, yaml: str, replies: list[dict[str, Any]], **kw: Any) -> Any:
    provider = Recording(replies)
    runner = Runner(make_agent(yaml, save, done), provider, store=store, **kw)

    async def main() -> list[Any]:
        return [event async for event in runner.stream("save these")]

    events = asyncio.run(main())
    return events, provider.requests


def _stored_text(store: SqlStore, run_id: str) -> str:
    return store.load_run(run_id).model_dump_json()


def test_oversized_arguments_are_refused_and_stored_truncated(tmp_path: Path) -> None:
    RAN.clear()
    replies = [
        {"calls": [{"call": "save", "raw_args": _huge(3 * MB)} for _ in range(3)]},
        {"call": "save", "args": {"text": "small"}},
        {"call": "done"},
    ]
    db = tmp_path / "runs.db"
    with open_store(f"sqlite:///{db}") as store:
        events, requests = _run(store, AGENT, replies)
        run_id = events[0].run_id
        assert RAN == [5]  # only the small call ran
        violations = of(events, Violation)
        assert len(violations) == 3
        for violation in violations:
            assert "above the cap of 1,048,576 bytes" in violation.message
            assert "run.max_argument_bytes" in violation.message
        # The model's next request carries the refusals (naming the cap), not the 9 MB.
        second = requests[1]
        tool_texts = [m.text for m in second.messages if m.role == "tool"]
        assert len(tool_texts) == 3 and all("1,048,576" in t for t in tool_texts)
        assert sum(len(c.arguments) for m in second.messages for c in m.tool_calls) < 10_000
        snap = store.load_run(run_id)
        refused = [c for c in snap.calls if c.status == "violation"]
        assert len(refused) == 3
        for call in refused:
            assert call.arguments is None
            assert len(call.arguments_raw) < 2_000
            assert call.arguments_raw.startswith('{"text": "xxx')
            assert "truncated" in call.arguments_raw
        assert len(_stored_text(store, run_id)) < 50_000
        assert snap.run.stop_reason == "terminal_tool"
    # The whole store: a few copies of 9 MB would be tens of megabytes.
    size = sum(p.stat().st_size for p in tmp_path.glob("runs.db*"))
    assert size < 2 * MB, size


def test_the_cap_is_a_run_setting_and_a_runner_option(store: SqlStore) -> None:
    RAN.clear()
    small_cap = AGENT + "run:\n  max_argument_bytes: 64\n"
    replies = [
        {"call": "save", "args": {"text": "y" * 100}},
        {"call": "save", "args": {"text": "ok"}},
        {"call": "done"},
    ]
    events, _ = _run(store, small_cap, replies)
    (violation,) = of(events, Violation)
    assert "are 112 bytes, above the cap of 64 bytes" in violation.message
    assert RAN == [2]
    # The Runner option wins over the file's setting.
    RAN.clear()
    events, _ = _run(store, small_cap, replies, max_argument_bytes=1_000)
    assert of(events, Violation) == []
    assert RAN == [100, 2]


def test_a_call_exactly_at_the_cap_runs(store: SqlStore) -> None:
    RAN.clear()
    raw = _huge(200)
    capped = AGENT + f"run:\n  max_argument_bytes: {len(raw.encode())}\n"
    events, _ = _run(store, capped, [{"call": "save", "raw_args": raw}, {"call": "done"}])
    assert of(events, Violation) == []
    assert RAN == [200]


def test_anthropic_tool_use_blocks_are_cut_down_too(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Anthropic replies carry their content blocks (tool_use input included) into the
    # history: the cap applies there as well, on the real SDK's wire.
    from engine.providers.anthropic import AnthropicProvider
    from tests.providers._provider_fakes import (
        FakeAPI,
        an_message,
        an_text,
        an_tool,
        anthropic_http_lib,
    )

    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    RAN.clear()
    api = FakeAPI(
        an_message(an_tool("t1", "save", {"text": "z" * (2 * MB)})),
        an_message(an_text("Too big; stopping.")),
        lib=anthropic_http_lib(),
    )
    provider = AnthropicProvider("claude-test", http_client=api.client(), max_tokens=100)
    runner = Runner(make_agent(AGENT, save, done), provider, store=store)
    result = asyncio.run(runner.run("save it"))
    assert result.stop_reason.value == "end_turn"
    assert RAN == []
    second = api.bodies[1]
    assert len(json.dumps(second)) < 20_000
    assistant = second["messages"][1]["content"]
    (tool_use,) = [b for b in assistant if b["type"] == "tool_use"]
    assert tool_use["id"] == "t1" and "truncated by toolfsm" in tool_use["input"]["_raw_arguments"]
    (result_block,) = second["messages"][2]["content"]
    assert result_block["is_error"] is True
    assert "above the cap of 1,048,576 bytes" in str(result_block["content"])
    assert len(_stored_text(store, result.run_id)) < 50_000
