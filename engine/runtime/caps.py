"""The size cap on a tool call's raw arguments (`run.max_argument_bytes`).

A reply's arguments are kept several times (the assistant message, the step's reply, the
call's record, and in the history of every later request), so one 20 MB argument grows a store
by far more than 20 MB and every later model request with it. Above the cap, a call is refused
as a violation (the model is told the cap), and only a truncated copy of its arguments is
kept: the reply is cut down as it arrives, before anything stores or sends it on.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from engine.providers.base import ModelReply, ToolCall

__all__ = ["DEFAULT_MAX_ARGUMENT_BYTES", "cap_arguments", "cap_violation"]

DEFAULT_MAX_ARGUMENT_BYTES = 1024 * 1024
# How much of an oversized call's arguments is kept (characters), for the reader of a run.
_KEPT = 1000
# The end of a truncated copy; it says what was cut, and marks the call as refused even when
# a run is resumed from its stored reply.
_TRUNCATED = re.compile(r"…\[truncated by toolfsm: (\d+) bytes, above the cap of (\d+)\]\Z")


def _size(text: str) -> int:
    # A character is at most 4 UTF-8 bytes: most texts need no encoding to be measured.
    return len(text.encode("utf-8", "surrogatepass"))


def cap_arguments(reply: ModelReply, cap: int) -> ModelReply:
    """`reply` with every call's arguments above `cap` bytes replaced by a truncated copy
    (the reply itself when none is above it: the usual case, a length check per call)."""
    quarter = cap // 4
    calls = reply.tool_calls
    if all(len(call.arguments) <= quarter for call in calls):
        return reply
    cut: dict[str, str] = {}
    for call in calls:
        if len(call.arguments) > quarter:
            size = _size(call.arguments)
            if size > cap:
                cut[call.id] = (
                    f"{call.arguments[:_KEPT]}…[truncated by toolfsm: {size} bytes, "
                    f"above the cap of {cap}]"
                )
    if not cut:
        return reply
    return dataclasses.replace(
        reply,
        tool_calls=tuple(_with_arguments(call, cut) for call in calls),
        provider_state=_cut_state(reply.provider_state, cut),
    )


def cap_violation(arguments: str) -> str | None:
    """Why a call whose arguments `cap_arguments` truncated is refused (None: it was not)."""
    if arguments[-1:] != "]":
        return None
    found = _TRUNCATED.search(arguments[-120:])
    if found is None:
        return None
    size, cap = int(found.group(1)), int(found.group(2))
    return (
        f"the call's arguments are {size:,} bytes, above the cap of {cap:,} bytes per call "
        "(run.max_argument_bytes); the call was not executed: send smaller arguments"
    )


def _with_arguments(call: ToolCall, cut: Mapping[str, str]) -> ToolCall:
    text = cut.get(call.id)
    return call if text is None else dataclasses.replace(call, arguments=text)


def _cut_state(state: Any, cut: Mapping[str, str]) -> Any:
    """A provider's wire form of the reply (Anthropic's content blocks) with the same cuts."""
    if not isinstance(state, Mapping) or not isinstance(state.get("content"), list):
        return state
    blocks = [
        {**block, "input": {"_raw_arguments": cut[block["id"]]}}
        if isinstance(block, Mapping) and block.get("type") == "tool_use" and block.get("id") in cut
        else block
        for block in state["content"]
    ]
    return {**state, "content": blocks}
