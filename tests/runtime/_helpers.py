"""Helpers for runtime tests: agents from YAML text with in-test tools, and event capture."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from typing import Any

from engine.providers.scripted import ScriptedProvider
from engine.runtime import Agent, Runner, Stopped, agent_from_text
from engine.runtime.events import RunResult
from engine.tools import Tool, ToolRegistry


def make_agent(
    yaml_text: str, *funcs: Callable[..., Any], idempotent: tuple[str, ...] = ()
) -> Agent:
    tools = ToolRegistry(Tool.from_function(f, idempotent=f.__name__ in idempotent) for f in funcs)
    return agent_from_text(textwrap.dedent(yaml_text), "agent.yaml", tools=tools)


def run_script(
    agent: Agent,
    replies: list[dict[str, Any]],
    *,
    store: Any = None,
    input: str = "go",
    **kwargs: Any,
) -> tuple[RunResult, list[Any]]:
    """Run `agent` on scripted replies; the result and every event."""
    runner = Runner(agent, ScriptedProvider(replies), store=store, **kwargs)
    events: list[Any] = []

    async def main() -> None:
        async for event in runner.stream(input):
            events.append(event)

    asyncio.run(main())
    assert isinstance(events[-1], Stopped)
    return events[-1].result, events


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]
