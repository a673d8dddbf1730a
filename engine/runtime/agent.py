"""An agent ready to run: its compiled machine, its tools, its settings and system prompt."""

from __future__ import annotations

import os
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
from engine.tools import ToolRegistry, ToolRegistryError, load_tools_module, tool_name_of

__all__ = ["Agent", "agent_from_text", "load_agent", "resolve_tools_ref"]

RULES_HEADER = "Tool rules (the system enforces them; follow them):"


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
            raise ToolRegistryError(
                f"{self.rules_path}: the agent declares tool(s) {', '.join(missing)} but no "
                "function was registered for them"
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


def _tools_module(
    rule_file: Any, settings: RunSettings, tools: ToolsSource | None
) -> tuple[ModuleType, str | None]:
    """The module holding the tool functions, and the reference stored for resume."""
    if isinstance(tools, ModuleType):
        file = getattr(tools, "__file__", None)
        return tools, file if isinstance(file, str) and file.endswith(".py") else tools.__name__
    if tools is None or isinstance(tools, str | os.PathLike):
        ref = resolve_tools_ref(rule_file.path, settings, None if tools is None else str(tools))
        return load_tools_module(ref), ref
    if isinstance(tools, Iterable):
        functions = list(tools)
        module = ModuleType("<tools>")  # the functions, by tool name, as a module would hold them
        for function in functions:
            if not callable(function):
                raise ToolRegistryError(f"tools: {function!r} is not a function")
            setattr(module, tool_name_of(function), function)
        return module, None
    raise ToolRegistryError(
        "tools must be a module path or dotted name, a module, a list of functions or a "
        f"ToolRegistry, not {type(tools).__name__}"
    )


def _build(rule_file: Any, tools: ToolsSource | None) -> Agent:
    machine = compile_rules(rule_file)
    spec = machine.spec
    settings = spec.run
    if isinstance(tools, ToolRegistry):
        registry, ref = tools, None
    else:
        module, ref = _tools_module(rule_file, settings, tools)
        decls = spec.tool_decls()
        registry = ToolRegistry.from_module(
            module,
            machine.tools,
            idempotent={d.name: True for d in decls if d.idempotent},
            descriptions={d.name: d.description for d in decls if d.description},
        )
    return Agent(
        machine=machine,
        tools=registry,
        settings=settings,
        rules_text=rule_file.text,
        rules_path=rule_file.path,
        tools_ref=ref,
    )


def load_agent(path: str | Path, *, tools: ToolsSource | None = None) -> Agent:
    """Read, check and compile an agent file and load its tools (`RuleFileError` if invalid).

    `tools`: a `.py` path or dotted module name, a module, a list of functions (matched to the
    agent's tools by name, or by `@tool(name=...)`), or a `ToolRegistry`; default: the file's
    `run.tools_module`, else `tools.py` beside it."""
    return _build(read_rule_file(path), tools)


def agent_from_text(text: str, path: str, *, tools: ToolsSource | None = None) -> Agent:
    """The same from stored rule-file text (resume recompiles what the run was started with)."""
    return _build(parse_rules(text, path), tools)
