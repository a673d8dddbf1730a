"""The conversation rules the real model APIs enforce on a request, applied to request bodies.

Both APIs answer a history that breaks them with HTTP 400, so a resume, approval or denial
that sends one fails against a real model (the scripted provider never notices: it ignores
history). `chat_history_problems` checks a Chat Completions body, `messages_history_problems`
an Anthropic Messages body; each returns the problems found (empty: the API accepts it), in
the words of the API's own error where there is one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "assert_valid_chat_histories",
    "assert_valid_messages_histories",
    "chat_history_problems",
    "messages_history_problems",
]

_CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def chat_history_problems(body: dict[str, Any]) -> list[str]:
    """Chat Completions: every `tool` message answers a call of the assistant message right
    before its run of tool messages, and every call of an assistant message is answered
    before any other message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["'messages' must be a non-empty array"]
    problems: list[str] = []
    open_calls: dict[str, None] | None = None  # calls of the last assistant, not yet answered
    for index, message in enumerate(messages):
        role = message.get("role")
        where = f"messages[{index}]"
        if role not in _CHAT_ROLES:
            problems.append(f"{where}: invalid role {role!r}")
            continue
        if role == "tool":
            call_id = message.get("tool_call_id")
            if open_calls is None:
                problems.append(
                    f"{where}: messages with role 'tool' must be a response to a preceding "
                    "message with 'tool_calls'"
                )
            elif call_id not in open_calls:
                problems.append(
                    f"{where}: 'tool_call_id' of {call_id!r} not found in 'tool_calls' of "
                    "previous message (or answered twice)"
                )
            else:
                del open_calls[call_id]
            if not isinstance(message.get("content"), str | list):
                problems.append(f"{where}: a tool message needs 'content'")
            continue
        if open_calls:
            problems.append(
                f"{where}: an assistant message with 'tool_calls' must be followed by tool "
                "messages responding to each 'tool_call_id'; the following tool_call_ids did "
                f"not have response messages: {', '.join(open_calls)}"
            )
        open_calls = None
        if role == "assistant":
            calls = message.get("tool_calls") or []
            if not calls and message.get("content") is None:
                problems.append(f"{where}: an assistant message needs 'content' or 'tool_calls'")
            ids = [c.get("id") for c in calls]
            if any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
                problems.append(f"{where}: tool call ids must be distinct, non-empty strings")
            if calls:
                open_calls = dict.fromkeys(ids)
        elif not isinstance(message.get("content"), str | list):
            problems.append(f"{where}: a {role} message needs 'content'")
    if open_calls:
        problems.append(
            "the last assistant message's tool_call_ids did not have response messages: "
            + ", ".join(open_calls)
        )
    return problems


def _blocks(turn: dict[str, Any]) -> list[dict[str, Any]]:
    content = turn.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else []


def messages_history_problems(body: dict[str, Any]) -> list[str]:
    """Anthropic Messages: turns are user/assistant, the first a user turn (consecutive turns
    of one role are combined, as the API does); every `tool_use` block is answered by a
    `tool_result` block in the next turn, where tool results come before anything else; a
    `tool_result` answers a `tool_use` of the turn right before it; tool_use ids are unique."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["'messages' must be a non-empty array"]
    problems: list[str] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            problems.append(f"messages.{index}: invalid role {role!r}")
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(_blocks(message))
        else:
            turns.append((role, _blocks(message)))
    if turns and turns[0][0] != "user":
        problems.append("messages.0: the first message must use the user role")
    seen_uses: set[str] = set()
    open_uses: list[str] = []
    for index, (role, blocks) in enumerate(turns):
        where = f"turn {index}"
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if role == "assistant":
            if results:
                problems.append(f"{where}: tool_result blocks are only allowed in user turns")
            uses = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
            for use in uses:
                if use in seen_uses:
                    problems.append(f"{where}: tool_use ids must be unique ({use!r})")
                seen_uses.add(use)
            open_uses = uses
            continue
        kinds = [b.get("type") for b in blocks]
        if results and kinds[: len(results)] != ["tool_result"] * len(results):
            problems.append(f"{where}: tool_result blocks must come first in the user turn")
        for result in results:
            if result not in open_uses:
                problems.append(
                    f"{where}: unexpected tool_use_id found in tool_result blocks: {result}. "
                    "Each tool_result block must have a corresponding tool_use block in the "
                    "previous message."
                )
        missing = [u for u in open_uses if u not in results]
        if missing:
            problems.append(
                f"{where}: tool_use ids were found without tool_result blocks immediately "
                f"after: {', '.join(map(str, missing))}"
            )
        open_uses = []
    if open_uses:
        problems.append(
            "the last assistant turn has tool_use blocks without tool_result blocks after "
            f"them: {', '.join(map(str, open_uses))}"
        )
    return problems


def _assert_all(bodies: Iterable[dict[str, Any]], check: Any, api: str) -> None:
    failures = []
    for number, body in enumerate(bodies):
        problems = check(body)
        if problems:
            failures.append(f"request {number}: " + "; ".join(problems))
    assert not failures, f"{api} would reject these requests:\n" + "\n".join(failures)


def assert_valid_chat_histories(bodies: Iterable[dict[str, Any]]) -> None:
    """Every body is a history the Chat Completions API accepts."""
    _assert_all(bodies, chat_history_problems, "Chat Completions")


def assert_valid_messages_histories(bodies: Iterable[dict[str, Any]]) -> None:
    """Every body is a history the Messages API accepts."""
    _assert_all(bodies, messages_history_problems, "the Messages API")
