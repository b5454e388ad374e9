"""Once: lazy one-time initialisation, safe for threads and asyncio tasks at the same time.

The failure it prevents: a lazily created client (HTTP pool, DB engine, Redis) built many times
when many requests arrive together, so pools multiply and sockets run away.

- Exactly one construction, whatever mix of threads and tasks asks first.
- A failed construction is not cached: callers waiting on that attempt get its error and the
  next caller retries. No half-built object is ever visible.
- The fast path, once built, is one attribute read and one identity check.
- The lock is a `threading.Lock` held only around bookkeeping, never across an `await` or the
  factory call, so an event loop is never blocked by another thread's construction.
- Every successful construction is tallied per name for the whole process
  (`construction_counts()`), which `/metrics` exports as `servicekit_once_constructions_total`:
  Once objects are made outside any app (clients in a lifespan, module-level helpers), so the
  tally cannot live in an app's registry.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_UNSET: object = object()

# Process-wide and monotonic (a `reset()` does not undo a construction): a counter, not a gauge.
_tally_lock = threading.Lock()
_tally: Counter[str] = Counter()


def construction_counts() -> dict[str, int]:
    """Successful constructions per `Once` name in this process since it started."""
    with _tally_lock:
        return dict(_tally)


class _Attempt:
    """One construction in progress; waiters in threads or event loops are told when it ends."""

    __slots__ = ("error", "event", "futures")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.futures: list[asyncio.Future[None]] = []
        self.error: BaseException | None = None

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        self.event.set()
        for fut in self.futures:
            loop = fut.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Once(Generic[T]):
    """Build a value on first use, exactly once.

    `factory` is a plain callable or a coroutine function. Use `get()` for a plain factory
    (from threads or tasks) and `await aget()` for either kind (from tasks).
    """

    __slots__ = ("_attempt", "_factory", "_lock", "_value", "constructions", "name")

    def __init__(
        self, factory: Callable[[], T] | Callable[[], Awaitable[T]], *, name: str = ""
    ) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        # Any, not T: the fast path returns it without a `cast()` call (a real call at runtime).
        self._value: Any = _UNSET
        self._attempt: _Attempt | None = None
        self.name = name or getattr(factory, "__qualname__", "once")
        #: Successful constructions since creation or the last `reset()` (0 or 1).
        self.constructions = 0

    @property
    def is_set(self) -> bool:
        """True once the value is built."""
        return self._value is not _UNSET

    def peek(self) -> T | None:
        """The value if it is built, else None; never constructs."""
        value = self._value
        return None if value is _UNSET else value

    def _claim(self) -> tuple[bool, _Attempt | None]:
        """Under the lock: (built?, attempt to wait on or None if the caller must build)."""
        with self._lock:
            if self._value is not _UNSET:
                return True, None
            if self._attempt is None:
                self._attempt = _Attempt()
                return False, None
            return False, self._attempt

    def _publish(self, value: object, error: BaseException | None) -> None:
        with self._lock:
            attempt = self._attempt
            self._attempt = None
            if error is None:
                self._value = value
                self.constructions += 1
        if error is None:
            with _tally_lock:
                _tally[self.name] += 1
        if attempt is not None:
            attempt.finish(error)

    def get(self) -> T:
        """Return the value, building it with the (plain) factory on first use."""
        value: T = self._value
        if value is not _UNSET:
            return value
        while True:
            built, attempt = self._claim()
            if built:
                built_value: T = self._value
                return built_value
            if attempt is None:
                new_value: T = self._build_sync()
                return new_value
            attempt.event.wait()
            if attempt.error is not None:
                raise attempt.error

    def _build_sync(self) -> Any:
        try:
            value = self._factory()
            if inspect.isawaitable(value):
                close = getattr(value, "close", None)
                if close is not None:
                    close()
                raise TypeError(f"Once({self.name}): async factory; use `await aget()`")
        except BaseException as exc:
            self._publish(_UNSET, exc)
            raise
        self._publish(value, None)
        return value

    async def aget(self) -> T:
        """Return the value, building it (plain or async factory) on first use."""
        value: T = self._value
        if value is not _UNSET:
            return value
        while True:
            built, attempt = self._claim()
            if built:
                current: T = self._value
                return current
            if attempt is None:
                try:
                    made = self._factory()
                    built_value: T = await made if inspect.isawaitable(made) else made
                except BaseException as exc:
                    self._publish(_UNSET, exc)
                    raise
                self._publish(built_value, None)
                return built_value
            await self._wait(attempt)
            if attempt.error is not None:
                raise attempt.error

    @staticmethod
    async def _wait(attempt: _Attempt) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # finish() sets the event before it walks the futures, so a finish that races with
        # this append is seen either by the walk or by the check below.
        attempt.futures.append(fut)
        if not attempt.event.is_set():
            await fut

    def reset(self) -> T | None:
        """Forget the value (for tests); returns the old value so the caller can close it."""
        with self._lock:
            value, self._value = self._value, _UNSET
            self.constructions = 0
        return None if value is _UNSET else value
