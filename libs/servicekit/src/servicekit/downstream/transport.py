"""The network under `ServiceClient`: httpx's API on aiohttp's connection pool.

Why not httpx's own transport: its pool (httpcore 1.0.9) walks every pooled connection on each
request and on each release, and asks each idle socket whether it is readable through anyio's
attribute lookup (encode/httpx#3215; rewritten only in the httpx2 fork). Profiled in the
gateway (py-spy, gateway -> inventory reads at 16 connections), the pool took three quarters
of the process's CPU; aiohttp's pool, made for the job, takes a fraction of it. B7 measures
the checkout before and after (the optimisation table), B4 the gateway's capacity.

So the kit keeps httpx's API, which callers and tests use (`httpx.Response`, `MockTransport`,
`TracingTransport`), and replaces only the part below it, an `httpx.AsyncBaseTransport`:

- the request goes out as httpx built it (method, URL, headers, body);
- the answer comes back as an `httpx.Response` with the raw body, which httpx decodes as usual
  (aiohttp's own decompression is off, so a body is decoded once);
- httpx's per-request timeouts map onto aiohttp's: `pool` -> `connect` (aiohttp's covers the
  wait for a free connection), `connect` -> `sock_connect`, `read` -> `sock_read`;
- aiohttp's errors map onto httpx's (`ConnectError` for a refused connection, so a dead canary
  is still recognised; `ConnectTimeout`, `ReadTimeout`, `RemoteProtocolError`, `ReadError`);
- environment proxies are ignored (as httpx ignores them for an explicit transport): calls
  between services never go through a forward proxy.
"""

from __future__ import annotations

import aiohttp
import httpx

#: Idle connections are closed after this long: below uvicorn's own keep-alive timeout (5 s),
#: so the client drops a connection before the server does and never sends into one that the
#: server is closing.
KEEPALIVE_SECONDS = 4.0
#: Request headers aiohttp sets itself from the URL and the body.
_COMPUTED = frozenset({"host", "content-length", "transfer-encoding"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (its pool: `max_connections`), opened in the loop on first use."""

    def __init__(self, *, max_connections: int = 100) -> None:
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # httpx decodes the body by its content-encoding
            skip_auto_headers=("User-Agent", "Accept-Encoding"),  # httpx's are sent instead
            timeout=aiohttp.ClientTimeout(total=None),  # per request, from httpx's Timeout
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        timeout = request.extensions.get("timeout", {})
        headers = [(k, v) for k, v in request.headers.multi_items() if k not in _COMPUTED]
        body = await request.aread()
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            ) as answer:
                content = await answer.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        return httpx.Response(
            answer.status,
            headers=list(answer.raw_headers),
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
