"""The store's public surface stays small, documented and free of upward imports."""

from __future__ import annotations

import inspect
import subprocess
import sys

import engine.store
from engine.store import RunStore

PUBLIC = {
    "RunStore",
    "open_store",
    "resolve_db_url",
    "new_run_id",
    "rules_hash",
    "AgentRecord",
    "RunRecord",
    "StepRecord",
    "ToolCallRecord",
    "MessageRecord",
    "RunSnapshot",
    "RunStatus",
    "CallStatus",
    "StoreError",
    "StoreUnavailable",
    "RunNotFound",
    "AmbiguousRunId",
    "AgentNotFound",
    "CallNotFound",
    "InvalidValue",
    "StoreConflict",
    "DuplicateStep",
    "StepOutOfOrder",
    "DuplicateCall",
    "CallStateConflict",
    "RunStateConflict",
    "RunClaimed",
    "LeaseLost",
    "new_owner_id",
    "LEASE_SECONDS",
}

LOOP_API = {
    "save_agent",
    "get_agent",
    "create_run",
    "commit_step",
    "append_step",
    "append_messages",
    "record_call_started",
    "record_call_finished",
    "set_call_status",
    "update_run",
    "get_run",
    "find_run",
    "load_run",
    "list_runs",
    "pending_calls",
    "claim_run",
    "renew_lease",
    "release_run",
    "write",
    "write_many",
    "close",
}


def test_public_names() -> None:
    assert set(engine.store.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(engine.store, name).__doc__, name


def test_run_store_methods_are_documented() -> None:
    methods = {
        name
        for name, member in inspect.getmembers(RunStore, inspect.isfunction)
        if not name.startswith("_")
    }
    assert methods == LOOP_API
    for name in methods:
        doc = getattr(RunStore, name).__doc__
        assert doc and doc.strip(), name


def test_errors_form_one_tree() -> None:
    for name in PUBLIC:
        value = getattr(engine.store, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, engine.store.StoreError), name


def test_store_imports_nothing_else_from_the_engine() -> None:
    # `import engine` loads the core's public API; the store must add nothing beyond it
    # except itself (it sits at the bottom of the chain: no providers, runtime or CLI).
    code = (
        "import sys, engine; [getattr(engine, name) for name in engine.__all__]; "
        "before = set(sys.modules); import engine.store; "
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('engine.') "
        "and not m.startswith('engine.store')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
