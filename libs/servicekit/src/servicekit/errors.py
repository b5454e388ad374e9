"""One exception tree, mapped to RFC 9457 `application/problem+json` in one place.

Services raise domain errors (subclasses of these), never `HTTPException`::

    ServiceError                     500  base of every error the kit maps to a response
    ├── BadRequestError              400  malformed JSON, missing Idempotency-Key
    ├── UnauthorizedError            401  missing or wrong credential
    ├── PaymentRequiredError         402  payment declined
    ├── ForbiddenError               403
    ├── NotFoundError                404
    ├── ConflictError                409  out of stock, request still in flight
    ├── PayloadTooLargeError         413  body over the cap
    ├── UnprocessableError           422  validation, idempotency key reused with another body
    ├── TooManyRequestsError         429  per-client limit (carries Retry-After)
    └── UnavailableError             503  downstream or dependency unavailable (Retry-After)

Every problem body has `type`, `title`, `status`, `detail`, `request_id` and `trace_id`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Send

from servicekit import context

PROBLEM_JSON = "application/problem+json"


class ServiceError(Exception):
    """Base of the tree: an error with an HTTP status and a problem body."""

    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal"
    #: Seconds for `Retry-After`; set on a subclass to make it that error's default.
    retry_after: int | None = None

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        seconds = retry_after if retry_after is not None else self.retry_after
        self.retry_after = seconds
        if seconds is not None:
            self.headers.setdefault("Retry-After", str(max(1, int(seconds))))

    def to_body(self) -> bytes:
        """The problem document for this error, with the current request and trace ids."""
        return problem_body(
            self.status, self.detail, title=self.title, slug=self.slug, extra=self.extra
        )

    def to_response(self) -> Response:
        """This error as a problem+json response (what the exception handler sends)."""
        return Response(
            self.to_body(), status_code=self.status, headers=self.headers, media_type=PROBLEM_JSON
        )


class BadRequestError(ServiceError):
    status, title, slug = 400, "Bad Request", "bad-request"


class UnauthorizedError(ServiceError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class PaymentRequiredError(ServiceError):
    status, title, slug = 402, "Payment Required", "payment-required"


class ForbiddenError(ServiceError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFoundError(ServiceError):
    status, title, slug = 404, "Not Found", "not-found"


class ConflictError(ServiceError):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLargeError(ServiceError):
    status, title, slug = 413, "Payload Too Large", "payload-too-large"


class UnprocessableError(ServiceError):
    status, title, slug = 422, "Unprocessable Content", "unprocessable"


class TooManyRequestsError(ServiceError):
    status, title, slug, retry_after = 429, "Too Many Requests", "too-many-requests", 1


class UnavailableError(ServiceError):
    status, title, slug, retry_after = 503, "Service Unavailable", "unavailable", 1


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem_body(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    slug: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """Serialise a problem document carrying the current request and trace ids."""
    body: dict[str, Any] = {
        "type": f"/problems/{slug or 'http-' + str(status)}",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "request_id": context.get(context.REQUEST_ID),
        "trace_id": context.get(context.TRACE_ID),
    }
    if extra:
        body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


async def send_problem(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    """Write a problem+json answer (`body`, see `problem_body`) straight to ASGI `send`.

    For the kit's pure-ASGI layers, which answer below or without any framework response:
    recovery's 500, the credential's 401/403, shedding's 503s, the body cap's 413.
    """
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """A `Response` with a problem+json body."""
    return Response(
        problem_body(status, detail, title=title, slug=slug, extra=extra),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_JSON,
    )


def _validation_detail(errors: list[dict[str, Any]]) -> tuple[bool, str, list[dict[str, Any]]]:
    malformed = any(e.get("type") == "json_invalid" for e in errors)
    shown = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in errors[:20]
    ]
    if not errors:
        return malformed, "invalid request", shown
    where = ".".join(str(p) for p in errors[0].get("loc", ())) or "request"
    return malformed, f"{where}: {errors[0].get('msg', 'invalid')}", shown


async def _service_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return exc.to_response()


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    malformed, detail, shown = _validation_detail(list(exc.errors()))
    if malformed:
        return problem_response(400, f"malformed JSON body ({detail})", slug="malformed-json")
    return problem_response(422, detail, slug="validation", extra={"errors": shown})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    allowed = _allowed_methods(request) if exc.status_code == 405 else []
    if allowed:
        # Starlette names only the first route matching the path; RFC 9110 wants them all.
        headers["Allow"] = ", ".join(allowed)
    return problem_response(exc.status_code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    # iter_route_contexts flattens included routers (their routes carry the full path).
    for route in iter_route_contexts(request.app.router.routes):
        if route.methods:
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                methods |= route.methods
    return sorted(methods)


class ProblemDocument(BaseModel):
    """RFC 9457 problem document, as every error of the kit is answered (for OpenAPI)."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None
    trace_id: str | None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting problem+json answers for `statuses`."""
    return {
        status: {"model": ProblemDocument, "content": {PROBLEM_JSON: {}}} for status in statuses
    }


def install_error_handlers(app: FastAPI) -> None:
    """Map the tree, validation errors and routing errors to problem+json in one place."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
