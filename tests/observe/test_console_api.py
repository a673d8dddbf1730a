"""The console's JSON API and its guards, against a real `toolfsm ui` server: the runs list
and a run as JSON, approve (with edits, refused edits) and deny doing what `runs approve` and
`runs deny` do, CSRF protection, the token, and loopback by default."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from _console import console, toolfsm


def _wait_for(client: httpx.Client, run_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        run: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        if run["status"] == status or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """A store with a finished screening run and two support runs waiting for approval."""
    db = tmp_path_factory.mktemp("console") / "runs.db"
    toolfsm(db, "run", "examples/screening/agent.yaml")
    ids = []
    for _ in range(2):
        out = toolfsm(db, "run", "examples/support/agent.yaml").stdout
        ids.append(re.search(r"approve: toolfsm runs approve (\w+)", out)[1])  # type: ignore[index]
    listed = toolfsm(db, "runs", "list", "--json").stdout
    import json

    full = {r["id"][:12]: r["id"] for r in json.loads(listed)}
    screening = next(r["id"] for r in json.loads(listed) if r["agent"] == "screening")
    return db, screening, full[ids[0]], full[ids[1]]


def test_the_api_lists_shows_approves_and_denies(runs: tuple[Path, str, str, str]) -> None:
    db, screening, first, second = runs
    with console(db, 8781) as url, httpx.Client(base_url=url, timeout=30) as client:
        listed = client.get("/api/runs").json()
        assert [r["id"] for r in listed] == [second, first, screening]  # newest first
        waiting = client.get("/api/runs", params={"status": "awaiting_approval"}).json()
        assert {r["id"] for r in waiting} == {first, second}
        assert [r["id"] for r in client.get("/api/runs?agent=screening").json()] == [screening]

        shown = client.get(f"/api/runs/{first[:8]}").json()
        assert shown["id"] == first and shown["status"] == "awaiting_approval"
        (pending,) = [c for c in shown["pending_calls"] if c["status"] == "awaiting_approval"]
        assert pending["tool"] == "refund"
        assert [s["seq"] for s in shown["steps"]] == [0, 1]
        assert client.get("/api/runs/nope").status_code == 404

        # An edit that breaks the tool's schema: refused with the reason, nothing recorded.
        bad = {"call_id": pending["call_id"], "arguments": {"order_id": "O-5531"}}
        refused = client.post(f"/api/runs/{first}/approve", json=bad)
        assert refused.status_code == 422
        assert "the edit is refused" in refused.json()["error"]
        assert "amount" in refused.json()["error"]
        assert client.get(f"/api/runs/{first}").json()["decisions"] == []

        edit = {"order_id": "O-5531", "amount": 25.0, "reason": "partial refund"}
        done = client.post(
            f"/api/runs/{first}/approve", json={"arguments": edit, "by": "support-lead"}
        )
        assert done.status_code == 200, done.text
        assert done.json()["call"]["status"] == "approved"
        run = _wait_for(client, first, "finished")
        assert run["stop_reason"] == "terminal_tool"
        (decision,) = run["decisions"]
        assert decision["reviewer"] == "support-lead"
        assert decision["arguments_before"]["amount"] == 39.9
        assert decision["arguments_after"] == edit
        refund = next(
            c for s in run["steps"] for c in s["calls"] if c["call_id"] == pending["call_id"]
        )
        assert refund["result"].startswith("Refund RF-5531 of 25.00 EUR")
        # Decided once: a second approval is refused.
        again = client.post(f"/api/runs/{first}/approve", json={})
        assert again.status_code == 422 and "not awaiting approval" in again.json()["error"]

        assert client.post(f"/api/runs/{second}/deny", json={}).status_code == 400
        denied = client.post(f"/api/runs/{second}/deny", json={"reason": "fraud check"})
        assert denied.status_code == 200
        assert denied.json()["call"]["status"] == "denied"
    # The same record as the CLI shows.
    shown_cli = toolfsm(db, "runs", "show", second).stdout
    assert "deny call_3 by " in shown_cli and ": fraud check" in shown_cli


def test_state_changing_requests_need_the_consoles_own_pages(
    runs: tuple[Path, str, str, str],
) -> None:
    db, screening, _, _ = runs
    with console(db, 8782) as url, httpx.Client(base_url=url, timeout=30) as client:
        target = f"/api/runs/{screening}/deny"
        # A cross-site form post (what a hostile page can send without a preflight).
        form = client.post(target, data={"reason": "x"})
        assert form.status_code == 403
        assert form.json()["error"] == "a JSON request needs Content-Type: application/json"
        evil = client.post(target, json={"reason": "x"}, headers={"origin": "http://evil.test"})
        assert evil.status_code == 403 and evil.json()["error"] == "cross-origin request refused"
        # The page's own form: only with its CSRF token and cookie.
        page = client.get(f"/runs/{screening}")
        assert page.status_code == 200 and "toolfsm_csrf" in page.cookies
        forged = httpx.post(f"{url}/runs/{screening}/deny", data={"csrf": "guess", "reason": "x"})
        assert forged.status_code == 403 and "CSRF" in forged.json()["error"]
        token = page.cookies["toolfsm_csrf"]
        ok = client.post(f"/runs/{screening}/deny", data={"csrf": token, "reason": "x"})
        # (the screening run is finished: the decision itself is refused, on the page)
        assert ok.status_code == 422 and "not awaiting approval" in ok.text


def test_a_token_guards_everything_and_binding_beyond_loopback_needs_one(
    runs: tuple[Path, str, str, str],
) -> None:
    db = runs[0]
    refused = toolfsm(db, "ui", "--host", "0.0.0.0", "--port", "8783", code=2)
    assert refused.stderr.strip() == (
        "toolfsm: error: --host 0.0.0.0 is reachable from other machines: give --token "
        "(or $TOOLFSM_UI_TOKEN)"
    )
    secret = "s3cret-token-for-the-console"
    with console(db, 8784, "--token", secret) as url:
        assert httpx.get(f"{url}/api/runs").status_code == 401
        assert httpx.get(f"{url}/").status_code == 401
        bearer = {"authorization": f"Bearer {secret}"}
        assert httpx.get(f"{url}/api/runs", headers=bearer).status_code == 200
        wrong = {"authorization": "Bearer s3cret-token-for-the-consolX"}
        assert httpx.get(f"{url}/api/runs", headers=wrong).status_code == 401
        with httpx.Client(base_url=url) as browser:  # ?token= once, then its cookie
            assert browser.get("/", params={"token": secret}).status_code == 200
            assert browser.get("/api/runs").status_code == 200


@pytest.mark.parametrize(
    ("blocked", "args", "env", "line"),
    [
        (
            "starlette",
            ["ui", "--port", "8785"],
            {},
            "toolfsm: error: the web console needs: pip install 'toolfsm[ui]'",
        ),
        (
            "opentelemetry",
            ["run", "examples/screening/agent.yaml", "--db", "sqlite:///:memory:"],
            {"OTEL_TRACES_EXPORTER": "console"},
            "toolfsm: error: OTEL_TRACES_EXPORTER needs: pip install 'toolfsm[otel]'",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    blocked: str, args: list[str], env: dict[str, str], line: str
) -> None:
    import os
    import subprocess
    import sys

    from _console import REPO

    # The package made unimportable, as in an install without the extra.
    code = (
        f"import runpy, sys; sys.modules[{blocked!r}] = None; sys.argv = ['toolfsm', *{args!r}]; "
        "runpy.run_module('engine', run_name='__main__')"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == line
