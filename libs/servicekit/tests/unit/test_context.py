"""Request context: get never raises, must_get does, values survive await, tasks and threads."""

from __future__ import annotations

import asyncio

import pytest
from servicekit import context
from servicekit.context import CUSTOMER_ID, REQUEST_ID, MissingContextError
from starlette.concurrency import run_in_threadpool


def test_get_outside_a_request_returns_default_without_raising() -> None:
    assert context.get(REQUEST_ID) is None
    assert context.get(REQUEST_ID, "none") == "none"


def test_must_get_raises_typed_error_naming_the_key() -> None:
    with context.request_scope({REQUEST_ID: "r1"}):
        assert context.must_get(REQUEST_ID) == "r1"
        with pytest.raises(MissingContextError, match="customer_id"):
            context.must_get(CUSTOMER_ID)


def test_scope_is_reset_on_exit_even_after_error() -> None:
    with pytest.raises(ValueError), context.request_scope({REQUEST_ID: "r1"}):
        raise ValueError
    assert context.get(REQUEST_ID) is None


def test_set_value_outside_request_is_refused() -> None:
    with pytest.raises(RuntimeError):
        context.set_value(CUSTOMER_ID, "c1")


async def test_context_survives_await_tasks_and_threadpool() -> None:
    with context.request_scope({REQUEST_ID: "r1"}):
        context.set_value(CUSTOMER_ID, "c1")
        await asyncio.sleep(0)
        in_task = await asyncio.create_task(_read_async())
        in_thread = await run_in_threadpool(
            lambda: (context.get(REQUEST_ID), context.get(CUSTOMER_ID))
        )
    assert in_task == ("r1", "c1")
    assert in_thread == ("r1", "c1")


async def _read_async() -> tuple[str | None, str | None]:
    await asyncio.sleep(0)
    return context.get(REQUEST_ID), context.get(CUSTOMER_ID)


async def test_concurrent_requests_do_not_see_each_other() -> None:
    async def request(i: int) -> str | None:
        with context.request_scope({REQUEST_ID: f"r{i}"}):
            await asyncio.sleep(0.001 * (i % 5))
            return context.get(REQUEST_ID)

    results = await asyncio.gather(*(request(i) for i in range(200)))
    assert results == [f"r{i}" for i in range(200)]
