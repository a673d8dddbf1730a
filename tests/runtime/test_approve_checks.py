"""`runs approve` / `runs deny` check everything the resume needs before they record the
decision (the tools module loads and has every tool, the provider can be built), so a failure
uses nothing up; and they warn, naming both hashes, when the rule file on disk is no longer
the one the run started with (the run keeps its own rules)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.store import open_store
from engine.store.ids import rules_hash
from tests._llm_server import chat_server
from tests.providers._provider_fakes import oa_completion
from tests.runtime._cli import env_for, ledger, make_workdir, only_run, toolfsm
from tests.runtime.test_durability import AGENT, TOOLS
from tests.runtime.test_hints_cli import APPROVAL_SCRIPT


@pytest.fixture
def paused(tmp_path: Path) -> tuple[Path, str]:
    """A run of the payments agent, paused for the approval of approve_refund r1."""
    workdir = make_workdir(tmp_path, AGENT, TOOLS, APPROVAL_SCRIPT)
    assert "stopped: awaiting_approval" in toolfsm(workdir, "run", "agent.yaml").stdout
    return workdir, only_run(workdir).run.id


def _waiting(workdir: Path, run_id: str) -> list[tuple[str, str]]:
    with open_store(env_for(workdir)["TOOLFSM_DB"]) as store:
        return [(c.tool, c.status) for c in store.load_run(run_id).pending_calls]


@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_a_tools_module_without_the_tool_uses_no_decision_up(
    paused: tuple[Path, str], verb: str
) -> None:
    workdir, run_id = paused
    tools = workdir / "tools.py"
    tools.write_text(TOOLS.replace("def approve_refund(", "def pay_refund("))
    reason = ["--reason", "no"] if verb == "deny" else []
    failed = toolfsm(workdir, "runs", verb, run_id, *reason, code=2)
    (line,) = failed.stderr.splitlines()
    assert line.startswith("toolfsm: error: ") and "approve_refund" in line
    assert "approved" not in failed.stdout and "denied" not in failed.stdout
    assert _waiting(workdir, run_id) == [("approve_refund", "awaiting_approval")]
    assert only_run(workdir).run.status == "awaiting_approval"

    tools.write_text(TOOLS)  # fixed: the same decision goes through now
    done = toolfsm(workdir, "runs", verb, run_id, *reason)
    assert "stopped: terminal_tool" in done.stdout
    assert "warning" not in done.stderr  # the rule file did not change
    refunds = ledger(workdir).count("approve_refund:r1")
    assert refunds == (1 if verb == "approve" else 0)


def test_a_provider_that_cannot_be_built_uses_no_approval_up(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path, AGENT, TOOLS)

    def reply(cid: str, name: str, **args: Any) -> Any:
        return oa_completion(None, [(cid, name, json.dumps(args))])

    with chat_server(
        reply("c1", "lookup", account="a1"), reply("c2", "approve_refund", refund_id="r1")
    ) as server:
        # The key and the server come from the environment: nothing of them is stored.
        keyed = env_for(workdir, OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=server.url)
        toolfsm(workdir, "run", "agent.yaml", "--model", "openai:local", env=keyed)
        run_id = only_run(workdir).run.id
        unkeyed = env_for(workdir, OPENAI_BASE_URL=server.url)
        failed = toolfsm(workdir, "runs", "approve", run_id, code=2, env=unkeyed)
        assert "OPENAI_API_KEY" in failed.stderr and len(failed.stderr.splitlines()) == 1
        assert _waiting(workdir, run_id) == [("approve_refund", "awaiting_approval")]

        server.add(reply("c3", "finish"))
        done = toolfsm(workdir, "runs", "approve", run_id, env=keyed)
        assert "stopped: terminal_tool" in done.stdout
        assert ledger(workdir) == ["lookup:a1", "approve_refund:r1", "finish:"]


def test_a_changed_rule_file_is_named_with_both_hashes(paused: tuple[Path, str]) -> None:
    workdir, run_id = paused
    started_with = only_run(workdir).run.rules_hash
    edited = AGENT.replace("  - terminal: finish\n", "  - terminal: [finish, charge]\n")
    (workdir / "agent.yaml").write_text(edited)
    done = toolfsm(workdir, "runs", "approve", run_id)
    warning = next(line for line in done.stderr.splitlines() if "warning" in line)
    assert warning.startswith("toolfsm: warning: ")
    assert rules_hash(edited)[:12] in warning and started_with[:12] in warning
    assert "the rules it started with" in warning
    # The run keeps the rules it started with.
    assert "stopped: terminal_tool" in done.stdout
    assert only_run(workdir).run.rules_hash == started_with
