"""Shared fixtures: real databases (SQLite and PostgreSQL) and the app over ASGI.

A test that needs a server which cannot be reached is skipped with the reason,
except under ``CI``, where it fails: CI must never pass by skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.exceptions import RedisError

from seawall.app import create_app
from seawall.config import Settings
from seawall.db import Database, _aiosqlite, metadata, migrate

# The CLI tests' fixtures (isolated environment, restored logging, a migrated file).
pytest_plugins = ["tests.cli_fixtures"]

POSTGRES_URL = os.environ.get("SEAWALL_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SEAWALL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def need_service(name: str, reason: str) -> None:
    """Skip (locally) or fail (under CI) because service *name* is unreachable."""
    message = f"{name} is not reachable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI=true: services are required)")
    pytest.skip(message)


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"), timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrated(url: str) -> None:
    database = Database(url)
    try:
        await migrate(database)
    finally:
        await database.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped afterwards."""
    name = f"seawall_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        need_service("PostgreSQL", f"{POSTGRES_URL}: {type(exc).__name__}: {exc}")
    url = _with_database(POSTGRES_URL, name)
    asyncio.run(_migrated(url))
    yield url
    asyncio.run(_admin(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (not migrated), dropped afterwards."""
    name = f"seawall_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        need_service("PostgreSQL", f"{POSTGRES_URL}: {type(exc).__name__}: {exc}")
    yield _with_database(POSTGRES_URL, name)
    asyncio.run(_admin(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (faster than migrating per test)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    asyncio.run(_migrated(f"sqlite:///{path}"))
    return path


def _sqlite_url(template: Path, tmp_path: Path) -> str:
    target = tmp_path / "seawall.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, migrated database: SQLite and PostgreSQL in turn."""
    if request.param == "sqlite":
        return _sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path)
    url: str = request.getfixturevalue("postgres_url")
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    asyncio.run(_admin(url, f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """An open `Database` on each backend in turn."""
    db = Database(database_url)
    yield db
    await db.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for a test app: the test database, no .env or secrets files."""
    return Settings(
        _env_file=None,
        _secrets_dir=None,
        database_url=database_url,
        auto_migrate=False,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
async def app(settings: Settings, database: Database) -> AsyncIterator[FastAPI]:
    """The cases service, started through its lifespan."""
    application = create_app(settings, database=database)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process (ASGI)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://seawall.test") as c:
        yield c


async def connect_redis(client_class: type[Redis] = Redis, **options: object) -> Redis:
    """A client on the test Redis, or skip (locally) / fail (under CI) when it is down."""
    client = client_class.from_url(REDIS_URL, **options)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        await client.aclose()
        need_service("Redis", f"{REDIS_URL}: {type(exc).__name__}: {exc}")
    return client


async def delete_prefix(client: Redis, prefix: str) -> None:
    """Remove every key under *prefix* (each test works under a prefix of its own)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"seawall-test:{uuid.uuid4().hex}:"


@pytest.fixture
async def redis(redis_prefix: str) -> AsyncIterator[Redis]:
    """A client on the test Redis; the keys under `redis_prefix` are removed afterwards."""
    client = await connect_redis()
    yield client
    await delete_prefix(client, redis_prefix)
    await client.aclose()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions sent to aiosqlite's thread, one per hop.

    Those the writer runs on the event loop's own thread instead
    (`seawall.db._aiosqlite.commit_here`) are named with `` here``.
    """
    sent: list[str] = []
    original = aiosqlite.Connection._execute
    original_here = _aiosqlite._on_this_thread

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    def counting_here(driver: Any, fn: Any, *args: Any) -> Any:
        sent.append(f"{getattr(fn, '__name__', repr(fn))} here")
        return original_here(driver, fn, *args)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    monkeypatch.setattr(_aiosqlite, "_on_this_thread", counting_here)
    return sent
