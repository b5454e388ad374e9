"""API keys: parsed from `GATEWAY_API_KEYS`, looked up by the digest of the presented key.

Format: comma-separated `key:customer_id[:scope+scope]` entries, for example
`demo-key:customer-demo,loadtest-key:customer-loadtest:loadtest`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from servicekit import Caller, contract, token_matches
from starlette.types import Scope

#: Scopes a key may carry. `loadtest` may send dyed traffic (`X-Shadow-Traffic: 1`).
KNOWN_SCOPES = frozenset({"loadtest"})
#: A pool of development keys with the `loadtest` scope, one customer each, so one key's
#: per-client limit does not shape a load test (`make loadtest` uses them by default).
LOADTEST_POOL = tuple(f"loadtest-key-{i}" for i in range(1, 9))
#: Shipped with the template so `make up` works on a fresh clone; refused outside development.
DEMO_API_KEYS = ",".join(
    [
        "demo-key:customer-demo",
        "loadtest-key:customer-loadtest:loadtest",
        *(f"{key}:customer-loadtest-{i}:loadtest" for i, key in enumerate(LOADTEST_POOL, 1)),
    ]
)
DEMO_KEYS = frozenset({"demo-key", "loadtest-key", *LOADTEST_POOL})

# A key is a bearer token (RFC 6750 token68 minus ':' and ','); the customer id must pass the
# services' own X-Customer-ID check (servicekit.edge.credential)
# so the gateway never forwards one they drop.
_KEY = re.compile(r"^[A-Za-z0-9._~+/=-]{1,256}$")
_CUSTOMER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def digest(key: str) -> bytes:
    """SHA-256 of a key: what the key table stores and looks up by."""
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A known client. The key itself is kept only as a digest, so it never shows in a repr."""

    key_digest: bytes
    customer_id: str
    scopes: frozenset[str]

    def __repr__(self) -> str:
        return f"ApiKey(customer_id={self.customer_id!r}, scopes={sorted(self.scopes)!r})"


def _describe(entry: str, position: int) -> str:
    # Name the entry in errors (its position and the key's first characters) without echoing
    # the secret itself into logs.
    key, colon, rest = entry.strip().partition(":")
    shown = f"{key[:4]}..." if len(key) > 4 else key
    return f"#{position} '{shown}{colon}{rest}'"


def parse_entry(entry: str, position: int = 1) -> ApiKey:
    """Parse one `key:customer_id[:scope+scope]` entry; ValueError names the bad entry."""
    parts = entry.strip().split(":")
    if len(parts) not in (2, 3):
        raise ValueError(
            f"API key entry {_describe(entry, position)} must be key:customer_id[:scope+scope]"
        )
    key, customer = parts[0], parts[1]
    if not _KEY.match(key):
        raise ValueError(
            f"API key entry {_describe(entry, position)}: the key is empty or has characters "
            "outside A-Z a-z 0-9 . _ ~ + / = -"
        )
    if not _CUSTOMER.match(customer):
        raise ValueError(
            f"API key entry {_describe(entry, position)}: customer id must be 1-64 characters "
            "of A-Z a-z 0-9 _ . -"
        )
    scopes = frozenset(parts[2].split("+")) if len(parts) == 3 else frozenset()
    unknown = scopes - KNOWN_SCOPES
    if unknown:
        raise ValueError(
            f"API key entry {_describe(entry, position)}: unknown scope(s) {sorted(unknown)}; "
            f"known: {sorted(KNOWN_SCOPES)}"
        )
    return ApiKey(digest(key), customer, scopes)


def parse_api_keys(raw: str) -> tuple[ApiKey, ...]:
    """Parse the whole `GATEWAY_API_KEYS` value; empty entries are ignored, duplicates refused."""
    seen: set[bytes] = set()
    keys: list[ApiKey] = []
    for position, entry in enumerate(raw.split(","), start=1):
        if not entry.strip():
            continue
        api_key = parse_entry(entry, position)
        if api_key.key_digest in seen:
            raise ValueError(f"API key entry {_describe(entry, position)}: the key is listed twice")
        seen.add(api_key.key_digest)
        keys.append(api_key)
    return tuple(keys)


class KeyTable:
    """Find the client for a presented key.

    Lookup is a dict keyed by the SHA-256 of the key, not a loop of `hmac.compare_digest`:
    the work an attacker can time (hashing, then comparing digests) depends on the digest of
    their guess, which by preimage resistance tells them nothing about how close the guess is
    to a real key, and the cost stays O(1) however many keys are configured.
    """

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._by_digest: Mapping[bytes, ApiKey] = {k.key_digest: k for k in keys}

    def __len__(self) -> int:
        return len(self._by_digest)

    def find(self, presented: str | None) -> ApiKey | None:
        """The key's client, or None for a missing or unknown key."""
        if not presented:
            return None
        return self._by_digest.get(digest(presented))


def bearer(value: str | None) -> str | None:
    """The credentials of an `Authorization: Bearer <credentials>` value, else None."""
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


#: The operator, identified by the admin token.
ADMIN_CALLER = Caller(frozenset({contract.PUBLIC, contract.ADMIN}))


class ApiKeyTrust:
    """The gateway's `Trust`: the caller behind `Authorization: Bearer <key>`.

    The edge asks it once per request, before the access limits or any handler run: a known
    key makes a caller with its customer and its scopes (`scope:loadtest` may send the dye);
    the bearer of `admin_token` is the operator (`contract.ADMIN`: it may pin a request to a
    canary with `X-Canary-Route`; the admin routes still check the token themselves); anyone
    else is anonymous (the route answers 401). Every later step reads the caller from the
    request context instead of parsing the key again.
    """

    reads = frozenset({b"authorization"})

    def __init__(self, keys: KeyTable, admin_token: str = "") -> None:  # nosec B107: "" = no admin
        self.keys = keys
        self._admin = (admin_token,) if admin_token else ()

    def identify(self, scope: Scope, headers: Mapping[bytes, str]) -> Caller:
        """The caller of a known key, the operator, or the anonymous one."""
        presented = bearer(headers.get(b"authorization"))
        api_key = self.keys.find(presented)
        if api_key is None:
            if presented and self._admin and token_matches(presented, self._admin):
                return ADMIN_CALLER
            return contract.ANONYMOUS
        principals = frozenset({contract.PUBLIC, *(contract.scope(s) for s in api_key.scopes)})
        return Caller(principals, customer=api_key.customer_id, identity=api_key)
