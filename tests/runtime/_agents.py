"""Helpers for the agent-call tests: agent folders (agent file, tools.py, script.yaml) on disk."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import yaml

from engine.providers.scripted import ScriptedProvider, load_script
from engine.runtime import Runner, load_agent
from engine.runtime.agents import AgentDirectory
from engine.runtime.events import RunResult


def write_agent(
    folder: Path,
    rules: str,
    *,
    tools: str = "",
    replies: list[dict[str, Any]] | None = None,
) -> Path:
    """An agent folder: `agent.yaml` (dedented), `tools.py` and `script.yaml`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent.yaml").write_text(textwrap.dedent(rules), encoding="utf-8")
    if tools:
        (folder / "tools.py").write_text(textwrap.dedent(tools), encoding="utf-8")
    if replies is not None:
        (folder / "script.yaml").write_text(yaml.safe_dump({"replies": replies}), encoding="utf-8")
    return folder / "agent.yaml"


def reviewer(
    folder: Path, name: str, tags: list[str], reply: str, tool: str = "", idempotent: bool = False
) -> Path:
    """A callee that calls `look` once, then answers `reply`."""
    body = tool or "def look() -> str:\n    return 'looked'\n"
    look = "{name: look, idempotent: true}" if idempotent else "look"
    return write_agent(
        folder,
        f"""\
        version: 1
        agent: {name}
        tags: {json.dumps(tags)}
        tools: [{look}]
        """,
        tools=body,
        replies=[{"call": "look"}, {"text": reply}],
    )


def runner_for(path: Path, root: Path, store: Any, **kwargs: Any) -> Runner:
    """A runner for the agent at `path`, its script beside it, the agents under `root`."""
    script = path.parent / "script.yaml"
    provider = ScriptedProvider(load_script(script), source=str(script))
    options = {"provider": "scripted", "script": str(script)}
    directory = AgentDirectory.from_paths([root])
    return Runner(
        load_agent(path), provider, store=store, agents=directory, options=options, **kwargs
    )


def run(path: Path, root: Path, store: Any, input: str = "go") -> RunResult:
    return asyncio.run(runner_for(path, root, store).run(input))


def call_result(store: Any, run_id: str, tool: str) -> Any:
    """The (JSON-decoded when it is JSON) result of the run's first call of `tool`."""
    call = next(c for c in store.load_run(run_id).calls if c.tool == tool)
    try:
        return json.loads(call.result), call
    except (TypeError, ValueError):
        return call.result, call
