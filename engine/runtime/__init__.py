"""Running agents: the step loop, its events, persistence hooks, resume and approval.

agent = load_agent("examples/screening/agent.yaml")        # machine + tools + settings
runner = Runner(agent, provider, store=open_store())
result = await runner.run("Screen application A-1042")       # or: async for e in stream()
await runner.resume(run_id)                                  # after a crash or approval
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
from engine.runtime.loop import Runner, status_for
from engine.runtime.resume import ResumeError, load_state, open_agent, provider_for_run

__all__ = [
    "Agent",
    "ApprovalRequested",
    "Event",
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
    "load_state",
    "open_agent",
    "provider_for_run",
    "status_for",
]
