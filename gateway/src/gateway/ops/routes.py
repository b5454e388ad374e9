"""`/ops`: the operations page (admin only, through a login session).

    GET  /ops                        the page; without a session the login form (401)
    POST /ops/login, /ops/logout     form posts: operator name + admin token; log out
    GET  /ops/events                 Server-Sent Events: the page's data about once a second
    GET  /ops/data                   the same data once, as JSON
    GET  /ops/traces/{trace_id}      one trace's waterfall, from the local trace files
    POST /ops/actions/...            faults, read-only, canary rollback (session + CSRF token)

Data is for a session only: an API key or the admin token in a header gets 401 here. The
actions call the admin API's own handlers (gateway.admin, gateway.canary), so they validate
and forward exactly as `/admin/...` does, and each is logged with who did it and from where.
None of these routes is in the OpenAPI document: they are a page, not the API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict
from servicekit import Faults, ForbiddenError, NotFoundError, UnauthorizedError, token_matches
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from gateway import admin, canary
from gateway.ops.collector import OpsCollector
from gateway.ops.page import (
    CONTENT_SECURITY_POLICY,
    Card,
    login_page,
    ops_page,
    static_file,
    waterfall_page,
)
from gateway.ops.session import (
    COOKIE,
    CSRF_HEADER,
    LIFETIME_SECONDS,
    OPERATOR,
    Session,
    SessionSigner,
)
from gateway.ops.traces import TRACE_ID, render_waterfall

logger = logging.getLogger("gateway.ops")

#: An event stream is closed after this long; the browser reconnects by itself (`retry`), so a
#: stream never outlives its session by much and a request never lives for hours.
STREAM_SECONDS = 60.0
EVENT_INTERVAL = 1.0
#: The longest login form body read.
LOGIN_BODY_BYTES = 2048


@dataclass
class OpsConsole:
    """The page's lifespan state: the session signer, the collector, the cards."""

    signer: SessionSigner
    collector: OpsCollector
    cards: list[Card]
    traces_dir: Path | None
    secure_cookie: bool


class OpsSessionRequiredError(UnauthorizedError):
    slug = "ops-session-required"
    title = "Log in to the ops page"


class CsrfTokenError(ForbiddenError):
    slug = "csrf-token-invalid"
    title = "CSRF token missing or wrong"


router = APIRouter(prefix="/ops", include_in_schema=False)


def _console(request: Request) -> OpsConsole:
    console: OpsConsole = request.state.ops
    return console


def _page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


def _session(request: Request) -> Session | None:
    return _console(request).signer.verify(request.cookies.get(COOKIE))


async def require_session(request: Request) -> Session:
    """The logged-in operator; 401 without a valid session cookie (headers do not count)."""
    session = _session(request)
    if session is None:
        raise OpsSessionRequiredError("log in at /ops first")
    return session


async def require_csrf(
    request: Request, session: Annotated[Session, Depends(require_session)]
) -> Session:
    """The operator, if the request carries the session's CSRF token; 403 otherwise."""
    if not _console(request).signer.csrf_matches(session, request.headers.get(CSRF_HEADER)):
        raise CsrfTokenError(f"send the page's CSRF token in {CSRF_HEADER}")
    return session


SessionDep = Annotated[Session, Depends(require_session)]
OperatorDep = Annotated[Session, Depends(require_csrf)]


@router.get("")
async def read_ops_page(request: Request) -> HTMLResponse:
    """The page, or the login form (401) without a session."""
    session = _session(request)
    if session is None:
        return _page(login_page(), 401)
    console = _console(request)
    console.collector.watch()
    return _page(ops_page(session.operator, console.signer.csrf_token(session), console.cards))


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > LOGIN_BODY_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    return {name: values[0] for name, values in fields.items() if values}


@router.post("/login")
async def log_in(request: Request) -> Response:
    """Check the admin token from the form; on success set the session cookie."""
    form = await _form(request)
    operator, token = form.get("operator", "").strip(), form.get("token", "")
    address = request.client.host if request.client else "?"
    if not OPERATOR.match(operator):
        return _page(login_page("Give your name (letters, digits, . _ @ - and spaces)."), 400)
    settings = request.state.settings
    if not token_matches(token, [settings.admin_token.get_secret_value()]):
        logger.warning("ops login refused for %r from %s", operator, address)
        return _page(login_page("Wrong admin token."), 401)
    console = _console(request)
    _, cookie = console.signer.issue(operator)
    logger.info("ops login: %s from %s", operator, address)
    response = RedirectResponse("/ops", status_code=303)
    response.set_cookie(
        COOKIE, cookie, max_age=LIFETIME_SECONDS, path="/ops", httponly=True,
        samesite="strict", secure=console.secure_cookie,
    )  # fmt: skip
    return response


@router.post("/logout")
async def log_out(request: Request, session: SessionDep) -> Response:
    """End the session (the form carries the CSRF token)."""
    form = await _form(request)
    if not _console(request).signer.csrf_matches(session, form.get("csrf_token")):
        raise CsrfTokenError("the logout form's CSRF token is missing or wrong")
    logger.info("ops logout: %s", session.operator)
    response = RedirectResponse("/ops", status_code=303)
    response.delete_cookie(COOKIE, path="/ops", httponly=True, samesite="strict")
    return response


@router.get("/static/{name}")
async def read_static(name: str) -> Response:
    """The page's script and style sheet."""
    found = static_file(name)
    if found is None:
        raise NotFoundError(f"no file {name[:32]!r} here")
    content, media_type = found
    return Response(content, media_type=media_type)


@router.get("/data")
async def read_ops_data(request: Request, _: SessionDep) -> JSONResponse:
    """The page's data now."""
    collector = _console(request).collector
    collector.watch()
    return JSONResponse(collector.snapshot())


@router.get("/events")
async def stream_ops_events(request: Request, _: SessionDep) -> StreamingResponse:
    """The page's data about once a second, as Server-Sent Events."""
    collector = _console(request).collector

    async def events() -> AsyncIterator[str]:
        yield f"retry: {int(EVENT_INTERVAL * 1000)}\n\n"
        closes_at = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < closes_at:
            collector.watch()
            yield f"data: {json.dumps(collector.snapshot(), separators=(',', ':'))}\n\n"
            await asyncio.sleep(EVENT_INTERVAL)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/traces/{trace_id}")
async def read_trace(request: Request, trace_id: str, _: SessionDep) -> HTMLResponse:
    """One trace as a waterfall."""
    directory = _console(request).traces_dir
    if not TRACE_ID.match(trace_id) or directory is None:
        raise NotFoundError("no such trace (32 lowercase hex digits, from the local trace files)")
    text = await asyncio.to_thread(render_waterfall, directory, trace_id)
    if text is None:
        raise NotFoundError(f"trace {trace_id} is not in the local trace files")
    return _page(waterfall_page(trace_id, text))


# --- actions: the admin API's handlers, with the operator's session and CSRF token -------------


def _log_action(request: Request, session: Session, action: str, service: str, answer: Any) -> None:
    status = getattr(answer, "status_code", 200)
    logger.warning(
        "ops action %s on %s by %s from %s: %s",
        action, service, session.operator,
        request.client.host if request.client else "?", status,
        extra={"ops_action": action, "ops_service": service, "operator": session.operator,
               "status": status},
    )  # fmt: skip


class ReadOnlySwitch(BaseModel):
    """Hold a service in read-only mode (true) or release it (false)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    read_only: bool


@router.post("/actions/faults/{service}")
async def set_faults(
    request: Request, service: str, body: Faults, session: OperatorDep
) -> Response:
    """Set a service's faults (all off: cleared), through the admin fault API."""
    if body.active:
        answer = await admin.replace_faults(request, service, body)
    else:
        answer = await admin.clear_faults(request, service)
    _log_action(request, session, f"faults {body.model_dump()}", service, answer)
    if answer.status_code == 200:
        view = _console(request).collector.views.get(service)
        if view is not None:
            view.faults = json.loads(bytes(answer.body))
    return answer


@router.post("/actions/read-only/{service}")
async def switch_read_only(
    request: Request, service: str, body: ReadOnlySwitch, session: OperatorDep
) -> Response:
    """Hold a service in read-only mode or release it, through the admin API."""
    if body.read_only:
        answer = await admin.hold_read_only(request, service)
    else:
        answer = await admin.release_read_only(request, service)
    _log_action(request, session, f"read-only {'on' if body.read_only else 'off'}", service, answer)
    return answer


@router.post("/actions/canary/{service}/rollback")
async def roll_back_canary(request: Request, service: str, session: OperatorDep) -> JSONResponse:
    """Send every call of a service to stable now, through the admin canary API."""
    route = await canary.delete_canary(request, service)
    _log_action(request, session, "canary rollback", service, None)
    return JSONResponse(route.model_dump())
