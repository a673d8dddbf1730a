"""Running an agent from code without an event loop: `Runner.run_sync` and `run_sync`.

    result = runner.run_sync("Screen application A-1042")          # a Runner you built
    result = engine.run_sync("agent.yaml", provider="openai:gpt-4.1-mini")   # all in one call

Each thread runs its synchronous calls on one event loop of its own, kept between calls (and
closed at exit), not on a new loop per call as `asyncio.run` would: an SDK client (OpenAI's,
Anthropic's) keeps its pooled connections on the loop it first ran on, so a provider used
for a second run on a new loop fails with "Event loop is closed". Inside a running event
loop (an `async def`, a notebook cell) a synchronous call would block that loop: it raises
`EventLoopRunningError` instead, which says what to await there.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from engine.errors import ToolfsmError
from engine.runtime.agent import Agent, ToolsSource, calling_module, load_agent_for
from engine.runtime.events import RunResult

if TYPE_CHECKING:
    from engine.providers.base import Provider
    from engine.store.protocol import Store

__all__ = ["EventLoopRunningError", "call_sync", "run_sync"]

T = TypeVar("T")

_threads = threading.local()  # .runner: the thread's asyncio.Runner


class EventLoopRunningError(ToolfsmError, RuntimeError):
    """A synchronous call (`run_sync`) was made where an event loop is running: await the
    asynchronous form there (`await runner.run(...)`)."""

    def __init__(self, what: str, instead: str) -> None:
        self.what = what
        self.instead = instead
        super().__init__(
            f"{what} cannot be called from a running event loop (an async function, a "
            f"notebook cell): use '{instead}' there"
        )


def call_sync(start: Callable[[], Coroutine[Any, Any, T]], what: str, instead: str) -> T:
    """Run the coroutine `start()` makes to the end on this thread's own event loop.

    `what` and `instead` name the call and its asynchronous form in the error raised inside
    a running loop (checked before `start` is called, so no coroutine is left unawaited)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise EventLoopRunningError(what, instead)
    runner: asyncio.Runner | None = getattr(_threads, "runner", None)
    if runner is None:
        runner = _threads.runner = asyncio.Runner()
        atexit.register(runner.close)
    return runner.run(start())


def run_sync(
    agent: Agent | str | os.PathLike[str],
    input: str | None = None,
    *,
    provider: Provider | str,
    store: Store | str | None = None,
    tools: ToolsSource | None = None,
    **runner_options: Any,
) -> RunResult:
    """Run an agent to the end (or to its pause for an approval) and return the `RunResult`.

    `agent`: an `Agent`, or an agent file for `load_agent(agent, tools=tools)` (without
    `tools`, the calling module's functions count, as for `load_agent`). `input`: the user
    message, default the file's `run.input`. `provider`: a provider, or a spec for
    `make_provider` ("openai:gpt-4.1-mini", "scripted:script.yaml"), closed after the run.
    `store`: a store, or a database URL for `open_store` (closed after the run); default:
    none, nothing is persisted. Other keywords go to `Runner` (max_steps, options, ...).
    """
    if not isinstance(agent, Agent):
        agent = load_agent_for(Path(agent), tools, calling_module())
    elif tools is not None:
        raise ToolfsmError("run_sync: tools= applies to an agent file, not a loaded Agent")
    text = input if input is not None else agent.settings.input
    if not text:
        raise ToolfsmError(f"{agent.rules_path}: no input given and no run.input in the file")
    return call_sync(
        lambda: _run(agent, text, provider, store, runner_options),
        "engine.run_sync()",
        "await Runner(agent, provider).run(input)",
    )


async def _run(
    agent: Agent,
    text: str,
    provider: Provider | str,
    store: Store | str | None,
    options: dict[str, Any],
) -> RunResult:
    """One run; a provider or store made here from a spec or URL is closed after it."""
    from engine.providers import make_provider
    from engine.runtime.loop import Runner

    made: Provider | None = None
    if isinstance(provider, str):
        provider = made = make_provider(provider)
    try:
        if isinstance(store, str):
            from engine.store import open_store

            store = opened = open_store(store)
        else:
            opened = None
        try:
            return await Runner(agent, provider, store=store, **options).run(text)
        finally:
            if opened is not None:
                opened.close()
    finally:
        if made is not None:
            await made.aclose()  # type: ignore[attr-defined]  # every provider has one
