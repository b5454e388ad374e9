"""Keyset pagination: the cursor is the last sku of a full page, and pages never overlap."""

from __future__ import annotations

from typing import Any

import pytest
from inventory.service import paginate


def page(rows: list[str], limit: int) -> tuple[list[str], str | None]:
    return paginate(rows, limit, key=lambda sku: sku)


def test_next_cursor_is_last_item_when_more_rows_exist() -> None:
    assert page(["a", "b", "c"], 2) == (["a", "b"], "b")


def test_no_cursor_when_page_is_exactly_full() -> None:
    assert page(["a", "b"], 2) == (["a", "b"], None)


def test_no_cursor_on_short_or_empty_page() -> None:
    assert page(["a"], 2) == (["a"], None)
    assert page([], 2) == ([], None)


@pytest.mark.parametrize("limit", [1, 3, 7, 20])
async def test_walking_pages_visits_every_product_once_in_order(repo: Any, limit: int) -> None:
    skus = sorted(f"sku-{i:02d}" for i in range(20))
    for sku in reversed(skus):
        repo.add_product(sku, stock=1)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        rows = await repo.list_products(cursor, limit + 1)
        items, cursor = paginate(rows, limit, key=lambda p: p.sku)
        seen += [p.sku for p in items]
        if cursor is None:
            break
    assert seen == skus
