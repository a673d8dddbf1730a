"""A run's in-memory state, and the JSON form of its messages and replies in the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.machine import Gate, Position
from engine.providers.base import Message, ModelReply, ToolCall, Usage

__all__ = [
    "PendingStep",
    "RunState",
    "message_from_dict",
    "message_to_dict",
    "reply_from_dict",
    "reply_to_dict",
]


def message_to_dict(message: Message) -> dict[str, Any]:
    """A message as stored: only the fields that are set."""
    data: dict[str, Any] = {"role": message.role}
    if message.text is not None:
        data["text"] = message.text
    if message.tool_calls:
        data["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        data["tool_call_id"] = message.tool_call_id
    if message.is_error:
        data["is_error"] = True
    if message.provider_state is not None:
        data["provider_state"] = message.provider_state
    return data


def message_from_dict(data: dict[str, Any]) -> Message:
    return Message(
        role=data["role"],
        text=data.get("text"),
        tool_calls=tuple(
            ToolCall(c["id"], c["name"], c["arguments"]) for c in data.get("tool_calls", ())
        ),
        tool_call_id=data.get("tool_call_id"),
        is_error=bool(data.get("is_error", False)),
        provider_state=data.get("provider_state"),
    )


def _usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
    }


def reply_to_dict(reply: ModelReply, message: Message | None = None) -> dict[str, Any]:
    """A reply as stored on its assistant message and step (usage, tool_choice, retries);
    `message` is `reply.to_message()` when the caller has it already."""
    data = {
        **message_to_dict(message or reply.to_message()),
        "usage": _usage_dict(reply.usage),
        "tool_choice_sent": reply.tool_choice_sent,
        "retries": reply.retries,
    }
    if reply.notice is not None:
        data["notice"] = reply.notice
    return data


def reply_from_dict(data: dict[str, Any]) -> ModelReply:
    message = message_from_dict({k: v for k, v in data.items() if k in _MESSAGE_KEYS})
    return ModelReply(
        text=message.text,
        tool_calls=message.tool_calls,
        usage=Usage(**data.get("usage", {})),
        tool_choice_sent=data.get("tool_choice_sent"),
        provider_state=message.provider_state,
        retries=int(data.get("retries", 0)),
        notice=data.get("notice"),
    )


_MESSAGE_KEYS = frozenset(
    {"role", "text", "tool_calls", "tool_call_id", "is_error", "provider_state"}
)


# Frozen: one zero value is every new run's usage so far.
_NO_USAGE = Usage()


@dataclass(slots=True)
class PendingStep:
    """A step whose reply has arrived (and is stored) but whose calls are not all settled."""

    seq: int
    position_before: Position
    gate: Gate
    reply: ModelReply
    started_at: datetime | None  # for the store only: None in a run without one
    call_keys: tuple[str, ...]  # the store's id of each call, in reply order
    # call key -> ToolCallRecord, for a step resumed from the store (None: a fresh step)
    recorded: dict[str, Any] | None = None
    message: Message | None = None  # reply.to_message(), once built


@dataclass(slots=True)
class RunState:
    """Where one run stands: position, conversation, next step number, token usage."""

    run_id: str
    position: Position
    messages: list[Message]
    seq: int = 0
    usage: Usage = _NO_USAGE
    # The call ids used so far, as dict keys (a dict of strings is not tracked by the garbage
    # collector; a set always is).
    used_call_ids: dict[str, None] = field(default_factory=dict)
    last_text: str | None = None
    next_message: int = 0  # the number the store gives the run's next message
    next_event: int = 0  # the number the run's next journal event takes (a stored run's)
    forced_misses: int = 0  # the last steps in a row that were forced but had no tool call

    def call_keys(self, seq: int, calls: tuple[ToolCall, ...]) -> tuple[str, ...]:
        """Store ids for a reply's calls: the provider's id unless this run already used it
        (some servers number calls from 1 in every reply), then a suffix makes it unique."""
        used = self.used_call_ids
        keys = []
        for index, call in enumerate(calls):
            key = call.id or f"call@{seq}.{index}"
            if key in used:
                key = f"{key}@{seq}.{index}"
            used[key] = None
            keys.append(key)
        return tuple(keys)
