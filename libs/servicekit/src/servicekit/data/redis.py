"""The Redis client of a service: asyncio, named, with short timeouts so a dead Redis fails fast."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from servicekit.telemetry.tracing import child_span, fail


class TracedRedis(Redis):
    """`Redis` with a client span per command of a sampled request (the command name only)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command; traced when the current request is sampled."""
        execute: Callable[..., Awaitable[Any]] = super().execute_command
        command = str(args[0]).upper() if args else "COMMAND"
        span = child_span(command, SpanKind.CLIENT)
        if span is None:
            return await execute(*args, **options)
        span.set_attributes({"db.system.name": "redis", "db.operation.name": command})
        try:
            return await execute(*args, **options)
        except BaseException as exc:
            fail(span, exc)
            raise
        finally:
            span.end()


def create_redis(url: str, *, name: str, timeout: float = 0.25) -> Redis:
    """A pooled asyncio Redis client; connections are opened lazily."""
    return TracedRedis.from_url(
        url,
        client_name=name,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=False,
    )
