"""OpenAI Chat Completions provider (official `openai` SDK), also for OpenAI-compatible servers."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Literal, get_args

try:
    import openai as sdk
except ModuleNotFoundError as exc:  # an optional part: say which extra to install
    from engine.errors import MissingExtraError

    raise MissingExtraError("the OpenAI provider", "openai") from exc

from engine.providers.base import Message, ModelReply, ModelRequest, ToolCall, Usage
from engine.providers.errors import (
    ProviderAPIError,
    ProviderConfigError,
    ProviderError,
    wrap_sdk_error,
)

__all__ = ["GatingMode", "OpenAIProvider"]

log = logging.getLogger(__name__)

GatingMode = Literal["allowed_tools", "filter", "auto"]

# Prefix for tool results flagged is_error: Chat Completions has no error flag on tool messages,
# so the only way to tell the model a call failed is in the text.
ERROR_PREFIX = "ERROR: "

# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the SDK refuses to start without
# one; this placeholder is not a credential.
_NO_KEY_PLACEHOLDER = "no-key-needed"


class OpenAIProvider:
    """Chat Completions with tool gating.

    Gating modes:
    - `allowed_tools` (default): every step sends the FULL tool list, unchanged, and restricts
      the step with `tool_choice={"type": "allowed_tools", ...}`. The request prefix (system,
      tools, history) stays byte-identical from step to step, so prompt caches stay warm.
    - `filter`: send only the allowed tools; `tool_choice` names the tool when exactly one is
      forced, `"required"` when forced, `"auto"` otherwise. For servers without allowed_tools.
    - `auto`: start with `allowed_tools`; if the server answers 400/422 about tool_choice, switch
      to `filter` for the rest of this provider's life (logged at WARNING).

    Retries and timeouts are the SDK's (`max_retries`, `timeout`); once they are exhausted the
    failure surfaces as a ProviderAPIError. `http_client`: an `httpx.AsyncClient` or
    `httpx2.AsyncClient` (openai 3.x accepts both), e.g. with a mock transport in tests;
    `client`: a ready AsyncOpenAI, used as is. The API key is read by the SDK from the environment
    (`OPENAI_API_KEY`, or the variable named by `api_key_env`); it is never stored here.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        gating: GatingMode = "allowed_tools",
        max_retries: int = 3,
        timeout: float = 60.0,
        max_tokens: int | None = None,
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
        self.model = model
        self.gating: GatingMode = gating
        # The mode actually used for the next request; `auto` may move it to `filter` once.
        self._mode: Literal["allowed_tools", "filter"] = (
            "filter" if gating == "filter" else "allowed_tools"
        )
        self.max_tokens = max_tokens
        self.request_options = dict(request_options or {})
        if client is not None:
            self._client = client
            return
        key_present = bool(os.environ.get(api_key_env))
        if not key_present and base_url is None:
            raise ProviderAPIError(
                f"no API key: set the {api_key_env} environment variable "
                "(or give base_url for a local OpenAI-compatible server that needs none)",
                provider=self.name,
                kind="auth",
            )
        try:
            self._client = sdk.AsyncOpenAI(
                # Passing the value read from the environment keeps the SDK default behaviour
                # while allowing another variable name; the key is not kept on this object.
                api_key=os.environ[api_key_env] if key_present else _NO_KEY_PLACEHOLDER,
                base_url=base_url,
                max_retries=max_retries,
                timeout=timeout,
                http_client=http_client,
            )
        except (sdk.OpenAIError, TypeError) as exc:
            # TypeError: an `http_client` of a type the SDK does not accept.
            raise ProviderConfigError(
                f"cannot create the OpenAI client: {exc}", provider=self.name
            ) from exc

    @property
    def gating_in_use(self) -> Literal["allowed_tools", "filter"]:
        """The gating mode the next request will use (after any `auto` fallback)."""
        return self._mode

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, request: ModelRequest) -> ModelReply:
        mode = self._mode
        try:
            return await self._complete(request, mode)
        except ProviderAPIError as err:
            if not (
                self.gating == "auto" and mode == "allowed_tools" and _rejects_tool_choice(err)
            ):
                raise
            log.warning(
                "%s: the server rejected tool_choice allowed_tools (%s); "
                "switching to filter gating for the rest of this provider's life",
                self.name,
                err.message,
            )
            self._mode = "filter"
            return await self._complete(request, "filter")

    async def _complete(
        self, request: ModelRequest, mode: Literal["allowed_tools", "filter"]
    ) -> ModelReply:
        body, tool_choice = self.build_request(request, mode)
        try:
            completion = await self._client.chat.completions.create(**body)
        except ProviderError:
            raise
        except sdk.OpenAIError as exc:
            raise _wrap(exc, self.name) from exc
        return _parse(completion, tool_choice, self.name)

    def build_request(
        self, request: ModelRequest, mode: Literal["allowed_tools", "filter"] | None = None
    ) -> tuple[dict[str, Any], Any]:
        """The keyword arguments for `chat.completions.create`, and the tool_choice among them."""
        mode = mode or self._mode
        tool_choice: Any
        if request.answer_only:
            # No tool may be called. allowed_tools keeps the full list (the request prefix
            # stays the same) with tool_choice "none"; filter sends no tools at all (the API
            # refuses an empty list, and tool_choice / parallel_tool_calls without tools).
            specs = request.tools if mode == "allowed_tools" else ()
            tool_choice = "none" if specs else None
        elif mode == "allowed_tools":
            specs = request.tools
            tool_choice = {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required" if request.force else "auto",
                    "tools": [
                        {"type": "function", "function": {"name": n}} for n in request.allowed
                    ],
                },
            }
        else:
            specs = request.allowed_specs()
            named = request.named_tool
            if named is not None:
                tool_choice = {"type": "function", "function": {"name": named}}
            else:
                tool_choice = "required" if request.force else "auto"
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_chat_messages(request.system, request.messages),
        }
        if specs:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in specs
            ]
            body["tool_choice"] = tool_choice
            # Sent only when restricting: the API default is True, and omitting it keeps
            # bodies of servers that do not know the parameter valid.
            if not request.parallel_tool_calls:
                body["parallel_tool_calls"] = False
        if self.max_tokens is not None:
            body["max_completion_tokens"] = self.max_tokens
        body.update(self.request_options)
        return body, tool_choice


def to_chat_messages(system: str, messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Map provider-neutral history to Chat Completions messages (system first)."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for m in messages:
        if m.role == "user":
            out.append({"role": "user", "content": m.text or ""})
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
            elif m.text is None:
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


def _parse(completion: Any, tool_choice: Any, provider: str) -> ModelReply:
    if not completion.choices:
        raise ProviderAPIError(
            "the response has no choices", provider=provider, kind="server_error"
        )
    message = completion.choices[0].message
    calls: list[ToolCall] = []
    for tc in message.tool_calls or ():
        fn = getattr(tc, "function", None)
        if fn is not None:
            calls.append(ToolCall(id=tc.id, name=fn.name, arguments=fn.arguments))
        else:  # custom (free-form) tool calls: keep the raw input as the arguments text
            custom = tc.custom
            calls.append(ToolCall(id=tc.id, name=custom.name, arguments=custom.input))
    text = message.content if message.content is not None else message.refusal
    usage = Usage()
    if completion.usage is not None:
        details = completion.usage.prompt_tokens_details
        usage = Usage(
            input_tokens=completion.usage.prompt_tokens or 0,
            output_tokens=completion.usage.completion_tokens or 0,
            cache_read_tokens=(details.cached_tokens or 0) if details else 0,
            cache_write_tokens=(getattr(details, "cache_write_tokens", None) or 0)
            if details
            else 0,
        )
    return ModelReply(
        text=text,
        tool_calls=tuple(calls),
        usage=usage,
        tool_choice_sent=tool_choice,
    )


def _wrap(exc: sdk.OpenAIError, provider: str) -> ProviderAPIError:
    """Turn an SDK exception (raised after the SDK's retries) into a ProviderAPIError."""
    return wrap_sdk_error(exc, provider, sdk, _status_message)


def _status_message(exc: sdk.APIStatusError) -> str:
    # Prefer the server's own words over the SDK's "Error code: N - {...}" dump.
    said = exc.body.get("message") if isinstance(exc.body, dict) else None
    message: str = said if isinstance(said, str) else exc.message
    return f"{message} (param: {exc.param})" if exc.param else message


def _rejects_tool_choice(err: ProviderAPIError) -> bool:
    """Whether an API error says the server does not accept our tool_choice."""
    if err.status_code not in (400, 422):
        return False
    text = err.message.lower()
    return "tool_choice" in text or "allowed_tools" in text
