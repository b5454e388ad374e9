"""The request body cap: 413 over `<P>_MAX_BODY_BYTES`, by Content-Length or while streaming."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicekit.errors import PayloadTooLargeError, problem_body, send_problem

#: HTTP versions whose body, without Transfer-Encoding, is framed by Content-Length alone.
_LENGTH_FRAMED = frozenset({"1.0", "1.1"})
#: `BodyCap.check` verdicts.
REFUSE, ADMIT, COUNT = 0, 1, 2


class BodyCap:
    """The request body cap: 413 over `max_bytes`, by Content-Length or while streaming.

    Applied by the admission layer (`AdmissionMiddleware`), innermost: only admitted,
    authorised calls get to send a body. `check` is synchronous, so the common case (a body
    framed by its Content-Length, or none) costs no extra coroutine.
    """

    __slots__ = ("max_bytes",)

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def check(self, scope: Scope) -> int:
        """REFUSE (declared too long or malformed), ADMIT (nothing to count) or COUNT."""
        declared: bytes | None = None
        chunked = False
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == b"transfer-encoding":
                chunked = True
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return REFUSE
        if not chunked and scope.get("http_version") in _LENGTH_FRAMED:
            # HTTP/1.x without Transfer-Encoding: the body is Content-Length bytes or none
            # (RFC 9112, 6.3), and the server holds the client to it: nothing to count.
            return ADMIT
        return COUNT

    async def counted(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run `app` with the body counted as it arrives; 413 once it passes the cap."""
        received = 0
        exceeded = False
        limit = self.max_bytes

        async def receive_capped() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Frameworks turn errors raised while parsing into their own 400, so the
                    # over-long stream is cut here and the 413 is written in send_capped.
                    exceeded = True
                    raise PayloadTooLargeError(f"request body over {limit} bytes")
            return message

        refused = False

        async def send_capped(message: Message) -> None:
            nonlocal refused
            if exceeded:
                if not refused:
                    refused = True
                    await self.refuse(send)
                return
            await send(message)

        try:
            await app(scope, receive_capped, send_capped)
        except PayloadTooLargeError:
            if refused:
                return
            refused = True
            await self.refuse(send)

    async def refuse(self, send: Send) -> None:
        body = problem_body(
            413, f"request body over {self.max_bytes} bytes", slug="payload-too-large"
        )
        await send_problem(send, 413, body, (b"connection", b"close"))
