"""translate_db_errors: an unreachable or restarting database is a 503, a bad statement is not."""

from __future__ import annotations

import pytest
from servicekit.data.database import translate_db_errors
from servicekit.errors import UnavailableError
from sqlalchemy.exc import DBAPIError


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _dbapi_error(sqlstate: str) -> DBAPIError:
    return DBAPIError("SELECT 1", None, _DriverError(sqlstate))


@pytest.mark.parametrize("sqlstate", ["57P03", "57P01", "57P02", "08006", "08001"])
async def test_server_starting_up_or_gone_is_unavailable(sqlstate: str) -> None:
    with pytest.raises(UnavailableError) as caught:
        async with translate_db_errors():
            raise _dbapi_error(sqlstate)
    assert caught.value.retry_after == 1


async def test_sqlstate_on_the_wrapped_driver_error_counts() -> None:
    # SQLAlchemy's asyncpg adapter wraps the driver exception; the state may sit on the cause.
    wrapper = Exception("adapter")
    wrapper.__cause__ = _DriverError("57P03")
    with pytest.raises(UnavailableError):
        async with translate_db_errors():
            raise DBAPIError("SELECT 1", None, wrapper)  # type: ignore[arg-type]


async def test_a_bad_statement_is_not_turned_into_a_503() -> None:
    with pytest.raises(DBAPIError):
        async with translate_db_errors():
            raise _dbapi_error("42601")  # syntax error: a bug, must stay a 500
