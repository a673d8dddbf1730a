"""The provider contract: frozen request/reply values and the Provider protocol."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from engine.providers.errors import ProviderAPIError, ProviderConfigError

__all__ = [
    "Message",
    "ModelReply",
    "ModelRequest",
    "Provider",
    "ReplyDelta",
    "StreamingProvider",
    "TextChunk",
    "ToolCall",
    "ToolCallChunk",
    "ToolSpec",
    "Usage",
    "deltas_of",
    "reply_violation",
    "stream_broke_off",
    "stream_reply",
    "tool_message",
]


# "system": a system-role message in the history (what a callee agent receives from its
# caller, as Letta sends it); the request's `system` is the system prompt itself.
Role = Literal["user", "assistant", "tool", "system"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as offered to the model."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema object for the arguments


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call as the model sent it.

    `arguments` is the raw JSON text, unparsed and possibly malformed; `name` may be a tool that
    does not exist. Judging both is the run loop's job, not the provider's.
    """

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation turn, provider-neutral."""

    role: Role
    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # assistant only
    tool_call_id: str | None = None  # tool only
    is_error: bool = False  # tool only: the result is an error (violation, exception, denial)
    # Assistant only: opaque provider content to replay verbatim (e.g. Anthropic thinking
    # blocks). JSON-serialisable; copy it from ModelReply.provider_state unchanged.
    provider_state: Any = None

    def __post_init__(self) -> None:
        if self.role != "assistant" and (self.tool_calls or self.provider_state is not None):
            raise ProviderConfigError(
                f"Message(role={self.role!r}): tool_calls and provider_state are for assistant "
                "messages only",
                provider="message",
            )
        if self.role == "tool" and not self.tool_call_id:
            raise ProviderConfigError(
                "Message(role='tool') needs the tool_call_id of the call it answers",
                provider="message",
            )
        if self.role != "tool" and (self.tool_call_id is not None or self.is_error):
            raise ProviderConfigError(
                f"Message(role={self.role!r}): tool_call_id and is_error are for tool "
                "messages only",
                provider="message",
            )


def tool_message(call_id: str, text: str, is_error: bool = False) -> Message:
    """The tool message answering call `call_id`: `Message(role="tool", ...)`."""
    return Message(role="tool", text=text, tool_call_id=call_id, is_error=is_error)


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """What the run loop asks of the model for one step.

    `tools` is every tool of the agent in stable declaration order (so providers that can keep
    the request prefix byte-identical do); `allowed` is the subset the next call may use. An
    empty `allowed` (never with `force`) is an answer-only step: no tool may be called, the
    model is asked for its final answer.
    """

    system: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...]
    allowed: tuple[str, ...]
    force: bool
    forced_tool: str | None = None
    parallel_tool_calls: bool = True

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]

        def bad(msg: str) -> ProviderConfigError:
            return ProviderConfigError(f"ModelRequest: {msg}", provider="model_request")

        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise bad(f"duplicate tool names {dupes}")
        if not self.allowed and self.force:
            raise bad("allowed is empty but a call is forced; a forced step needs a tool")
        unknown = [n for n in self.allowed if n not in names]
        if unknown:
            raise bad(f"allowed names {unknown} are not among the tools {names}")
        if len(set(self.allowed)) != len(self.allowed):
            raise bad(f"allowed has duplicates: {list(self.allowed)}")
        if self.forced_tool is not None:
            if not self.force:
                raise bad(f"forced_tool={self.forced_tool!r} but force is False")
            if self.allowed != (self.forced_tool,):
                raise bad(
                    f"forced_tool={self.forced_tool!r} must be the only allowed tool, "
                    f"allowed={list(self.allowed)}"
                )

    @property
    def answer_only(self) -> bool:
        """No tool may be called at this step: the model is asked for its final answer."""
        return not self.allowed

    @property
    def named_tool(self) -> str | None:
        """The tool the model must call, when a call is forced and exactly one tool is allowed."""
        if not self.force:
            return None
        if self.forced_tool is not None:
            return self.forced_tool
        return self.allowed[0] if len(self.allowed) == 1 else None

    def allowed_specs(self) -> tuple[ToolSpec, ...]:
        """The allowed tools' specs, in declaration order."""
        allowed = set(self.allowed)
        return tuple(t for t in self.tools if t.name in allowed)

    def tool(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)

    def with_messages(self, messages: tuple[Message, ...]) -> ModelRequest:
        """This request with other messages."""
        return ModelRequest(
            self.system,
            messages,
            self.tools,
            self.allowed,
            self.force,
            self.forced_tool,
            self.parallel_tool_calls,
        )


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    # Prompt-cache accounting where the API reports it (0 otherwise).
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        if not (
            other.input_tokens
            or other.output_tokens
            or other.cache_read_tokens
            or other.cache_write_tokens
        ):
            return self  # frozen: the sum is this very value
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


# Frozen, so one zero value serves every reply that reports no usage (one object less each).
_NO_USAGE = Usage()


@dataclass(frozen=True, slots=True)
class ModelReply:
    """The model's answer for one step."""

    text: str | None
    tool_calls: tuple[ToolCall, ...]
    usage: Usage = _NO_USAGE
    # tool_choice exactly as put on the wire, for the audit log; None for offline providers.
    tool_choice_sent: Any = None
    # Store on the assistant Message built from this reply (Message.provider_state).
    provider_state: Any = None
    # Validate-and-retry re-asks performed before this reply (Anthropic with thinking).
    retries: int = 0
    # What the provider changed from this reply on, in one line (a gating fallback after the
    # server refused a tool_choice); the run loop shows it and stores it with the step.
    notice: str | None = None

    def to_message(self) -> Message:
        """The assistant Message to append to the history for this reply."""
        return Message(
            role="assistant",
            text=self.text,
            tool_calls=self.tool_calls,
            provider_state=self.provider_state,
        )


@runtime_checkable
class Provider(Protocol):
    """A source of model replies. `complete` raises only ProviderError."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelReply: ...


def reply_violation(request: ModelRequest, tool_calls: tuple[ToolCall, ...]) -> str | None:
    """Why these calls break the request's gating, or None when they respect it.

    Used by providers that cannot make the API enforce the gating (Anthropic with thinking) to
    decide whether to re-ask; the run loop does its own, authoritative check.
    """
    if request.force and not tool_calls:
        return "a tool call is required but the reply has none"
    outside = [c.name for c in tool_calls if c.name not in request.allowed]
    if outside:
        verb = "is" if len(outside) == 1 else "are"
        return f"the reply calls {outside}, which {verb} not allowed now"
    if not request.parallel_tool_calls and len(tool_calls) > 1:
        return f"the reply makes {len(tool_calls)} tool calls but at most one is allowed"
    return None


# --- Streaming ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of the model's text, as it arrived."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallChunk:
    """A piece of a tool call, as it arrived.

    `index` is the call's place in the reply (0 for the first call). The call's `id` and `name`
    come with its first chunk (None in the later ones, unless the API repeats them);
    `arguments` is the next fragment of the arguments' JSON text: joined in order, the
    fragments of one index are the arguments as the API sent them.
    """

    index: int
    id: str | None
    name: str | None
    arguments: str


ReplyDelta = TextChunk | ToolCallChunk


@runtime_checkable
class StreamingProvider(Provider, Protocol):
    """A provider that can hand the reply on as it arrives.

    `stream(request)` yields `ReplyDelta`s as the model writes, then one `ModelReply`, last:
    the same reply `complete(request)` gives for the same content (parsing, usage, errors,
    notices). It raises only ProviderError. Failures before the first delta are retried as
    `complete` retries them; once a delta was yielded, an interrupted stream is a
    ProviderAPIError (the partial reply is not a reply: the caller asks again).
    """

    def stream(self, request: ModelRequest) -> AsyncIterator[ReplyDelta | ModelReply]: ...


def deltas_of(reply: ModelReply) -> Iterator[ReplyDelta]:
    """A whole reply as deltas: its text in one chunk, then each call in one chunk."""
    if reply.text:
        yield TextChunk(reply.text)
    for index, call in enumerate(reply.tool_calls):
        yield ToolCallChunk(index, call.id, call.name, call.arguments)


def stream_broke_off(err: ProviderAPIError, handed_on: int) -> ProviderAPIError:
    """The error of a stream that failed after `handed_on` deltas were handed on: the
    partial reply is no reply, and the stream is not retried (part of it was shown)."""
    broke = ProviderAPIError(
        f"the reply broke off after {handed_on} streamed piece(s) ({err.message}); the "
        "partial reply is dropped, and not asked for again: part of it was already handed on",
        provider=err.provider,
        kind=err.kind,
        status_code=err.status_code,
        request_id=err.request_id,
    )
    broke.body = err.body
    return broke


async def stream_reply(
    provider: Provider, request: ModelRequest
) -> AsyncGenerator[ReplyDelta | ModelReply, None]:
    """The reply to `request` as it arrives: `provider.stream(request)` when the provider
    streams, else `complete(request)` handed on as one delta per part (`deltas_of`); the
    `ModelReply` comes last either way."""
    # Not `isinstance(provider, StreamingProvider)`: on Python 3.11 a runtime-checkable
    # protocol's isinstance walks every member of its MRO, about 80 µs per call, and this runs
    # once per step. Having a `stream` method is what that check tests.
    stream = getattr(provider, "stream", None)
    if callable(stream):
        items = stream(request)
        try:
            async for item in items:
                yield item
        finally:  # a consumer that stops early closes the provider's stream (its response)
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()
        return
    reply = await provider.complete(request)
    for delta in deltas_of(reply):
        yield delta
    yield reply
