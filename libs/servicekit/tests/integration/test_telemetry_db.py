"""Database and Redis spans against the real PostgreSQL and Redis: nested, summarised, cheap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from servicekit import Database, UnavailableError, create_engine, create_redis
from servicekit.telemetry.tracing import Tracing, activate
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

SECRET = "card-4242-never-in-a-span"


@pytest.fixture
def tracing() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = Tracing("it", "1", exporters=[exporter], sampler=ParentBased(ALWAYS_ON))
    tracing.start()
    yield tracing, exporter
    tracing.shutdown()


class Request:
    """Stands in for the server span the edge middleware opens."""

    def __init__(self, tracing: Tracing, *, sampled: bool = True) -> None:
        assert tracing.tracer is not None
        parent = None
        if not sampled:
            remote = trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(0))
            parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        self.span = tracing.tracer.start_span("GET /x", context=parent, kind=trace.SpanKind.SERVER)
        self._token = otel_context.attach(activate(tracing.tracer, self.span))

    def end(self) -> None:
        otel_context.detach(self._token)
        self.span.end()


def finished(tracing: Tracing, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert tracing.provider is not None
    tracing.provider.force_flush()
    return list(exporter.get_finished_spans())


@pytest.fixture(params=["postgresql", "sqlite"])
async def database(request: pytest.FixtureRequest, make_database: Any) -> AsyncIterator[Database]:
    url = await make_database(request.param, [])
    database = Database(create_engine(url, name="it"))
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS card (number VARCHAR(40))"))
    yield database
    await database.dispose()


async def test_statements_of_a_sampled_request_are_child_spans_without_parameters(
    tracing: tuple[Tracing, InMemorySpanExporter], database: Database
) -> None:
    request = Request(tracing[0])
    async with database.transaction() as session:
        await session.execute(text("INSERT INTO card (number) VALUES (:n)"), {"n": SECRET})
        rows = await session.execute(
            text("SELECT number FROM card WHERE number = :n"), {"n": SECRET}
        )
        assert rows.scalar_one() == SECRET
    request.end()
    spans = finished(*tracing)
    queries = [s for s in spans if s.kind == trace.SpanKind.CLIENT]
    assert [s.name for s in queries] == ["INSERT card", "SELECT card"]
    server = next(s for s in spans if s.kind == trace.SpanKind.SERVER)
    for span in queries:
        assert span.parent is not None and span.parent.span_id == server.context.span_id
        assert span.attributes is not None
        assert span.attributes["db.collection.name"] == "card"
        assert span.attributes["db.system.name"] == database.engine.dialect.name
        assert SECRET not in repr(dict(span.attributes))


async def test_a_failing_statement_ends_its_span_as_an_error(
    tracing: tuple[Tracing, InMemorySpanExporter], database: Database
) -> None:
    request = Request(tracing[0])
    # PostgreSQL: a programming error; SQLite reports it as operational (answered 503).
    with pytest.raises((ProgrammingError, UnavailableError)):
        async with database.transaction() as session:
            await session.execute(text("SELECT * FROM no_such_table"))
    request.end()
    (failed,) = [s for s in finished(*tracing) if s.kind == trace.SpanKind.CLIENT]
    assert failed.name == "SELECT no_such_table"
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]


async def test_unsampled_and_untraced_statements_make_no_spans(
    tracing: tuple[Tracing, InMemorySpanExporter], database: Database
) -> None:
    async with database.transaction() as session:  # no request at all (a background job)
        await session.execute(text("SELECT 1"))
    request = Request(tracing[0], sampled=False)
    async with database.transaction() as session:
        await session.execute(text("SELECT 1"))
    request.end()
    assert finished(*tracing) == []


async def test_redis_commands_of_a_sampled_request_are_child_spans(
    tracing: tuple[Tracing, InMemorySpanExporter], redis_url: str
) -> None:
    redis = create_redis(redis_url, name="it")
    try:
        await redis.ping()  # outside a request: no span
        request = Request(tracing[0])
        await redis.set("servicekit:test:telemetry", SECRET, ex=10)
        assert await redis.get("servicekit:test:telemetry") == SECRET.encode()
        request.end()
    finally:
        await redis.delete("servicekit:test:telemetry")
        await redis.aclose()
    commands = [s for s in finished(*tracing) if s.kind == trace.SpanKind.CLIENT]
    assert [s.name for s in commands] == ["SET", "GET"]
    for span in commands:
        assert span.attributes is not None
        assert span.attributes["db.system.name"] == "redis"
        assert SECRET not in repr(dict(span.attributes))
