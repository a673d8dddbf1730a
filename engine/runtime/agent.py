"""An agent ready to run: its compiled machine, its tools, its settings and system prompt."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.language.loader import parse_rules, read_rule_file
from engine.language.spec import RunSettings
from engine.machine import Gate, Machine
from engine.machine.compiler import compile_rules
from engine.providers.base import Message, ModelRequest, ToolSpec
from engine.runtime.agents import agent_tool, is_agent_tool
from engine.tools import (
    MissingToolsError,
    ToolRegistry,
    ToolRegistryError,
    load_tools_module,
    module_place,
    tool_name_of,
)

__all__ = ["Agent", "agent_from_text", "load_agent", "resolve_tools_ref"]

RULES_HEADER = "Tool rules (the system enforces them; follow them):"

# The tools module recorded for an agent whose tools are all agent tools (none to load).
AGENT_TOOLS_ONLY = "toolfsm:agent-tools"


@dataclass(frozen=True)
class Agent:
    """Everything about an agent that does not change from run to run."""

    machine: Machine
    tools: ToolRegistry
    settings: RunSettings
    rules_text: str
    rules_path: str
    tools_ref: str | None = None  # where the tools came from (stored so resume finds them)
    _specs: tuple[ToolSpec, ...] = field(default=(), repr=False)
    _system: str = field(default="", repr=False)
    # id(gate) -> (gate, its checked request without messages). Gates are the machine's,
    # shared and immutable (and kept here, so their ids stay theirs); not copied by
    # `replace`, as other settings make other requests.
    _requests: dict[int, tuple[Gate, ModelRequest]] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        missing = [t for t in self.machine.tools if t not in self.tools]
        if missing:
            raise MissingToolsError(
                missing, ["the ToolRegistry given"], prefix=f"{self.rules_path}: "
            )
        heartbeat = self.heartbeat
        # Declaration order, computed once: every request of every run shares this tuple.
        specs = tuple(self.tools[t].spec(heartbeat=heartbeat) for t in self.machine.tools)
        object.__setattr__(self, "_specs", specs)
        object.__setattr__(self, "_system", self._render_system_prompt())

    @property
    def name(self) -> str:
        return self.machine.agent

    @property
    def heartbeat(self) -> bool:
        return self.settings.continuation == "heartbeat"

    @property
    def tool_specs(self) -> tuple[ToolSpec, ...]:
        return self._specs

    def request(self, gate: Gate, messages: tuple[Message, ...]) -> ModelRequest:
        """The model request of a step at `gate`: built and checked once per gate, then
        copied with each step's messages."""
        cached = self._requests.get(id(gate))
        if cached is None:
            template = ModelRequest(
                system=self._system,
                messages=(),
                tools=self._specs,
                allowed=gate.allowed,
                force=gate.force,
                forced_tool=gate.forced_tool,
                parallel_tool_calls=self.settings.parallel_tool_calls,
            )
            cached = self._requests[id(gate)] = (gate, template)
        return cached[1].with_messages(messages)

    def system_prompt(self) -> str:
        """The instructions, then one plain line per rule."""
        return self._system

    def _render_system_prompt(self) -> str:
        parts = [self.settings.instructions.strip()] if self.settings.instructions.strip() else []
        if self.machine.rules:
            lines = "\n".join(f"- {rule.text}" for rule in self.machine.rules)
            parts.append(f"{RULES_HEADER}\n{lines}")
        return "\n\n".join(parts)

    def with_settings(self, **changes: Any) -> Agent:
        return replace(self, settings=self.settings.model_copy(update=changes))


def resolve_tools_ref(rules_path: str | Path, settings: RunSettings, tools: str | None) -> str:
    """Where an agent's tools live: `tools` (command line), else the file's `run.tools_module`,
    else `tools.py` beside the rule file. Paths come back absolute, so a resume in another
    directory finds them."""
    base = Path(rules_path).resolve().parent
    ref = tools or settings.tools_module
    if ref is None:
        candidate = base / "tools.py"
        if not candidate.is_file():
            raise ToolRegistryError(
                f"{rules_path}: no tools given: pass --tools MODULE, set run.tools_module in "
                f"the agent file, or put a tools.py beside it ({candidate} does not exist)"
            )
        return str(candidate)
    if ref.endswith(".py") or "/" in ref:
        # Command-line paths are relative to the working directory, file paths to the file.
        root = Path.cwd() if tools else base
        return str((root / ref).resolve())
    return ref


# What `load_agent(tools=...)` takes: a module path or dotted name (str or path), a module, a
# list of functions, or a ready registry.
ToolsSource = str | os.PathLike[str] | ModuleType | Iterable[Callable[..., Any]] | ToolRegistry


@dataclass(frozen=True)
class _Source:
    """Where an agent's tool functions are looked up by name."""

    module: ModuleType
    ref: str | None  # stored with a run, so a resume in another process finds them
    place: str  # how an error names it
    tried: tuple[str, ...] = ()  # places looked at before it, for the error too


def calling_module(depth: int = 1) -> ModuleType | None:
    """The module of the code `depth` frames above the caller of this function, unless it is
    toolfsm's own (the command line, resume): where `load_agent` looks for tool functions
    when neither the call nor the agent file names a tools module."""
    name = sys._getframe(depth + 1).f_globals.get("__name__")
    if not isinstance(name, str) or name == "engine" or name.startswith("engine."):
        return None
    return sys.modules.get(name)


def _module_source(module: ModuleType, tried: tuple[str, ...] = ()) -> _Source:
    file = getattr(module, "__file__", None)
    ref = file if isinstance(file, str) and file.endswith(".py") else module.__name__
    return _Source(module, ref, module_place(module), tried)


def _default_source(rule_file: Any, settings: RunSettings, caller: ModuleType | None) -> _Source:
    """No `tools=`: the file's `run.tools_module`, else `tools.py` beside it, else the module
    that called `load_agent`."""
    beside = Path(rule_file.path).resolve().parent / "tools.py"
    if settings.tools_module is not None or caller is None or beside.is_file():
        ref = resolve_tools_ref(rule_file.path, settings, None)
        return _Source(load_tools_module(ref), ref, ref)
    tried = (f"run.tools_module (not set), {beside} (no such file)",)
    return _module_source(caller, tried)


def _functions_source(tools: Iterable[Any]) -> _Source:
    module = ModuleType("<tools>")  # the functions, by tool name, as a module would hold them
    for function in tools:
        if not callable(function):
            raise ToolRegistryError(f"tools: {function!r} is not a function")
        setattr(module, tool_name_of(function), function)
    return _Source(module, None, "the functions given as tools=")


def _tools_source(
    rule_file: Any, settings: RunSettings, tools: ToolsSource | None, caller: ModuleType | None
) -> _Source:
    if tools is None:
        return _default_source(rule_file, settings, caller)
    if isinstance(tools, ModuleType):
        return _module_source(tools)
    if isinstance(tools, str | os.PathLike):
        ref = resolve_tools_ref(rule_file.path, settings, str(tools))
        return _Source(load_tools_module(ref), ref, ref)
    if isinstance(tools, Iterable):
        return _functions_source(tools)
    raise ToolRegistryError(
        "tools must be a module path or dotted name, a module, a list of functions or a "
        f"ToolRegistry, not {type(tools).__name__}"
    )


def _registry(rule_file: Any, machine: Machine, source: _Source | None) -> ToolRegistry:
    """The agent's tools: each agent tool built in, the others from `source`'s functions."""
    decls = machine.spec.tool_decls()
    agent_tools = {d.name: agent_tool(d) for d in decls if is_agent_tool(d)}
    names = [name for name in machine.tools if name not in agent_tools]
    found = _functions(rule_file, decls, names, source)
    if not agent_tools:
        return found
    return ToolRegistry(
        agent_tools[name] if name in agent_tools else found[name] for name in machine.tools
    )


def _functions(
    rule_file: Any, decls: tuple[Any, ...], names: list[str], source: _Source | None
) -> ToolRegistry:
    """The tools `names` from `source`'s functions (none to bind: an empty registry)."""
    if source is None or not names:
        return ToolRegistry()
    try:
        return ToolRegistry.from_module(
            source.module,
            names,
            idempotent={d.name: True for d in decls if d.idempotent},
            descriptions={d.name: d.description for d in decls if d.description},
        )
    except MissingToolsError as exc:
        places = (*source.tried, source.place)
        raise MissingToolsError(exc.tools, places, prefix=f"{rule_file.path}: ") from None


def _with_agent_tools(machine: Machine, given: ToolRegistry) -> ToolRegistry:
    """A registry given as it is, with the agent's agent tools added."""
    decls = [d for d in machine.spec.tool_decls() if is_agent_tool(d) and d.name not in given]
    if not decls:
        return given
    return ToolRegistry([*given, *(agent_tool(d) for d in decls)])


def _needs_functions(machine: Machine) -> bool:
    agent_tools = {d.name for d in machine.spec.tool_decls() if is_agent_tool(d)}
    return any(name not in agent_tools for name in machine.tools)


def _build(rule_file: Any, tools: ToolsSource | None, caller: ModuleType | None) -> Agent:
    machine = compile_rules(rule_file)
    settings = machine.spec.run
    if tools == AGENT_TOOLS_ONLY:  # recorded for a run whose tools are all agent tools
        tools = None
    if isinstance(tools, ToolRegistry):
        registry, ref = _with_agent_tools(machine, tools), None
    elif tools is None and not _needs_functions(machine):
        # Only agent tools: no Python function, no tools module.
        registry, ref = _registry(rule_file, machine, None), AGENT_TOOLS_ONLY
    else:
        source = _tools_source(rule_file, settings, tools, caller)
        registry, ref = _registry(rule_file, machine, source), source.ref
    return Agent(
        machine=machine,
        tools=registry,
        settings=settings,
        rules_text=rule_file.text,
        rules_path=rule_file.path,
        tools_ref=ref,
    )


def load_agent(path: str | Path, *, tools: ToolsSource | None = None) -> Agent:
    """Read, check and compile an agent file and bind its tools (`RuleFileError` if invalid).

    The tools the file names are looked up by name (or by `@tool(name=...)`) in `tools`: a
    `.py` path or dotted module name, a module, or a list of functions; a `ToolRegistry` is
    used as it is. Without `tools`: the file's `run.tools_module`, else `tools.py` beside
    it, else the module that calls `load_agent` (a script's own tool functions).
    `MissingToolsError` names the tools without a function and every place looked in."""
    return _build(read_rule_file(path), tools, calling_module())


def agent_from_text(text: str, path: str, *, tools: ToolsSource | None = None) -> Agent:
    """The same from rule-file text (resume recompiles what the run was started with);
    `path` names it in errors and places `tools.py`."""
    return _build(parse_rules(text, path), tools, calling_module())


def load_agent_for(path: str | Path, tools: ToolsSource | None, caller: ModuleType | None) -> Agent:
    """`load_agent` on behalf of `caller` (for `engine.run_sync`, which loads the agent of
    the module that called it)."""
    return _build(read_rule_file(path), tools, caller)
