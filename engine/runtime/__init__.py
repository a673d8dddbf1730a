"""Running agents: the step loop, its events, resume and approval.

    agent = load_agent("examples/screening/agent.yaml")      # machine + tools + settings
    runner = Runner(agent, provider, store=open_store())
    result = await runner.run("Screen application A-1042")    # or: async for e in stream()
    result = runner.run_sync("Screen application A-1042")     # the same without an event loop
    await runner.resume(run_id)                                # after a crash or approval

This package exports what a user of the runtime needs (the same names as `engine`'s); the
modules' other names (`resume.open_agent`, `loop.status_for`, ...) are the command line's,
imported from their modules.
"""

from engine.runtime.agent import Agent, agent_from_text, load_agent
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

__all__ = [
    "Agent",
    "ApprovalRequested",
    "Event",
    "EventLoopRunningError",
    "Notice",
    "ResumeError",
    "RunResult",
    "RunStarted",
    "Runner",
    "StepCommitted",
    "StepStarted",
    "Stopped",
    "TextDelta",
    "ToolCallStarted",
    "ToolResultEvent",
    "Violation",
    "agent_from_text",
    "approve",
    "deny",
    "load_agent",
    "run_sync",
]
