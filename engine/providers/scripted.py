"""Scripted provider: replays a YAML/JSON list of replies, for offline demos and tests.

Script format (YAML or JSON; a top-level list is accepted as the `replies` list)::

    replies:
      - call: retrieve_candidate            # one tool call
        args: {candidate_id: "c-17"}        # arguments as a mapping (serialised to JSON)
      - calls:                              # several calls in one reply (parallel)
          - {call: a, args: {}}
          - {call: b, raw_args: '{"x": '}   # arguments text sent verbatim (malformed on purpose)
      - text: "All done."                   # a reply without a tool call
      - call: finish                        # text and calls may be combined
        text: "Finishing."
        expect_allowed: [finish, retry]     # checks on the request (all optional):
        expect_force: true                  #   allowed names (as a set), force flag,
        expect_forced_tool: finish          #   the named forced tool (null: none)
        expect_parallel: false              #   parallel_tool_calls flag
        usage: {input_tokens: 10, output_tokens: 2}

Call ids are `call_1`, `call_2`, ... in script order unless a call gives `id:`. When the
script runs out, `complete` raises ScriptError(kind="script_exhausted"); a failed expectation
raises ScriptError(kind="script_diverged"); both name the script and the 0-based entry index.
`stream` hands each reply on as a model API streams it (the text a word at a time, then each
call), so a streamed run can be tried offline.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.providers.base import (
    ModelReply,
    ModelRequest,
    ReplyDelta,
    TextChunk,
    ToolCall,
    ToolCallChunk,
    Usage,
)
from engine.providers.errors import ProviderConfigError, ScriptError

__all__ = ["ScriptedProvider", "ScriptedReply", "load_script"]

_CALL_KEYS = frozenset({"call", "args", "raw_args", "id"})
_EXPECT_KEYS = frozenset(
    {"expect_allowed", "expect_force", "expect_forced_tool", "expect_parallel"}
)
_REPLY_KEYS = _CALL_KEYS | _EXPECT_KEYS | {"calls", "text", "usage"}
_MISSING = object()


@dataclass(frozen=True)
class ScriptedCall:
    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class ScriptedReply:
    """One parsed script entry."""

    calls: tuple[ScriptedCall, ...]
    text: str | None
    usage: Usage
    expect_allowed: frozenset[str] | None = None
    expect_force: bool | None = None
    expect_forced_tool: Any = _MISSING  # str | None when given
    expect_parallel: bool | None = None


def load_script(path: str | Path) -> list[Any]:
    """Read a script file (YAML, of which JSON is a subset) and return its raw entries."""
    p = Path(path)
    where = f"scripted:{p}"
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProviderConfigError(f"cannot read script {p}: {exc}", provider=where) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProviderConfigError(_yaml_problem(p, exc), provider=where) from exc
    if isinstance(data, Mapping):
        extra = set(data) - {"replies"}
        if extra or "replies" not in data:
            raise ProviderConfigError(
                f"{p}: a script mapping must have exactly the key 'replies' (got {sorted(data)})",
                provider=where,
            )
        data = data["replies"]
    if not isinstance(data, list):
        raise ProviderConfigError(
            f"{p}: expected a list of replies (or a mapping with 'replies')", provider=where
        )
    return data


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """One line, `PATH:LINE:COL: not valid YAML: problem`, instead of PyYAML's multi-line dump."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return f"{where}: not valid YAML/JSON: {problem}" + (f" ({context})" if context else "")


class ScriptedProvider:
    """Replays scripted replies in order, one per `complete` call."""

    def __init__(
        self, replies: Sequence[Mapping[str, Any]], *, source: str = "<memory>", start: int = 0
    ) -> None:
        """`start` skips replies a resumed run already used; call ids and reply numbers go
        on from there, as if the replay had never stopped."""
        self.source = source
        self.name = f"scripted:{source}"
        self._replies = tuple(_parse_entry(e, i, source, self.name) for i, e in enumerate(replies))
        if not 0 <= start <= len(self._replies):
            raise ProviderConfigError(
                f"script {source}: cannot start at reply #{start} of {len(self._replies)}",
                provider=self.name,
            )
        self._next = start
        self._call_counter = sum(len(r.calls) for r in self._replies[:start])

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedProvider:
        return cls(load_script(path), source=str(path))

    async def aclose(self) -> None:
        """Nothing to release; present so every provider can be closed the same way."""

    @property
    def remaining(self) -> int:
        """How many scripted replies are left."""
        return len(self._replies) - self._next

    async def complete(self, request: ModelRequest) -> ModelReply:
        index = self._next
        if index >= len(self._replies):
            raise ScriptError(
                f"script {self.source} is exhausted: all {len(self._replies)} replies were used, "
                f"but the run asked for reply #{index} (allowed={list(request.allowed)}, "
                f"force={request.force})",
                provider=self.name,
                kind="script_exhausted",
                script=self.source,
                index=index,
            )
        entry = self._replies[index]
        self._check(entry, index, request)
        self._next += 1
        calls = []
        for c in entry.calls:
            self._call_counter += 1
            calls.append(
                ToolCall(
                    id=c.id or f"call_{self._call_counter}", name=c.name, arguments=c.arguments
                )
            )
        return ModelReply(
            text=entry.text, tool_calls=tuple(calls), usage=entry.usage, tool_choice_sent=None
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ReplyDelta | ModelReply]:
        """`complete`, handed on as a model API streams it: the text a word at a time, each
        call's id and name, then its arguments; the reply last."""
        reply = await self.complete(request)
        for delta in _pieces(reply):
            yield delta
        yield reply

    def _check(self, entry: ScriptedReply, index: int, request: ModelRequest) -> None:
        problems: list[str] = []
        if entry.expect_allowed is not None and entry.expect_allowed != set(request.allowed):
            problems.append(
                f"expected allowed {sorted(entry.expect_allowed)}, got {list(request.allowed)}"
            )
        if entry.expect_force is not None and entry.expect_force != request.force:
            problems.append(f"expected force={entry.expect_force}, got force={request.force}")
        if entry.expect_forced_tool is not _MISSING and entry.expect_forced_tool != (
            request.named_tool
        ):
            problems.append(
                f"expected forced tool {entry.expect_forced_tool!r}, got {request.named_tool!r}"
            )
        if entry.expect_parallel is not None and entry.expect_parallel != (
            request.parallel_tool_calls
        ):
            problems.append(
                f"expected parallel_tool_calls={entry.expect_parallel}, "
                f"got {request.parallel_tool_calls}"
            )
        if problems:
            raise ScriptError(
                f"script {self.source} diverged at reply #{index}: " + "; ".join(problems),
                provider=self.name,
                kind="script_diverged",
                script=self.source,
                index=index,
            )


# A word and the spaces after it (or leading spaces): the pieces a streamed text comes in.
_WORD = re.compile(r"\s*\S+\s*|\s+")


def _pieces(reply: ModelReply) -> Iterator[ReplyDelta]:
    for word in _WORD.findall(reply.text or ""):
        yield TextChunk(word)
    for index, call in enumerate(reply.tool_calls):
        yield ToolCallChunk(index, call.id, call.name, "")
        if call.arguments:
            yield ToolCallChunk(index, None, None, call.arguments)


# Makes the error for a problem in one script entry, naming the script and the entry.
_Bad = Callable[[str], ProviderConfigError]


def _parse_entry(entry: Any, index: int, source: str, provider: str) -> ScriptedReply:
    def bad(msg: str) -> ProviderConfigError:
        return ProviderConfigError(f"script {source}, reply #{index}: {msg}", provider=provider)

    if not isinstance(entry, Mapping):
        raise bad(f"expected a mapping, got {type(entry).__name__}")
    _check_keys(entry, bad)
    calls = _parse_calls(entry, bad)
    text = entry.get("text")
    if text is not None and not isinstance(text, str):
        raise bad("'text' must be a string")
    if not calls and text is None:
        raise bad("a reply needs 'call', 'calls' or 'text'")
    usage = _parse_usage(entry, bad)
    allowed = _expect_allowed(entry, bad)
    for key in ("expect_force", "expect_parallel"):
        if key in entry and not isinstance(entry[key], bool):
            raise bad(f"'{key}' must be true or false")
    return ScriptedReply(
        calls=calls,
        text=text,
        usage=usage,
        expect_allowed=allowed,
        expect_force=entry.get("expect_force"),
        expect_forced_tool=entry.get("expect_forced_tool", _MISSING),
        expect_parallel=entry.get("expect_parallel"),
    )


def _check_keys(entry: Mapping[str, Any], bad: _Bad) -> None:
    """Refuse unknown keys, and keys that do not go together."""
    unknown = set(entry) - _REPLY_KEYS
    if unknown:
        raise bad(f"unknown keys {sorted(unknown)}; allowed: {sorted(_REPLY_KEYS)}")
    if "call" in entry and "calls" in entry:
        raise bad("give either 'call' or 'calls', not both")
    if "call" not in entry and ({"args", "raw_args", "id"} & set(entry)):
        raise bad("'args', 'raw_args' and 'id' need 'call'")


def _parse_calls(entry: Mapping[str, Any], bad: _Bad) -> tuple[ScriptedCall, ...]:
    """The entry's tool calls: its one `call`, its `calls` list, or none."""
    if "call" in entry:
        return (_parse_call(entry, bad),)
    if "calls" not in entry:
        return ()
    raw_calls = entry["calls"]
    if not isinstance(raw_calls, list) or not raw_calls:
        raise bad("'calls' must be a non-empty list")
    parsed = []
    for j, c in enumerate(raw_calls):
        if not isinstance(c, Mapping) or set(c) - _CALL_KEYS or "call" not in c:
            optional = sorted(_CALL_KEYS - {"call"})
            raise bad(f"calls[{j}] must be a mapping with 'call' and optional {optional}")
        parsed.append(_parse_call(c, bad))
    return tuple(parsed)


def _parse_usage(entry: Mapping[str, Any], bad: _Bad) -> Usage:
    usage = entry.get("usage", {})
    if not isinstance(usage, Mapping) or set(usage) - {"input_tokens", "output_tokens"}:
        raise bad("'usage' must be a mapping with input_tokens / output_tokens")
    return Usage(
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
    )


def _expect_allowed(entry: Mapping[str, Any], bad: _Bad) -> frozenset[str] | None:
    allowed = entry.get("expect_allowed")
    if allowed is None:
        return None
    if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
        raise bad("'expect_allowed' must be a list of tool names")
    return frozenset(allowed)


def _parse_call(c: Mapping[str, Any], bad: _Bad) -> ScriptedCall:
    name = c["call"]
    if not isinstance(name, str) or not name:
        raise bad("'call' must be a tool name")
    arguments = _call_arguments(c, name, bad)
    call_id = c.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise bad(f"call {name!r}: 'id' must be a string")
    return ScriptedCall(name=name, arguments=arguments, id=call_id)


def _call_arguments(c: Mapping[str, Any], name: str, bad: _Bad) -> str:
    """The arguments text of a call: its `raw_args` verbatim, or its `args` as JSON."""
    if "args" in c and "raw_args" in c:
        raise bad(f"call {name!r}: give either 'args' or 'raw_args', not both")
    if "raw_args" in c:
        raw = c["raw_args"]
        if not isinstance(raw, str):
            raise bad(f"call {name!r}: 'raw_args' must be a string")
        return raw
    args = c.get("args", {})
    if not isinstance(args, Mapping):
        raise bad(f"call {name!r}: 'args' must be a mapping (use raw_args for other JSON)")
    # Same text the OpenAI SDK would carry for these arguments; key order as written.
    try:
        return json.dumps(args, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise bad(f"call {name!r}: 'args' is not JSON ({exc}); quote dates and the like") from exc
