"""The web console (`toolfsm ui`): a Starlette app over a run store (extra `toolfsm[ui]`).

Pages: `/` the runs list (filter by agent and status; live), `/runs/{id}` a run (its steps,
the machine with the run's path, the call waiting for approval with approve / deny forms).
The JSON API:

    GET  /api/runs                  runs, newest first (?agent=&status=&limit=)
    GET  /api/runs/{id}             one run: header, steps with their calls, decisions
    POST /api/runs/{id}/approve     {"call_id"?, "arguments"?, "by"?}
    POST /api/runs/{id}/deny        {"reason", "call_id"?, "by"?}

Approving or denying does what `toolfsm runs approve / deny` does: the decision is recorded
under a claim of the run's lease (checked first: an edit that breaks the tool's schema or the
rules is refused with the reason, 422), then the run is resumed under that claim, in the
background, until its next stop; the answer (200) comes once the decision is recorded. A run
on Temporal is decided by its workflow (the update `decide`, as `runs approve` sends it), and
its workers go on with it.

Security: the console listens on loopback unless told otherwise, and elsewhere only with a
token (`Authorization: Bearer TOKEN`, or `?token=TOKEN` once, which sets a cookie). Requests
that change state are refused (403) unless they come from the console's own pages: a form
carries the CSRF token of its page (and of the cookie set with it), a JSON request must be
`application/json` (no cross-site form can send that without a CORS preflight, which the
console never grants) and its Origin, when sent, must be the console's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from engine.errors import ToolfsmError
from engine.temporal.wire import location_of
from engine.ui import pages

__all__ = ["create_app"]

_CSRF_COOKIE = "toolfsm_csrf"
_TOKEN_COOKIE = "toolfsm_token"


class _Console:
    """The app's state: the store, the console's user, its secrets, the resumes under way."""

    def __init__(self, store: Any, *, user: str, token: str | None) -> None:
        self.store = store
        self.user = user
        self.token = token
        self.csrf = secrets.token_urlsafe(24)
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- guards ------------------------------------------------------------------------

    def authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.cookies.get(_TOKEN_COOKIE) or request.query_params.get("token") or ""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    def same_origin(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:  # not sent by a browser for a same-origin form in every case
            return True
        host = request.headers.get("host", "")
        return urlsplit(origin).netloc == host

    async def csrf_problem(self, request: Request, form: Any | None) -> str | None:
        """Why a state-changing request is refused (None: it is not)."""
        if not self.same_origin(request):
            return "cross-origin request refused"
        if form is not None:
            given = str(form.get("csrf", ""))
            cookie = request.cookies.get(_CSRF_COOKIE, "")
            if not (
                hmac.compare_digest(given.encode(), self.csrf.encode())
                and hmac.compare_digest(cookie.encode(), self.csrf.encode())
            ):
                return "missing or wrong CSRF token: reload the page and try again"
            return None
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return "a JSON request needs Content-Type: application/json"
        return None

    # -- reading -----------------------------------------------------------------------

    def summary(self, run: Any) -> dict[str, Any]:
        return {
            "id": run.id,
            "agent": run.agent_name,
            "model": run.model,
            "status": str(run.status),
            "stop_reason": run.stop_reason,
            "error": run.error,
            "steps": run.steps_count,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "created_at": run.created_at.isoformat(),
            "updated_at": run.updated_at.isoformat(),
        }

    def runs(self, request: Request) -> list[dict[str, Any]]:
        agent = request.query_params.get("agent") or None
        status = request.query_params.get("status") or None
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            limit = 100
        found = self.store.list_runs(agent=agent, status=status, limit=max(1, min(limit, 1000)))
        return [self.summary(r) for r in found]

    def find(self, run_id: str) -> Any:
        return self.store.find_run(run_id)

    def run_json(self, snapshot: Any) -> dict[str, Any]:
        calls: dict[int, list[dict[str, Any]]] = {}
        for call in snapshot.calls:
            calls.setdefault(call.step_seq, []).append(call.model_dump(mode="json"))
        steps = [
            {**s.model_dump(mode="json"), "calls": calls.pop(s.seq, [])} for s in snapshot.steps
        ]
        return {
            **snapshot.run.model_dump(mode="json"),
            **self.summary(snapshot.run),
            "steps_count": snapshot.run.steps_count,
            "steps": steps,
            "pending_calls": [c for pending in calls.values() for c in pending],
            "decisions": [d.model_dump(mode="json") for d in snapshot.decisions],
        }

    def machine(self, run: Any) -> Any:
        """The run's compiled machine, from the rule text stored with it (None if it no
        longer compiles: the page is shown without the diagram)."""
        from engine.language.loader import parse_rules
        from engine.machine.compiler import compile_rules

        agent = self.store.get_agent(run.agent_id)
        try:
            return compile_rules(parse_rules(agent.rules_text, agent.rules_path or "<stored>"))
        except ToolfsmError:
            return None

    # -- deciding ----------------------------------------------------------------------

    async def decide(self, run_id: str, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        """Record the decision (claimed, checked), then resume the run in the background."""
        from engine.runtime import Runner, approve, deny
        from engine.runtime.resume import open_agent, provider_for_run
        from engine.store.ids import new_owner_id

        run = self.find(run_id)
        if location_of(run.options) is not None:
            return await self._decide_on_temporal(run, verb, body)
        agent, run = open_agent(self.store, run.id)
        provider = provider_for_run(run, self.store.load_run(run.id))
        owner = new_owner_id()
        by = str(body.get("by") or self.user)
        call_id = body.get("call_id") or None
        if verb == "approve":
            record = approve(
                self.store,
                run.id,
                call_id=call_id,
                owner=owner,
                arguments=body.get("arguments"),
                by=by,
                agent=agent,
            )
        else:
            record = deny(
                self.store, run.id, str(body["reason"]), call_id=call_id, owner=owner, by=by
            )
        runner = Runner(
            agent,
            provider,
            store=self.store,
            max_steps=_int_or_none(run.options.get("max_steps")),
            model=run.model,
            options={k: v for k, v in run.options.items() if k not in ("tools", "max_steps")},
            owner=owner,
        )
        task = asyncio.get_running_loop().create_task(self._resume(runner, run.id, owner))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return {"run_id": run.id, "decision": verb, "call": record.model_dump(mode="json")}

    async def _decide_on_temporal(
        self, run: Any, verb: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A run on Temporal: the decision goes to its workflow (`toolfsm runs approve` does
        the same), whose workers go on with the run."""
        from engine.temporal import require_temporal
        from engine.temporal.wire import Decision

        require_temporal()
        from engine.temporal.client import decide

        location = location_of(run.options)
        assert location is not None
        decision = Decision(
            verb,
            body.get("call_id") or None,
            reason=str(body["reason"]) if verb == "deny" else None,
            by=str(body.get("by") or self.user),
            arguments=body.get("arguments") if verb == "approve" else None,
        )
        decided = await decide(location, decision)
        call = next(c for c in self.store.load_run(run.id).calls if c.call_id == decided["call_id"])
        return {"run_id": run.id, "decision": verb, "call": call.model_dump(mode="json")}

    async def _resume(self, runner: Any, run_id: str, owner: str) -> None:
        try:
            await runner.resume(run_id)
        except ToolfsmError:
            # The run stays resumable (`toolfsm runs resume`); the lease is given up.
            with contextlib.suppress(ToolfsmError):
                self.store.release_run(run_id, owner)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the console's forms send nothing else; parsed here, so no
    multipart library is needed)."""
    from urllib.parse import parse_qs

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    text = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _arguments(raw: Any) -> Any:
    """A form's arguments text as JSON (None: empty); ValueError when it is not JSON."""
    text = str(raw or "").strip()
    return None if not text else json.loads(text)


def create_app(store: Any, *, user: str, token: str | None = None) -> Starlette:
    """The console over `store` (a `Store`); `user` is who decides unless a form names
    someone; with `token`, every request must carry it."""
    console = _Console(store, user=user, token=token)

    def _refused(request: Request) -> Response | None:
        if console.authorised(request):
            return None
        return JSONResponse({"error": "a token is required: ?token=... or a Bearer header"}, 401)

    def _html(text: str, status: int = 200) -> HTMLResponse:
        response = HTMLResponse(text, status)
        response.set_cookie(_CSRF_COOKIE, console.csrf, httponly=True, samesite="strict")
        return response

    def _with_token(request: Request, response: Response) -> Response:
        given = request.query_params.get("token")
        if console.token is not None and given:
            response.set_cookie(_TOKEN_COOKIE, given, httponly=True, samesite="strict")
        return response

    async def runs_page(request: Request) -> Response:
        if (refused := _refused(request)) is not None:
            return refused
        agents = sorted({r.agent_name for r in store.list_runs(limit=1000)})
        page = pages.runs_page(
            console.runs(request),
            request.query_params.get("agent", ""),
            request.query_params.get("status", ""),
            agents,
        )
        return _with_token(request, _html(page))

    async def run_page(request: Request, error: str | None = None, code: int = 200) -> Response:
        if (refused := _refused(request)) is not None:
            return refused
        try:
            run = console.find(request.path_params["run_id"])
        except ToolfsmError as exc:
            return _html(pages.not_found(str(exc)), 404)
        snapshot = store.load_run(run.id)
        page = pages.run_page(
            snapshot, console.machine(run), csrf=console.csrf, user=console.user, error=error
        )
        return _with_token(request, _html(page, code))

    async def form_decision(request: Request) -> Response:
        if (refused := _refused(request)) is not None:
            return refused
        form = await _form(request)
        problem = await console.csrf_problem(request, form)
        if problem is not None:
            return JSONResponse({"error": problem}, 403)
        verb = request.url.path.rsplit("/", 1)[1]
        body: dict[str, Any] = {"call_id": form.get("call_id"), "by": form.get("by")}
        try:
            if verb == "approve":
                body["arguments"] = _arguments(form.get("arguments"))
            else:
                body["reason"] = str(form.get("reason") or "").strip() or "no reason given"
            await console.decide(request.path_params["run_id"], verb, body)
        except ValueError as exc:
            return await run_page(request, f"the arguments are not valid JSON: {exc}", 422)
        except ToolfsmError as exc:
            return await run_page(request, str(exc), 422)
        return RedirectResponse(f"/runs/{request.path_params['run_id']}", 303)

    async def api_runs(request: Request) -> Response:
        if (refused := _refused(request)) is not None:
            return refused
        return JSONResponse(console.runs(request))

    async def api_run(request: Request) -> Response:
        if (refused := _refused(request)) is not None:
            return refused
        try:
            run = console.find(request.path_params["run_id"])
        except ToolfsmError as exc:
            return JSONResponse({"error": str(exc)}, 404)
        return JSONResponse(console.run_json(store.load_run(run.id)))

    async def api_decision(request: Request) -> Response:
        if (refused := _refused(request)) is not None:
            return refused
        problem = await console.csrf_problem(request, None)
        if problem is not None:
            return JSONResponse({"error": problem}, 403)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not valid JSON"}, 400)
        verb = request.url.path.rsplit("/", 1)[1]
        bad = _body_problem(body, verb)
        if bad is not None:
            return JSONResponse({"error": bad}, 400)
        try:
            found = console.find(request.path_params["run_id"])
        except ToolfsmError as exc:
            return JSONResponse({"error": str(exc)}, 404)
        try:
            return JSONResponse(await console.decide(found.id, verb, body))
        except ToolfsmError as exc:
            return JSONResponse({"error": str(exc)}, 422)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        # Resumes under way finish (to their next stop) before the console exits.
        await asyncio.gather(*console.tasks, return_exceptions=True)

    app = Starlette(
        routes=[
            Route("/", runs_page),
            Route("/runs/{run_id}", run_page),
            Route("/runs/{run_id}/approve", form_decision, methods=["POST"]),
            Route("/runs/{run_id}/deny", form_decision, methods=["POST"]),
            Route("/api/runs", api_runs),
            Route("/api/runs/{run_id}", api_run),
            Route("/api/runs/{run_id}/approve", api_decision, methods=["POST"]),
            Route("/api/runs/{run_id}/deny", api_decision, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.console = console
    return app


def _body_problem(body: Any, verb: str) -> str | None:
    """What is wrong with an API decision's body (None: nothing)."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    unknown = set(body) - {"call_id", "arguments", "by", "reason"}
    if unknown:
        return f"unknown keys: {', '.join(sorted(unknown))}"
    if verb == "deny" and not (isinstance(body.get("reason"), str) and body["reason"].strip()):
        return "a denial needs a non-empty reason"
    if verb == "approve" and "reason" in body:
        return "an approval takes no reason"
    if body.get("arguments") is not None and not isinstance(body["arguments"], dict):
        return "arguments must be a JSON object"
    for key in ("call_id", "by"):
        if body.get(key) is not None and not isinstance(body[key], str):
            return f"{key} must be a string"
    return None
