"""The tool registry: schemas from hints and docstrings, validation, prefill, execution."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any, Literal

import pytest

from engine.tools import (
    HEARTBEAT_PARAM,
    ArgumentError,
    Tool,
    ToolRegistry,
    ToolRegistryError,
    ToolResult,
    load_tools_module,
    tool,
)

ROOT = Path(__file__).resolve().parents[2]


def lookup(order_id: str, limit: int = 5, mode: Literal["fast", "full"] = "fast") -> dict:
    """Look up an order.

    Second paragraph, not part of the description.

    Args:
        order_id: The order's id.
        limit: How many lines
            to return at most.
    """
    return {"order_id": order_id, "limit": limit, "mode": mode}


def test_schema_comes_from_type_hints_and_docstring() -> None:
    t = Tool.from_function(lookup)
    assert t.description == "Look up an order."
    assert t.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "order_id": {"type": "string", "description": "The order's id."},
            "limit": {
                "type": "integer",
                "default": 5,
                "description": "How many lines to return at most.",
            },
            "mode": {"type": "string", "enum": ["fast", "full"], "default": "fast"},
        },
        "required": ["order_id"],
    }
    assert not t.idempotent  # side effects unless marked


def test_arguments_are_validated_and_every_problem_named() -> None:
    t = Tool.from_function(lookup)
    assert t.parse('{"order_id": "o1", "limit": 2}')[0] == {
        "order_id": "o1",
        "limit": 2,
        "mode": "fast",
    }
    with pytest.raises(ArgumentError) as err:
        t.parse('{"limit": "many", "colour": 1}')
    text = str(err.value)
    assert "order_id: Field required" in text
    assert "limit:" in text and "colour: Extra inputs are not permitted" in text
    with pytest.raises(ArgumentError, match="not valid JSON"):
        t.parse('{"order_id": ')
    with pytest.raises(ArgumentError, match="expected a JSON object"):
        t.parse("[1]")


def test_prefilled_values_replace_the_models_key_by_key() -> None:
    t = Tool.from_function(lookup)
    args, _ = t.parse('{"order_id": "model", "limit": 9}', prefill={"order_id": "rule"})
    assert args["order_id"] == "rule" and args["limit"] == 9
    # A prefilled value is validated like any other.
    with pytest.raises(ArgumentError, match="mode"):
        t.parse('{"order_id": "x"}', prefill={"mode": "slow"})


def test_heartbeat_mode_adds_a_required_boolean_and_reads_it() -> None:
    t = Tool.from_function(lookup)
    spec = t.spec(heartbeat=True)
    assert spec.parameters["properties"][HEARTBEAT_PARAM]["type"] == "boolean"
    assert spec.parameters["required"] == ["order_id", HEARTBEAT_PARAM]
    assert HEARTBEAT_PARAM not in t.spec().parameters["properties"]
    args, beat = t.parse('{"order_id": "o", "request_heartbeat": true}', heartbeat=True)
    assert beat is True and HEARTBEAT_PARAM not in args
    assert t.parse('{"order_id": "o"}', heartbeat=True)[1] is False
    with pytest.raises(ArgumentError, match="request_heartbeat"):
        t.parse('{"order_id": "o", "request_heartbeat": "yes"}', heartbeat=True)
    # Outside heartbeat mode the parameter is an unknown argument.
    with pytest.raises(ArgumentError, match="request_heartbeat"):
        t.parse('{"order_id": "o", "request_heartbeat": true}')


def test_sync_async_and_raising_tools() -> None:
    async def slow(x: int) -> list[int]:
        await asyncio.sleep(0)
        return [x, x]

    def boom(x: int) -> None:
        raise RuntimeError(f"no {x}")

    ok = asyncio.run(Tool.from_function(slow).execute({"x": 2}))
    assert (ok.output, ok.is_error, ok.text()) == ([2, 2], False, "[2, 2]")
    bad = asyncio.run(Tool.from_function(boom).execute({"x": 3}))
    assert bad.is_error and bad.output == "RuntimeError: no 3"


def test_sync_tools_run_in_a_worker_thread_and_do_not_block_the_loop() -> None:
    release = threading.Event()

    def blocking(x: int) -> dict:
        # Waits for a coroutine on the event loop: only possible if the loop is not blocked.
        released = release.wait(timeout=10)
        return {"x": x, "released": released, "thread": threading.get_ident()}

    async def scenario() -> tuple[dict, int]:
        async def unblock() -> None:
            await asyncio.sleep(0)
            release.set()

        result, _ = await asyncio.gather(Tool.from_function(blocking).execute({"x": 1}), unblock())
        return result.output, threading.get_ident()

    output, loop_thread = asyncio.run(scenario())
    assert output["released"] is True and output["x"] == 1
    assert output["thread"] != loop_thread


def test_inline_tools_run_on_the_loop_thread() -> None:
    @tool(inline=True)
    def trivial(x: int) -> int:
        return threading.get_ident()

    async def scenario() -> tuple[int, int]:
        result = await Tool.from_function(trivial).execute({"x": 1})
        return result.output, threading.get_ident()

    ran_on, loop_thread = asyncio.run(scenario())
    assert ran_on == loop_thread
    assert Tool.from_function(trivial).inline
    assert not Tool.from_function(trivial, inline=False).inline
    registry = ToolRegistry()
    registry.register(lookup, inline=True)
    assert registry["lookup"].inline and not Tool.from_function(lookup).inline


def test_execute_now_runs_inline_tools_at_once_and_hands_back_coroutines_otherwise() -> None:
    @tool(inline=True)
    def double(x: int) -> int:
        return 2 * x

    @tool(inline=True)
    def fails(x: int) -> int:
        raise ValueError(f"bad {x}")

    @tool(inline=True)
    def deferred(x: int) -> Any:  # an inline function that returns an awaitable
        async def later() -> int:
            await asyncio.sleep(0)
            return x + 1

        return later()

    now = Tool.from_function(double).execute_now({"x": 2})
    assert isinstance(now, ToolResult) and (now.output, now.is_error) == (4, False)
    failed = Tool.from_function(fails).execute_now({"x": 1})
    assert isinstance(failed, ToolResult) and failed.is_error
    assert failed.output == "ValueError: bad 1"

    async def awaited(t: Tool) -> ToolResult:
        pending = t.execute_now({"x": 5})
        assert not isinstance(pending, ToolResult)  # a coroutine to await
        return await pending

    assert asyncio.run(awaited(Tool.from_function(deferred))).output == 6
    assert asyncio.run(awaited(Tool.from_function(double, inline=False))).output == 10
    # execute gives the same results either way
    assert asyncio.run(Tool.from_function(double).execute({"x": 3})).output == 6
    assert asyncio.run(Tool.from_function(deferred).execute({"x": 3})).output == 4


def test_marks_and_registry_from_module() -> None:
    module = types.ModuleType("m")

    @tool(idempotent=True)
    def read(key: str) -> str:
        """Read a key."""
        return key

    @tool(name="write_it")
    def write(key: str) -> str:
        return key

    module.read, module.write = read, write
    registry = ToolRegistry.from_module(module, ["write_it", "read"], descriptions={"read": "R"})
    assert registry.names() == ("write_it", "read")
    assert registry["read"].idempotent and not registry["write_it"].idempotent
    assert registry["read"].description == "R"
    with pytest.raises(ToolRegistryError, match="no function for tool\\(s\\) missing"):
        ToolRegistry.from_module(module, ["read", "missing"])
    with pytest.raises(ToolRegistryError, match="registered twice"):
        ToolRegistry([Tool.from_function(read), Tool.from_function(read)])


def test_reserved_and_variadic_parameters_are_refused() -> None:
    def beats(request_heartbeat: bool) -> None: ...

    def varargs(*items: int) -> None: ...

    with pytest.raises(ToolRegistryError, match="reserved"):
        Tool.from_function(beats)
    with pytest.raises(ToolRegistryError, match=r"\*args"):
        Tool.from_function(varargs)


def test_load_tools_module_from_a_path(tmp_path) -> None:
    (tmp_path / "my_tools.py").write_text("def ping() -> str:\n    return 'pong'\n")
    module = load_tools_module("my_tools.py", base=tmp_path)
    assert module.ping() == "pong"
    assert load_tools_module(str(tmp_path / "my_tools.py")) is module
    with pytest.raises(ToolRegistryError, match="not found"):
        load_tools_module("nope.py", base=tmp_path)
    (tmp_path / "broken.py").write_text("raise ImportError('bad')\n")
    with pytest.raises(ToolRegistryError, match="failed"):
        load_tools_module(str(tmp_path / "broken.py"))


def test_a_folder_is_not_a_tools_module(tmp_path, monkeypatch) -> None:
    (tmp_path / "some_folder").mkdir()
    for ref in ("some_folder", "some_folder/", str(tmp_path / "some_folder")):
        with pytest.raises(ToolRegistryError) as caught:
            load_tools_module(ref, base=tmp_path)
        assert "is a folder" in str(caught.value)
        assert "expected a .py file" in str(caught.value) and "dotted module name" in str(
            caught.value
        )
    # Relative to the working directory when no base is given (as the command line does).
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ToolRegistryError, match="'some_folder' is a folder"):
        load_tools_module("some_folder")


def test_broken_tools_modules_are_reported_in_one_line(tmp_path, monkeypatch) -> None:
    (tmp_path / "syntax.py").write_text("def ping() -> str:\n    return 'pong'\n\ndef bad(:\n")
    with pytest.raises(ToolRegistryError) as caught:
        load_tools_module("syntax.py", base=tmp_path)
    # FILE:LINE:COL (the column and wording are the interpreter's).
    assert re.fullmatch(
        rf"{re.escape(str(tmp_path / 'syntax.py'))}:4:\d+: syntax error: \w.*", str(caught.value)
    ), caught.value
    (tmp_path / "raises.py").write_text("raise ValueError('no config\\nfor ping')\n")
    with pytest.raises(ToolRegistryError) as caught:
        load_tools_module("raises.py", base=tmp_path)
    assert str(caught.value) == (
        f"importing tools module {tmp_path / 'raises.py'} failed: ValueError: no config for ping"
    )
    # The same through a dotted module name.
    (tmp_path / "dotted_syntax_tools.py").write_text("x = (\n")
    (tmp_path / "dotted_missing_dep.py").write_text("import toolfsm_no_such_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ToolRegistryError, match=r"dotted_syntax_tools\.py:1:\d+: syntax error: "):
        load_tools_module("dotted_syntax_tools")
    with pytest.raises(ToolRegistryError) as caught:
        load_tools_module("dotted_missing_dep")
    assert str(caught.value) == (
        "cannot import tools module 'dotted_missing_dep': No module named 'toolfsm_no_such_module'"
    )


def test_run_command_reports_bad_tools_and_exits_2(tmp_path) -> None:
    (tmp_path / "agent.yaml").write_text(
        "version: 1\nagent: a\ntools: [ping]\nrules:\n  - terminal: ping\n"
    )
    (tmp_path / "some_folder").mkdir()
    (tmp_path / "broken.py").write_text("def ping(:\n    pass\n")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    command = (sys.executable, "-m", "engine", "run", "agent.yaml")
    for ref, message in (
        ("some_folder", "toolfsm: error: tools module 'some_folder' is a folder"),
        ("broken.py", f"toolfsm: error: {tmp_path / 'broken.py'}:1:"),
    ):
        done = subprocess.run(
            [*command, "--tools", ref, "--model", "random:1", "--db", db],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
