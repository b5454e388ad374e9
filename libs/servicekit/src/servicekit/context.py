"""Request context: values that belong to one request, in a ContextVar.

The edge middleware opens a scope per request and resets it in `finally`. The values survive
`await`, tasks spawned by the request (they copy the context) and threadpool calls (starlette
copies the context into the worker thread).

- `get(key)` returns the value or None (or a default) and never raises: use it wherever a value
  may legitimately be absent (a health probe has no customer, a background job has no request).
- `must_get(key)` raises `MissingContextError` and is only for places where absence is a bug.
  Recovery (in the edge middleware) turns that bug into a clean 500 problem response.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")
#: A key only hands values out: `Key[bool]` is a `Key[object]` (mixed keys in one dict type).
T_co = TypeVar("T_co", covariant=True)


class Key(Generic[T_co]):
    """A typed context key: `get(REQUEST_ID)` is typed `str | None`.

    Keys compare and hash by identity (declare each once, at module level): a dataclass's
    generated `__hash__` is Python code, run on every context read and write.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


REQUEST_ID: Key[str] = Key("request_id")
TRACE_ID: Key[str] = Key("trace_id")
SPAN_ID: Key[str] = Key("span_id")
#: W3C trace-flags of the request's trace, two hex digits ("01": sampled).
TRACE_FLAGS: Key[str] = Key("trace_flags")
BAGGAGE: Key[str] = Key("baggage")
CUSTOMER_ID: Key[str] = Key("customer_id")
SHADOW: Key[bool] = Key("shadow")
#: Absolute `time.monotonic()` by which the request must be answered.
DEADLINE: Key[float] = Key("deadline")
#: Shedding priority of the request (`CRITICAL` or absent for normal), carried downstream.
PRIORITY: Key[str] = Key("priority")
#: `canary` or `stable`: pins the request's calls to one upstream (servicekit.downstream.routing).
CANARY_ROUTE: Key[str] = Key("canary_route")
#: The priority of saga confirmation and compensation calls: shed last.
CRITICAL = "critical"


class MissingContextError(LookupError):
    """`must_get` found no value: a bug in the caller, answered as a 500."""

    def __init__(self, key: Key[Any]) -> None:
        super().__init__(f"request context has no {key.name!r}")
        self.key = key


_context: ContextVar[dict[Key[Any], Any] | None] = ContextVar(
    "servicekit_request_context", default=None
)


@overload
def get(key: Key[T]) -> T | None: ...
@overload
def get(key: Key[T], default: T) -> T: ...
def get(key: Key[T], default: T | None = None) -> T | None:
    """The value for `key` in the current request, or `default`; never raises."""
    values = _context.get()
    if values is None:
        return default
    return values.get(key, default)


def must_get(key: Key[T]) -> T:
    """The value for `key`; raises `MissingContextError` when absent (absence is a bug)."""
    values = _context.get()
    if values is None or key not in values:
        raise MissingContextError(key)
    return values[key]  # type: ignore[no-any-return]


def set_value(key: Key[T], value: T) -> None:
    """Set `key` in the current request's context (raises outside a request scope)."""
    values = _context.get()
    if values is None:
        raise RuntimeError(f"set_value({key.name!r}) outside a request context")
    values[key] = value


def snapshot() -> dict[str, Any]:
    """A plain copy of the current context (for logs and problem bodies)."""
    values = _context.get()
    return {} if values is None else {k.name: v for k, v in values.items()}


def remaining(default: float) -> float:
    """Seconds left before the request deadline (or `default` when there is none), >= 0."""
    deadline = get(DEADLINE)
    if deadline is None:
        return default
    return max(0.0, min(default, deadline - time.monotonic()))


@contextmanager
def request_scope(values: dict[Key[Any], Any] | None = None) -> Iterator[dict[Key[Any], Any]]:
    """Open a fresh context for one request (or job); always reset on exit."""
    scope_values: dict[Key[Any], Any] = dict(values or {})
    token = enter(scope_values)
    try:
        yield scope_values
    finally:
        leave(token)


def enter(values: dict[Key[Any], Any]) -> Token[dict[Key[Any], Any] | None]:
    """Make `values` (owned by the caller from now on) the current request's context.

    The per-request path of the edge middleware; anything else uses `request_scope`. Pair it
    with `leave(token)` in a `finally`.
    """
    return _context.set(values)


def leave(token: Token[dict[Key[Any], Any] | None]) -> None:
    """Close the context opened by `enter`."""
    _context.reset(token)
