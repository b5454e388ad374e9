"""Header allow-lists, both ways. Anything not listed is dropped, hop-by-hop headers included.

Inbound, only `content-type` and the contract's copied values (`Forward.COPY`: the idempotency
key) are copied from the client. The contract's context values (request id, trace context,
baggage, the dye, the customer) reach the upstream through the request context
(`servicekit.propagation_headers`): the edge parsed them and kept only what this caller may
set (servicekit.contract).
"""

from __future__ import annotations

from collections.abc import Iterable

from servicekit import contract

#: Client headers copied as they are.
REQUEST_ALLOW = frozenset(
    {"content-type"}
    | {hop.header for hop in contract.REQUEST_HEADERS if hop.forward is contract.Forward.COPY}
)
#: Client headers carried through the request context instead.
REQUEST_VIA_CONTEXT = frozenset(
    hop.header for hop in contract.REQUEST_HEADERS if hop.forward is contract.Forward.CONTEXT
)
#: Upstream response headers copied back. `content-length` is recomputed and
#: `content-encoding` is dropped because httpx has already decoded the body.
RESPONSE_ALLOW = frozenset(
    {"content-type", "retry-after", "location"} | {h.lower() for h in contract.RESPONSE_HEADERS}
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
