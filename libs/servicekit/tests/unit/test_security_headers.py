"""Security headers on every answer of a kit app, the kit's own error answers included."""

from __future__ import annotations

from servicekit.testing import lifespan_client

from .conftest import TOKEN, build_demo_app


async def test_every_answer_carries_the_security_headers() -> None:
    app = build_demo_app(max_body_bytes=1024)
    async with lifespan_client(app, headers=TOKEN) as client:
        answers = [
            await client.get("/whoami"),  # 200
            await client.get("/boom"),  # 500 written by recovery (edge layer)
            await client.post("/items", content=b"x" * 2048),  # 413 from the body cap
            await client.get("/whoami", headers={"X-Service-Token": "wrong"}),  # 401
            await client.delete("/items"),  # 405
        ]
    assert [a.status_code for a in answers] == [200, 500, 413, 401, 405]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")


async def test_docs_page_keeps_working_without_the_strict_csp() -> None:
    async with lifespan_client(build_demo_app(), headers=TOKEN) as client:
        docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "content-security-policy" not in docs.headers
    assert docs.headers["x-content-type-options"] == "nosniff"


async def test_method_not_allowed_names_every_method_of_the_path() -> None:
    async with lifespan_client(build_demo_app(), headers=TOKEN) as client:
        answer = await client.request("PATCH", "/items")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"


def test_headers_are_added_after_the_apps_own_which_win() -> None:
    from servicekit.edge.security import SecurityHeaders

    security = SecurityHeaders()
    own = (b"x-request-id", b"r1")
    app_headers = [(b"content-type", b"application/json")]
    # ASGI allows any iterable of headers, a generator included: it is read once.
    added = security.add((h for h in app_headers), own, security.for_path("/x"))
    assert added[:2] == [*app_headers, own]
    assert {name for name, _ in added} >= {b"x-content-type-options", b"cache-control"}
    # A header the app set itself is kept, not doubled.
    cached = [(b"cache-control", b"max-age=60")]
    added = security.add(cached, own, security.for_path("/x"))
    assert [v for n, v in added if n == b"cache-control"] == [b"max-age=60"]
    assert (b"x-content-type-options", b"nosniff") in added
