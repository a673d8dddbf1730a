"""The provider contract: request validation, reply helpers, the error tree and make_provider."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest
from _provider_fakes import TOOLS, request

import engine.providers as providers
from engine.errors import ToolfsmError
from engine.providers import (
    Message,
    ModelReply,
    ModelRequest,
    Provider,
    ProviderAPIError,
    ProviderConfigError,
    ProviderError,
    ScriptError,
    ToolCall,
    Usage,
    make_provider,
)
from engine.providers.base import reply_violation, tool_message
from engine.providers.errors import kind_for_status


def test_public_api_is_exactly_all() -> None:
    assert sorted(providers.__all__) == sorted(
        [
            "AnthropicProvider",
            "ErrorKind",
            "MalformedReply",
            "Message",
            "ModelReply",
            "ModelRequest",
            "OpenAIProvider",
            "Provider",
            "ProviderAPIError",
            "ProviderConfigError",
            "ProviderError",
            "RandomProvider",
            "ScriptError",
            "ScriptedProvider",
            "ToolCall",
            "ToolSpec",
            "Usage",
            "make_provider",
        ]
    )
    for name in providers.__all__:
        assert getattr(providers, name) is not None


# --- ModelRequest ----------------------------------------------------------------------------


def test_named_tool() -> None:
    assert request(("fetch",), force=True).named_tool == "fetch"
    assert request(("fetch",), force=True, forced_tool="fetch").named_tool == "fetch"
    assert request(("fetch", "search"), force=True).named_tool is None
    assert request(("fetch",), force=False).named_tool is None


def test_an_empty_allowed_set_without_force_is_an_answer_only_request() -> None:
    answer = ModelRequest(system="", messages=(), tools=TOOLS, allowed=(), force=False)
    assert answer.answer_only and answer.allowed_specs() == ()
    assert not request(("fetch",)).answer_only


def test_allowed_specs_keep_declaration_order() -> None:
    names = [t.name for t in request(("finish", "search")).allowed_specs()]
    assert names == ["search", "finish"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"allowed": (), "force": True}, "allowed is empty but a call is forced"),
        ({"allowed": ("nope",)}, "not among the tools"),
        ({"allowed": ("fetch", "fetch")}, "duplicates"),
        ({"allowed": ("fetch",), "forced_tool": "fetch"}, "force is False"),
        (
            {"allowed": ("fetch", "search"), "force": True, "forced_tool": "fetch"},
            "must be the only allowed tool",
        ),
        ({"tools": (*TOOLS, TOOLS[0])}, "duplicate tool names ['search']"),
    ],
)
def test_inconsistent_requests_are_refused(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "system": "",
        "messages": (),
        "tools": TOOLS,
        "allowed": ("fetch",),
        "force": False,
    }
    with pytest.raises(ProviderConfigError, match=message.replace("[", r"\[")):
        ModelRequest(**{**base, **kwargs})  # type: ignore[arg-type]


def test_messages_are_checked_by_role() -> None:
    with pytest.raises(ProviderConfigError, match="tool_call_id"):
        Message("tool", "result")
    with pytest.raises(ProviderConfigError, match="assistant messages only"):
        Message("user", "hi", tool_calls=(ToolCall("1", "a", "{}"),))
    with pytest.raises(ProviderConfigError, match="tool messages only"):
        Message("assistant", "x", is_error=True)


def test_reply_to_message_carries_provider_state() -> None:
    reply = ModelReply(
        "hi", (ToolCall("c", "a", "{}"),), Usage(1, 2), {"type": "auto"}, {"content": []}
    )
    assert reply.to_message() == Message(
        "assistant", "hi", tool_calls=(ToolCall("c", "a", "{}"),), provider_state={"content": []}
    )


def test_reply_violation() -> None:
    forced = request(("fetch",), force=True, parallel=False)
    assert reply_violation(forced, ()) == "a tool call is required but the reply has none"
    assert "['search'], which is not allowed" in str(
        reply_violation(forced, (ToolCall("1", "search", "{}"),))
    )
    two = (ToolCall("1", "fetch", "{}"), ToolCall("2", "fetch", "{}"))
    assert "at most one" in str(reply_violation(forced, two))
    assert reply_violation(forced, two[:1]) is None
    assert reply_violation(request(), ()) is None


def test_usage_adds_up() -> None:
    assert Usage(1, 2, 3, 4) + Usage(10, 20, 30, 40) == Usage(11, 22, 33, 44)
    assert Usage(1, 2, 3, 4) + Usage() == Usage(1, 2, 3, 4)
    assert Usage() + Usage(0, 0, 0, 5) == Usage(0, 0, 0, 5)
    assert Usage(1, 2) + Usage(0, 0, 7) == Usage(1, 2, 7, 0)


# --- errors -----------------------------------------------------------------------------------


def test_error_fields_message_and_retryability() -> None:
    err = ProviderAPIError("slow down", provider="openai:x", kind="rate_limited", status_code=429)
    assert str(err) == "[openai:x] rate_limited HTTP 429: slow down"
    assert err.retryable and isinstance(err, ProviderError)
    assert isinstance(err, ToolfsmError)  # one catch-all for everything toolfsm refuses
    assert not ProviderAPIError("no", provider="p", kind="auth").retryable
    assert ScriptError("x", provider="p", kind="script_exhausted", script="s", index=2).index == 2
    with pytest.raises(TypeError):
        ProviderError("x", provider="p", kind="weird")  # type: ignore[arg-type]


def test_errors_pickle() -> None:
    err = ScriptError("gone", provider="scripted:s", kind="script_exhausted", script="s", index=3)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ScriptError and back.index == 3 and str(back) == str(err)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "rate_limited"),
        (408, "timeout"),
        (401, "auth"),
        (403, "auth"),
        (500, "server_error"),
        (529, "server_error"),
        (409, "server_error"),
        (400, "bad_request"),
        (422, "bad_request"),
        (404, "bad_request"),
    ],
)
def test_kind_for_status(status: int, kind: str) -> None:
    assert kind_for_status(status) == kind


# --- make_provider ----------------------------------------------------------------------------


def test_make_openai_and_anthropic() -> None:
    o = make_provider("openai:gpt-4.1", gating="filter", max_retries=1, seed=3)
    assert o.name == "openai:gpt-4.1" and isinstance(o, Provider)
    assert o.request_options == {"seed": 3}  # type: ignore[attr-defined]
    a = make_provider("anthropic:claude-sonnet-4-5", thinking=2048, max_tokens=8000)
    assert a.name == "anthropic:claude-sonnet-4-5" and isinstance(a, Provider)
    local = make_provider("openai:llama3", base_url="http://127.0.0.1:8080/v1")
    assert local.name == "openai:llama3"


def test_make_scripted_and_random(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("replies: [{text: hi}]", encoding="utf-8")
    assert make_provider(f"scripted:{path}").name == f"scripted:{path}"
    assert make_provider("scripted", script_path=path).name == f"scripted:{path}"
    assert make_provider("random").name == "random:0"
    assert make_provider("random:9").name == "random:9"
    assert make_provider("random", seed=5, text_probability=0.0).name == "random:5"


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("gemini:pro", {}, "unknown provider 'gemini:pro'; expected one of"),
        ("openai", {}, "needs a model name"),
        ("anthropic:", {}, "needs a model name"),
        ("openai:gpt", {"temprature": 0}, "bad options"),
        ("anthropic:c", {"seed": 1}, "seed does not apply"),
        ("scripted", {}, "needs a script"),
        ("scripted:a.yaml", {"script_path": "b.yaml"}, "two script paths"),
        ("random:abc", {}, "must be an integer"),
        ("random:1", {"seed": 2}, "two seeds"),
        ("random", {"base_url": "http://x"}, "base_url does not apply"),
        ("random", {"gating": "filter"}, "bad options"),
    ],
)
def test_make_provider_errors(spec: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ProviderConfigError, match=message):
        make_provider(spec, **kwargs)  # type: ignore[arg-type]


def test_tool_message_is_the_checked_message() -> None:
    built = tool_message("c1", "out", True)
    checked = Message("tool", "out", tool_call_id="c1", is_error=True)
    assert built == checked and hash(built) == hash(checked) and repr(built) == repr(checked)
    assert tool_message("c2", "fine") == Message("tool", "fine", tool_call_id="c2")
    with pytest.raises(ProviderConfigError, match="tool_call_id"):
        tool_message("", "out")


def test_with_messages_is_replace_without_a_second_check() -> None:
    first = request(("fetch",), force=True)
    history = (Message("user", "hi"), Message("assistant", "hello"))
    again = first.with_messages(history)
    assert again == replace(first, messages=history) and again.messages == history
    assert again.allowed == ("fetch",) and first.messages != history
