"""What create_service_app gives every service: problem+json errors, ids, auth, caps, recovery."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from servicekit.testing import lifespan_client

from .conftest import TOKEN, build_demo_app

PROBLEM_KEYS = {"type", "title", "status", "detail", "request_id", "trace_id"}


def assert_problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status and body["request_id"] and body["trace_id"]
    return body  # type: ignore[no-any-return]


async def test_valid_request_gets_generated_request_id_echoed(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        response = await client.post("/items", json={"name": "a", "quantity": 1})
    assert response.status_code == 201
    assert response.headers["x-request-id"] == response.json()["request_id"]


async def test_incoming_request_id_and_traceparent_are_used(demo_app: FastAPI) -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        response = await client.get(
            "/boom",
            headers={"X-Request-ID": "req-123", "traceparent": f"00-{trace}-b7ad6b7169203331-01"},
        )
    body = assert_problem(response, 500)
    assert body["request_id"] == "req-123" and body["trace_id"] == trace
    assert response.headers["x-request-id"] == "req-123"


async def test_hostile_request_id_is_replaced(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        response = await client.get("/whoami", headers={"X-Request-ID": "x" * 500})
    assert response.headers["x-request-id"] != "x" * 500


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 422),
        (b'{"name": "a", "quantity": -1}', 422),
        (b'{"name": "a", "quantity": 1, "admin": true}', 422),
        (b'{"name": "a", "quantity": ', 400),
        (b"[1, 2]", 422),
    ],
)
async def test_bad_input_gets_4xx_problem_and_writes_nothing(body: bytes, status: int) -> None:
    app = build_demo_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        response = await client.post(
            "/items", content=body, headers={"content-type": "application/json"}
        )
    assert_problem(response, status)
    assert app.state.writes == []


async def test_oversized_body_gets_413_by_content_length_and_by_stream() -> None:
    app = build_demo_app(max_body_bytes=1024)
    big = json.dumps({"name": "a" * 5000, "quantity": 1}).encode()

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    async with lifespan_client(app, headers=TOKEN) as client:
        declared = await client.post(
            "/items", content=big, headers={"content-type": "application/json"}
        )
        streamed = await client.post(
            "/items", content=chunks(), headers={"content-type": "application/json"}
        )
    assert_problem(declared, 413)
    assert_problem(streamed, 413)
    assert app.state.writes == []


async def test_unknown_route_and_method_are_problems(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        assert_problem(await client.get("/nope"), 404)
        assert_problem(await client.delete("/items"), 405)


async def test_service_error_maps_status_and_retry_after(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        response = await client.get("/conflict")
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "3"


async def test_internal_service_refuses_calls_without_credential(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app) as client:
        assert_problem(await client.get("/whoami"), 401)
        assert_problem(await client.get("/whoami", headers={"X-Service-Token": "wrong"}), 401)
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


async def test_customer_header_is_trusted_only_with_credential(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        response = await client.get("/whoami", headers={"X-Customer-ID": "c-1"})
        hostile = await client.get("/whoami", headers={"X-Customer-ID": "bad id; drop"})
    assert response.json() == {"customer": "c-1"}
    assert hostile.json() == {"customer": None}


async def test_must_get_on_missing_key_is_a_clean_500_and_counted(demo_app: FastAPI) -> None:
    async with lifespan_client(demo_app, headers=TOKEN) as client:
        for _ in range(3):
            assert_problem(await client.get("/must-get"), 500)
        metrics = (await client.get("/metrics")).text
    assert 'servicekit_recovered_exceptions_total{exception="MissingContextError"} 3.0' in metrics
    assert 'http_route="/must-get"' in metrics


async def test_background_task_sees_the_request_context() -> None:
    app = build_demo_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        response = await client.post("/later", headers={"X-Request-ID": "req-bg"})
    assert response.status_code == 202
    assert app.state.writes == [{"background_request_id": "req-bg"}]


def test_retry_after_is_a_class_default_any_error_can_set() -> None:
    from servicekit import ConflictError, UnavailableError

    class Busy(ConflictError):
        slug, retry_after = "busy", 2

    assert Busy().headers == {"Retry-After": "2"}
    assert Busy(retry_after=5).headers == {"Retry-After": "5"}
    assert UnavailableError().headers == {"Retry-After": "1"}
    assert ConflictError().headers == {}
    response = Busy("try later").to_response()
    assert response.status_code == 409 and response.headers["retry-after"] == "2"
    assert response.media_type == "application/problem+json"


async def test_a_service_route_may_not_shadow_the_probes_matched_after_it() -> None:
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager
    from typing import Any

    import servicekit as kit
    from fastapi import APIRouter

    from .conftest import DemoSettings

    router = APIRouter()

    @router.get("/{name}")
    async def read_anything(name: str) -> str:
        return name

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {}

    with pytest.raises(ValueError, match="would answer the probe '/healthz'"):
        kit.create_service_app(DemoSettings(), title="t", lifespan=lifespan, routers=[router])
    # The kit's probes come after the service's routes, and still answer.
    app = build_demo_app()
    async with lifespan_client(app, headers=TOKEN) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/whoami")).status_code == 200


def _layers(app: object) -> list[str]:
    from starlette.routing import Router

    names = []
    while not isinstance(app, Router):
        names.append(type(app).__name__)
        app = app.app  # type: ignore[attr-defined]
    return names


def test_the_stack_leaves_out_only_fastapis_layers_the_edge_replaces() -> None:
    app = build_demo_app()
    ours = _layers(app.build_middleware_stack())
    fastapis = _layers(FastAPI.build_middleware_stack(app))
    replaced = ["ServerErrorMiddleware", "ExceptionTelemetryMiddleware", "AppBodyLimitMiddleware"]
    # A FastAPI upgrade that changes its own layers fails here: review ServiceApp first.
    assert fastapis[: len(replaced)] == replaced
    assert ours == fastapis[len(replaced) :]
    assert ours[0] == "EdgeMiddleware"
    assert ours[-2:] == ["ExceptionMiddleware", "AsyncExitStackMiddleware"]
