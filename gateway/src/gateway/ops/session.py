"""The ops page's login session: a signed cookie, and the CSRF token bound to it.

The operator logs in with the admin token through a form (never in a URL). The answer sets
`ops_session`: who logged in, until when, and a random id, signed with HMAC-SHA256 under a key
derived from `GATEWAY_ADMIN_TOKEN` (so it holds across the gateway's workers and replicas, and
rotating the admin token ends every session). The cookie is HttpOnly, SameSite=Strict, limited
to `/ops`, and Secure outside development and test (TLS ends in front of the gateway there).

Every action also needs the CSRF token: HMAC of the session id under the same key, given to
the page in a `<meta>` and sent back as `X-CSRF-Token`. SameSite=Strict already keeps the
cookie off other sites' requests; the token is the second lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

COOKIE = "ops_session"
CSRF_HEADER = "x-csrf-token"
#: How long a login lasts.
LIFETIME_SECONDS = 8 * 3600
#: Operator names: what the action log says about who did it.
OPERATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,47}$")


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in operator."""

    operator: str
    expires_at: int
    sid: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens under a key from the admin token."""

    def __init__(self, admin_token: str) -> None:
        self._key = hmac.new(
            admin_token.encode(), b"gateway-ops-session-v1", hashlib.sha256
        ).digest()

    def _mac(self, purpose: bytes, payload: bytes) -> str:
        return _b64(hmac.new(self._key, purpose + b"\0" + payload, hashlib.sha256).digest())

    def issue(self, operator: str, *, now: float | None = None) -> tuple[Session, str]:
        """A new session for `operator`, and its cookie value."""
        expires = int(now if now is not None else time.time()) + LIFETIME_SECONDS
        session = Session(operator, expires, secrets.token_urlsafe(16))
        payload = json.dumps(
            {"op": session.operator, "exp": session.expires_at, "sid": session.sid},
            separators=(",", ":"),
        ).encode()
        return session, f"{_b64(payload)}.{self._mac(b'session', payload)}"

    def verify(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session of a cookie value, or None if absent, forged, malformed or expired."""
        if not cookie or len(cookie) > 1024 or cookie.count(".") != 1:
            return None
        encoded, mac = cookie.split(".")
        try:
            payload = _unb64(encoded)
            fields = json.loads(payload)
            session = Session(str(fields["op"]), int(fields["exp"]), str(fields["sid"]))
        except (ValueError, KeyError, TypeError):
            return None
        if not hmac.compare_digest(mac, self._mac(b"session", payload)):
            return None
        if session.expires_at <= (now if now is not None else time.time()):
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        """The CSRF token of `session`."""
        return self._mac(b"csrf", session.sid.encode())

    def csrf_matches(self, session: Session, presented: str | None) -> bool:
        """True if `presented` is the CSRF token of `session` (constant time)."""
        return bool(presented) and hmac.compare_digest(
            str(presented).encode(), self.csrf_token(session).encode()
        )
