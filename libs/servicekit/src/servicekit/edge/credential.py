"""Service credential: internal services answer only calls that carry it.

The credential travels in `X-Service-Token`. It is a short-lived token signed with the shared
secret `<P>_SERVICE_TOKEN`; the secret itself never travels::

    v1.<caller>.<audience>.<expires_at>.<signature>

- `caller`: the calling service (`gateway`, `order`), for logs and audits.
- `audience`: the service the token is for, so a token seen by one service (in a log, a proxy)
  cannot be replayed against another.
- `expires_at`: unix seconds. Lifetimes are short (5 min by default, at most 1 h accepted), so
  a captured token is worth little.
- `signature`: base64url HMAC-SHA256 of everything before it, compared in constant time.

`ServiceClient` mints a token per audience and reuses it until shortly before it expires, so a
call costs no cryptography; the receiving service checks a new token once (one HMAC per
accepted secret) and remembers it until it expires.

Rotation: `<P>_SERVICE_TOKEN_PREVIOUS` is accepted for verification, never used for signing.
Roll a new secret in three steps so that every running instance accepts every token in flight:
(1) everywhere: previous = new, token = old; (2) everywhere: token = new, previous = old;
(3) drop previous.

Answers: 401 when the caller is not authenticated (missing, malformed, bad signature, expired),
403 when the token is genuine but was minted for another service. In development only, the raw
secret is accepted as well, so `curl` and `/docs` work with the placeholder secret.

Health and metrics paths stay open for probes and Prometheus. A credentialed call may name the
customer it acts for in `X-Customer-ID` (set by the gateway from the API key, never by the public).

Mint a token by hand (the secret is read from `<AUDIENCE>_SERVICE_TOKEN`)::

    python -m servicekit.edge.mint payment
"""

from __future__ import annotations

import base64
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from starlette.types import Scope

from servicekit import contract
from servicekit.contract import ANONYMOUS, PUBLIC, SERVICE, Caller
from servicekit.errors import ForbiddenError, ServiceError, UnauthorizedError

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: A caller that presented a valid credential.
SERVICE_CALLER = Caller(frozenset({PUBLIC, SERVICE}))
VERSION = "v1"
#: Lifetime of a minted token, and the longest lifetime a service accepts.
DEFAULT_TTL_SECONDS = 300
MAX_TTL_SECONDS = 3600
#: Clock difference tolerated between two hosts.
LEEWAY_SECONDS = 30
#: A cached token is replaced when less than this share of its lifetime is left.
REFRESH_FRACTION = 0.2
#: Verified tokens a service remembers (a few per caller are live at any time).
VERIFIED_CACHE_SIZE = 1024

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_EXPIRY = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_MAX_TOKEN_LENGTH = 256

Clock = Callable[[], float]


class MissingCredentialError(UnauthorizedError):
    slug, title = "service-credential-missing", "Service credential required"


class InvalidCredentialError(UnauthorizedError):
    slug, title = "service-credential-invalid", "Service credential invalid"


class ExpiredCredentialError(UnauthorizedError):
    slug, title = "service-credential-expired", "Service credential expired"


class WrongAudienceError(ForbiddenError):
    slug, title = "service-credential-audience", "Service credential not for this service"


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says."""

    caller: str
    audience: str
    expires_at: int


def _sign(secret: str, payload: str) -> bytes:
    return hmac.digest(secret.encode(), payload.encode(), "sha256")


def _encode(signature: bytes) -> str:
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def mint_service_token(
    secret: str,
    *,
    caller: str,
    audience: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
) -> str:
    """A token for `audience`, signed with `secret`, valid for `ttl_seconds`."""
    if not secret:
        raise ValueError("the service secret is empty")
    for label, name in (("caller", caller), ("audience", audience)):
        if not _NAME.fullmatch(name):
            raise ValueError(f"{label} {name!r} must match {_NAME.pattern}")
    if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl_seconds must be within 1..{MAX_TTL_SECONDS}")
    expires_at = int(time.time() if now is None else now) + ttl_seconds
    payload = f"{VERSION}.{caller}.{audience}.{expires_at}"
    return f"{payload}.{_encode(_sign(secret, payload))}"


def verify_service_token(
    token: str | None, secrets: Sequence[str], *, audience: str, now: float
) -> Claims:
    """The token's claims; raises a 401 or 403 `ServiceError` naming what is wrong.

    The signature is checked before anything the token claims is believed, against every
    secret in turn without an early exit, so timing says nothing about which secret matched.
    """
    if not token:
        raise MissingCredentialError(
            "this service requires the service credential (X-Service-Token)"
        )
    parts = token.split(".") if len(token) <= _MAX_TOKEN_LENGTH else []
    if (
        len(parts) != 5
        or parts[0] != VERSION
        or not _NAME.fullmatch(parts[1])
        or not _NAME.fullmatch(parts[2])
        or not _EXPIRY.fullmatch(parts[3])
        or not _SIGNATURE.fullmatch(parts[4])
    ):
        raise InvalidCredentialError("the service credential is malformed")
    payload = token.rpartition(".")[0]
    presented = parts[4].encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(_encode(_sign(secret, payload)).encode(), presented)
    if not matched:
        raise InvalidCredentialError("the service credential has an invalid signature")
    claims = Claims(caller=parts[1], audience=parts[2], expires_at=int(parts[3]))
    if now > claims.expires_at + LEEWAY_SECONDS:
        raise ExpiredCredentialError("the service credential has expired; mint a new one")
    if claims.expires_at - now > MAX_TTL_SECONDS + LEEWAY_SECONDS:
        raise InvalidCredentialError(
            f"the service credential lives longer than {MAX_TTL_SECONDS} s; mint a shorter one"
        )
    if claims.audience != audience:
        raise WrongAudienceError(
            f"the service credential was minted for {claims.audience!r}, not {audience!r}"
        )
    return claims


def token_matches(presented: str | None, accepted: Iterable[str]) -> bool:
    """Constant-time comparison against every accepted token (no early exit)."""
    if not presented:
        return False
    given = presented.encode()
    ok = False
    for token in accepted:
        ok |= hmac.compare_digest(given, token.encode())
    return ok


class ServiceCredential:
    """The token a client sends to one audience: minted once, reused until near expiry."""

    def __init__(
        self,
        secret: str,
        *,
        caller: str,
        audience: str,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        clock: Clock = time.time,
    ) -> None:
        self._secret = secret
        self.caller = caller
        self.audience = audience
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        # Minted now, so a bad secret or name fails at construction, not on the first call.
        self._token = self._mint(clock())

    def _mint(self, now: float) -> str:
        self._refresh_at = now + self.ttl_seconds * (1 - REFRESH_FRACTION)
        return mint_service_token(
            self._secret,
            caller=self.caller,
            audience=self.audience,
            ttl_seconds=self.ttl_seconds,
            now=now,
        )

    def token(self) -> str:
        """The current token (one clock read per call; a new HMAC only every few minutes)."""
        now = self._clock()
        if now >= self._refresh_at:
            # Racing callers may both mint; each result is valid, so no lock is needed.
            self._token = self._mint(now)
        return self._token

    def __repr__(self) -> str:
        return f"ServiceCredential(caller={self.caller!r}, audience={self.audience!r})"


class ServiceCredentialTrust:
    """The `Trust` of an internal service: a valid service credential, or a 401/403 refusal.

    The edge asks it first (servicekit.contract), so a call without the credential is refused
    before anything counts or sheds it, and restricted values (priority, customer, the dye) are
    honoured only from credentialed callers. Probes and scrapes never reach it.
    """

    reads = frozenset({contract.SERVICE_TOKEN.raw})

    def __init__(
        self,
        *,
        secrets: Iterable[str],
        audience: str,
        accept_raw_secret: bool = False,
        open_paths: Iterable[str] = OPEN_PATHS,
        clock: Clock = time.time,
    ) -> None:
        self.secrets = tuple(s for s in secrets if s)
        if not self.secrets:
            raise ValueError("ServiceCredentialTrust needs at least one secret")
        self.audience = audience
        self.accept_raw_secret = accept_raw_secret
        self.open_paths = frozenset(open_paths)
        self.clock = clock
        # Tokens already verified, until they expire: callers reuse a token for minutes, so
        # most calls cost a dict lookup instead of an HMAC. Only genuine tokens get in, and the
        # secrets change only with a restart, which empties it.
        self._verified: dict[str, Claims] = {}

    def identify(self, scope: Scope, headers: Mapping[bytes, str]) -> Caller:
        """A service caller, or raise the 401/403 `ServiceError` that refuses the call."""
        if scope["path"] in self.open_paths:
            return ANONYMOUS
        token = headers.get(contract.SERVICE_TOKEN.raw)
        try:
            self._check(token)
        except ServiceError as refusal:
            if refusal.status == 401:
                refusal.headers["WWW-Authenticate"] = 'ServiceToken realm="internal"'
            raise
        return SERVICE_CALLER

    def _check(self, token: str | None) -> None:
        if self.accept_raw_secret and token_matches(token, self.secrets):
            return
        now = self.clock()
        if token is not None:
            known = self._verified.get(token)
            if known is not None and now <= known.expires_at + LEEWAY_SECONDS:
                return
        claims = verify_service_token(token, self.secrets, audience=self.audience, now=now)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[str(token)] = claims
