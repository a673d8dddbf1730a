"""Resume, approve and deny against the real `openai` / `anthropic` SDK clients (over an httpx
mock transport): no side effect runs twice, and every request after a pause or a crash is a
history the real API accepts (tests/_history.py applies its rules to the exact bodies).

The scripted provider ignores history, so only a provider that sends it can show these.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from engine.machine import StopReason
from engine.providers.anthropic import AnthropicProvider
from engine.providers.openai import OpenAIProvider
from engine.runtime import Runner, approve, deny
from tests._history import (
    assert_valid_chat_histories,
    assert_valid_messages_histories,
    chat_history_problems,
    messages_history_problems,
)
from tests.providers._provider_fakes import (
    FakeAPI,
    Hang,
    an_message,
    an_text,
    an_tool,
    anthropic_http_lib,
    oa_completion,
)
from tests.runtime._helpers import make_agent

AGENT = """\
version: 1
agent: payments
tools: [lookup, charge, refund, finish]
rules:
  - requires_approval: refund
  - terminal: finish
"""

LEDGER_FILE: list[Path] = []


def _hit(entry: str) -> None:
    with LEDGER_FILE[0].open("a") as ledger:
        ledger.write(entry + "\n")


def lookup(account: str) -> dict[str, Any]:
    """Look an account up."""
    _hit(f"lookup:{account}")
    return {"account": account, "balance": 40}


def charge(charge_id: str, amount: int) -> str:
    """Charge an amount."""
    _hit(f"charge:{charge_id}")
    return f"charged {amount}"


def refund(refund_id: str) -> str:
    """Refund."""
    _hit(f"refund:{refund_id}")
    return f"refunded {refund_id}"


def finish() -> str:
    """Finish."""
    _hit("finish")
    return "done"


@pytest.fixture(autouse=True)
def _ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    LEDGER_FILE[:] = [tmp_path / "ledger"]
    LEDGER_FILE[0].write_text("")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path / "anthropic-config"))


def ledger() -> list[str]:
    return LEDGER_FILE[0].read_text().splitlines()


def agent() -> Any:
    return make_agent(AGENT, lookup, charge, refund, finish, idempotent=("lookup",))


# One API at a time: its replies as the SDK would get them, its provider, its validator.


def _oa(cid: str, name: str, **args: Any) -> Any:
    return oa_completion(None, [(cid, name, json.dumps(args))])


def _an(cid: str, name: str, **args: Any) -> Any:
    return an_message(an_tool(cid, name, args))


class OpenAIApi:
    reply = staticmethod(_oa)
    text = staticmethod(oa_completion)
    problems = staticmethod(chat_history_problems)
    assert_valid = staticmethod(assert_valid_chat_histories)

    @staticmethod
    def api(*responses: Any) -> FakeAPI:
        return FakeAPI(*responses)

    @staticmethod
    def provider(api: FakeAPI) -> Any:
        return OpenAIProvider("gpt-test", http_client=api.client(), max_retries=0)


class AnthropicApi:
    reply = staticmethod(_an)
    problems = staticmethod(messages_history_problems)
    assert_valid = staticmethod(assert_valid_messages_histories)

    @staticmethod
    def text(text: str) -> Any:
        return an_message(an_text(text))

    @staticmethod
    def api(*responses: Any) -> FakeAPI:
        return FakeAPI(*responses, lib=anthropic_http_lib())

    @staticmethod
    def provider(api: FakeAPI) -> Any:
        return AnthropicProvider(
            "claude-test", http_client=api.client(), max_tokens=500, max_retries=0
        )


APIS = pytest.mark.parametrize("sdk", [OpenAIApi, AnthropicApi], ids=["openai", "anthropic"])


def _resume(store: Any, sdk: Any, api: FakeAPI, run_id: str) -> Any:
    return asyncio.run(Runner(agent(), sdk.provider(api), store=store).resume(run_id))


@APIS
def test_cancelled_during_the_model_call_resumes_without_running_the_last_step_again(
    store: Any, sdk: Any
) -> None:
    hang = Hang()
    first = sdk.api(
        sdk.reply("c1", "lookup", account="a1"),
        sdk.reply("c2", "charge", charge_id="ch1", amount=10),
        hang,  # step 2: the model is thinking when the run is cancelled
    )
    runner = Runner(agent(), sdk.provider(first), store=store)

    run_id = f"cancelled-{uuid.uuid4().hex[:12]}"

    async def run_then_cancel() -> None:
        task = asyncio.ensure_future(runner.run("settle a1", run_id=run_id))
        await hang.reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_then_cancel())
    stored = store.get_run(run_id)
    assert (stored.status, stored.steps_count) == ("cancelled", 2)
    assert ledger() == ["lookup:a1", "charge:ch1"]
    # Every reply is stored with the step it belongs to.
    snap = store.load_run(run_id)
    assert [m.step_seq for m in snap.messages if m.role == "assistant"] == [0, 1]

    second = sdk.api(sdk.reply("c3", "finish"))
    result = _resume(store, sdk, second, run_id)
    assert result.stop_reason is StopReason.TERMINAL_TOOL, result
    # The previous step's calls are not executed again: each side effect ran once.
    assert ledger() == ["lookup:a1", "charge:ch1", "finish"]
    assert len(second.bodies) == 1
    sdk.assert_valid(first.bodies + second.bodies)
    # The resumed request carries the whole conversation: the step-2 request made again.
    assert second.bodies[0]["messages"] == first.bodies[2]["messages"]


@APIS
@pytest.mark.parametrize("verdict", ["approve", "deny"])
def test_approve_and_deny_at_step_2_send_a_valid_history(
    store: Any, sdk: Any, verdict: str
) -> None:
    first = sdk.api(
        sdk.reply("c1", "lookup", account="a1"),
        sdk.reply("c2", "charge", charge_id="ch1", amount=10),
        sdk.reply("c3", "refund", refund_id="r1"),
    )
    result = asyncio.run(Runner(agent(), sdk.provider(first), store=store).run("settle a1"))
    assert result.stop_reason is StopReason.AWAITING_APPROVAL and result.steps == 2
    if verdict == "approve":
        approve(store, result.run_id)
    else:
        deny(store, result.run_id, "not today")
    second = sdk.api(sdk.reply("c4", "finish"))
    done = _resume(store, sdk, second, result.run_id)
    assert done.stop_reason is StopReason.TERMINAL_TOOL, done
    expected = ["lookup:a1", "charge:ch1"] + (["refund:r1"] if verdict == "approve" else [])
    assert ledger() == [*expected, "finish"]
    sdk.assert_valid(first.bodies + second.bodies)
    # The request after the decision continues the conversation the model saw last.
    resumed = second.bodies[0]["messages"]
    assert resumed[: len(first.bodies[2]["messages"])] == first.bodies[2]["messages"]


def test_the_validators_reject_what_the_apis_reject() -> None:
    # A tool result without the assistant call before it, as resume used to send.
    orphan = {
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ]
    }
    assert chat_history_problems(orphan)
    unanswered = {
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "user", "content": "more"},
        ]
    }
    assert chat_history_problems(unanswered)
    an_orphan = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "go"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        ]
    }
    assert messages_history_problems(an_orphan)
    late = {
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x"},
                    {"type": "tool_result", "tool_use_id": "t1"},
                ],
            },
        ]
    }
    assert messages_history_problems(late)
