"""Security headers on every response, errors included (OWASP REST Security Cheat Sheet).

CORS stays closed: no app of the template sends `Access-Control-Allow-*`, so browsers refuse
cross-origin reads. A team that needs browser clients adds starlette's `CORSMiddleware` with an
explicit origin list, never `*` together with credentials.

`Strict-Transport-Security` belongs to whatever terminates TLS (ingress, load balancer); the
services speak plain HTTP behind it. The `Server` banner is switched off at the server
(`uvicorn --no-server-header`, see infra/local/stack.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Sent unless the app already set the header itself.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # API answers are per caller: no shared cache may keep them.
    (b"cache-control", b"no-store"),
)
#: An API answer is data, never a page: nothing may load, nothing may frame it.
CONTENT_SECURITY_POLICY = (
    b"content-security-policy",
    b"default-src 'none'; frame-ancestors 'none'",
)


class SecurityHeadersMiddleware:
    """Pure ASGI: add `SECURITY_HEADERS` (and the CSP, except on the docs pages)."""

    def __init__(self, app: ASGIApp, *, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        # The Swagger UI page loads its scripts and styles from a CDN; a strict CSP breaks it.
        self.docs_paths = frozenset(docs_paths)
        self.headers = (*SECURITY_HEADERS, CONTENT_SECURITY_POLICY)
        self._names = frozenset(name for name, _ in self.headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = SECURITY_HEADERS if scope["path"] in self.docs_paths else self.headers
        names = self._names

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                # Usually the app set none of them: one pass, no set built.
                if any(name.lower() in names for name, _ in headers):
                    present = {name.lower() for name, _ in headers}
                    message["headers"] = [*headers, *(h for h in extra if h[0] not in present)]
                else:
                    message["headers"] = [*headers, *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
