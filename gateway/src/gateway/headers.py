"""Header allow-lists, both ways. Anything not listed is dropped, hop-by-hop headers included.

Inbound, only `content-type` and `idempotency-key` are copied from the client. `x-request-id`,
`traceparent`, `baggage` and `x-shadow-traffic` reach the upstream too, but through the request
context (`servicekit.propagation_headers`): the edge middleware validated them, and the
shadow flag is set only after the key's `loadtest` scope was checked.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Client headers copied as they are.
REQUEST_ALLOW = frozenset({"content-type", "idempotency-key"})
#: Client headers carried through the request context instead.
REQUEST_VIA_CONTEXT = frozenset({"x-request-id", "traceparent", "baggage", "x-shadow-traffic"})
#: Upstream response headers copied back. `content-length` is recomputed and
#: `content-encoding` is dropped because httpx has already decoded the body.
RESPONSE_ALLOW = frozenset(
    {"content-type", "retry-after", "x-degraded", "location", "idempotent-replayed"}
)
#: RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    # Headers a sender names in `Connection` are hop-by-hop for that message too.
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _select(headers: Iterable[tuple[str, str]], allow: frozenset[str]) -> dict[str, str]:
    pairs = list(headers)
    dropped = HOP_BY_HOP | _connection_tokens(pairs)
    return {
        name.lower(): value
        for name, value in pairs
        if name.lower() in allow and name.lower() not in dropped
    }


def request_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The client headers to copy to the upstream."""
    return _select(headers, REQUEST_ALLOW)


def response_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The upstream response headers to copy back to the client."""
    return _select(headers, RESPONSE_ALLOW)
