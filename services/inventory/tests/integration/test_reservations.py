"""Reservation lifecycle through the HTTP app, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx


def new_order() -> str:
    return str(uuid.uuid4())


async def reserve(
    client: httpx.AsyncClient,
    items: list[tuple[str, int]],
    *,
    order_id: str | None = None,
    ttl: int | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "order_id": order_id or new_order(),
        "items": [{"sku": s, "quantity": q} for s, q in items],
    }
    if ttl is not None:
        body["ttl_seconds"] = ttl
    return await client.post("/reservations", json=body)


async def available(client: httpx.AsyncClient, sku: str) -> int:
    return int((await client.get(f"/products/{sku}")).json()["available"])


async def test_reserve_then_commit_decrements_stock(
    client: httpx.AsyncClient, store: Any, clock: Any
) -> None:
    await store.add_product("beans", stock=20, price_cents=1250)
    created = await reserve(client, [("beans", 3)])
    assert created.status_code == 201
    reservation = created.json()
    assert reservation["status"] == "held"
    assert reservation["total_cents"] == 3750
    assert reservation["currency"] == "USD"
    assert reservation["items"] == [{"sku": "beans", "quantity": 3, "unit_price_cents": 1250}]
    assert await available(client, "beans") == 17

    committed = await client.post(f"/reservations/{reservation['id']}/commit")

    assert committed.status_code == 200
    assert committed.json()["status"] == "committed"
    assert await store.levels("beans") == (17, 0)
    assert await available(client, "beans") == 17


async def test_reserve_then_release_makes_stock_available_again(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=20)
    reservation = (await reserve(client, [("beans", 5)])).json()

    released = await client.post(f"/reservations/{reservation['id']}/release")

    assert released.status_code == 200
    assert released.json()["status"] == "released"
    assert await store.levels("beans") == (20, 0)


async def test_replayed_create_returns_same_reservation_with_200(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=20)
    order_id = new_order()
    first = await reserve(client, [("beans", 2)], order_id=order_id)
    replay = await reserve(client, [("beans", 2)], order_id=order_id)

    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json() == first.json()
    assert await store.levels("beans") == (20, 2)


async def test_concurrent_creates_for_one_order_hold_stock_once(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=20)
    order_id = new_order()
    responses = await asyncio.gather(
        *(reserve(client, [("beans", 2)], order_id=order_id) for _ in range(10))
    )

    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await store.levels("beans") == (20, 2)


async def test_replayed_commit_and_release_do_not_apply_twice(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=20)
    to_commit = (await reserve(client, [("beans", 4)])).json()
    to_release = (await reserve(client, [("beans", 6)])).json()

    for _ in range(3):
        assert (await client.post(f"/reservations/{to_commit['id']}/commit")).status_code == 200
        assert (await client.post(f"/reservations/{to_release['id']}/release")).status_code == 200

    assert await store.levels("beans") == (16, 0)


async def test_racing_commit_and_release_apply_exactly_one(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=20)
    reservation = (await reserve(client, [("beans", 4)])).json()
    path = f"/reservations/{reservation['id']}"

    responses = await asyncio.gather(
        *(client.post(f"{path}/{action}") for action in ["commit", "release"] * 10)
    )

    assert all(r.status_code in (200, 409) for r in responses)
    final = await client.get("/reservations", params={"order_id": reservation["order_id"]})
    status = final.json()["items"][0]["status"]
    assert await store.levels("beans") == ((16, 0) if status == "committed" else (20, 0))


async def test_release_of_committed_reservation_is_conflict(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=20)
    reservation = (await reserve(client, [("beans", 1)])).json()
    await client.post(f"/reservations/{reservation['id']}/commit")

    response = await client.post(f"/reservations/{reservation['id']}/release")

    assert response.status_code == 409
    assert response.json()["type"] == "/problems/reservation-committed"
    assert await store.levels("beans") == (19, 0)


async def test_commit_after_expiry_is_conflict_even_before_the_sweep(
    client: httpx.AsyncClient, store: Any, clock: Any
) -> None:
    await store.add_product("beans", stock=20)
    reservation = (await reserve(client, [("beans", 2)], ttl=30)).json()
    clock.advance(30)

    response = await client.post(f"/reservations/{reservation['id']}/commit")

    assert response.status_code == 409
    assert response.json()["type"] == "/problems/reservation-not-held"
    assert await store.levels("beans") == (20, 2)  # still held until the sweeper runs


async def test_sweeper_releases_expired_reservations(
    app_client: Any, store: Any, clock: Any
) -> None:
    await store.add_product("beans", stock=20)
    async with app_client(reservation_sweep_seconds=0.02) as client:
        expiring = (await reserve(client, [("beans", 2)], ttl=30)).json()
        lasting = (await reserve(client, [("beans", 3)], ttl=600)).json()
        clock.advance(31)

        for _ in range(250):
            listed = await client.get("/reservations", params={"order_id": expiring["order_id"]})
            if listed.json()["items"][0]["status"] == "expired":
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the sweeper never expired the reservation")

        assert await store.levels("beans") == (20, 3)
        still = await client.get("/reservations", params={"order_id": lasting["order_id"]})
        assert still.json()["items"][0]["status"] == "held"
        commit = await client.post(f"/reservations/{expiring['id']}/commit")
        assert commit.status_code == 409


async def test_out_of_stock_on_second_item_reserves_nothing(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("aaa-plenty", stock=50)
    await store.add_product("zzz-scarce", stock=1)
    order_id = new_order()

    response = await reserve(client, [("aaa-plenty", 5), ("zzz-scarce", 2)], order_id=order_id)

    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/out-of-stock"
    assert await store.levels("aaa-plenty") == (50, 0)
    assert await store.levels("zzz-scarce") == (1, 0)
    listed = await client.get("/reservations", params={"order_id": order_id})
    assert listed.json() == {"items": []}


async def test_unknown_sku_is_unprocessable_and_reserves_nothing(
    client: httpx.AsyncClient, store: Any
) -> None:
    await store.add_product("beans", stock=20)

    response = await reserve(client, [("beans", 1), ("no-such-thing", 1)])

    assert response.status_code == 422
    assert response.json()["type"] == "/problems/unknown-sku"
    assert "no-such-thing" in response.json()["detail"]
    assert await store.levels("beans") == (20, 0)
    assert await store.count_reservations() == 0


async def test_unknown_reservation_is_not_found(client: httpx.AsyncClient) -> None:
    for action in ("commit", "release"):
        response = await client.post(f"/reservations/{uuid.uuid4()}/{action}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


async def test_lists_reservations_of_an_order(client: httpx.AsyncClient, store: Any) -> None:
    await store.add_product("beans", stock=20)
    reservation = (await reserve(client, [("beans", 1)])).json()

    listed = await client.get("/reservations", params={"order_id": reservation["order_id"]})
    other = await client.get("/reservations", params={"order_id": new_order()})

    assert listed.json() == {"items": [reservation]}
    assert other.json() == {"items": []}
