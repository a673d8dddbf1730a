"""Agents that message agents: the agent tools' calls, each callee a run of its own.

An agent tool (a built-in of `engine.language.agenttools` named under `tools:`, or a tool
declared with `agents:`) is executed by the loop with the run's context (`call_agents`): it
finds its callees in the run's `AgentDirectory` (the agent files `toolfsm run --agents`
names), sends each one system-role message, runs them concurrently, each as a run of its own
in the same store under its own compiled machine, tools, provider and `max_steps`, and
returns their replies as a JSON text. Nothing a callee does is raised to the caller: a
failure, a step limit, a refused call (too deep, the caller itself) is a result.

A callee's run is linked to its caller's: `parent_run_id`, `parent_call_id` and `depth` in
its header. Its id is derived from the caller's run, the call and the callee's name
(`child_run_id`), so calling again (a resume after a crash, after an approval) finds the runs
the call started: a finished one is not run again, an unfinished one is resumed. An agent
call is therefore safe to re-enter, and the loop re-enters it on resume instead of asking
for a decision. A callee that pauses (for approval, a decision, its own callees) leaves its
caller paused too (`awaiting_agents`); resuming the callee resumes the caller after it
(`resume_callers`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engine.errors import ToolfsmError
from engine.language.agenttools import (
    ASYNC_PREFIX,
    BUILTIN_AGENT_TOOLS,
    MAX_CALLEES,
    ONE_PREFIX,
    SENT,
    TAGS_PREFIX,
)
from engine.language.spec import ToolDecl
from engine.machine import StopReason
from engine.providers.base import Message, Provider
from engine.store.errors import RunNotFound
from engine.store.status import RunStatus
from engine.tools import Tool, ToolResult

if TYPE_CHECKING:
    from engine.runtime.agent import Agent
    from engine.runtime.events import RunResult
    from engine.runtime.loop import Runner
    from engine.store.protocol import Store
    from engine.store.records import RunRecord

__all__ = [
    "AgentDirectory",
    "AgentLink",
    "AgentQuery",
    "Callee",
    "Waiting",
    "agent_tool",
    "call_agents",
    "child_run_id",
    "is_agent_tool",
]

Kind = Literal["tags", "one", "async"]

# Stop reasons of a callee that leave its caller waiting.
_PAUSED = (
    StopReason.AWAITING_APPROVAL,
    StopReason.AWAITING_DECISION,
    StopReason.AWAITING_AGENTS,
)
_BUILTIN_KINDS: dict[str, Kind] = {
    "send_message_to_agents_matching_tags": "tags",
    "send_message_to_agent_and_wait_for_reply": "one",
    "send_message_to_agent_async": "async",
}
_AGENT_FILE = re.compile(r"^agent\s*:", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class AgentQuery:
    """What an agent tool asks for: built-in tag matching (`tags`, the tags from the call's
    arguments unless the tool fixes them), one agent by id (`one`), or a notification
    (`async`)."""

    kind: Kind
    match_all: tuple[str, ...] | None = None  # fixed by a YAML-native tool; None: arguments
    match_some: tuple[str, ...] | None = None
    max_callees: int = MAX_CALLEES
    concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class AgentLink:
    """Where a run sits in a tree of agent calls: its caller's run and call, its depth, and
    the names of the agents above it (the caller first), which it may not message."""

    parent_run_id: str | None = None
    parent_call_id: str | None = None
    depth: int = 0
    callers: tuple[str, ...] = ()

    def as_option(self) -> dict[str, Any]:
        return {"callers": list(self.callers)}

    @classmethod
    def of_run(cls, run: RunRecord) -> AgentLink:
        callers = run.options.get("callers")
        names = tuple(str(n) for n in callers) if isinstance(callers, list) else ()
        return cls(run.parent_run_id, run.parent_call_id, run.depth, names)


@dataclass(frozen=True, slots=True)
class Waiting:
    """An agent call that cannot finish now: these callee runs are paused."""

    runs: tuple[str, ...]


def is_agent_tool(decl: ToolDecl) -> bool:
    """Whether `decl` is an agent tool (no Python function binds it)."""
    return decl.agents is not None or decl.name in BUILTIN_AGENT_TOOLS


def _query(decl: ToolDecl) -> AgentQuery:
    if decl.agents is None:
        return AgentQuery(_BUILTIN_KINDS[decl.name])
    spec = decl.agents
    return AgentQuery(
        "tags",
        tuple(spec.match_all),
        tuple(spec.match_some),
        spec.max_callees,
        spec.concurrency,
    )


async def _unbound(**_: Any) -> Any:
    raise ToolfsmError("an agent tool runs inside a run (Runner), not on its own")


async def _tags_signature(message: str, match_all: list[str], match_some: list[str]) -> Any:
    """(the argument model of send_message_to_agents_matching_tags)"""


async def _one_signature(message: str, other_agent_id: str) -> Any:
    """(the argument model of the one-agent tools)"""


async def _native_signature(message: str) -> Any:
    """(the argument model of a YAML-native agent tool)"""


def agent_tool(decl: ToolDecl) -> Tool:
    """The `Tool` of an agent tool declaration (`decl` as `AgentSpec.tool_decls` fills it)."""
    query = _query(decl)
    if decl.agents is not None:
        signature: Any = _native_signature
    else:
        signature = _tags_signature if query.kind == "tags" else _one_signature
    base = Tool.from_function(signature, name=decl.name)
    parameters = decl.parameters or base.parameters
    return Tool(
        name=decl.name,
        fn=_unbound,
        description=decl.description or BUILTIN_AGENT_TOOLS.get(decl.name, ("",))[0],
        parameters=parameters,
        model=base.model,
        idempotent=False,  # it starts runs: on record before it does (re-entered on resume)
        is_async=True,
        agent_call=query,
    )


def child_run_id(parent_run_id: str, call_key: str, agent: str) -> str:
    """The run id of `agent`'s run started by call `call_key` of run `parent_run_id`: the same
    every time, so a re-entered call finds the runs it started."""
    digest = hashlib.sha256(f"{parent_run_id}\x00{call_key}\x00{agent}".encode()).hexdigest()
    return digest[:32]


@dataclass
class Callee:
    """An agent that may be messaged: its file, name and tags; compiled when first used."""

    path: Path
    name: str
    tags: frozenset[str]
    _agent: Agent | None = field(default=None, repr=False)

    def agent(self) -> Agent:
        if self._agent is None:
            from engine.runtime.agent import load_agent

            self._agent = load_agent(self.path)
        return self._agent


class AgentDirectory:
    """The agents a run may message (by name: an agent's id is its `agent:` name), and how
    each callee's model is made: `model` for all of them (`--model`), else each replays the
    `script.yaml` beside its agent file.

    Fire-and-forget sends (`send_message_to_agent_async`) run as tasks kept here; `drain`
    waits for them (the command line does before it exits)."""

    def __init__(
        self,
        callees: Iterable[Callee],
        *,
        model: str | None = None,
        provider_options: dict[str, Any] | None = None,
        paths: Sequence[str] = (),
    ) -> None:
        self.callees = {c.name: c for c in sorted(callees, key=lambda c: c.name)}
        self.model = model
        self.provider_options = dict(provider_options or {})
        self.paths = tuple(paths)
        self._background: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str | Path],
        *,
        model: str | None = None,
        provider_options: dict[str, Any] | None = None,
    ) -> AgentDirectory:
        """The agent files among `paths` (files, or folders searched for `.yaml`/`.yml`
        files with a top-level `agent:` key); `RuleFileError` for an invalid one, a
        `ToolfsmError` for two agents of one name."""
        from engine.language.loader import read_rule_file

        files: list[Path] = []
        for path in (Path(p).resolve() for p in paths):
            if path.is_dir():
                found = sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")])
                files.extend(f for f in found if _AGENT_FILE.search(_head(f)))
            else:
                files.append(path)
        callees: dict[str, Callee] = {}
        for file in dict.fromkeys(files):
            spec = read_rule_file(file).require()
            if spec.agent in callees:
                raise ToolfsmError(
                    f"two agent files name agent {spec.agent!r}: {callees[spec.agent].path} "
                    f"and {file}; agents are messaged by name, so names must be unique"
                )
            callees[spec.agent] = Callee(file, spec.agent, frozenset(spec.tags))
        return cls(
            callees.values(),
            model=model,
            provider_options=provider_options,
            paths=[str(Path(p).resolve()) for p in paths],
        )

    @classmethod
    def from_option(cls, stored: Any) -> AgentDirectory | None:
        """The directory a run was started with (its stored `agents` option)."""
        if not isinstance(stored, dict) or not isinstance(stored.get("paths"), list):
            return None
        options = stored.get("provider_options")
        return cls.from_paths(
            [str(p) for p in stored["paths"]],
            model=stored.get("model") if isinstance(stored.get("model"), str) else None,
            provider_options=options if isinstance(options, dict) else None,
        )

    def as_option(self) -> dict[str, Any]:
        """What a run stores so a resume in another process rebuilds this directory."""
        return {
            "paths": list(self.paths),
            "model": self.model,
            "provider_options": self.provider_options,
        }

    def match(
        self, match_all: Iterable[str], match_some: Iterable[str], exclude: Iterable[str] = ()
    ) -> list[Callee]:
        """The agents with every tag of `match_all` and at least one of `match_some` (an
        empty list: no constraint), `exclude`d names left out, in the order of their ids."""
        every, some, left_out = set(match_all), set(match_some), set(exclude)
        return [
            c
            for c in self.callees.values()
            if c.name not in left_out and every <= c.tags and (not some or some & c.tags)
        ]

    def provider(self, callee: Callee) -> tuple[Provider, str, dict[str, Any]]:
        """A new provider for `callee`, its name for the store, and the options a resume
        rebuilds it from (as `toolfsm run` stores them)."""
        from engine.providers import make_provider

        kind = (self.model or "scripted").partition(":")[0].strip().lower()
        if kind == "scripted":
            script = callee.path.parent / "script.yaml"
            if not script.is_file():
                raise ToolfsmError(
                    f"no script.yaml beside {callee.path}: offline, each callee replays the "
                    "script beside its agent file (or give --model)"
                )
            provider = make_provider(f"scripted:{script}")
            return provider, f"scripted:{script}", {"provider": "scripted", "script": str(script)}
        assert self.model is not None
        provider = make_provider(self.model, **self.provider_options)
        options = {"provider": kind, "provider_options": self.provider_options}
        return provider, self.model, options

    def send(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for the fire-and-forget runs still going."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _head(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return f.read(64 * 1024)
    except OSError:
        return ""


# -- the call --------------------------------------------------------------------------


def _error(text: str) -> ToolResult:
    return ToolResult(text, True, 0)


async def call_agents(
    runner: Runner, run_id: str, key: str, tool: Tool, arguments: dict[str, Any]
) -> ToolResult | Waiting:
    """Execute an agent tool's call `key` of run `run_id` (see the module's docstring)."""
    query: AgentQuery = tool.agent_call
    directory = runner.agents
    if directory is None:
        return _error(
            f"{tool.name}: there are no agents to message (toolfsm run --agents PATH names "
            "the agent files; Runner(agents=AgentDirectory...))"
        )
    link = runner.link
    settings = runner.agent.settings
    depth = link.depth + 1
    if depth > settings.max_agent_depth:
        return _error(
            f"{tool.name}: not sent: agent calls nest at most {settings.max_agent_depth} "
            f"deep (run.max_agent_depth) and this call would start runs at depth {depth}"
        )
    me = runner.agent.name
    excluded = (me, *link.callers)
    message = str(arguments.get("message", ""))
    child = AgentLink(run_id, key, depth, (me, *link.callers))
    if query.kind == "tags":
        every = query.match_all if query.match_all is not None else arguments.get("match_all")
        some = query.match_some if query.match_some is not None else arguments.get("match_some")
        found = directory.match(every or (), some or (), excluded)[: query.max_callees]
        text = f"{TAGS_PREFIX} {message}"
        return await _fan_out(runner, directory, found, text, child, query.concurrency)
    other = str(arguments.get("other_agent_id", ""))
    callee = directory.callees.get(other)
    if other in excluded or callee is None:
        why = (
            "an agent cannot message itself or the agents that called it"
            if other in excluded
            else f"there is no agent {other!r} (agents: {', '.join(directory.callees) or 'none'})"
        )
        entry = {"agent_id": other, "agent_name": other, "error": why, "type": "not_sent"}
        return ToolResult(json.dumps(entry), True, 0)
    if query.kind == "async":
        text = f"{ASYNC_PREFIX.format(sender=me)} {message}"
        task = asyncio.ensure_future(_one(runner, directory, callee, text, child))
        directory.send(task)
        await asyncio.sleep(0)  # the callee's run is created before the caller goes on
        return ToolResult(SENT, False, 0)
    text = f"{ONE_PREFIX.format(sender=me)} {message}"
    outcome = await _fan_out(runner, directory, [callee], text, child, None, one=True)
    return outcome


async def _fan_out(
    runner: Runner,
    directory: AgentDirectory,
    callees: Sequence[Callee],
    text: str,
    link: AgentLink,
    concurrency: int | None,
    *,
    one: bool = False,
) -> ToolResult | Waiting:
    """Run the callees concurrently (at most `concurrency` at once); their entries in order,
    or `Waiting` when one of them paused."""
    started = time.monotonic()
    limit = asyncio.Semaphore(concurrency or max(1, len(callees)))

    async def limited(callee: Callee) -> tuple[dict[str, Any], StopReason | None]:
        async with limit:
            return await _one(runner, directory, callee, text, link)

    outcomes = await asyncio.gather(*(limited(c) for c in callees))
    paused = tuple(e["run_id"] for e, stop in outcomes if stop in _PAUSED)
    if paused:
        return Waiting(paused)
    entries = [entry for entry, _ in outcomes]
    took = int((time.monotonic() - started) * 1000)
    if one:
        return ToolResult(json.dumps(entries[0]), "error" in entries[0], took)
    return ToolResult(json.dumps(entries), False, took)


async def _one(
    runner: Runner, directory: AgentDirectory, callee: Callee, text: str, link: AgentLink
) -> tuple[dict[str, Any], StopReason | None]:
    """One callee's run (started, resumed, or as it finished before): its entry and how it
    stopped (None: it never ran)."""
    assert link.parent_run_id is not None and link.parent_call_id is not None
    run_id = child_run_id(link.parent_run_id, link.parent_call_id, callee.name)
    entry: dict[str, Any] = {"agent_id": callee.name, "agent_name": callee.name, "run_id": run_id}
    try:
        result, texts = await _drive(runner, directory, callee, text, link, run_id)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return {**entry, "error": str(exc), "type": type(exc).__name__, "stop_reason": None}, None
    entry["stop_reason"] = result.stop_reason.value
    if result.stop_reason in (StopReason.ERROR, StopReason.FORCING_IGNORED):
        entry.update(error=result.error or "the run failed", type=result.stop_reason.value)
    elif result.stop_reason is StopReason.STEP_LIMIT:
        entry.update(
            response=texts,
            error=f"the run stopped at its step limit ({result.steps} steps)",
            type="step_limit",
        )
    elif result.stop_reason is StopReason.CANCELLED:
        entry.update(error="the run was cancelled", type="cancelled")
    else:
        entry["response"] = texts
    return entry, result.stop_reason


async def _drive(
    runner: Runner,
    directory: AgentDirectory,
    callee: Callee,
    text: str,
    link: AgentLink,
    run_id: str,
) -> tuple[RunResult, list[str]]:
    """Start, resume or read back the callee's run; how it stopped and its assistant texts."""
    from engine.runtime.loop import Runner as RunnerType

    store = runner.store
    record = _stored(store, run_id)
    agent = callee.agent()
    if record is not None and record.status in (RunStatus.FINISHED, RunStatus.FAILED):
        return _stored_result(record), _texts(store, run_id)
    if record is None:
        provider, name, options = directory.provider(callee)
    else:
        from engine.runtime.resume import provider_for_run

        assert store is not None
        provider, name = provider_for_run(record, store.load_run(run_id)), record.model
        options = {}
    options["rules_file"] = str(callee.path)
    options["agents"] = directory.as_option()
    options.update(link.as_option())
    child = RunnerType(
        agent,
        provider,
        store=store,
        model=name,
        options=options,
        group_commit=runner.group_commit,
        agents=directory,
        link=link,
    )
    if record is None:
        result, texts = await child.run_message(Message(role="system", text=text), run_id=run_id)
    else:
        result, texts = await child.resume_texts(run_id)
    if store is not None:
        texts = _texts(store, run_id)
    return result, texts


def _stored(store: Store | None, run_id: str) -> RunRecord | None:
    if store is None:
        return None
    try:
        return store.get_run(run_id)
    except RunNotFound:
        return None


def _stored_result(record: RunRecord) -> RunResult:
    from engine.runtime.events import RunResult

    stop = StopReason(record.stop_reason) if record.stop_reason else StopReason.END_TURN
    return RunResult(record.id, stop, record.steps_count, error=record.error)


def _texts(store: Store | None, run_id: str) -> list[str]:
    """The callee's assistant message texts, in order."""
    if store is None:
        return []
    snapshot = store.load_run(run_id)
    texts = [m.content.get("text") for m in snapshot.messages if m.role == "assistant"]
    return [t for t in texts if isinstance(t, str) and t]


# -- resuming callers ------------------------------------------------------------------


def waiting_caller(store: Store, run_id: str) -> RunRecord | None:
    """The caller of run `run_id` when it waits on its callees (`awaiting_agents`)."""
    run = store.get_run(run_id)
    if run.parent_run_id is None or run.status not in (RunStatus.FINISHED, RunStatus.FAILED):
        return None
    caller = _stored(store, run.parent_run_id)
    if caller is None or caller.status is not RunStatus.AWAITING_AGENTS:
        return None
    return caller


def agents_from_run(run: RunRecord) -> AgentDirectory | None:
    """The directory a stored run messages agents in (None: it was started without one)."""
    return AgentDirectory.from_option(run.options.get("agents"))
