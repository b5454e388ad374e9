"""Outbound HTTP: one client per downstream service, made once, with explicit timeouts.

Every call carries the caller's `X-Request-ID`, a `traceparent` continuing the caller's trace,
`baggage`, the shadow flag, the remaining deadline and the service credential. A transport
failure or timeout becomes `UnavailableError` (503), never a 500.

Every attempt goes through the downstream's circuit breaker (`downstream.breaker`): an open
breaker raises `CircuitOpenError` (503 with Retry-After) without sending anything. Idempotent
calls are retried within the request's deadline and a retry budget (`servicekit.downstream.retry`).

With a `RoutingTable` (servicekit.downstream.routing), each call picks its upstream once, stable
or canary, and keeps it for its retries. A canary that refuses the connection (nothing was
sent, so any call may go again) is suspended and the call goes to stable at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import httpx

from servicekit import context, contract
from servicekit.downstream.breaker import AsyncCircuitBreaker, CircuitOpenError, Permit
from servicekit.downstream.retry import RETRYABLE_STATUSES, RetryPolicy
from servicekit.downstream.routing import RoutingTable
from servicekit.downstream.transport import AiohttpTransport
from servicekit.edge.credential import ServiceCredential
from servicekit.edge.middleware import new_span_id
from servicekit.errors import UnavailableError
from servicekit.once import Once
from servicekit.telemetry.metrics import Metrics
from servicekit.telemetry.tracing import TracingTransport

_REQUEST_ID, _TRACEPARENT, _BAGGAGE = (
    contract.REQUEST_ID.name,
    contract.TRACEPARENT.name,
    contract.BAGGAGE.name,
)
_SHADOW, _PRIORITY, _CUSTOMER = (
    contract.SHADOW.name,
    contract.PRIORITY.name,
    contract.CUSTOMER.name,
)
_SERVICE_TOKEN, _DEADLINE = contract.SERVICE_TOKEN.name, contract.DEADLINE.name
_CANARY_ROUTE = contract.CANARY_ROUTE.name


def propagation_headers() -> dict[str, str]:
    """The contract's values forwarded from the request context (`Forward.CONTEXT`).

    The request's id, trace and baggage; the dye (header and baggage member `traffic=shadow`),
    the priority and the customer when set (the edge set them only for callers that may).
    The deadline and the credential are added per call by `ServiceClient`.
    """
    headers: dict[str, str] = {}
    request_id = context.get(context.REQUEST_ID)
    if request_id:
        headers[_REQUEST_ID] = request_id
    trace_id = context.get(context.TRACE_ID)
    if trace_id:
        # The sampling decision travels on; a traced client replaces this with its span's id.
        flags = context.get(context.TRACE_FLAGS, "01")
        headers[_TRACEPARENT] = f"00-{trace_id}-{new_span_id()}-{flags}"
    dyed = bool(context.get(context.SHADOW))
    # The dye rides in baggage too (contract.SHADOW_BAGGAGE_MEMBER), written from the context.
    baggage = contract.baggage_with_dye(context.get(context.BAGGAGE), dyed)
    if baggage:
        headers[_BAGGAGE] = baggage
    if dyed:
        headers[_SHADOW] = "1"
    # A critical call stays critical on every hop it makes (shed last, servicekit.admission).
    if context.get(context.PRIORITY) == context.CRITICAL:
        headers[_PRIORITY] = context.CRITICAL
    customer = context.get(context.CUSTOMER_ID)
    if customer:
        headers[_CUSTOMER] = customer
    pin = context.get(context.CANARY_ROUTE)
    if pin:
        headers[_CANARY_ROUTE] = pin
    return headers


#: Problem types of an upstream's admission layer turning load away (servicekit.admission):
#: the upstream is alive and answered at once. Counting them would open its breaker under
#: load, and a recovery agent would then restart an overloaded service, which only makes it
#: worse; callers back off through `Retry-After` and the retry budget instead.
SHEDDING_PROBLEMS = frozenset({"/problems/overloaded", "/problems/read-only"})


def counts_against_breaker(response: httpx.Response, *, backpressure: bool = True) -> bool:
    """Whether an answer is a failure for the breaker: 408, 429 and 5xx.

    A deliberate 4xx (out of stock, declined, not found) is a healthy dependency saying no,
    and so is an upstream shedding load (`SHEDDING_PROBLEMS`, with `Retry-After`).
    With `backpressure=False`, no 429 or 503 carrying `Retry-After` counts: a live upstream
    shedding load on purpose, or relaying its own dependency's outage.
    """
    status = response.status_code
    if status < 500 and status not in (408, 429):
        return False
    deliberate = status in (429, 503) and "retry-after" in response.headers
    if deliberate and problem_type(response) in SHEDDING_PROBLEMS:
        return False
    return backpressure or not deliberate


def problem_type(response: httpx.Response) -> str | None:
    """The `type` of a problem+json answer; None for any other answer or an unreadable one."""
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    try:
        document = response.json()
    except ValueError:
        return None
    kind = document.get("type") if isinstance(document, dict) else None
    return kind if isinstance(kind, str) else None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds asked by `Retry-After` (inf when not a number of seconds), None when absent."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    return float(value) if value.strip().isdigit() else math.inf


class ServiceClient:
    """An httpx.AsyncClient for one downstream (on `AiohttpTransport`), made once on first use.

    `breaker` guards every attempt (by default a breaker of its own with default settings);
    `backpressure_trips_breaker=False` keeps an upstream's deliberate 429/503 out of its count
    (see `counts_against_breaker`). `retry` sets retries and their budget; `metrics` (the
    app's) records `http_client_request_duration_seconds` and `servicekit_client_retries`.
    `routing` (shared by a service's clients) splits calls between `base_url`, the stable
    upstream, and the downstream's canary route; the pool keeps connections per upstream, and
    an upstream no longer routed to keeps its idle ones until they expire (4 s).
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        token: str,
        caller: str = "service",
        audience: str | None = None,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
        breaker: AsyncCircuitBreaker | None = None,
        backpressure_trips_breaker: bool = True,
        retry: RetryPolicy | None = None,
        metrics: Metrics | None = None,
        routing: RoutingTable | None = None,
    ) -> None:
        self.routing = routing
        self.breaker = breaker or AsyncCircuitBreaker(name, metrics=metrics)
        self._backpressure_trips_breaker = backpressure_trips_breaker
        self.retry = retry or RetryPolicy()
        self._retry_budget = self.retry.new_budget()
        self.metrics = metrics
        if metrics is not None:
            for outcome in ("sent", "budget_exhausted"):
                metrics.client_retries.labels(name, outcome)
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # `token` is the shared secret; what travels is a short-lived token signed with it,
        # minted for the downstream (`audience`, by default its name) and reused until near expiry.
        self._credential = ServiceCredential(token, caller=caller, audience=audience or name)
        self._transport = transport
        self._max_connections = max_connections
        self._client: Once[httpx.AsyncClient] = Once(self._build, name=f"http:{name}")

    def _build(self) -> httpx.AsyncClient:
        # httpx's API on aiohttp's pool: httpx's own pool costs over 1 ms of CPU per call
        # under concurrency (servicekit.downstream.transport says why and what was measured).
        inner = self._transport or AiohttpTransport(max_connections=self._max_connections)
        # No base_url: each call names its upstream (stable or canary), see `request`.
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=min(1.0, self.timeout)),
            # A client span per attempt, named in the `traceparent` it sends (when traced).
            transport=TracingTransport(inner, peer=self.name),
            follow_redirects=False,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send a request and return its answer, whatever the status.

        Transport errors and timeouts raise `UnavailableError`; an open breaker raises
        `CircuitOpenError`, which therefore always means that this call sent nothing (a retry
        refused by a breaker that opened meanwhile ends with the earlier attempt's outcome, so
        a caller never mistakes "maybe done" for "not done"). Idempotent calls (by method, or
        `idempotent=True` for a POST that carries an Idempotency-Key) are retried on transport
        errors (not timeouts) and on 502/503/504, with backoff and jitter, within the request's
        deadline and the retry budget.
        """
        retryable = self.retry.is_idempotent(method) if idempotent is None else idempotent
        self._retry_budget.deposit()
        # The upstream is chosen once: the call and its retries finish where they started.
        routing = self.routing
        upstream, canary = self.base_url, False
        if routing is not None:
            upstream, canary = routing.choose(self.name, upstream)
        attempt = 1
        outcome: httpx.Response | UnavailableError | None = None
        while True:
            try:
                outcome = await self._send(upstream + path, method, json, content, params, headers)
            except CircuitOpenError:
                if outcome is None:
                    raise  # nothing was sent, and retrying would only be refused again
                if isinstance(outcome, UnavailableError):
                    raise outcome from None
                return outcome
            except UnavailableError as exc:
                if canary and isinstance(exc.__cause__, httpx.ConnectError):
                    # A dead canary: nothing was sent, so even a write may go to stable now.
                    assert routing is not None
                    routing.suspend(upstream)
                    upstream, canary = self.base_url, False
                    continue
                if isinstance(exc.__cause__, httpx.TimeoutException):
                    raise  # it spent the call's whole budget; a slow dependency gets no second
                outcome = exc
            else:
                if outcome.status_code not in RETRYABLE_STATUSES:
                    return outcome
            delay = self._retry_delay(attempt, outcome) if retryable else None
            if delay is None:
                if isinstance(outcome, UnavailableError):
                    raise outcome
                return outcome
            await self.retry.sleep(delay)
            attempt += 1

    def _retry_delay(
        self, attempt: int, outcome: httpx.Response | UnavailableError
    ) -> float | None:
        """Seconds to wait before retrying after `attempt`, or None to give up now."""
        if attempt >= self.retry.max_attempts:
            return None
        delay = self.retry.delay(attempt)
        if isinstance(outcome, httpx.Response):
            asked = _retry_after(outcome)
            if asked is not None:
                # The server asked for more patience than a retry inside this request has.
                if asked > self.retry.max_delay:
                    return None
                delay = max(delay, asked)
        deadline = context.get(context.DEADLINE)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return None
        if not self._retry_budget.withdraw():
            self._count_retry("budget_exhausted")
            return None
        self._count_retry("sent")
        return delay

    def _count_retry(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.client_retries.labels(self.name, outcome).inc()

    async def _send(
        self,
        url: str,
        method: str,
        json: Any,
        content: bytes | None,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response:
        """One attempt through the breaker; transport errors raise `UnavailableError`."""
        budget = context.remaining(self.timeout)
        if budget <= 0:
            raise UnavailableError(f"deadline exceeded before calling {self.name}")
        merged = propagation_headers()
        if headers:
            merged.update(headers)
        # Set last: a caller's header can never replace the credential or widen the deadline.
        merged[_SERVICE_TOKEN] = self._credential.token()
        merged[_DEADLINE] = str(max(1, math.floor(budget * 1000)))
        client = self._client.get()
        permit = self.breaker.admit()
        started = time.perf_counter()
        try:
            response = await client.request(
                method,
                url,
                json=json,
                content=content,
                params=params,
                headers=merged,
                timeout=httpx.Timeout(budget, connect=min(1.0, budget)),
            )
        except httpx.TimeoutException as exc:
            self._done(permit, method, "timeout", started, failed=True)
            raise UnavailableError(f"{self.name} timed out", retry_after=1) from exc
        except httpx.TransportError as exc:
            self._done(permit, method, "error", started, failed=True)
            raise UnavailableError(f"{self.name} unavailable", retry_after=1) from exc
        except BaseException:
            self.breaker.release(permit)  # cancelled, or a bug: not the dependency's fault
            raise
        failed = counts_against_breaker(response, backpressure=self._backpressure_trips_breaker)
        self._done(permit, method, str(response.status_code), started, failed=failed)
        return response

    def _done(
        self, permit: Permit, method: str, status: str, started: float, *, failed: bool
    ) -> None:
        self.breaker.record(permit, failed=failed)
        if self.metrics is not None:
            self.metrics.client_duration.labels(self.name, method, status).observe(
                time.perf_counter() - started
            )

    async def aclose(self) -> None:
        """Close the pooled connections (lifespan exit); the next request would reopen them."""
        client = self._client.reset()
        if client is not None:
            await client.aclose()
