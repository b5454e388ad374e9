"""The wire contract: every value that crosses a hop, declared once.

A `Hop` names its header, its parser and bounds, who may set it, where it lives in the request
context, and how it travels on. The edge reads incoming values through these declarations, the
outbound client writes them, the gateway selects what it copies by them; incoming and outgoing
code import this module, never each other. Identifier patterns live here too.

    value             header                  set by             context key    forwarded
    request id        X-Request-ID            anyone             REQUEST_ID     from context
    trace context     traceparent             anyone             TRACE_*        from the span
    baggage           baggage                 anyone (8 KiB)     BAGGAGE        from context
    deadline          X-Request-Timeout-Ms    anyone (shorter)   DEADLINE       time left
    priority          X-Request-Priority      service            PRIORITY       from context
    dyed traffic      X-Shadow-Traffic        service, loadtest  SHADOW         from context
      (in baggage)    baggage traffic=shadow  service, loadtest  SHADOW         from context
    customer          X-Customer-ID           service            CUSTOMER_ID    from context
    canary pin        X-Canary-Route          service, admin,    CANARY_ROUTE   from context
                                              loadtest
    credential        X-Service-Token         (the credential)   -              minted per hop
    idempotency key   Idempotency-Key         anyone             -              copied

"Who may set it" is decided once, at the edge, before anything counts, sheds or stores the
request: the edge asks the app's `Trust` who the caller is (a gateway API key and its scopes, or
a valid service credential) and keeps a restricted value only when that caller may set it. A
value marked `refuse_untrusted` (the dye) is not silently dropped but refused with 403, so a
caller learns that its marker was not honoured.

The dye rides twice: in its header and as the W3C baggage member `traffic=shadow`, which
tools that carry baggage but not our headers keep across their hops. The edge honours the
member under the header's rule (only from callers that may dye); from anyone else it is
ignored, not refused, because baggage is public and third-party code sets members of its own.
The outbound client rewrites the member from the context on every hop, so a member the edge
did not honour never travels on.

Answers carry `X-Degraded: <reason>` when served in degraded mode and `Idempotent-Replayed:
true` when replayed from an idempotency record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from starlette.types import Scope

from servicekit import context

T = TypeVar("T")

#: Who may set a value: anyone, a caller with a valid service credential, or a gateway API
#: key carrying a scope (`scope("loadtest")`).
PUBLIC = "public"
SERVICE = "service"


def scope(name: str) -> str:
    """The principal of a gateway API key that carries scope `name`."""
    return f"scope:{name}"


LOADTEST = scope("loadtest")
#: The gateway's operator: `Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`.
ADMIN = "admin"

# Identifier patterns: every id, sku and key is checked for format and length before it reaches
# a database, with the same pattern on every hop.
#: A SKU (also the product list's cursor): one path segment, no leading punctuation.
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
#: An order or charge id (UUIDs in practice).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
#: Printable ASCII, 1..255 characters.
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"
IDEMPOTENCY_KEY_MAX_LENGTH = 255
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
MAX_BAGGAGE_BYTES = 8192
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Forward(Enum):
    """How a value reaches the next hop."""

    #: The outbound client writes it from the request context (`propagation_headers`).
    CONTEXT = "context"
    #: The gateway copies the client's header as it came (after the edge checked it).
    COPY = "copy"
    #: Made anew for every call (the service credential).
    MINTED = "minted"


def _matching(pattern: str) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)

    def parse(raw: str) -> str | None:
        return raw if compiled.match(raw) else None

    return parse


def parse_traceparent(raw: str | None) -> tuple[str, str, str] | None:
    """(trace_id, parent span id, flags) from a valid W3C traceparent, else None."""
    if not raw:
        return None
    match = _TRACEPARENT.match(raw.strip().lower())
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2), match.group(3)


def _baggage(raw: str) -> str | None:
    return raw if 0 < len(raw) <= MAX_BAGGAGE_BYTES else None


def _milliseconds(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and len(raw) <= 9 else None


def _critical(raw: str) -> str | None:
    return context.CRITICAL if raw == context.CRITICAL else None


def _flag(raw: str) -> bool | None:
    return True if raw == "1" else None


def _route(raw: str) -> str | None:
    return raw if raw in ROUTES else None


def _credential(raw: str) -> str | None:
    return raw if 0 < len(raw) <= 256 else None


@dataclass(frozen=True, eq=False)
class Hop(Generic[T]):
    """One value that crosses a hop: `name` is the header as documented."""

    name: str
    parse: Callable[[str], T | None]
    set_by: frozenset[str]
    forward: Forward
    key: context.Key[T] | None = None
    #: A caller that may not set it gets 403 (instead of the value being dropped).
    refuse_untrusted: bool = False
    refusal: str = ""
    #: Lowercase header name, as HTTP/2 and ASGI carry it; `raw` as bytes for ASGI scopes.
    header: str = field(init=False)
    raw: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", self.name.lower())
        object.__setattr__(self, "raw", self.name.lower().encode("latin-1"))

    @property
    def public(self) -> bool:
        """Anyone may set it."""
        return PUBLIC in self.set_by

    def allowed(self, principals: frozenset[str]) -> bool:
        """Whether a caller with `principals` may set this value."""
        return not self.set_by.isdisjoint(principals)

    def __repr__(self) -> str:
        return f"Hop({self.name!r})"


_ANYONE = frozenset({PUBLIC})
_SERVICES = frozenset({SERVICE})

REQUEST_ID: Hop[str] = Hop(
    "X-Request-ID", _matching(REQUEST_ID_PATTERN), _ANYONE, Forward.CONTEXT, context.REQUEST_ID
)
TRACEPARENT: Hop[tuple[str, str, str]] = Hop(
    "traceparent", parse_traceparent, _ANYONE, Forward.CONTEXT
)
BAGGAGE: Hop[str] = Hop("baggage", _baggage, _ANYONE, Forward.CONTEXT, context.BAGGAGE)
#: The caller's remaining budget in milliseconds: it can only shorten the request's deadline.
DEADLINE: Hop[int] = Hop("X-Request-Timeout-Ms", _milliseconds, _ANYONE, Forward.CONTEXT)
#: `critical`: saga confirmation and compensation calls, shed last on every hop.
PRIORITY: Hop[str] = Hop(
    "X-Request-Priority", _critical, _SERVICES, Forward.CONTEXT, context.PRIORITY
)
#: Dyed load-test traffic: its writes land in shadow tables on every hop.
SHADOW: Hop[bool] = Hop(
    "X-Shadow-Traffic",
    _flag,
    frozenset({SERVICE, LOADTEST}),
    Forward.CONTEXT,
    context.SHADOW,
    refuse_untrusted=True,
    refusal="X-Shadow-Traffic is accepted only from API keys with the loadtest scope",
)
#: The dye's W3C baggage member (`traffic=shadow`), under `SHADOW`'s rule.
SHADOW_BAGGAGE_MEMBER, SHADOW_BAGGAGE_VALUE = "traffic", "shadow"


def _baggage_members(raw: str) -> list[str]:
    return [member.strip() for member in raw.split(",") if member.strip()]


def _member_key(member: str) -> str:
    return member.partition("=")[0].strip()


def baggage_dyed(raw: str | None) -> bool:
    """Whether W3C baggage `raw` carries the dye member (`traffic=shadow`)."""
    if not raw:
        return False
    for member in _baggage_members(raw):
        key, _, value = member.partition("=")
        if key.strip() == SHADOW_BAGGAGE_MEMBER:
            return value.partition(";")[0].strip() == SHADOW_BAGGAGE_VALUE
    return False


def baggage_with_dye(raw: str | None, dyed: bool) -> str | None:
    """Baggage to send on: `raw` without any dye member, plus `traffic=shadow` when `dyed`."""
    members = [m for m in _baggage_members(raw or "") if _member_key(m) != SHADOW_BAGGAGE_MEMBER]
    if dyed:
        members.append(f"{SHADOW_BAGGAGE_MEMBER}={SHADOW_BAGGAGE_VALUE}")
    return ",".join(members) or None


#: The customer a credentialed call acts for (the gateway sets it from the API key).
CUSTOMER: Hop[str] = Hop(
    "X-Customer-ID",
    _matching(CUSTOMER_ID_PATTERN),
    _SERVICES,
    Forward.CONTEXT,
    context.CUSTOMER_ID,
)
#: Values of `X-Canary-Route`: which upstream a pinned request's calls go to.
CANARY, STABLE = "canary", "stable"
ROUTES = frozenset({CANARY, STABLE})
#: Pins a request (and every call it makes, on every hop) to the canary or the stable
#: upstream of each downstream that has a canary route (servicekit.downstream.routing); for
#: tests and load runs, so only operators, load-test keys and services may set it.
CANARY_ROUTE: Hop[str] = Hop(
    "X-Canary-Route",
    _route,
    frozenset({SERVICE, ADMIN, LOADTEST}),
    Forward.CONTEXT,
    context.CANARY_ROUTE,
)
#: The service credential (servicekit.edge.credential); never accepted from the public.
SERVICE_TOKEN: Hop[str] = Hop("X-Service-Token", _credential, _SERVICES, Forward.MINTED)
IDEMPOTENCY_KEY: Hop[str] = Hop(
    "Idempotency-Key", _matching(IDEMPOTENCY_KEY_PATTERN), _ANYONE, Forward.COPY
)

#: Values the edge reads into the request context.
INBOUND: tuple[Hop[Any], ...] = (
    REQUEST_ID,
    TRACEPARENT,
    BAGGAGE,
    DEADLINE,
    PRIORITY,
    SHADOW,
    CUSTOMER,
    CANARY_ROUTE,
)
#: Every request header of the contract.
REQUEST_HEADERS: tuple[Hop[Any], ...] = (*INBOUND, SERVICE_TOKEN, IDEMPOTENCY_KEY)

#: Answer headers of the contract.
DEGRADED_HEADER = "X-Degraded"
REPLAYED_HEADER = "Idempotent-Replayed"
RESPONSE_HEADERS = (DEGRADED_HEADER, REPLAYED_HEADER)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request, as the app's `Trust` established it at the edge."""

    principals: frozenset[str]
    #: The customer the request acts for (the gateway's API key, or X-Customer-ID).
    customer: str | None = None
    #: What the trust found (the gateway's API key record), for the app's own use.
    identity: object | None = None


ANONYMOUS = Caller(_ANYONE)
#: The request context's caller (set by the edge for every request).
CALLER: context.Key[Caller] = context.Key("caller")


class Trust(Protocol):
    """Who the caller is: the app's answer, asked by the edge before anything else runs.

    `reads` names the request headers (lowercase bytes) it needs; the edge collects them in its
    one pass over the headers. `identify` returns the caller, or raises a `ServiceError` to
    refuse the request outright (an internal service called without its credential: 401).
    """

    reads: frozenset[bytes]

    def identify(self, scope: Scope, headers: Mapping[bytes, str]) -> Caller: ...
