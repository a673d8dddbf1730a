"""The tool registry: Python functions -> tool specs, argument validation, and execution.

A tool is a plain function, sync or async. Its parameter JSON Schema comes from its type hints
(through a pydantic model built from the signature), its description from the docstring (the
first paragraph; parameter descriptions in Google, Sphinx or NumPy style). Arguments the model sends are
parsed from JSON, merged with the rule's prefilled values (prefilled wins, key by key) and
validated by that same pydantic model before anything runs. A tool that raises gives an error
result; nothing escapes `execute`.

Tools have side effects unless marked idempotent (`@tool(idempotent=True)` or
`idempotent: true` in the agent file): after a crash, an interrupted idempotent call is simply
run again, a side-effect call waits for a human decision.

A sync tool runs in a worker thread (the event loop's default executor, which is bounded), so
a slow or blocking tool (I/O, `time.sleep`) does not stall the loop: other runs go on, and
Ctrl-C still reaches the process. `@tool(inline=True)` runs it on the loop's thread instead,
which saves the thread hand-off (tens of microseconds) and is meant for trivial CPU-only
functions that return at once. Async tools always run on the loop. A run cancelled while a
sync tool runs stops waiting for it; the thread finishes the call in the background.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import re
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import to_jsonable_python

from engine.errors import ToolfsmError
from engine.providers.base import ToolSpec

__all__ = [
    "HEARTBEAT_PARAM",
    "ArgumentError",
    "MissingToolsError",
    "Tool",
    "ToolRegistry",
    "ToolRegistryError",
    "ToolResult",
    "load_tools_module",
    "tool",
]

HEARTBEAT_PARAM = "request_heartbeat"
_HEARTBEAT_SCHEMA = {
    "type": "boolean",
    "description": "Request an immediate heartbeat after the call: true to keep going "
    "(you will be asked again), false to end your turn.",
}
_MARK = "__toolfsm_tool__"
# json.dumps with options builds an encoder per call; results are encoded once per call.
_to_text = json.JSONEncoder(ensure_ascii=False, default=str).encode
# What a sync tool returns nearly always: no need to ask whether it is awaitable.
_PLAIN = frozenset({str, int, float, bool, type(None), dict, list, tuple})
_clock = time.perf_counter
# Outputs that are their own JSON-friendly form (not float: pydantic turns inf/nan into None).
_JSON_SCALARS = frozenset({str, int, bool, type(None)})


class ToolRegistryError(ToolfsmError):
    """Tools could not be loaded or registered (missing function, bad module, bad signature)."""


class ArgumentError(ToolfsmError):
    """The model's arguments for a call are malformed JSON or fail the tool's schema."""

    def __init__(self, tool: str, message: str) -> None:
        self.tool = tool
        super().__init__(f"invalid arguments for {tool!r}: {message}")


@dataclass(frozen=True)
class _Marks:
    name: str | None
    idempotent: bool
    description: str | None
    inline: bool = False


F = TypeVar("F", bound=Callable[..., Any])


@overload
def tool(fn: F, /) -> F: ...


@overload
def tool(
    *,
    name: str | None = None,
    idempotent: bool = False,
    description: str | None = None,
    inline: bool = False,
) -> Callable[[F], F]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    idempotent: bool = False,
    description: str | None = None,
    inline: bool = False,
) -> Any:
    """Mark a function as a tool (optional: any function named in the agent file is a tool).

    `@tool` or `@tool(idempotent=True, name=..., description=..., inline=True)`; returns the
    function itself, its type unchanged. `inline=True` runs a sync tool on the event loop's
    thread rather than in a worker thread: only for trivial CPU-only functions (see the
    module docstring).
    """

    def mark(f: F) -> F:
        setattr(f, _MARK, _Marks(name, idempotent, description, inline))
        return f

    return mark(fn) if fn is not None else mark


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a call returned: a JSON-friendly output, or an error text when `is_error`."""

    output: Any
    is_error: bool
    duration_ms: int

    def text(self) -> str:
        """The result as the model sees it: strings as they are, anything else as JSON."""
        output = self.output
        if isinstance(output, str):
            return output
        if type(output) is int:  # JSON's form of a plain int is its repr; skip the encoder
            return int.__repr__(output)
        return _to_text(output)


def _docstring_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The description (first paragraph) of a docstring and its parameter descriptions, in
    Google (`Args:`), Sphinx (`:param x:`) or NumPy (`Parameters` / `----------`) style."""
    import docstring_parser

    doc = inspect.getdoc(fn) or ""
    paragraphs = re.split(r"\n\s*\n", doc.strip(), maxsplit=1) if doc else [""]
    description = " ".join(paragraphs[0].split())
    if description.startswith(":") or description.startswith("Args:"):
        description = ""  # no summary: the docstring starts with its parameters
    try:
        parsed = docstring_parser.parse(doc)
    except docstring_parser.ParseError:
        return description, {}
    params = {
        param.arg_name: " ".join(param.description.split())
        for param in parsed.params
        if param.description
    }
    return description, params


def _strip_titles(schema: Any) -> Any:
    """Drop pydantic's generated `title`s: noise for the model, and they cost tokens."""
    if isinstance(schema, dict):
        return {
            k: _strip_titles(v)
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def _argument_fields(
    fn: Callable[..., Any], tool_name: str, param_docs: Mapping[str, str]
) -> dict[str, Any]:
    """The pydantic fields of a tool's arguments: one per parameter, typed by its hint."""
    try:
        hints = get_type_hints(fn)
    except Exception as exc:  # a forward reference that does not resolve
        raise ToolRegistryError(f"tool {tool_name!r}: cannot read type hints: {exc}") from exc
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolRegistryError(
                f"tool {tool_name!r}: *args/**kwargs cannot be described to a model; "
                "name every parameter"
            )
        if param.name == HEARTBEAT_PARAM:
            raise ToolRegistryError(
                f"tool {tool_name!r}: the parameter name {HEARTBEAT_PARAM!r} is reserved "
                "for heartbeat mode"
            )
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (
            hints.get(param.name, Any),
            Field(default, description=param_docs.get(param.name)),
        )
    return fields


def _problems(exc: ValidationError) -> str:
    """Every validation problem, `where: what`, on one line."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}" for e in exc.errors()
    )


@dataclass(frozen=True, eq=False)
class Tool:
    """One registered tool: the function, its argument model and schema, and its marks."""

    name: str
    fn: Callable[..., Any]
    description: str
    parameters: dict[str, Any]
    model: type[BaseModel]
    idempotent: bool = False
    is_async: bool = False
    inline: bool = False  # a sync tool runs on the loop's thread, not in a worker thread
    # An agent tool (it messages other agents): what it asks, run by the loop with the
    # run's context (`engine.runtime.agents`); None for a Python function's tool.
    agent_call: Any = None

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        idempotent: bool | None = None,
        description: str | None = None,
        inline: bool | None = None,
    ) -> Tool:
        """Build a tool from a function's signature, type hints and docstring; `idempotent`
        and `inline` default to the function's `@tool` marks."""
        marks: _Marks | None = getattr(fn, _MARK, None)
        tool_name = name or (marks.name if marks else None) or fn.__name__
        doc, param_docs = _docstring_parts(fn)
        model = create_model(  # type: ignore[call-overload, unused-ignore]
            f"{tool_name}_arguments",
            __config__=ConfigDict(extra="forbid"),
            **_argument_fields(fn, tool_name, param_docs),
        )
        parameters = _strip_titles(model.model_json_schema())
        parameters.setdefault("properties", {})
        if marks is None:
            marks = _Marks(None, False, None)
        return cls(
            name=tool_name,
            fn=fn,
            description=description or marks.description or doc,
            parameters=parameters,
            model=model,
            idempotent=marks.idempotent if idempotent is None else idempotent,
            is_async=inspect.iscoroutinefunction(fn),
            inline=marks.inline if inline is None else inline,
        )

    def spec(self, *, heartbeat: bool = False) -> ToolSpec:
        """The tool as offered to the model; heartbeat mode adds `request_heartbeat`."""
        parameters = self.parameters
        if heartbeat:
            parameters = {
                **parameters,
                "properties": {
                    **parameters.get("properties", {}),
                    HEARTBEAT_PARAM: _HEARTBEAT_SCHEMA,
                },
                "required": [*parameters.get("required", []), HEARTBEAT_PARAM],
            }
        return ToolSpec(self.name, self.description, parameters)

    def parse(
        self,
        raw: str,
        *,
        prefill: Mapping[str, Any] | None = None,
        heartbeat: bool = False,
    ) -> tuple[dict[str, Any], bool | None]:
        """Parse and validate the model's JSON arguments: (arguments, request_heartbeat).

        Prefilled values replace the model's key by key before validation. Raises
        `ArgumentError` naming every problem (JSON syntax, unknown or missing keys, types).
        """
        text = raw.strip() or "{}"
        if not heartbeat and not prefill:
            # The common case: parse and validate in one pass (pydantic's JSON mode). Any
            # failure goes the long way below, which names the problems as it always has.
            try:
                validated = self.model.__pydantic_validator__.validate_json(text)
            except ValidationError:
                pass
            else:
                return dict(validated.__dict__), None
        value = self._json_object(text)
        beat = self._pop_heartbeat(value) if heartbeat else None
        if prefill:
            value = {**value, **prefill}
        try:
            validated = self.model.model_validate(value)
        except ValidationError as exc:
            raise ArgumentError(self.name, _problems(exc)) from None
        # Keep the validated Python values (e.g. enums, dates) for the call itself; the
        # JSON-friendly copy is what gets stored. The model forbids extra keys, so its
        # __dict__ holds exactly the parameters, in signature order.
        return dict(validated.__dict__), beat

    def _json_object(self, text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ArgumentError(self.name, f"not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ArgumentError(self.name, f"expected a JSON object, got {type(value).__name__}")
        return value

    def _pop_heartbeat(self, value: dict[str, Any]) -> bool:
        flag = value.pop(HEARTBEAT_PARAM, False)
        if not isinstance(flag, bool):
            raise ArgumentError(self.name, f"{HEARTBEAT_PARAM} must be true or false")
        return flag

    async def execute(self, arguments: Mapping[str, Any]) -> ToolResult:
        """Run the tool; an exception becomes an error result (the run goes on)."""
        now = self.execute_now(arguments)
        return now if isinstance(now, ToolResult) else await now

    def execute_now(
        self, arguments: Mapping[str, Any]
    ) -> ToolResult | Coroutine[Any, Any, ToolResult]:
        """`execute` without a coroutine where none is needed: an inline sync tool runs at
        once and its result comes back; any other tool (or an inline one whose function
        returned an awaitable) gives the coroutine to await for it."""
        started = _clock()
        if self.is_async or not self.inline:
            return self._run(arguments, started, None)
        try:
            output = self.fn(**arguments)
            if type(output) not in _PLAIN and inspect.isawaitable(output):
                return self._run(arguments, started, output)
            if type(output) not in _JSON_SCALARS:
                output = to_jsonable_python(output, fallback=str)
        except Exception as exc:  # (not CancelledError, a BaseException: it propagates)
            return ToolResult(_error_text(exc), True, _ms_since(started))
        return ToolResult(output, False, int((_clock() - started) * 1000))

    async def _run(self, arguments: Mapping[str, Any], started: float, awaiting: Any) -> ToolResult:
        try:
            if awaiting is not None:  # what an inline function returned
                output = await awaiting
            elif self.is_async:
                output = await self.fn(**arguments)
            else:
                output = await asyncio.to_thread(self.fn, **arguments)
                if type(output) not in _PLAIN and inspect.isawaitable(output):
                    output = await output
            if type(output) not in _JSON_SCALARS:
                output = to_jsonable_python(output, fallback=str)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return ToolResult(_error_text(exc), True, _ms_since(started))
        return ToolResult(output, False, _ms_since(started))


def _error_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _ms_since(started: float) -> int:
    return int((_clock() - started) * 1000)


def tool_name_of(fn: Callable[..., Any]) -> str:
    """The tool name a function stands for: `@tool(name=...)` if given, else its own name."""
    marks: _Marks | None = getattr(fn, _MARK, None)
    if marks is not None and marks.name:
        return marks.name
    return str(getattr(fn, "__name__", repr(fn)))


class ToolRegistry:
    """The tools of one agent, by name, in the order they were registered."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, t: Tool) -> Tool:
        if t.name in self._tools:
            raise ToolRegistryError(f"tool {t.name!r} is registered twice")
        self._tools[t.name] = t
        return t

    @overload
    def register(self, fn: F, /) -> F: ...

    @overload
    def register(
        self,
        /,
        *,
        name: str | None = None,
        idempotent: bool | None = None,
        inline: bool | None = None,
    ) -> Callable[[F], F]: ...

    def register(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        idempotent: bool | None = None,
        inline: bool | None = None,
    ) -> Any:
        """Register a function (usable as a decorator, with or without options); returns the
        function itself."""

        def add(f: F) -> F:
            self.add(Tool.from_function(f, name=name, idempotent=idempotent, inline=inline))
            return f

        return add(fn) if fn is not None else add

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    @classmethod
    def from_module(
        cls,
        module: ModuleType,
        names: Iterable[str],
        *,
        idempotent: Mapping[str, bool] | None = None,
        descriptions: Mapping[str, str] | None = None,
    ) -> ToolRegistry:
        """The tools `names` (in that order) taken from a module's functions.

        A function counts when its name matches or when `@tool(name=...)` gave it that name.
        `idempotent` / `descriptions` (from the agent file) override the function's marks.
        """
        found = tool_functions(module)
        wanted = list(names)
        missing = [n for n in wanted if n not in found]
        if missing:
            raise MissingToolsError(missing, [module_place(module)])
        idem = idempotent or {}
        desc = descriptions or {}
        return cls(
            Tool.from_function(
                found[n], name=n, idempotent=idem.get(n), description=desc.get(n) or None
            )
            for n in wanted
        )


def tool_functions(module: ModuleType) -> dict[str, Callable[..., Any]]:
    """A module's public functions by the tool name each stands for (`tool_name_of`); the
    first one wins when two stand for the same name."""
    found: dict[str, Callable[..., Any]] = {}
    for attr, value in vars(module).items():
        if inspect.isfunction(value) and not attr.startswith("_"):
            marks: _Marks | None = getattr(value, _MARK, None)
            found.setdefault(marks.name if marks and marks.name else attr, value)
    return found


def module_place(module: ModuleType) -> str:
    """Where a module's functions were looked for, as an error message names it."""
    file = getattr(module, "__file__", None)
    return file if isinstance(file, str) else f"module {module.__name__}"


class MissingToolsError(ToolRegistryError):
    """Tools the agent file names have no function: `tools` (the names, in declaration order)
    were looked for in `places` (files or modules, in the order they were tried)."""

    def __init__(self, tools: Iterable[str], places: Iterable[str], *, prefix: str = "") -> None:
        self.tools = tuple(tools)
        self.places = tuple(places)
        where = "; ".join(self.places)
        super().__init__(
            f"{prefix}no function for tool(s) {', '.join(self.tools)} (looked in: {where}); "
            "define them there (a function of the same name, or one decorated with "
            "@tool(name=...)), or pass tools= to load_agent"
        )


def load_tools_module(ref: str, *, base: Path | None = None) -> ModuleType:
    """Import the tools module named by `ref`: a file path (`tools.py`, relative to `base`)
    or a dotted module name (`mypkg.tools`)."""
    if ref.endswith(".py") or "/" in ref or "\\" in ref:
        path = Path(ref)
        if not path.is_absolute() and base is not None:
            path = base / path
        return _load_file(ref, path.resolve())
    # A folder of the working directory (or of `base`) imports as an empty namespace
    # package, which would then seem to define no tools at all.
    folder = (base or Path.cwd()) / ref
    if folder.is_dir() and not (folder / "__init__.py").is_file():
        raise _folder_error(ref, folder.resolve())
    try:
        return importlib.import_module(ref)
    except ImportError as exc:
        raise ToolRegistryError(f"cannot import tools module {ref!r}: {_one_line(exc)}") from exc
    except Exception as exc:
        raise _import_error(ref, exc) from exc


def _load_file(ref: str, path: Path) -> ModuleType:
    """The module of a `.py` file, imported once under a stable, path-derived name."""
    if path.is_dir():
        raise _folder_error(ref, path)
    if not path.is_file():
        raise ToolRegistryError(f"tools module {ref!r} not found (looked at {path})")
    mod_name = "toolfsm_tools_" + re.sub(r"\W", "_", str(path))
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ToolRegistryError(f"cannot import tools module {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise _import_error(str(path), exc) from exc
    return module


def _folder_error(ref: str, path: Path) -> ToolRegistryError:
    return ToolRegistryError(
        f"tools module {ref!r} is a folder ({path}); expected a .py file (e.g. "
        f"{Path(ref) / 'tools.py'}) or a dotted module name (e.g. mypkg.tools)"
    )


def _import_error(module: str, exc: Exception) -> ToolRegistryError:
    """One line naming the module and what went wrong importing it."""
    if isinstance(exc, SyntaxError):
        where = ":".join(
            str(part) for part in (exc.filename or module, exc.lineno, exc.offset) if part
        )
        return ToolRegistryError(f"{where}: syntax error: {exc.msg}")
    return ToolRegistryError(
        f"importing tools module {module} failed: {type(exc).__name__}: {_one_line(exc)}"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or "(no message)"
