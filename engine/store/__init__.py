"""Persistence of agents and runs: each run's append-only journal of events.

    store = open_store()                       # $TOOLFSM_DB, else the per-user SQLite file
    agent = store.save_agent("triage", rules_text, "rules/triage.yaml")
    store.append([Append(run_id, owner, [RunCreated(...)], lease_seconds=30)])
    snapshot = store.load_run(run_id)          # the journal folded: steps, calls, messages

`Store` is the protocol the runtime and CLI depend on; `open_store` builds the SQL store
(SQLite with WAL by default, PostgreSQL by URL) and `NullStore` keeps nothing. The rest is
in the modules: the events in `events`, the records a store returns in `records`, the
statuses in `status`, the errors (all under `StoreError`) in `errors`, ids in `ids`.

The SQL store loads on first use: importing this package, the statuses or `NullStore` does
not import SQLAlchemy or SQLModel. The store imports nothing else from the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.store.errors import StoreError
from engine.store.protocol import LEASE_SECONDS, Append, NullStore, Store

if TYPE_CHECKING:  # the SQL store loads SQLAlchemy: on first use
    from engine.store.db import resolve_db_url
    from engine.store.sql import SqlStore, open_store

_LAZY = {
    "resolve_db_url": "engine.store.db",
    "SqlStore": "engine.store.sql",
    "open_store": "engine.store.sql",
}

__all__ = [
    "LEASE_SECONDS",
    "Append",
    "NullStore",
    "SqlStore",
    "Store",
    "StoreError",
    "open_store",
    "resolve_db_url",
]


def __getattr__(name: str) -> Any:
    from importlib import import_module

    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.store' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
