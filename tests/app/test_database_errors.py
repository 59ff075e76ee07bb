"""Database failures reach clients as problems and logs without statement parameters."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.requests import Request

from seawall.app._problems import _on_database_error
from seawall.db import Database


def _request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/cases", "headers": []})


async def test_error_text_never_carries_statement_parameters(database: Database) -> None:
    with pytest.raises(DBAPIError) as caught:
        async with database.transaction() as session:
            await session.execute(
                sa.text("SELECT * FROM no_such_table WHERE secret = :s"), {"s": "hunter2-body"}
            )

    assert "hunter2-body" not in str(caught.value)


async def test_a_lost_connection_is_503_with_retry_after() -> None:
    lost = DBAPIError("SELECT 1", None, ConnectionError("closed"), connection_invalidated=True)

    response = await _on_database_error(_request(), lost)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert json.loads(bytes(response.body))["type"] == "urn:seawall:problem:database-unavailable"


async def test_a_refused_statement_is_a_logged_500_not_a_503() -> None:
    refused = IntegrityError("INSERT", None, ValueError("duplicate key"))

    response = await _on_database_error(_request(), refused)

    assert response.status_code == 500
    assert json.loads(bytes(response.body))["type"] == "urn:seawall:problem:internal-error"
