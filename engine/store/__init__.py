"""Persistence of agents and runs: each run's append-only journal of events.

    store = open_store()                       # $TOOLFSM_DB, else the per-user SQLite file
    agent = store.save_agent("triage", rules_text, "rules/triage.yaml")
    store.append([Append(run_id, owner, [RunCreated(...)], lease_seconds=30)])
    snapshot = store.load_run(run_id)          # the journal folded: steps, calls, messages

`Store` is the protocol the runtime and CLI depend on; `open_store` builds the SQL store
(SQLite with WAL by default, PostgreSQL by URL) and `NullStore` keeps nothing. The events
are in `engine.store.events`, the statuses in `engine.store.status`.

Names load on first use: importing this package, the statuses or `NullStore` does not import
SQLAlchemy or SQLModel. The store imports nothing else from the engine.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.db import resolve_db_url
    from engine.store.errors import (
        AgentNotFound,
        AmbiguousRunId,
        CallNotFound,
        CallStateConflict,
        InvalidValue,
        LeaseLost,
        RunClaimed,
        RunNotFound,
        RunStateConflict,
        StoreConflict,
        StoreError,
        StoreUnavailable,
    )
    from engine.store.ids import new_owner_id, new_run_id, owner_is_gone, rules_hash
    from engine.store.protocol import LEASE_SECONDS, Append, NullStore, Store
    from engine.store.records import (
        AgentRecord,
        MessageRecord,
        RunRecord,
        RunSnapshot,
        StepRecord,
        ToolCallRecord,
    )
    from engine.store.sql import SqlStore, open_store
    from engine.store.status import CallStatus, RunStatus

_MODULES = {
    "engine.store.db": ("resolve_db_url",),
    "engine.store.errors": (
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
    ),
    "engine.store.ids": ("new_owner_id", "new_run_id", "owner_is_gone", "rules_hash"),
    "engine.store.protocol": ("LEASE_SECONDS", "Append", "NullStore", "Store"),
    "engine.store.records": (
        "AgentRecord",
        "MessageRecord",
        "RunRecord",
        "RunSnapshot",
        "StepRecord",
        "ToolCallRecord",
    ),
    "engine.store.sql": ("SqlStore", "open_store"),
    "engine.store.status": ("CallStatus", "RunStatus"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "LEASE_SECONDS",
    "AgentNotFound",
    "AgentRecord",
    "AmbiguousRunId",
    "Append",
    "CallNotFound",
    "CallStateConflict",
    "CallStatus",
    "InvalidValue",
    "LeaseLost",
    "MessageRecord",
    "NullStore",
    "RunClaimed",
    "RunNotFound",
    "RunRecord",
    "RunSnapshot",
    "RunStateConflict",
    "RunStatus",
    "SqlStore",
    "StepRecord",
    "Store",
    "StoreConflict",
    "StoreError",
    "StoreUnavailable",
    "ToolCallRecord",
    "new_owner_id",
    "new_run_id",
    "open_store",
    "owner_is_gone",
    "resolve_db_url",
    "rules_hash",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.store' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
