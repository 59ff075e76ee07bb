"""The ``seawall`` command line: version, help, config show, bad settings, migrate.

Commands that only read settings run in-process through typer's `CliRunner`.
``migrate`` configures process-wide logging, so it runs as a subprocess: the test
process's logging stays untouched.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

import seawall
from seawall.cli import app
from seawall.db import head_revision
from tests.conftest import POSTGRES_URL, need_service

DATABASE_PASSWORD = "hunter2"
REDIS_PASSWORD = "pw"
COMMAND_TIMEOUT_SECONDS = 60

pytestmark = pytest.mark.usefixtures("isolated_environment")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _seawall(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m seawall *args`` with the (monkeypatched) environment of this test."""
    return subprocess.run(
        [sys.executable, "-m", "seawall", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def test_version_prints_the_package_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["version"])

    assert result.exit_code == 0
    assert result.stdout.strip() == f"seawall {seawall.__version__}"


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])

    assert result.exit_code == 0
    for command in ("serve", "migrate", "config", "version"):
        assert command in result.stdout


def test_config_show_masks_the_passwords_of_urls(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEAWALL_DATABASE_URL", f"postgresql://u:{DATABASE_PASSWORD}@db/x")
    monkeypatch.setenv("SEAWALL_REDIS_URL", f"redis://:{REDIS_PASSWORD}@r/0")

    result = runner.invoke(app, ["config", "show"])

    assert result.exit_code == 0, result.output
    assert DATABASE_PASSWORD not in result.output
    assert f":{REDIS_PASSWORD}@" not in result.output
    assert "postgresql://u:***@db/x" in result.stdout
    assert "redis://:***@r/0" in result.stdout


def test_config_show_json_masks_the_passwords_of_urls(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEAWALL_DATABASE_URL", f"postgresql://u:{DATABASE_PASSWORD}@db/x")
    monkeypatch.setenv("SEAWALL_REDIS_URL", f"redis://:{REDIS_PASSWORD}@r/0")

    result = runner.invoke(app, ["config", "show", "--json"])

    assert result.exit_code == 0, result.output
    assert DATABASE_PASSWORD not in result.output
    view = json.loads(result.stdout)
    assert view["SEAWALL_DATABASE_URL"] == "postgresql://u:***@db/x"
    assert view["SEAWALL_REDIS_URL"] == "redis://:***@r/0"
    assert view["SEAWALL_NATS_URL"] is None


def test_config_show_json_reports_the_effective_values(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEAWALL_PORT", "8123")
    monkeypatch.setenv("SEAWALL_LOG_LEVEL", "WARNING")

    result = runner.invoke(app, ["config", "show", "--json"])

    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["SEAWALL_PORT"] == 8123
    assert view["SEAWALL_LOG_LEVEL"] == "warning"


@pytest.mark.parametrize(
    ("key", "value"),
    [("SEAWALL_LOG_LEVEL", "loud"), ("SEAWALL_MAX_BODY_BYTES", "-1"), ("SEAWALL_PORT", "abc")],
)
@pytest.mark.parametrize("command", [["config", "show"], ["config", "show", "--json"], ["migrate"]])
def test_a_bad_value_fails_with_exit_code_2_and_one_line_naming_the_key(
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    value: str,
    command: list[str],
) -> None:
    monkeypatch.setenv(key, value)

    result = runner.invoke(app, command)

    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]


def test_a_bad_secret_value_is_not_echoed_in_the_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEAWALL_DATABASE_URL", f"mysql://u:{DATABASE_PASSWORD}@db/x")

    result = runner.invoke(app, ["config", "show"])

    assert result.exit_code == 2
    assert DATABASE_PASSWORD not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "SEAWALL_DATABASE_URL" in lines[0]


def test_migrate_brings_a_new_sqlite_file_to_the_head_revision_and_is_idempotent(
    monkeypatch: pytest.MonkeyPatch, isolated_environment: Path, tmp_path: Path
) -> None:
    database = tmp_path / "data" / "migrate.db"
    monkeypatch.setenv("SEAWALL_DATABASE_URL", f"sqlite:///{database}")
    expected = f"database is at revision {head_revision()} (newest: {head_revision()})"

    first = _seawall("migrate", cwd=isolated_environment)
    second = _seawall("migrate", cwd=isolated_environment)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout.strip() == expected
    assert second.stdout.strip() == expected
    assert database.is_file()


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _alembic_version(url: str) -> list[str]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
    finally:
        await conn.close()
    return [row["version_num"] for row in rows]


@pytest.fixture
def throwaway_postgres_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test alone, dropped afterwards."""
    name = f"seawall_cli_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        need_service("PostgreSQL", f"{POSTGRES_URL}: {type(exc).__name__}: {exc}")
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.postgres
def test_migrate_brings_a_new_postgres_database_to_the_head_revision_and_is_idempotent(
    monkeypatch: pytest.MonkeyPatch, isolated_environment: Path, throwaway_postgres_url: str
) -> None:
    monkeypatch.setenv("SEAWALL_DATABASE_URL", throwaway_postgres_url)
    expected = f"database is at revision {head_revision()} (newest: {head_revision()})"

    first = _seawall("migrate", cwd=isolated_environment)
    second = _seawall("migrate", cwd=isolated_environment)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout.strip() == expected
    assert second.stdout.strip() == expected
    assert asyncio.run(_alembic_version(throwaway_postgres_url)) == [head_revision()]


def test_migrate_against_an_unreachable_server_fails_with_exit_code_1_and_one_line(
    monkeypatch: pytest.MonkeyPatch, isolated_environment: Path
) -> None:
    # Nothing listens on port 1 of the loopback interface: the connection is refused at once.
    monkeypatch.setenv("SEAWALL_DATABASE_URL", "postgresql://seawall:sekrit@127.0.0.1:1/x")
    monkeypatch.setenv("SEAWALL_DATABASE_TIMEOUT_SECONDS", "2")

    result = _seawall("migrate", cwd=isolated_environment)

    assert result.returncode == 1
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("seawall: ")
    assert "sekrit" not in result.stderr
