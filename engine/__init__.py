"""toolfsm: tool rules for LLM agents, compiled to an explicit finite-state machine.

Everything a user needs is importable from here; the subpackages' other names are internals.
The public API, by the order data flows through it:

Rule files and the machine
    read_rule_file, parse_rules, load_rules   YAML -> RuleFile (spec + diagnostics)
    RuleFile                                  a read rule file: its spec and diagnostics
    compile_rules                             RuleFile -> Machine (immutable, shared)
    Machine, Position, Gate, Verdict          gating: allowed tools, forcing, continue/stop
    Reason, StopReason                        why a run goes on or stops
    explain                                   why a tool is (not) allowed, with rule locations
    trace                                     replay calls ("tool", "tool=OUTPUT") without an LLM
    check_path, check_rule_file, CheckResult  what `toolfsm check` runs and finds

Tools and agents
    tool                                      mark a function as a tool (name, idempotent, ...)
    Tool, ToolRegistry                        a registered tool; an agent's tools by name
    load_agent, agent_from_text, Agent        an agent file compiled, with its tools bound
    AgentDirectory                            the agents an agent's agent tools may message

Running
    Runner, RunResult                         run / stream / resume an agent; how it ended
    run_sync                                  run an agent to the end without an event loop
    approve, deny                             decide a call held for approval
    Event                                     any of the events `Runner.stream` yields:
    RunStarted, StepStarted, TextDelta, ToolCallStarted, ToolResultEvent, Violation,
    ApprovalRequested, Notice, StepCommitted, Stopped

Providers
    make_provider                             "openai:MODEL", "anthropic:MODEL", ...
    Provider                                  the contract a model client implements
    OpenAIProvider, AnthropicProvider, ScriptedProvider, RandomProvider

Stores
    open_store, Store, NullStore              where runs are journaled ($TOOLFSM_DB, SQLite);
                                              the protocol; a store that keeps nothing

Errors
    ToolfsmError                              the base of every error toolfsm raises
    RuleFileError, Diagnostic, SourceSpan     an invalid rule file: each problem, FILE:LINE:COL
    UnknownToolError, PositionError           a call or position the machine does not know
    MissingExtraError                         an optional part's extra is not installed
    ToolRegistryError, MissingToolsError      tools that cannot be loaded, or have no function
    ProviderError, ProviderAPIError, ProviderConfigError   a model client's errors
    StoreError, ResumeError                   a store's errors; a run that cannot be resumed
    EventLoopRunningError                     run_sync inside a running event loop

Names load on first use, so that `toolfsm --version` or a module that needs one part of the
package does not pay for importing pydantic and the rest.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from engine.analysis.check import CheckResult, check_path, check_rule_file
    from engine.errors import (
        Diagnostic,
        MissingExtraError,
        PositionError,
        RuleFileError,
        SourceSpan,
        ToolfsmError,
        UnknownToolError,
    )
    from engine.language.loader import RuleFile, load_rules, parse_rules, read_rule_file
    from engine.machine import Gate, Machine, Position, Reason, StopReason, Verdict
    from engine.machine.compiler import compile_rules
    from engine.machine.explain import explain
    from engine.machine.trace import trace
    from engine.providers import make_provider
    from engine.providers.anthropic import AnthropicProvider
    from engine.providers.base import Provider
    from engine.providers.errors import ProviderAPIError, ProviderConfigError, ProviderError
    from engine.providers.openai import OpenAIProvider
    from engine.providers.random import RandomProvider
    from engine.providers.scripted import ScriptedProvider
    from engine.runtime.agent import Agent, agent_from_text, load_agent
    from engine.runtime.agents import AgentDirectory
    from engine.runtime.approval import approve, deny
    from engine.runtime.events import (
        ApprovalRequested,
        Event,
        Notice,
        RunResult,
        RunStarted,
        StepCommitted,
        StepStarted,
        Stopped,
        TextDelta,
        ToolCallStarted,
        ToolResultEvent,
        Violation,
    )
    from engine.runtime.loop import Runner
    from engine.runtime.resume import ResumeError
    from engine.runtime.sync import EventLoopRunningError, run_sync
    from engine.store import NullStore, Store, open_store
    from engine.store.errors import StoreError
    from engine.tools import MissingToolsError, Tool, ToolRegistry, ToolRegistryError, tool

# Each public name and the module it is defined in (imported when the name is first used).
_EXPORTS = {
    # rule files and the machine
    "RuleFile": "engine.language.loader",
    "load_rules": "engine.language.loader",
    "parse_rules": "engine.language.loader",
    "read_rule_file": "engine.language.loader",
    "compile_rules": "engine.machine.compiler",
    "Gate": "engine.machine",
    "Machine": "engine.machine",
    "Position": "engine.machine",
    "Reason": "engine.machine",
    "StopReason": "engine.machine",
    "Verdict": "engine.machine",
    "explain": "engine.machine.explain",
    "trace": "engine.machine.trace",
    "CheckResult": "engine.analysis.check",
    "check_path": "engine.analysis.check",
    "check_rule_file": "engine.analysis.check",
    # tools and agents
    "tool": "engine.tools",
    "Tool": "engine.tools",
    "ToolRegistry": "engine.tools",
    "Agent": "engine.runtime.agent",
    "AgentDirectory": "engine.runtime.agents",
    "agent_from_text": "engine.runtime.agent",
    "load_agent": "engine.runtime.agent",
    # running
    "Runner": "engine.runtime.loop",
    "run_sync": "engine.runtime.sync",
    "approve": "engine.runtime.approval",
    "deny": "engine.runtime.approval",
    "ApprovalRequested": "engine.runtime.events",
    "Event": "engine.runtime.events",
    "Notice": "engine.runtime.events",
    "RunResult": "engine.runtime.events",
    "RunStarted": "engine.runtime.events",
    "StepCommitted": "engine.runtime.events",
    "StepStarted": "engine.runtime.events",
    "Stopped": "engine.runtime.events",
    "TextDelta": "engine.runtime.events",
    "ToolCallStarted": "engine.runtime.events",
    "ToolResultEvent": "engine.runtime.events",
    "Violation": "engine.runtime.events",
    # providers
    "make_provider": "engine.providers",
    "Provider": "engine.providers.base",
    "AnthropicProvider": "engine.providers.anthropic",
    "OpenAIProvider": "engine.providers.openai",
    "RandomProvider": "engine.providers.random",
    "ScriptedProvider": "engine.providers.scripted",
    # stores
    "NullStore": "engine.store",
    "Store": "engine.store",
    "open_store": "engine.store",
    # errors
    "Diagnostic": "engine.errors",
    "MissingExtraError": "engine.errors",
    "PositionError": "engine.errors",
    "RuleFileError": "engine.errors",
    "SourceSpan": "engine.errors",
    "ToolfsmError": "engine.errors",
    "UnknownToolError": "engine.errors",
    "MissingToolsError": "engine.tools",
    "ToolRegistryError": "engine.tools",
    "ProviderAPIError": "engine.providers.errors",
    "ProviderConfigError": "engine.providers.errors",
    "ProviderError": "engine.providers.errors",
    "StoreError": "engine.store.errors",
    "ResumeError": "engine.runtime.resume",
    "EventLoopRunningError": "engine.runtime.sync",
}

__all__ = [
    "Agent",
    "AgentDirectory",
    "AnthropicProvider",
    "ApprovalRequested",
    "CheckResult",
    "Diagnostic",
    "Event",
    "EventLoopRunningError",
    "Gate",
    "Machine",
    "MissingExtraError",
    "MissingToolsError",
    "Notice",
    "NullStore",
    "OpenAIProvider",
    "Position",
    "PositionError",
    "Provider",
    "ProviderAPIError",
    "ProviderConfigError",
    "ProviderError",
    "RandomProvider",
    "Reason",
    "ResumeError",
    "RuleFile",
    "RuleFileError",
    "RunResult",
    "RunStarted",
    "Runner",
    "ScriptedProvider",
    "SourceSpan",
    "StepCommitted",
    "StepStarted",
    "StopReason",
    "Stopped",
    "Store",
    "StoreError",
    "TextDelta",
    "Tool",
    "ToolCallStarted",
    "ToolRegistry",
    "ToolRegistryError",
    "ToolResultEvent",
    "ToolfsmError",
    "UnknownToolError",
    "Verdict",
    "Violation",
    "agent_from_text",
    "approve",
    "check_path",
    "check_rule_file",
    "compile_rules",
    "deny",
    "explain",
    "load_agent",
    "load_rules",
    "make_provider",
    "open_store",
    "parse_rules",
    "read_rule_file",
    "run_sync",
    "tool",
    "trace",
]


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return list(__all__)
