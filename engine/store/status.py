"""Statuses of runs and tool calls, as the store records them.

This module imports nothing but the standard library, so the run loop can use the enums
without loading the SQL store (SQLAlchemy, SQLModel).
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum

__all__ = ["CallStatus", "RunStatus", "StatusFilter"]


class RunStatus(StrEnum):
    """Where a run stands; `is_terminal` ones have a `finished_at`."""

    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_DECISION = "awaiting_decision"
    # An agent call of the run waits on a callee's run that is paused (for approval, a
    # decision, or its own callees): resumed with the callee.
    AWAITING_AGENTS = "awaiting_agents"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for statuses after which the loop does not continue by itself."""
        return self in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED)

    @property
    def is_resumable(self) -> bool:
        """True for statuses `resume` accepts (a finished run stays finished)."""
        return self is not RunStatus.FINISHED


class CallStatus(StrEnum):
    """Life of one tool call.

    started -> finished | error | failed          (executed)
    awaiting_approval -> approved | denied        (requires-approval rule)
    approved -> started -> ...                    (executed after approval)
    violation                                     (not executed: outside the allowed set)

    `error` means the tool ran and reported an error; `failed` means the call could not
    complete (the executor raised, or it was given up after a crash).
    """

    STARTED = "started"
    FINISHED = "finished"
    ERROR = "error"
    VIOLATION = "violation"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    DENIED = "denied"
    FAILED = "failed"


# What `list_runs` filters on: one status, several, or None for every run (a status may be
# given by its value, as the CLI's --status is).
StatusFilter = RunStatus | str | Collection[RunStatus | str] | None
