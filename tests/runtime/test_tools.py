"""The tool registry: schemas from hints and docstrings, validation, prefill, execution."""

from __future__ import annotations

import asyncio
import threading
import types
from typing import Literal

import pytest

from engine.tools import (
    HEARTBEAT_PARAM,
    ArgumentError,
    Tool,
    ToolRegistry,
    ToolRegistryError,
    load_tools_module,
    tool,
)


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
