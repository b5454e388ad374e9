"""The Redis client of a service: asyncio, named, with short timeouts so a dead Redis fails fast."""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(url: str, *, name: str, timeout: float = 0.25) -> Redis:
    """A pooled asyncio Redis client; connections are opened lazily."""
    return Redis.from_url(
        url,
        client_name=name,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        decode_responses=False,
    )
