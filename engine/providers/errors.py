"""The provider layer's exception tree: every failure of `Provider.complete()` is a ProviderError.

    ToolfsmError                  (engine.errors) anything toolfsm refused
    └── ProviderError             any failure; `.kind`, `.provider`, `.retryable`, `.status_code`
        ├── ProviderAPIError      a model API failed (HTTP status, timeout, connection), after
        │   │                     the SDK's own retries were exhausted
        │   └── MalformedReply    the server answered 2xx with something that is no reply
        │                         (not JSON, no message, a tool call without a name); `.raw`
        ├── ScriptError           a scripted provider's script ran out or an expectation failed
        └── ProviderConfigError   the layer was misused: unknown provider spec, bad option,
                                  unreadable script, inconsistent ModelRequest

SDK exceptions never escape `complete()`: they are wrapped here, with the SDK exception kept as
`__cause__` for debugging. Messages never contain API keys (the SDKs do not put them in errors).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal, get_args

from engine.errors import ToolfsmError

__all__ = [
    "RAW_REPLY_LIMIT",
    "ErrorKind",
    "MalformedReply",
    "ProviderAPIError",
    "ProviderConfigError",
    "ProviderError",
    "ScriptError",
    "kind_for_status",
    "wrap_sdk_error",
]

ErrorKind = Literal[
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "bad_request",
    "auth",
    "script_exhausted",
    "script_diverged",
    "config",
    "malformed_reply",
]

# A malformed reply keeps at most this many characters of the server's body.
RAW_REPLY_LIMIT = 65536

# Kinds for which trying the same request again later can succeed.
_RETRYABLE_KINDS: frozenset[str] = frozenset(
    {"rate_limited", "server_error", "timeout", "connection"}
)


class ProviderError(ToolfsmError):
    """A provider could not produce a reply.

    `retryable` tells the run loop whether the same request may succeed later (the SDK has
    already retried `max_retries` times before this is raised).
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        kind: ErrorKind,
        retryable: bool | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        if kind not in get_args(ErrorKind):
            raise TypeError(f"unknown ProviderError kind {kind!r}")
        self.message = message
        self.provider = provider
        self.kind: ErrorKind = kind
        self.retryable = kind in _RETRYABLE_KINDS if retryable is None else retryable
        self.status_code = status_code
        self.request_id = request_id
        super().__init__(str(self))

    def __str__(self) -> str:
        status = f" HTTP {self.status_code}" if self.status_code is not None else ""
        label = self.provider
        kind, _, detail = label.partition(":")
        if detail and self.message.startswith(detail):
            label = kind  # the message names the script/model already: say it once
        return f"[{label}] {self.kind}{status}: {self.message}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keep keyword-only construction picklable (errors may cross process boundaries).
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[ProviderError], state: dict[str, object]) -> ProviderError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, str(err))
    return err


class ProviderAPIError(ProviderError):
    """A model API call failed after the SDK's retries (rate limit, 5xx, timeout, 4xx, auth).

    `body`: the HTTP error response's body text (the first 2000 characters), when there was
    one; "" for an empty body.
    """

    body: str | None = None


class MalformedReply(ProviderAPIError):
    """The server answered with a success status, but not with a usable reply. `raw` is the
    body as received (its first RAW_REPLY_LIMIT characters), for the run's record."""

    def __init__(
        self, message: str, *, provider: str, raw: str, tool_choice_sent: Any = None
    ) -> None:
        self.raw = raw[:RAW_REPLY_LIMIT]
        self.tool_choice_sent = tool_choice_sent  # as on ModelReply: for the run's record
        super().__init__(f"malformed reply: {message}", provider=provider, kind="malformed_reply")


class ScriptError(ProviderError):
    """A scripted reply could not be given: the script is exhausted or an expectation failed.

    `script` names the script (file path or `<memory>`), `index` the 0-based entry.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        kind: Literal["script_exhausted", "script_diverged"],
        script: str,
        index: int,
    ) -> None:
        self.script = script
        self.index = index
        super().__init__(message, provider=provider, kind=kind, retryable=False)


class ProviderConfigError(ProviderError):
    """The provider layer was misused: unknown spec, bad option, bad script file or request."""

    def __init__(self, message: str, *, provider: str) -> None:
        super().__init__(message, provider=provider, kind="config", retryable=False)


def kind_for_status(status: int) -> ErrorKind:
    """Map an HTTP status to an error kind (same policy for every HTTP provider)."""
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    if status in (401, 403):
        return "auth"
    # 409 is retried by both SDKs (lock timeouts), so it behaves like a transient server error.
    if status >= 500 or status == 409:
        return "server_error"
    return "bad_request"


def wrap_sdk_error(
    exc: Exception,
    provider: str,
    sdk: ModuleType,
    status_message: Callable[[Any], str],
    *,
    timeout: float | None = None,
    retries: int | None = None,
) -> ProviderAPIError:
    """Turn an exception of an official SDK (`openai` or `anthropic`, which share their error
    class names), raised after the SDK's own retries, into a ProviderAPIError.

    `status_message(exc)` gives the text of an HTTP status error (each SDK keeps the server's
    words in its own place). `timeout` and `retries` (the client's settings) are named in the
    message of a failure they decided, with the options that change them.
    """
    gave_up = ""
    if retries is not None:
        tries = f"gave up after {retries} {'retry' if retries == 1 else 'retries'}"
        gave_up = f"; {tries if retries else 'not retried'} (--retries, run.retries)"
    # APITimeoutError subclasses APIConnectionError in both SDKs: test it first.
    if isinstance(exc, sdk.APITimeoutError):
        limit = f" after {timeout:g} s (--timeout, run.timeout)" if timeout is not None else ""
        return ProviderAPIError(
            f"request timed out{limit}{gave_up or ' (after retries)'}",
            provider=provider,
            kind="timeout",
        )
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderAPIError(
            f"connection failed: {exc}{gave_up or ' (after retries)'}",
            provider=provider,
            kind="connection",
        )
    if isinstance(exc, sdk.APIStatusError):
        kind = kind_for_status(exc.status_code)
        retried = gave_up if kind in _RETRYABLE_KINDS else ""
        error = ProviderAPIError(
            status_message(exc) + retried,
            provider=provider,
            kind=kind,
            status_code=exc.status_code,
            request_id=exc.request_id,
        )
        try:
            error.body = exc.response.text[:2000]
        except Exception:  # a streamed or unread body: no text to keep
            error.body = None
        return error
    if isinstance(exc, sdk.APIResponseValidationError):
        return ProviderAPIError(
            f"unexpected response: {exc}", provider=provider, kind="server_error"
        )
    return ProviderAPIError(str(exc), provider=provider, kind="bad_request")
