"""OpenAI Chat Completions provider (official `openai` SDK), also for OpenAI-compatible servers."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

try:
    import openai as sdk
except ModuleNotFoundError as exc:  # an optional part: say which extra to install
    from engine.errors import MissingExtraError

    raise MissingExtraError("the OpenAI provider", "openai") from exc
from openai.types.chat import ChatCompletion

from engine.providers.base import (
    Message,
    ModelReply,
    ModelRequest,
    ReplyDelta,
    TextChunk,
    ToolCall,
    ToolCallChunk,
    ToolSpec,
    Usage,
    deltas_of,
    stream_broke_off,
)
from engine.providers.errors import (
    MalformedReply,
    ProviderAPIError,
    ProviderConfigError,
    ProviderError,
    wrap_sdk_error,
)

__all__ = [
    "GatingMode",
    "OpenAIProvider",
    "ServerQuirks",
    "forget_server_quirks",
    "server_quirks",
]

log = logging.getLogger(__name__)

GatingMode = Literal["auto", "allowed_tools", "filter"]
_Mode = Literal["allowed_tools", "filter"]

# Prefix for tool results flagged is_error: Chat Completions has no error flag on tool messages,
# so the only way to tell the model a call failed is in the text.
ERROR_PREFIX = "ERROR: "

# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the SDK refuses to start without
# one; this placeholder is not a credential.
_NO_KEY_PLACEHOLDER = "no-key-needed"

OPENAI_BASE_URL = "https://api.openai.com/v1"


@dataclass(slots=True)
class ServerQuirks:
    """What one server (base URL) was found to refuse or ignore, learnt by `auto` gating.

    Shared by every provider of this process on that base URL (`server_quirks`): a second run
    against the same server starts with what the first one learnt.
    """

    allowed_tools_refused: str | None = None  # why: the server refused tool_choice allowed_tools
    forcing_refused: str | None = None  # why: the server refused a forced tool_choice
    forcing_ignored: bool = False  # the server answered a forced request without a tool call
    allowed_tools_ok: bool = False  # the server accepted allowed_tools once (no probing)
    forcing_ok: bool = False  # the server accepted a forced tool_choice once
    stream_usage_refused: str | None = None  # why: the server refused stream_options
    stream_usage_ok: bool = False  # the server accepted stream_options once

    def describe(self) -> str | None:
        """One line saying what is worked around, or None when nothing is."""
        parts = []
        if self.allowed_tools_refused:
            parts.append(
                "the server refused tool_choice allowed_tools "
                f"({self.allowed_tools_refused}); gating filters the tool list instead"
            )
        if self.forcing_refused:
            parts.append(
                f"the server refused a forced tool_choice ({self.forcing_refused}); forced "
                "steps send tool_choice 'auto' with only the allowed tools"
            )
        elif self.forcing_ignored:
            parts.append(
                "the server answered a forced step without a tool call; forced steps offer "
                "only the allowed tools"
            )
        if self.stream_usage_refused:
            parts.append(
                f"the server refused stream_options ({self.stream_usage_refused}); streamed "
                "replies are sent without it and count no tokens"
            )
        return "; ".join(parts) or None


_QUIRKS: dict[str, ServerQuirks] = {}


def server_quirks(base_url: str | None) -> ServerQuirks:
    """What this process learnt about the server at `base_url` (None: OpenAI's API)."""
    key = (base_url or OPENAI_BASE_URL).rstrip("/")
    quirks = _QUIRKS.get(key)
    if quirks is None:
        quirks = _QUIRKS[key] = ServerQuirks()
    return quirks


def forget_server_quirks() -> None:
    """Forget what was learnt about every server (tests; a server that was upgraded)."""
    _QUIRKS.clear()


class OpenAIProvider:
    """Chat Completions with tool gating.

    Gating modes:
    - `auto` (default): `allowed_tools`, adapting to what the server supports. A server that
      refuses tool_choice allowed_tools (any 4xx about the request, or a 5xx whose body names
      tool_choice / allowed_tools or is a request-validation error, as llama.cpp's server
      answers) makes it fall back to `filter` for every later request to that base URL in this
      process; so does, for forced steps, a server that refuses a forced tool_choice (then
      `auto` is sent, with only the allowed tools; the run loop re-asks) or ignores it (then
      forced steps offer only the allowed tools). The refused request is sent again at once,
      adapted: no step is lost. The reply that first used a workaround carries a `notice`
      saying so (the run loop stores and shows it).
    - `allowed_tools`: every step sends the FULL tool list, unchanged, and restricts the step
      with `tool_choice={"type": "allowed_tools", ...}`; nothing adapts. The request prefix
      (system, tools, history) stays byte-identical from step to step, so prompt caches stay
      warm.
    - `filter`: send only the allowed tools; `tool_choice` names the tool when exactly one is
      forced, `"required"` when forced, `"auto"` otherwise. Forcing adapts as in `auto`.

    Retries and timeouts are the SDK's (`max_retries`, `timeout`); once they are exhausted the
    failure surfaces as a ProviderAPIError naming them. While `auto` has not seen the server
    accept a feature, a request using it is sent once without retries (a refusal is answered at
    once), and a failure that is not a refusal is then retried `max_retries` more times.

    `max_tokens` is sent as `max_completion_tokens` to OpenAI's API and as `max_tokens` to any
    other base URL (compatible servers ignore the newer name); `max_tokens_field` overrides.

    `http_client`: an `httpx.AsyncClient` or `httpx2.AsyncClient` (openai 3.x accepts both),
    e.g. with a mock transport in tests; `client`: a ready AsyncOpenAI, used as is. The API key
    is read from the environment (`OPENAI_API_KEY`, or the variable named by `api_key_env`); it
    is never stored here.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        gating: GatingMode = "auto",
        max_retries: int = 3,
        timeout: float = 60.0,
        max_tokens: int | None = None,
        max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None,
        request_options: Mapping[str, Any] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        http_client: Any = None,
        client: sdk.AsyncOpenAI | None = None,
    ) -> None:
        self.name = f"openai:{model}"
        if gating not in get_args(GatingMode):
            raise ProviderConfigError(
                f"unknown gating mode {gating!r}; expected one of {list(get_args(GatingMode))}",
                provider=self.name,
            )
        if not model:
            raise ProviderConfigError("a model name is required", provider=self.name)
        if max_retries < 0 or timeout <= 0 or (max_tokens is not None and max_tokens < 1):
            raise ProviderConfigError(
                "max_retries must be >= 0, timeout > 0 and max_tokens >= 1", provider=self.name
            )
        self.model = model
        self.gating: GatingMode = gating
        self.max_retries = max_retries
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.max_tokens_field = max_tokens_field or (
            "max_completion_tokens"
            if base_url is None or "api.openai.com" in base_url
            else "max_tokens"
        )
        self.request_options = dict(request_options or {})
        # Learnt per base URL, shared (auto, filter); the strict mode learns nothing.
        self._quirks = server_quirks(base_url) if gating != "allowed_tools" else ServerQuirks()
        # A provider made after another one learnt something says so on its first reply.
        self._announce = self._quirks.describe()
        self._client = (
            client if client is not None else self._new_client(base_url, api_key_env, http_client)
        )
        self._probe_client: Any = None

    def _new_client(self, base_url: str | None, api_key_env: str, http_client: Any) -> Any:
        key_present = bool(os.environ.get(api_key_env))
        if not key_present and base_url is None:
            raise ProviderAPIError(
                f"no API key: set the {api_key_env} environment variable "
                "(or give base_url for a local OpenAI-compatible server that needs none)",
                provider=self.name,
                kind="auth",
            )
        try:
            return sdk.AsyncOpenAI(
                # Passing the value read from the environment keeps the SDK default behaviour
                # while allowing another variable name; the key is not kept on this object.
                api_key=os.environ[api_key_env] if key_present else _NO_KEY_PLACEHOLDER,
                base_url=base_url,
                max_retries=self.max_retries,
                timeout=self.timeout,
                http_client=http_client,
            )
        except (sdk.OpenAIError, TypeError) as exc:
            # TypeError: an `http_client` of a type the SDK does not accept.
            raise ProviderConfigError(
                f"cannot create the OpenAI client: {exc}", provider=self.name
            ) from exc

    @property
    def gating_in_use(self) -> _Mode:
        """The gating mode an unforced request uses now (after any `auto` fallback)."""
        return self._plan(False, {})[0]

    @property
    def quirks(self) -> ServerQuirks:
        """What this provider works around on its server."""
        return self._quirks

    async def aclose(self) -> None:
        await self._client.close()

    def _plan(self, force: bool, dropped: Mapping[str, str]) -> tuple[_Mode, bool]:
        """(gating mode, whether to send a forced tool_choice) for a request now; `dropped`:
        features refused while answering the current request, not yet learnt for good."""
        q = self._quirks
        refused = q.allowed_tools_refused or "allowed_tools" in dropped
        mode: _Mode = "filter" if self.gating == "filter" or refused else "allowed_tools"
        send_force = force
        if force and self.gating != "allowed_tools":
            forcing_refused = q.forcing_refused or "forcing" in dropped
            if forcing_refused or q.forcing_ignored:
                mode = "filter"  # narrow the offered tools to the allowed set
            send_force = not forcing_refused
        return mode, send_force

    def _probing(self, mode: _Mode, send_force: bool) -> tuple[str, ...]:
        """The features a request tries that the server has not accepted yet (the request is
        sent without retries, so a refusal costs one request)."""
        q = self._quirks
        tried = []
        if self.gating == "auto" and mode == "allowed_tools" and not q.allowed_tools_ok:
            tried.append("allowed_tools")
        if self.gating != "allowed_tools" and send_force and not q.forcing_ok:
            tried.append("forcing")
        return tuple(tried)

    def _try(self, request: ModelRequest, dropped: Mapping[str, str], *, stream: bool) -> _Try:
        """How to send `request` now; `dropped`: features refused while answering it."""
        mode, send_force = self._plan(request.force, dropped)
        # (an answer-only request sends tool_choice "none" or no tools: it tries no gating)
        probing = () if request.answer_only else self._probing(mode, send_force)
        q = self._quirks
        usage = stream and not (q.stream_usage_refused or "stream_options" in dropped)
        if usage and not q.stream_usage_ok:
            probing = (*probing, "stream_options")
        return _Try(mode, send_force, probing, stream, usage)

    def _next_try(
        self, err: ProviderAPIError, request: ModelRequest, tried: _Try, dropped: dict[str, str]
    ) -> _Try:
        """How to send the request again after `err`, or `err` raised when it is final: a
        refused feature is dropped and the request sent again at once; a probe's failure that
        is not a refusal is retried as any other request's."""
        refused = _refused_feature(err, tried.probing)
        if refused is not None and refused not in dropped:
            dropped[refused] = _short(err)
            return self._try(request, dropped, stream=tried.stream)
        if not tried.probing or not err.retryable or self.max_retries == 0:
            raise err
        return replace(tried, probing=(), retries=self.max_retries - 1)

    async def complete(self, request: ModelRequest) -> ModelReply:
        dropped: dict[str, str] = {}  # feature -> why the server refused it, for this request
        tried = self._try(request, dropped, stream=False)
        while True:
            try:
                reply = await self._complete(request, tried)
            except ProviderAPIError as err:
                tried = self._next_try(err, request, tried, dropped)
                continue
            return self._learn(request, reply, tried, dropped)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ReplyDelta | ModelReply]:
        """`complete`, handed on as it arrives (Chat Completions with `stream: true` and
        `stream_options.include_usage`, dropped for a server that refuses it).

        A failure before the first delta is retried as `complete` retries (the SDK retries
        the request; a stream that breaks before any delta is sent again, at most
        `max_retries` times); after it, the stream is not retried: a ProviderAPIError says
        the reply broke off."""
        dropped: dict[str, str] = {}
        tried = self._try(request, dropped, stream=True)
        broken = 0  # streams that broke before their first delta
        while True:
            reader = _StreamReader(self.name)
            try:
                async for delta in self._stream(request, tried, reader):
                    yield delta
                reply = reader.reply()
            except ProviderAPIError as err:
                if reader.handed_on and not isinstance(err, MalformedReply):
                    raise stream_broke_off(err, reader.handed_on) from err
                if not reader.opened:  # the request failed: as `complete` does
                    tried = self._next_try(err, request, tried, dropped)
                    continue
                # The server accepted the request; its stream failed before a delta.
                if not err.retryable or broken >= self.max_retries:
                    raise
                broken += 1
                continue
            yield self._learn(request, reply, tried, dropped)
            return

    def _learn(
        self,
        request: ModelRequest,
        reply: ModelReply,
        tried: _Try,
        dropped: Mapping[str, str],
    ) -> ModelReply:
        """Record what the answered request showed about the server; the reply, with a notice
        when something is worked around from now on."""
        q = self._quirks
        before = q.describe()
        if "allowed_tools" in dropped:
            q.allowed_tools_refused = dropped["allowed_tools"]
        elif tried.mode == "allowed_tools" and not request.answer_only:
            q.allowed_tools_ok = True
        if "forcing" in dropped:
            q.forcing_refused = dropped["forcing"]
        elif tried.send_force:
            q.forcing_ok = True
            if not reply.tool_calls and self.gating != "allowed_tools":
                q.forcing_ignored = True
        if "stream_options" in dropped:
            q.stream_usage_refused = dropped["stream_options"]
        elif tried.stream_usage:
            q.stream_usage_ok = True
        after = q.describe()
        notice = after if after != before else self._announce
        self._announce = None
        if notice is None:
            return reply
        log.info("%s: %s", self.name, notice)  # (the run loop shows it)
        return replace(reply, notice=notice)

    def _client_for(self, tried: _Try) -> Any:
        """The client to send with: no retries for a probe (a refusal is answered at once)."""
        if tried.probing:
            if self._probe_client is None:
                self._probe_client = self._client.with_options(max_retries=0)
            return self._probe_client
        if tried.retries is not None:
            return self._client.with_options(max_retries=tried.retries)
        return self._client

    async def _complete(self, request: ModelRequest, tried: _Try) -> ModelReply:
        body, tool_choice = self.build_request(request, tried.mode, force=tried.send_force)
        try:
            raw = await self._client_for(tried).chat.completions.with_raw_response.create(**body)
        except ProviderError:
            raise
        except sdk.OpenAIError as exc:
            raise self._wrap(exc) from exc
        return _parse_raw(raw, tool_choice, self.name)

    async def _stream(
        self, request: ModelRequest, tried: _Try, reader: _StreamReader
    ) -> AsyncIterator[ReplyDelta]:
        """One streamed request: its deltas, gathered by `reader` as they are handed on."""
        body, reader.tool_choice = self.build_request(request, tried.mode, force=tried.send_force)
        body["stream"] = True
        if tried.stream_usage:
            body["stream_options"] = {"include_usage": True}
        try:
            chunks = await self._client_for(tried).chat.completions.create(**body)
        except sdk.OpenAIError as exc:
            raise self._wrap(exc) from exc
        reader.opened = True
        async with chunks:
            if "text/event-stream" not in chunks.response.headers.get("content-type", ""):
                # A server (or proxy) that ignores `stream` answers the whole completion.
                body = (await chunks.response.aread()).decode("utf-8", "replace")
                reply = _parse_whole(body, reader.tool_choice, self.name)
                for delta in deltas_of(reply):
                    reader.handed_on += 1
                    yield delta
                reader.whole = reply
                return
            iterator = aiter(chunks)
            while True:
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                except ValueError as exc:  # the SDK's json.loads of an event that is not JSON
                    raise reader.malformed(f"a stream event is not JSON ({exc})") from exc
                except sdk.APIError as exc:
                    # A bare APIError is an error event in the stream; its subclasses are the
                    # transport's failures (connection, timeout) and HTTP statuses.
                    error = _stream_error(exc, self.name) if type(exc) is sdk.APIError else None
                    raise error or self._wrap(exc) from exc
                for delta in reader.add(chunk):
                    reader.handed_on += 1
                    yield delta

    def _wrap(self, exc: sdk.OpenAIError) -> ProviderAPIError:
        """An SDK exception (raised after the SDK's retries) as a ProviderAPIError."""
        return wrap_sdk_error(
            exc, self.name, sdk, _status_message, timeout=self.timeout, retries=self.max_retries
        )

    def build_request(
        self, request: ModelRequest, mode: _Mode | None = None, *, force: bool | None = None
    ) -> tuple[dict[str, Any], Any]:
        """The keyword arguments for `chat.completions.create`, and the tool_choice among them.

        `mode` and `force` default to what the next request would use."""
        if mode is None or force is None:
            planned_mode, planned_force = self._plan(request.force, {})
            mode = mode or planned_mode
            force = planned_force if force is None else force
        specs, tool_choice = _offer(request, mode, force)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_chat_messages(request.system, request.messages),
        }
        if specs:
            body["tools"] = [_function(t) for t in specs]
            body["tool_choice"] = tool_choice
            # Sent only when restricting: the API default is True, and omitting it keeps
            # bodies of servers that do not know the parameter valid.
            if not request.parallel_tool_calls:
                body["parallel_tool_calls"] = False
        if self.max_tokens is not None:
            body[self.max_tokens_field] = self.max_tokens
        body.update(self.request_options)
        return body, tool_choice


@dataclass(frozen=True, slots=True)
class _Try:
    """One way of sending a request: the gating mode, whether a forced tool_choice is sent,
    the features it tries that the server has not accepted yet (sent without retries), the
    SDK retries (None: the client's), and whether a stream asks for its usage."""

    mode: _Mode
    send_force: bool
    probing: tuple[str, ...]
    stream: bool
    stream_usage: bool
    retries: int | None = None


def _offer(request: ModelRequest, mode: _Mode, force: bool) -> tuple[tuple[ToolSpec, ...], Any]:
    """The tools to send and the tool_choice restricting them, for this gating mode."""
    if request.answer_only:
        # No tool may be called. allowed_tools keeps the full list (the request prefix
        # stays the same) with tool_choice "none"; filter sends no tools at all (the API
        # refuses an empty list, and tool_choice / parallel_tool_calls without tools).
        specs = request.tools if mode == "allowed_tools" else ()
        return specs, "none" if specs else None
    if mode == "allowed_tools":
        names = [{"type": "function", "function": {"name": n}} for n in request.allowed]
        choice = {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required" if force else "auto", "tools": names},
        }
        return request.tools, choice
    named = request.named_tool if force else None
    if named is not None:
        return request.allowed_specs(), {"type": "function", "function": {"name": named}}
    return request.allowed_specs(), "required" if force else "auto"


def _function(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


def to_chat_messages(system: str, messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Map provider-neutral history to Chat Completions messages (system first)."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for m in messages:
        if m.role == "user" or m.role == "system":
            out.append({"role": m.role, "content": m.text or ""})
        elif m.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": m.text}
            if m.tool_calls:
                # Arguments are replayed verbatim, even when malformed: rewriting them would
                # change the cached prefix and hide what the model actually did.
                msg["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in m.tool_calls
                ]
            if m.text is None:
                # `"content": null` beside tool_calls is what the OpenAI API documents, but
                # compatible servers (llama.cpp's) refuse it; an empty string every one takes.
                msg["content"] = ""
            out.append(msg)
        else:
            text = m.text or ""
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": m.tool_call_id,
                    "content": ERROR_PREFIX + text if m.is_error else text,
                }
            )
    return out


def _parse_raw(raw: Any, tool_choice: Any, provider: str) -> ModelReply:
    """The reply in an HTTP 2xx response; MalformedReply (with the body) if it is none."""
    body = raw.http_response.text

    def fail(message: str) -> MalformedReply:
        return MalformedReply(message, provider=provider, raw=body, tool_choice_sent=tool_choice)

    try:
        completion = raw.parse()
    except ValueError as exc:  # the SDK's json.loads of a body that is not JSON
        raise fail(f"the body is not JSON ({exc})") from exc
    if isinstance(completion, str) or not hasattr(completion, "choices"):
        raise fail("the body is not a chat completion")
    try:
        return _parse(completion, tool_choice, fail)
    except (AttributeError, TypeError, ValueError) as exc:
        # The SDK builds response objects without validating them: a field of the wrong type
        # only shows when it is used.
        raise fail(f"the chat completion has an unexpected shape ({exc})") from exc


def _parse_whole(body: str, tool_choice: Any, provider: str) -> ModelReply:
    """The reply in a whole completion's body (a stream the server did not stream)."""

    def fail(message: str) -> MalformedReply:
        return MalformedReply(message, provider=provider, raw=body, tool_choice_sent=tool_choice)

    try:
        data = json.loads(body)
    except ValueError as exc:
        raise fail(f"the body is not JSON ({exc})") from exc
    if not isinstance(data, dict) or "choices" not in data:
        raise fail("the body is not a chat completion")
    try:
        return _parse(ChatCompletion.construct(**data), tool_choice, fail)
    except (AttributeError, TypeError, ValueError) as exc:
        raise fail(f"the chat completion has an unexpected shape ({exc})") from exc


def _parse(completion: Any, tool_choice: Any, fail: Callable[[str], MalformedReply]) -> ModelReply:
    if not completion.choices:
        raise fail("the response has no choices")
    message = completion.choices[0].message
    if message is None:
        raise fail("choices[0].message is null")
    calls = [_call_parts(tc) for tc in message.tool_calls or ()]
    text = message.content if message.content is not None else message.refusal
    return _reply(text, calls, _usage(completion.usage), tool_choice, fail)


def _call_parts(tc: Any) -> tuple[Any, Any, Any]:
    """(id, name, arguments) of a tool call as the SDK read it."""
    fn = getattr(tc, "function", None)
    if fn is not None:
        return tc.id, fn.name, fn.arguments
    custom = getattr(tc, "custom", None)
    if custom is not None:
        # custom (free-form) tool calls: keep the raw input as the arguments text
        return tc.id, custom.name, custom.input
    return tc.id, None, None


def _reply(
    text: Any,
    calls: list[tuple[Any, Any, Any]],
    usage: Usage,
    tool_choice: Any,
    fail: Callable[[str], MalformedReply],
) -> ModelReply:
    """The reply of a completion, whole or streamed: MalformedReply (from `fail`) when a call
    has no name or the text is not text."""
    tool_calls = []
    for index, (call_id, name, arguments) in enumerate(calls):
        if not isinstance(name, str) or not name:
            raise fail(f"tool call {index} has no function name")
        # Some servers send no call id; the history needs one to pair the call with its result.
        if not (isinstance(call_id, str) and call_id):
            call_id = f"call_{uuid.uuid4().hex[:24]}"
        tool_calls.append(ToolCall(id=call_id, name=name, arguments=str(arguments or "")))
    if text is not None and not isinstance(text, str):
        raise fail("the message content is not text")
    return ModelReply(
        text=text, tool_calls=tuple(tool_calls), usage=usage, tool_choice_sent=tool_choice
    )


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    details = usage.prompt_tokens_details
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cache_read_tokens=(details.cached_tokens or 0) if details else 0,
        cache_write_tokens=(getattr(details, "cache_write_tokens", None) or 0) if details else 0,
    )


class _StreamReader:
    """Chat Completions chunks gathered into the reply they spell (read as `_parse` reads a
    whole completion), and the deltas each chunk hands on."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.tool_choice: Any = None  # as sent
        self.opened = False  # the server answered 2xx: the stream has begun
        self.handed_on = 0  # deltas handed on so far
        self.whole: ModelReply | None = None  # the reply of a server that did not stream
        self._raw: list[str] = []  # the chunks as received, for a MalformedReply
        self._text: list[str] | None = None  # None: no content came
        self._refusal: list[str] | None = None
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, argument fragments]
        self._usage: Any = None
        self._finish: Any = None  # the finish_reason: the reply is complete

    def malformed(self, message: str) -> MalformedReply:
        raw = "".join(self._raw)
        return MalformedReply(
            message, provider=self.provider, raw=raw, tool_choice_sent=self.tool_choice
        )

    def add(self, chunk: Any) -> list[ReplyDelta]:
        """Take one chunk in; the deltas it carries."""
        self._raw.append(_event_text(chunk))
        try:
            return self._read(chunk)
        except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
            raise self.malformed(f"a stream chunk has an unexpected shape ({exc})") from exc

    def _read(self, chunk: Any) -> list[ReplyDelta]:
        if chunk.usage is not None:
            self._usage = chunk.usage
        if not chunk.choices:
            return []  # the usage chunk (include_usage)
        choice = chunk.choices[0]
        if choice.finish_reason is not None:
            self._finish = choice.finish_reason
        delta = choice.delta
        if delta is None:
            return []
        out: list[ReplyDelta] = []
        if delta.content is not None:
            self._text = self._take(delta.content, self._text, out)
        if getattr(delta, "refusal", None) is not None:
            self._refusal = self._take(delta.refusal, self._refusal, out)
        for tc in delta.tool_calls or ():
            piece = self._call_piece(tc)
            if piece.id or piece.name or piece.arguments:
                out.append(piece)
        return out

    def _take(self, piece: Any, parts: list[str] | None, out: list[ReplyDelta]) -> list[str]:
        if not isinstance(piece, str):
            raise self.malformed("the message content is not text")
        if piece:
            out.append(TextChunk(piece))
        parts = [] if parts is None else parts
        parts.append(piece)
        return parts

    def _call_piece(self, tc: Any) -> ToolCallChunk:
        call_id = tc.id if isinstance(tc.id, str) and tc.id else None
        index = getattr(tc, "index", None)
        if not isinstance(index, int):
            # A server that numbers no calls: an id starts the next one.
            index = len(self._calls) if call_id or not self._calls else max(self._calls)
        fn = getattr(tc, "function", None)
        name = getattr(fn, "name", None)
        arguments = getattr(fn, "arguments", None)
        if not isinstance(name, str | None) or not isinstance(arguments, str | None):
            raise self.malformed(f"tool call {index}: the name or arguments are not text")
        call = self._calls.setdefault(index, [None, None, []])
        call[0] = call_id or call[0]
        call[1] = name or call[1]
        if arguments:
            call[2].append(arguments)
        return ToolCallChunk(index, call_id, name or None, arguments or "")

    def reply(self) -> ModelReply:
        """The whole reply, once the stream has ended."""
        if self.whole is not None:
            return self.whole
        if self._finish is None:
            if not self._raw:
                raise self.malformed(
                    "the server sent no stream events (does it stream Chat Completions?)"
                )
            raise ProviderAPIError(
                "the stream ended before the reply was complete (no finish_reason)",
                provider=self.provider,
                kind="connection",
            )
        text = self._text if self._text is not None else self._refusal
        calls = [(c[0], c[1], "".join(c[2])) for _, c in sorted(self._calls.items())]
        try:
            usage = _usage(self._usage)
        except (AttributeError, TypeError) as exc:
            raise self.malformed(f"the usage has an unexpected shape ({exc})") from exc
        return _reply(
            None if text is None else "".join(text), calls, usage, self.tool_choice, self.malformed
        )


def _event_text(chunk: Any) -> str:
    """A chunk as the server-sent event that carried it (for the run's record)."""
    try:
        return f"data: {chunk.to_json(indent=None, warnings=False)}\n\n"
    except Exception:  # a chunk the SDK built from a shape it does not know
        return f"data: {chunk!r}\n\n"


def _stream_error(exc: sdk.APIError, provider: str) -> ProviderAPIError:
    """An error event in a stream (the server failed after it had begun to answer)."""
    return ProviderAPIError(
        f"the server reported an error in the stream: {exc.message}",
        provider=provider,
        kind="server_error",
    )


def _status_message(exc: sdk.APIStatusError) -> str:
    # Prefer the server's own words over the SDK's "Error code: N - {...}" dump.
    said = exc.body.get("message") if isinstance(exc.body, dict) else None
    message: str = said if isinstance(said, str) else exc.message
    return f"{message} (param: {exc.param})" if exc.param else message


# Words of a server refusing the request's form (llama.cpp's server answers a tool_choice it
# does not know with HTTP 500 and pydantic's validation errors; FastAPI servers with 422).
_REQUEST_ERROR_MARKERS = (
    "tool_choice",
    "allowed_tools",
    "literal_error",
    "validation error",
    "validationerror",
    "input should be",
    "extra_forbidden",
    "('body',",
    '["body",',
)


def _refused_feature(err: ProviderAPIError, tried: tuple[str, ...]) -> str | None:
    """Which of the features `tried` (not yet accepted by the server) an API error refuses,
    or None when the error is a failure to retry or report, not a refusal.

    A refusal is a 4xx about the request (not auth, rate limits, timeouts, lock conflicts), or
    a 5xx whose body names tool_choice / allowed_tools or is a request-validation error
    (llama.cpp's server); it is blamed on the feature it names (stream_options), else on
    allowed_tools first. An empty 5xx is blamed on a forced tool_choice only (llama.cpp
    refuses `required` so with some chat templates).
    """
    status = err.status_code
    if not tried or status is None:
        return None
    named = "stream_options" in f"{err.message} {err.body or ''}"
    if named and "stream_options" in tried and err.kind in ("bad_request", "server_error"):
        return "stream_options"
    if status < 500:
        return tried[0] if err.kind == "bad_request" else None
    body = (err.body or "").strip()
    if not body:
        return "forcing" if "forcing" in tried else None
    text = f"{err.message} {body}".lower()
    return tried[0] if any(marker in text for marker in _REQUEST_ERROR_MARKERS) else None


def _short(err: ProviderAPIError, limit: int = 120) -> str:
    """An error in one short line, for a notice."""
    status = f"HTTP {err.status_code}: " if err.status_code is not None else ""
    text = " ".join(f"{status}{err.message}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
