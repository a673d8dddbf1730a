"""Anthropic Messages API provider (official `anthropic` SDK); validate-and-retry with thinking."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

try:
    import anthropic as sdk
except ModuleNotFoundError as exc:  # an optional part: say which extra to install
    from engine.errors import MissingExtraError

    raise MissingExtraError("the Anthropic provider", "anthropic") from exc

from engine.providers.base import (
    Message,
    ModelReply,
    ModelRequest,
    ReplyDelta,
    TextChunk,
    ToolCall,
    ToolCallChunk,
    Usage,
    deltas_of,
    reply_violation,
    stream_broke_off,
)
from engine.providers.errors import (
    ErrorKind,
    MalformedReply,
    ProviderAPIError,
    ProviderConfigError,
    ProviderError,
    wrap_sdk_error,
)

__all__ = ["AnthropicProvider", "to_anthropic_messages"]

log = logging.getLogger(__name__)

# Block types that carry the model's reasoning; the API requires them replayed unchanged.
THINKING_BLOCK_TYPES = frozenset({"thinking", "redacted_thinking"})


class AnthropicProvider:
    """Messages API with tool gating.

    Tools: Anthropic has no `allowed_tools` mode, so by default only the allowed tools are
    sent (`send_all_tools=False`): the model cannot call what it cannot see, at the cost of a
    tools prefix that changes between steps (less prompt-cache reuse). `send_all_tools=True`
    sends the full stable list instead and relies on tool_choice plus validate-and-retry.

    tool_choice: `{"type": "tool", "name": X}` when exactly one tool is forced, `{"type": "any"}`
    when a call is forced, `{"type": "auto"}` otherwise, with `disable_parallel_tool_use: true`
    when the request allows one call only.

    Extended thinking (`thinking=N` budget tokens, or a ThinkingConfig dict): the API refuses a
    forced tool_choice with thinking, so `auto` is sent and the reply is validated instead. The
    same validation applies with `send_all_tools=True` when tool_choice does not name the tool.
    A violating reply (no call when forced, a call outside `allowed`, several calls when one is
    allowed) is re-asked up to `max_validation_retries` times: the reply is appended, each of its
    tool calls answered with an error tool_result, and a user message states exactly which tools
    are allowed. If every attempt violates, the last reply is returned as is (the run loop rejects
    it) with `retries` set. Usage adds up all attempts.

    `http_client`: an `httpx2.AsyncClient` (what anthropic 2.x runs on), e.g. with a mock
    transport in tests; `client`: a ready AsyncAnthropic, used as is.

    provider_state of a reply is `{"content": [...]}`, the assistant content blocks in wire form
    (thinking blocks with their signatures, text, tool_use), replayed verbatim for that message.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        max_tokens: int = 4096,
        thinking: int | Mapping[str, Any] | None = None,
        send_all_tools: bool = False,
        max_validation_retries: int = 2,
        max_retries: int = 3,
        timeout: float = 120.0,
        request_options: Mapping[str, Any] | None = None,
        http_client: Any = None,
        client: sdk.AsyncAnthropic | None = None,
    ) -> None:
        self.name = f"anthropic:{model}"
        if not model:
            raise ProviderConfigError("a model name is required", provider=self.name)
        if max_validation_retries < 0:
            raise ProviderConfigError("max_validation_retries must be >= 0", provider=self.name)
        if max_retries < 0 or timeout <= 0 or max_tokens < 1:
            raise ProviderConfigError(
                "max_retries must be >= 0, timeout > 0 and max_tokens >= 1", provider=self.name
            )
        self.model = model
        self.max_tokens = max_tokens
        self.thinking = _thinking_config(thinking, max_tokens, self.name)
        self.max_retries = max_retries
        self.timeout = timeout
        self.send_all_tools = send_all_tools
        self.max_validation_retries = max_validation_retries
        self.request_options = dict(request_options or {})
        self._client = client if client is not None else self._new_client(base_url, http_client)

    def _new_client(self, base_url: str | None, http_client: Any) -> sdk.AsyncAnthropic:
        try:
            # Credentials: the SDK reads ANTHROPIC_API_KEY (or its other sources) itself.
            c = sdk.AsyncAnthropic(
                base_url=base_url,
                max_retries=self.max_retries,
                timeout=self.timeout,
                http_client=http_client,
            )
        except sdk.CredentialsError as exc:
            raise ProviderAPIError(
                f"no credentials: set the ANTHROPIC_API_KEY environment variable ({exc})",
                provider=self.name,
                kind="auth",
            ) from exc
        except (sdk.AnthropicError, TypeError) as exc:
            # TypeError: e.g. an `httpx.AsyncClient` given where the SDK needs `httpx2`.
            raise ProviderConfigError(
                f"cannot create the Anthropic client: {exc}", provider=self.name
            ) from exc
        if base_url is None and c.api_key is None and c.auth_token is None and not c.credentials:
            # Fail before a run is stored, as the OpenAI provider does; a base_url may be a
            # proxy that adds credentials itself.
            raise ProviderAPIError(
                "no credentials: set the ANTHROPIC_API_KEY environment variable (or give "
                "base_url for a server that needs none)",
                provider=self.name,
                kind="auth",
            )
        return c

    @property
    def thinking_enabled(self) -> bool:
        return self.thinking is not None and self.thinking.get("type") != "disabled"

    async def aclose(self) -> None:
        await self._client.close()

    def tool_choice_for(self, request: ModelRequest) -> dict[str, Any]:
        """The tool_choice to send for this request."""
        named = request.named_tool
        choice: dict[str, Any]
        if request.answer_only:
            return {"type": "none"}  # no tool may be called (thinking accepts none too)
        if self.thinking_enabled:
            # Thinking only accepts auto/none; forcing is enforced by validation instead.
            choice = {"type": "auto"}
        elif named is not None:
            choice = {"type": "tool", "name": named}
        elif request.force:
            choice = {"type": "any"}
        else:
            choice = {"type": "auto"}
        if not request.parallel_tool_calls:
            choice["disable_parallel_tool_use"] = True
        return choice

    def _enforced_by_api(self, request: ModelRequest, choice: Mapping[str, Any] | None) -> bool:
        """Whether the API itself guarantees the gating, so no validation is needed."""
        if request.answer_only:
            return True  # tool_choice none
        if self.thinking_enabled:
            return False
        if not self.send_all_tools:
            return True  # only allowed tools are visible; any/auto/tool do the rest
        return choice is not None and choice.get("type") == "tool"

    def build_request(
        self, request: ModelRequest, messages: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The keyword arguments for `messages.create`."""
        # Answer-only: every tool with tool_choice none (the API refuses a history of
        # tool_use / tool_result blocks without tool definitions).
        specs = (
            request.tools if self.send_all_tools or request.answer_only else request.allowed_specs()
        )
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": messages
            if messages is not None
            else to_anthropic_messages(request.messages),
        }
        if specs:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in specs
            ]
            body["tool_choice"] = self.tool_choice_for(request)
        if request.system:
            body["system"] = request.system
        if self.thinking is not None:
            body["thinking"] = self.thinking
        body.update(self.request_options)
        return body

    async def complete(self, request: ModelRequest) -> ModelReply:
        messages = to_anthropic_messages(request.messages)
        body = self.build_request(request, messages)
        choice = body.get("tool_choice")  # absent only for an agent with no tools
        validate = not self._enforced_by_api(request, choice)
        usage = Usage()
        retries = 0
        while True:
            reply = await self._create(body, choice)
            usage = usage + reply.usage
            violation = reply_violation(request, reply.tool_calls) if validate else None
            if violation is None or retries >= self.max_validation_retries:
                if violation is not None:
                    log.info(
                        "%s: reply still violates after %d re-asks (%s); returning it",
                        self.name,
                        retries,
                        violation,
                    )
                return ModelReply(
                    text=reply.text,
                    tool_calls=reply.tool_calls,
                    usage=usage,
                    tool_choice_sent=choice,
                    provider_state=reply.provider_state,
                    retries=retries,
                )
            retries += 1
            log.info("%s: re-asking (%d): %s", self.name, retries, violation)
            messages = _merge_roles(
                [
                    *messages,
                    {"role": "assistant", "content": reply.provider_state["content"]},
                    _correction(request, reply.tool_calls, violation),
                ]
            )
            body = {**body, "messages": messages}

    async def stream(self, request: ModelRequest) -> AsyncIterator[ReplyDelta | ModelReply]:
        """`complete`, handed on as it arrives (Messages streaming: text deltas, and each
        tool_use block's id and name, then its input_json_delta fragments).

        A failure before the first delta is retried as `complete` retries (the SDK retries
        the request; a stream that breaks before any delta is sent again, at most
        `max_retries` times); after it, a ProviderAPIError says the reply broke off. When the
        API does not enforce the gating (thinking, or send_all_tools without a named tool), a
        reply is validated (and re-asked) before any of it is handed on: it comes whole.
        """
        messages = to_anthropic_messages(request.messages)
        body = self.build_request(request, messages)
        choice = body.get("tool_choice")
        if not self._enforced_by_api(request, choice):
            reply = await self.complete(request)
            for delta in deltas_of(reply):
                yield delta
            yield reply
            return
        broken = 0  # streams that broke before their first delta
        while True:
            reader = _StreamReader(self.name, choice)
            try:
                async for delta in self._stream(body, reader):
                    yield delta
                reply = reader.reply()
            except ProviderAPIError as err:
                if reader.handed_on and not isinstance(err, MalformedReply):
                    raise stream_broke_off(err, reader.handed_on) from err
                if not (reader.opened and err.retryable and broken < self.max_retries):
                    raise
                broken += 1
                continue
            yield reply
            return

    async def _stream(
        self, body: dict[str, Any], reader: _StreamReader
    ) -> AsyncIterator[ReplyDelta]:
        """One streamed request: its deltas, gathered by `reader` as they are handed on."""
        try:
            async with self._client.messages.stream(**body) as events:
                reader.opened = True
                if "text/event-stream" not in events.response.headers.get("content-type", ""):
                    # A server (or proxy) that ignores `stream` answers the whole message.
                    text = (await events.response.aread()).decode("utf-8", "replace")
                    reader.whole = _parse_whole(text, reader.choice, self.name)
                    for delta in deltas_of(reader.whole):
                        reader.handed_on += 1
                        yield delta
                    return
                iterator = aiter(events)
                while True:
                    event = await self._next_event(iterator, reader)
                    if event is None:
                        return
                    for delta in reader.add(event):
                        reader.handed_on += 1
                        yield delta
        except ProviderError:
            raise
        except sdk.AnthropicError as exc:
            raise _wrap(exc, self.name, self.timeout, self.max_retries) from exc
        except TypeError as exc:
            if "authentication" not in str(exc):
                raise
            raise _no_credentials(self.name) from exc

    async def _next_event(self, iterator: AsyncIterator[Any], reader: _StreamReader) -> Any:
        """The stream's next event, None at its end."""
        try:
            return await anext(iterator)
        except StopAsyncIteration:
            return None
        except sdk.APIStatusError as exc:
            if exc.status_code < 300:  # an error event in the stream
                raise _stream_error(exc, self.name) from exc
            raise
        except _TRANSPORT_ERRORS as exc:  # (the SDK's stream lets them through)
            raise _cut(exc, self.name, self.timeout) from exc
        except (ValueError, RuntimeError, AttributeError, TypeError, IndexError, KeyError) as exc:
            # The SDK's json.loads of an event that is not JSON, or its accumulation of
            # events out of order or of an unexpected shape.
            raise reader.malformed(f"a stream event cannot be read ({exc})") from exc

    async def _create(self, body: dict[str, Any], choice: Any) -> ModelReply:
        try:
            raw = await self._client.messages.with_raw_response.create(**body)
        except ProviderError:
            raise
        except sdk.AnthropicError as exc:
            raise _wrap(exc, self.name, self.timeout, self.max_retries) from exc
        except TypeError as exc:
            if "authentication" not in str(exc):
                raise
            raise _no_credentials(self.name) from exc
        return await _parse_raw(raw, choice, self.name)


def _thinking_config(
    thinking: int | Mapping[str, Any] | None, max_tokens: int, provider: str
) -> dict[str, Any] | None:
    """The `thinking` request field for a budget in tokens or a ThinkingConfig dict."""
    if thinking is None:
        return None
    config = (
        {"type": "enabled", "budget_tokens": thinking}
        if isinstance(thinking, int)
        else dict(thinking)
    )
    budget = config.get("budget_tokens")
    if isinstance(budget, int) and budget >= max_tokens:
        raise ProviderConfigError(
            f"thinking budget_tokens={budget} must be less than max_tokens={max_tokens}",
            provider=provider,
        )
    return config


def _no_credentials(provider: str) -> ProviderAPIError:
    # The SDK raises TypeError (not an AnthropicError) when it finds no credentials.
    return ProviderAPIError(
        "no credentials: set the ANTHROPIC_API_KEY environment variable",
        provider=provider,
        kind="auth",
    )


async def _parse_raw(raw: Any, choice: Any, provider: str) -> ModelReply:
    """The reply in an HTTP 2xx response; MalformedReply (with the body) if it is none."""
    body = (await raw.read()).decode("utf-8", "replace")

    def fail(message: str) -> MalformedReply:
        return MalformedReply(message, provider=provider, raw=body, tool_choice_sent=choice)

    try:
        response = await raw.parse()
    except ValueError as exc:  # the SDK's json.loads of a body that is not JSON
        raise fail(f"the body is not JSON ({exc})") from exc
    return _reply_of(response, choice, fail)


def _parse_whole(body: str, choice: Any, provider: str) -> ModelReply:
    """The reply in a whole message's body (a stream the server did not stream)."""

    def fail(message: str) -> MalformedReply:
        return MalformedReply(message, provider=provider, raw=body, tool_choice_sent=choice)

    try:
        data = json.loads(body)
    except ValueError as exc:
        raise fail(f"the body is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise fail("the body is not a message")
    return _reply_of(sdk.types.Message.construct(**data), choice, fail)


def _reply_of(response: Any, choice: Any, fail: Callable[[str], MalformedReply]) -> ModelReply:
    """The reply of a message, whole or streamed; MalformedReply (from `fail`) if it is none."""
    if isinstance(response, str) or not hasattr(response, "content"):
        raise fail("the body is not a message")
    if not isinstance(response.content, list):
        raise fail("the message has no content list")
    try:
        reply = _parse(response, choice)
    except (AttributeError, TypeError, ValueError) as exc:
        # The SDK builds response objects without validating them: a field of the wrong type
        # only shows when it is used.
        raise fail(f"the message has an unexpected shape ({exc})") from exc
    for index, call in enumerate(reply.tool_calls):
        if not (isinstance(call.id, str) and call.id and isinstance(call.name, str) and call.name):
            raise fail(f"tool_use block {index} has no id or no name")
    return reply


def _http_libraries() -> list[Any]:
    """The HTTP libraries an anthropic SDK may run on (httpx2 from 2.x on, httpx before)."""
    import httpx

    try:
        import httpx2
    except ModuleNotFoundError:  # pragma: no cover - an SDK older than 2.x
        return [httpx]
    return [httpx, httpx2]


_TRANSPORT_ERRORS: tuple[type[Exception], ...] = tuple(
    lib.TransportError for lib in _http_libraries()
)
_TIMEOUTS: tuple[type[Exception], ...] = tuple(lib.TimeoutException for lib in _http_libraries())


def _cut(exc: Exception, provider: str, timeout: float) -> ProviderAPIError:
    """A stream the network cut (its read timed out, or the connection broke)."""
    if isinstance(exc, _TIMEOUTS):
        return ProviderAPIError(
            f"the stream timed out: nothing came for {timeout:g} s (--timeout, run.timeout)",
            provider=provider,
            kind="timeout",
        )
    return ProviderAPIError(f"the stream was cut: {exc}", provider=provider, kind="connection")


# Block types whose input arrives as input_json_delta fragments.
_TOOL_INPUT_BLOCKS = frozenset({"tool_use", "server_tool_use"})

# The SDK's own events, derived from the raw event just read (which carries the same).
_DERIVED_EVENTS = frozenset({"text", "input_json", "thinking", "signature", "citation"})


class _StreamReader:
    """Messages stream events gathered into the reply (the SDK accumulates the message; the
    tool inputs are read here, strictly, from their fragments), and the deltas each event
    hands on."""

    def __init__(self, provider: str, choice: Any) -> None:
        self.provider = provider
        self.choice = choice
        self.opened = False  # the server answered 2xx: the stream has begun
        self.handed_on = 0  # deltas handed on so far
        self.whole: ModelReply | None = None  # the reply of a server that did not stream
        self._raw: list[str] = []  # the events as received, for a MalformedReply
        self._calls: dict[int, int] = {}  # block index -> tool call index
        self._inputs: dict[int, list[str]] = {}  # block index -> input_json fragments
        self._started = False  # message_start came
        self._message: Any = None  # the SDK's snapshot, once the message has stopped

    def malformed(self, message: str) -> MalformedReply:
        raw = "".join(self._raw)
        return MalformedReply(
            message, provider=self.provider, raw=raw, tool_choice_sent=self.choice
        )

    def add(self, event: Any) -> list[ReplyDelta]:
        """Take one event in; the deltas it carries."""
        kind = event.type
        if kind in _DERIVED_EVENTS:
            return []
        self._raw.append(_event_text(event))
        if kind == "message_start":
            self._started = True
        elif not self._started:  # (the SDK hands such an event on without reading it)
            raise self.malformed(f"a {kind} event came before message_start")
        if kind == "message_stop":
            self._message = event.message
        elif kind == "content_block_start" and event.content_block.type in _TOOL_INPUT_BLOCKS:
            block = event.content_block
            self._inputs[event.index] = []
            if block.type == "tool_use":
                index = self._calls[event.index] = len(self._calls)
                return [ToolCallChunk(index, block.id, block.name, "")]
        elif kind == "content_block_delta":
            return self._delta(event.index, event.delta)
        return []

    def _delta(self, block: int, delta: Any) -> list[ReplyDelta]:
        if delta.type == "text_delta" and delta.text:
            return [TextChunk(delta.text)]
        if delta.type == "input_json_delta" and block in self._inputs:
            self._inputs[block].append(delta.partial_json)
            if block in self._calls and delta.partial_json:
                return [ToolCallChunk(self._calls[block], None, None, delta.partial_json)]
        return []

    def reply(self) -> ModelReply:
        """The whole reply, once the stream has ended."""
        if self.whole is not None:
            return self.whole
        message = self._message
        if message is None:
            if not self._raw:
                raise self.malformed("the server sent no stream events (does it stream Messages?)")
            raise ProviderAPIError(
                "the stream ended before the reply was complete (no message_stop)",
                provider=self.provider,
                kind="connection",
            )
        for index, fragments in self._inputs.items():
            text = "".join(fragments)
            try:
                # The SDK reads fragments leniently (a cut-off object parses): read them whole.
                message.content[index].input = json.loads(text) if text else {}
            except ValueError as exc:
                raise self.malformed(
                    f"content block {index}: the tool input is not JSON ({exc})"
                ) from exc
        return _reply_of(message, self.choice, self.malformed)


def _event_text(event: Any) -> str:
    """An event as the server-sent event that carried it (for the run's record)."""
    if event.type == "message_stop":  # (the SDK's, carrying the whole message)
        data = '{"type": "message_stop"}'
    elif event.type == "content_block_stop":  # (the SDK's, carrying the whole block)
        data = json.dumps({"type": "content_block_stop", "index": event.index})
    else:
        try:
            data = event.to_json(indent=None, warnings=False)
        except Exception:  # an event the SDK built from a shape it does not know
            data = repr(event)
    return f"event: {event.type}\ndata: {data}\n\n"


def _stream_error(exc: sdk.APIStatusError, provider: str) -> ProviderAPIError:
    """An error event in a stream (the server failed after it had begun to answer): its kind
    from the error's type, as the same error answered with an HTTP status would have."""
    kind = _STREAM_ERROR_KINDS.get(str(exc.type), "server_error")
    return ProviderAPIError(
        f"the server reported an error in the stream: {exc.type}: {exc.api_message or exc.message}",
        provider=provider,
        kind=kind,
        request_id=exc.request_id,
    )


_STREAM_ERROR_KINDS: dict[str, ErrorKind] = {
    "invalid_request_error": "bad_request",
    "authentication_error": "auth",
    "permission_error": "auth",
    "rate_limit_error": "rate_limited",
    "timeout_error": "timeout",
}


def _correction(
    request: ModelRequest, calls: tuple[ToolCall, ...], violation: str
) -> dict[str, Any]:
    """The user turn that answers a violating reply and restates the rules for this step."""
    allowed = ", ".join(request.allowed)
    blocks: list[dict[str, Any]] = []
    # Every tool_use must be answered by a tool_result in the next user turn (API rule).
    for c in calls:
        reason = (
            f"Tool {c.name!r} is not allowed at this step; it was not run."
            if c.name not in request.allowed
            else "Not run: the reply as a whole broke the tool rules."
        )
        blocks.append(
            {"type": "tool_result", "tool_use_id": c.id, "content": reason, "is_error": True}
        )
    rules = f"The only tools you may call now are: {allowed}."
    if request.force:
        rules += " A tool call is required."
    if not request.parallel_tool_calls:
        rules += " Make exactly one tool call." if request.force else " Make at most one tool call."
    blocks.append(
        {"type": "text", "text": f"Your previous reply broke the tool rules: {violation}. {rules}"}
    )
    return {"role": "user", "content": blocks}


def to_anthropic_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Map provider-neutral history to Messages API turns.

    Tool results become `tool_result` blocks in a user turn; consecutive turns of the same
    role are merged, because the API wants user and assistant turns to alternate and all
    results of one assistant turn in the next user turn.
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "user" or m.role == "system":
            # The Messages API has no system turns: a system-role message is a user turn.
            out.append({"role": "user", "content": [{"type": "text", "text": m.text or ""}]})
        elif m.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": m.text or "",
            }
            if m.is_error:
                block["is_error"] = True
            out.append({"role": "user", "content": [block]})
        else:
            out.append({"role": "assistant", "content": _assistant_content(m)})
    return _merge_roles(out)


def _assistant_content(m: Message) -> list[dict[str, Any]]:
    state = m.provider_state
    if isinstance(state, Mapping) and isinstance(state.get("content"), list):
        # Verbatim: thinking blocks must come back unmodified and in their original order.
        return list(state["content"])
    content: list[dict[str, Any]] = []
    if m.text:
        content.append({"type": "text", "text": m.text})
    for c in m.tool_calls:
        content.append({"type": "tool_use", "id": c.id, "name": c.name, "input": _input_of(c)})
    if not content:
        # The API rejects an empty assistant turn; this keeps the turn (and alternation).
        content.append({"type": "text", "text": "(no reply)"})
    return content


def _input_of(call: ToolCall) -> dict[str, Any]:
    """tool_use input for a call recorded without provider_state (e.g. from another provider)."""
    try:
        value = json.loads(call.arguments)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    # The API needs an object; keep the raw text visible to the model instead of dropping it.
    return {"_raw_arguments": call.arguments}


def _merge_roles(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for t in turns:
        if merged and merged[-1]["role"] == t["role"]:
            merged[-1] = {"role": t["role"], "content": [*merged[-1]["content"], *t["content"]]}
        else:
            merged.append({"role": t["role"], "content": list(t["content"])})
    return merged


def _block_param(block: Any) -> dict[str, Any]:
    """A response content block in the form the API accepts back as input."""
    match block.type:
        case "text":
            return {"type": "text", "text": block.text}
        case "thinking":
            return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
        case "redacted_thinking":
            return {"type": "redacted_thinking", "data": block.data}
        case "tool_use":
            return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
        case _:
            # Server-tool blocks and future types: their wire form is their input form.
            dumped: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
            return dumped


def _parse(response: Any, choice: Any) -> ModelReply:
    texts: list[str] = []
    calls: list[ToolCall] = []
    content = [_block_param(b) for b in response.content]
    for b in response.content:
        if b.type == "text":
            texts.append(b.text)
        elif b.type == "tool_use":
            # The API returns parsed input; this is its JSON text (the raw bytes are not kept).
            calls.append(
                ToolCall(id=b.id, name=b.name, arguments=json.dumps(b.input, ensure_ascii=False))
            )
    u = response.usage
    usage = (
        Usage(
            input_tokens=u.input_tokens or 0,
            output_tokens=u.output_tokens or 0,
            cache_read_tokens=u.cache_read_input_tokens or 0,
            cache_write_tokens=u.cache_creation_input_tokens or 0,
        )
        if u is not None
        else Usage()
    )
    return ModelReply(
        text="".join(texts) if texts else None,
        tool_calls=tuple(calls),
        usage=usage,
        tool_choice_sent=choice,
        provider_state={"content": content},
    )


def _wrap(exc: sdk.AnthropicError, provider: str, timeout: float, retries: int) -> ProviderAPIError:
    """Turn an SDK exception (raised after the SDK's retries) into a ProviderAPIError."""
    if isinstance(exc, sdk.CredentialsError):
        return ProviderAPIError(str(exc), provider=provider, kind="auth")
    return wrap_sdk_error(
        exc,
        provider,
        sdk,
        lambda e: e.api_message or e.message,
        timeout=timeout,
        retries=retries,
    )
