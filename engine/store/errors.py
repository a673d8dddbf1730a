"""Store errors: the one exception tree the persistence layer raises.

Every `Store` method and `open_store` raise only these; raw SQLAlchemy and driver
errors are translated at the boundary (and kept as `__cause__` for debugging), so the CLI can
print `str(error)` and never a database traceback.

    StoreError
    ├── StoreUnavailable     the database cannot be opened, reached, migrated or written
    ├── RunNotFound          no run with that id (or id prefix)      (also a LookupError)
    ├── AmbiguousRunId       an id prefix matches several runs        (also a LookupError)
    ├── AgentNotFound        no agent with that id                    (also a LookupError)
    ├── CallNotFound         no tool call with that id in the run     (also a LookupError)
    ├── InvalidValue         a value does not fit (unknown status, not JSON, bad limit, ...)
    └── StoreConflict        the write contradicts what is already stored
        ├── CallStateConflict  the call's current status does not allow the requested change
        ├── RunStateConflict   the run is not in the status the append needs
        ├── RunClaimed       another live process holds the run's lease
        └── LeaseLost        this process no longer holds the lease it wrote under

StoreError derives from `engine.errors.ToolfsmError` (a leaf module with no imports from the
engine), so `except ToolfsmError` catches store failures too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from engine.errors import ToolfsmError

__all__ = [
    "AgentNotFound",
    "AmbiguousRunId",
    "CallNotFound",
    "CallStateConflict",
    "InvalidValue",
    "LeaseLost",
    "RunClaimed",
    "RunNotFound",
    "RunStateConflict",
    "StoreConflict",
    "StoreError",
    "StoreUnavailable",
]


class StoreError(ToolfsmError):
    """Base class of every error the run store raises."""


class StoreUnavailable(StoreError):
    """The database cannot be opened, reached, migrated or written.

    `url` never contains the password; `hint` says what to check.
    """

    def __init__(self, url: str, reason: str, hint: str) -> None:
        self.url, self.reason, self.hint = url, reason, hint
        super().__init__(f"run store unavailable at {url}: {reason}\nhint: {hint}")


class RunNotFound(StoreError, LookupError):
    """No run has this id (or, for `find_run`, starts with this prefix)."""

    def __init__(self, run_id: str, *, prefix: bool = False) -> None:
        self.run_id = run_id
        super().__init__(f"no run {'whose id starts with' if prefix else 'with id'} {run_id!r}")


class AmbiguousRunId(StoreError, LookupError):
    """An id prefix matches more than one run; `candidates` lists some of them."""

    def __init__(self, prefix: str, candidates: Sequence[str], *, more: bool) -> None:
        self.prefix, self.candidates = prefix, tuple(candidates)
        listed = ", ".join(self.candidates) + (", ..." if more else "")
        super().__init__(
            f"run id prefix {prefix!r} matches several runs ({listed}); type more characters"
        )


class AgentNotFound(StoreError, LookupError):
    """No agent has this id."""

    def __init__(self, agent_id: int) -> None:
        self.agent_id = agent_id
        super().__init__(f"no agent with id {agent_id}")


class CallNotFound(StoreError, LookupError):
    """The run has no tool call with this id."""

    def __init__(self, run_id: str, call_id: str) -> None:
        self.run_id, self.call_id = run_id, call_id
        super().__init__(f"run {run_id} has no tool call with id {call_id!r}")


class InvalidValue(StoreError):
    """A value handed to the store does not fit the schema (unknown status, not JSON, ...)."""


class StoreConflict(StoreError):
    """The write contradicts what is already stored; nothing was written."""


class CallStateConflict(StoreConflict):
    """The call's current status does not allow the requested change."""

    def __init__(
        self, run_id: str, call_id: str, current: str, requested: str, allowed: Sequence[str]
    ) -> None:
        self.run_id, self.call_id, self.current, self.requested = (
            run_id,
            call_id,
            current,
            requested,
        )
        options = ", ".join(allowed) if allowed else "nothing (its result is recorded)"
        super().__init__(
            f"tool call {call_id!r} of run {run_id} is {current!r} and cannot become "
            f"{requested!r}; from {current!r} it may become: {options}"
        )


class RunStateConflict(StoreConflict):
    """The run is not in the status the caller expected (another writer got there first)."""

    def __init__(self, run_id: str, current: str, expected: Sequence[str]) -> None:
        self.run_id, self.current, self.expected = run_id, current, tuple(expected)
        wanted = " or ".join(map(repr, self.expected))
        super().__init__(f"run {run_id} is {current!r}, expected {wanted}")


class RunClaimed(StoreConflict):
    """Another process holds the run's lease and it has not lapsed: it is running the run.

    `owner` is its "host:pid:random" id; `renewed_at` / `expires_at` say how fresh its lease
    is. Nothing was written.
    """

    def __init__(
        self,
        run_id: str,
        owner: str,
        renewed_at: datetime | None,
        expires_at: datetime | None,
        now: datetime,
    ) -> None:
        self.run_id, self.owner = run_id, owner
        self.renewed_at, self.expires_at = renewed_at, expires_at
        renewed = "at an unknown time" if renewed_at is None else f"{_seconds(now, renewed_at)} ago"
        lapses = "never lapses" if expires_at is None else f"lapses in {_seconds(expires_at, now)}"
        super().__init__(
            f"run {run_id} is being run by another process ({owner}, lease renewed "
            f"{renewed}, {lapses}); wait for it to stop, or if that process "
            "is gone, run the command again once the lease has lapsed"
        )


def _seconds(later: datetime, earlier: datetime) -> str:
    return f"{max(0.0, (later - earlier).total_seconds()):.0f} s"


class LeaseLost(StoreConflict):
    """This process wrote under a lease it no longer holds (it lapsed and another process
    took the run over, or the run was released); nothing of the write was stored."""

    def __init__(self, run_id: str, owner: str, holder: str | None) -> None:
        self.run_id, self.owner, self.holder = run_id, owner, holder
        now_held = f"now held by {holder}" if holder else "now released"
        super().__init__(
            f"run {run_id}: this process ({owner}) no longer holds the run's lease "
            f"({now_held}); it stopped without running anything more"
        )
