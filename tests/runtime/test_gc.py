"""A run leaves no cyclic garbage: what a step allocates is freed by reference counting.

The garbage collector's pauses grow with what it finds to collect; a reference cycle made per
step (an exception kept with its traceback, a closure over its own frame, a future holding its
callback's owner) would make every step pay for it. Measured as `gc.collect()`'s count after
200 steps with the collector switched off, following a warm-up run (which fills the caches).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

from engine.providers.base import ModelReply, ModelRequest, ToolCall
from engine.runtime import Runner, agent_from_text
from engine.tools import Tool, ToolRegistry

RULES = """\
version: 1
agent: cycles
tools: [step, slow, done]
rules:
  - continue: [step, slow]
  - terminal: done
"""


def step(value: int) -> int:
    """Return the value."""
    return value


def slow(value: int) -> int:
    """Return the value, from a worker thread."""
    return value


def done() -> str:
    """Finish."""
    return "ok"


class Replies:
    """`steps - 1` calls (inline tool, threaded tool, a violation, bad arguments, in turn),
    then done."""

    name = "replies"

    def __init__(self, steps: int) -> None:
        self.left = steps
        self.n = 0

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.left -= 1
        self.n += 1
        if self.left <= 0:
            return ModelReply(None, (ToolCall(f"c{self.n}", "done", "{}"),))
        kind = self.n % 4
        if kind == 0:
            call = ToolCall(f"c{self.n}", "step", '{"value": 1}')
        elif kind == 1:
            call = ToolCall(f"c{self.n}", "slow", '{"value": 2}')
        elif kind == 2:
            call = ToolCall(f"c{self.n}", "unknown", "{}")
        else:
            call = ToolCall(f"c{self.n}", "step", '{"value": "not a number"}')
        return ModelReply(f"step {self.n}", (call,))


def _agent() -> Any:
    tools = ToolRegistry(
        [
            Tool.from_function(step, inline=True),
            Tool.from_function(slow),
            Tool.from_function(done, inline=True),
        ]
    )
    return agent_from_text(RULES, "cycles.yaml", tools=tools)


# One agent for every run (building one makes argument models: classes, which are cycles).
AGENT = _agent()


def _runner(steps: int) -> Runner:
    return Runner(AGENT, Replies(steps), max_steps=steps + 1)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _run(steps: int) -> int:
    result = await _runner(steps).run("go")
    return result.steps


async def _stream(steps: int) -> int:
    events = 0
    async for _ in _runner(steps).stream("go"):
        events += 1
    return events


@pytest.mark.parametrize("drive", [_run, _stream], ids=["run", "stream"])
def test_200_steps_leave_no_cyclic_garbage(drive, collector_off: None) -> None:
    async def main() -> int:
        await drive(5)  # warm-up: caches, the worker thread, lazy imports
        gc.collect()
        assert await drive(200) > 0
        return gc.collect()

    assert asyncio.run(main()) == 0
