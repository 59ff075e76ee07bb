"""``seawall admin keys`` and ``seawall status``, in-process on a migrated SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from typer.testing import CliRunner

from seawall.auth import ApiKeys, AuthenticationFailed
from seawall.cli import app
from seawall.db import Database
from seawall.testing import FakeRequest, FakeResponse, FakeServer
from tests.test_cli_messaging import _dead_letter

T = TypeVar("T")

pytestmark = pytest.mark.usefixtures("isolated_environment", "logging_restored")


def _seawall(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _with(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        database = Database(url)
        try:
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def test_keys_list_says_so_when_there_are_none(database_file: str) -> None:
    code, out, _ = _seawall("admin", "keys", "list")

    assert code == 0
    assert out.strip() == "no API keys"  # and no empty table above it


def test_a_created_key_is_printed_once_and_works(database_file: str) -> None:
    code, out, err = _seawall("admin", "keys", "create", "--name", "ci", "--scope", "operate")

    token = out.strip()
    principal = _with(database_file, lambda db: ApiKeys(db).verify(token))
    assert code == 0
    assert token.startswith("sw_")
    assert "cannot be shown again" in err
    assert principal.scopes == frozenset({"operate"})
    code, listed, _ = _seawall("admin", "keys", "list", "--json")
    assert token not in listed
    assert json.loads(listed)["name"] == "ci"


def test_a_revoked_key_no_longer_works(database_file: str) -> None:
    _, out, _ = _seawall("admin", "keys", "create", "--name", "old", "--scope", "read", "--json")
    created = json.loads(out)

    code, revoked, _ = _seawall("admin", "keys", "revoke", created["id"])
    again, _, err = _seawall("admin", "keys", "revoke", created["id"])

    assert code == 0
    assert "revoked" in revoked
    assert again == 1
    assert "no active key" in err
    with pytest.raises(AuthenticationFailed, match="revoked"):
        _with(database_file, lambda db: ApiKeys(db).verify(created["key"]))
    _, table, _ = _seawall("admin", "keys", "list")
    assert "revoked" in table


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "x", "--scope", "admin"],
        ["--name", "", "--scope", "read"],
        ["--scope", "read"],
    ],
)
def test_bad_key_options_are_refused(database_file: str, args: list[str]) -> None:
    code, _, _ = _seawall("admin", "keys", "create", *args)

    assert code == 2


def test_status_reads_the_database_without_a_server(database_file: str) -> None:
    _dead_letter(database_file, consumer="billing")

    code, out, _ = _seawall("status", "--json")

    report = json.loads(out)
    assert code == 0
    assert report["database"]["status"] == "healthy"
    assert report["dead_letters"] == {"billing": 1}
    assert report["status"] == "degraded"
    assert set(report["outbox"]) == {"pending", "oldest_age_seconds", "retrying", "parked"}


def test_status_prints_tables(database_file: str) -> None:
    code, out, _ = _seawall("status")

    assert code == 0
    assert "healthy" in out
    assert "outbox" in out
    assert "dead letters" in out


@pytest.fixture
def running_service() -> Iterator[FakeServer]:
    def dependencies(_request: FakeRequest) -> FakeResponse:
        return FakeResponse.json(
            {
                "status": "degraded",
                "checked_at": "2026-12-06T00:00:00+00:00",
                "dependencies": {
                    "database": {"status": "healthy", "critical": True},
                    "payments": {
                        "status": "unhealthy",
                        "critical": False,
                        "breaker": "open",
                        "error": "the circuit breaker is open",
                    },
                },
            }
        )

    with FakeServer() as server:
        server.route("GET", "/health/dependencies", dependencies)
        yield server


def test_status_shows_the_breakers_of_a_running_service(
    database_file: str, running_service: FakeServer
) -> None:
    code, out, _ = _seawall("status", "--url", running_service.url)

    assert code == 0
    assert "payments" in out
    assert "open" in out
    assert "degraded" in out


def test_status_with_an_unreachable_service_is_unhealthy(database_file: str) -> None:
    code, out, _ = _seawall("status", "--json", "--url", "http://127.0.0.1:9", "--timeout", "1")

    assert code == 1
    assert json.loads(out)["service"]["status"] == "unreachable"
