"""The store's public surface stays small, documented, cheap to import and free of upward
imports; its events are the checked-in JSON Schema."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import jsonschema

import engine.store
import engine.store.errors
from engine.store import NullStore, SqlStore, Store
from engine.store.events import EVENT_ADAPTER, event_schema_text

ROOT = Path(__file__).resolve().parents[2]
EVENTS_SCHEMA = ROOT / "schemas" / "toolfsm-events.schema.json"

PUBLIC = {
    "Append",
    "Store",
    "NullStore",
    "SqlStore",
    "open_store",
    "resolve_db_url",
    "LEASE_SECONDS",
    "StoreError",
}

STORE_API = {
    "save_agent",
    "get_agent",
    "append",
    "claim_run",
    "renew_lease",
    "release_run",
    "get_run",
    "find_run",
    "list_runs",
    "load_run",
    "close",
}


def test_public_names() -> None:
    assert set(engine.store.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(engine.store, name).__doc__, name


def _methods(cls: type) -> set[str]:
    return {n for n, _ in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}


def test_both_stores_are_the_protocol_and_nothing_more() -> None:
    assert _methods(Store) == STORE_API
    assert _methods(SqlStore) == STORE_API  # `url` and `engine` are properties
    assert _methods(NullStore) == STORE_API
    assert isinstance(NullStore(), Store)
    for name in STORE_API:
        doc = getattr(SqlStore, name).__doc__
        assert doc and doc.strip(), name


def test_errors_form_one_tree() -> None:
    for name in engine.store.errors.__all__:
        value = getattr(engine.store.errors, name)
        assert value.__doc__, name
        assert issubclass(value, engine.store.StoreError), name


def _imported(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out))


def test_the_store_package_and_the_null_store_load_no_sqlalchemy() -> None:
    loaded = _imported(
        "import json, sys, engine.store; from engine.store import NullStore, Append; from engine.store.status import RunStatus;"
        "store = NullStore(); store.append([Append('r', 'o', [])]); store.save_agent('a', 'x');"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'sqlmodel', 'alembic'))))"
    )
    assert loaded == []
    # ... which the SQL store does load (the check above can fail).
    assert "sqlalchemy" in _imported(
        "import json, sys; from engine.store import open_store;"
        "print(json.dumps([m for m in sys.modules if m == 'sqlalchemy']))"
    )


def test_store_imports_nothing_else_from_the_engine() -> None:
    # `import engine` loads the core's public API; the store must add nothing beyond it
    # except itself (it sits at the bottom of the chain: no providers, runtime or CLI).
    code = (
        "import json, sys, engine; [getattr(engine, name) for name in engine.__all__]; "
        "before = set(sys.modules); import engine.store.sql; "
        "print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith('engine.') "
        "and not m.startswith('engine.store'))))"
    )
    assert _imported(code) == []


def test_the_event_schema_file_is_generated_from_the_models() -> None:
    assert EVENTS_SCHEMA.read_text() == event_schema_text(), (
        "stale schema: run `python -m engine.store.events > schemas/toolfsm-events.schema.json`"
    )
    schema = json.loads(EVENTS_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    stopped = {
        "kind": "stopped",
        "version": 1,
        "status": "finished",
        "totals": {"steps": 1, "input_tokens": 0, "output_tokens": 0},
    }
    validator.validate(stopped)
    EVENT_ADAPTER.validate_python(stopped)
    assert not validator.is_valid({**stopped, "version": 2})
    assert not validator.is_valid({**stopped, "kind": "exploded"})
