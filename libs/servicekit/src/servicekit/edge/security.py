"""Security headers on every response, errors included (OWASP REST Security Cheat Sheet).

CORS stays closed: no app of the template sends `Access-Control-Allow-*`, so browsers refuse
cross-origin reads. A team that needs browser clients adds starlette's `CORSMiddleware` with an
explicit origin list, never `*` together with credentials.

`Strict-Transport-Security` belongs to whatever terminates TLS (ingress, load balancer); the
services speak plain HTTP behind it. The `Server` banner is switched off at the server:
`servicekit.serve`, the one launcher.
"""

from __future__ import annotations

from collections.abc import Iterable

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


class SecurityHeaders:
    """The headers each answer gets: all of them, or all but the CSP on the docs pages.

    Applied by the kit's edge layer (`servicekit.edge.middleware.EdgeMiddleware`) in the same pass
    that echoes the request id, so every answer carries them, recovery's 500 included.
    """

    __slots__ = ("_docs_paths", "_names", "all")

    def __init__(self, *, docs_paths: Iterable[str] = ()) -> None:
        # The Swagger UI page loads its scripts and styles from a CDN; a strict CSP breaks it.
        self._docs_paths = frozenset(docs_paths)
        self.all = (*SECURITY_HEADERS, CONTENT_SECURITY_POLICY)
        self._names = frozenset(name for name, _ in self.all)

    def for_path(self, path: str) -> tuple[tuple[bytes, bytes], ...]:
        """The headers to add to the answer for `path`."""
        return SECURITY_HEADERS if path in self._docs_paths else self.all

    def add(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        own: tuple[bytes, bytes],
        extra: tuple[tuple[bytes, bytes], ...],
    ) -> list[tuple[bytes, bytes]]:
        """`headers`, then `own` (the edge's header, e.g. the request id), then those of
        `extra` the app did not set itself.

        ASGI response header names are lowercase, so they are compared as they are.
        """
        if not isinstance(headers, list | tuple):  # ASGI allows any iterable: read it once
            headers = list(headers)
        names = self._names
        for name, _ in headers:
            if name in names:  # rare: the app set one of them itself
                present = {name for name, _ in headers}
                return [*headers, own, *(h for h in extra if h[0] not in present)]
        return [*headers, own, *extra]
