from __future__ import annotations

import pytest
from servicekit.testing import MakeDatabase


@pytest.fixture
async def database_url(make_database: MakeDatabase) -> str:
    return await make_database("sqlite", ["order"])
