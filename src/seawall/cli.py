"""The ``seawall`` command line: serve, migrate, config show, version."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from types import FrameType
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

import seawall
from seawall.config import LogLevel, Settings, load_settings
from seawall.db import Database, current_revision, head_revision, migrate
from seawall.errors import ConfigurationError, DatabaseError
from seawall.observability import configure_logging

app = typer.Typer(
    name="seawall",
    help="seawall: reliable integrations with third-party services.\n\n"
    "Settings come from SEAWALL_* environment variables, a .env file and /run/secrets; "
    "see `seawall config show`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

_err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    # soft_wrap: Rich would otherwise break a long message at the console width, and
    # scripts and log collectors rely on one error being one line.
    _err.print(f"seawall: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigurationError as exc:
        _fail(str(exc))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [SEAWALL_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind [SEAWALL_PORT].")] = None,
    log_level: Annotated[
        LogLevel | None, typer.Option(help="Lowest log level [SEAWALL_LOG_LEVEL].")
    ] = None,
) -> None:
    """Run the cases service (HTTP API, health) until interrupted.

    On the embedded SQLite default, migrations are applied at start-up.
    """
    # Imported here so that `seawall version` and `config show` stay fast.
    import uvicorn  # noqa: PLC0415

    from seawall.app import create_app  # noqa: PLC0415

    settings = _settings(host=host, port=port, log_level=log_level)
    configure_logging(settings.log_level)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the
    # handler it found. With the default one that kills the process (status -15) after a
    # clean stop; a requested stop is a successful run, so it exits 0 instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


@app.command("migrate")
def migrate_command() -> None:
    """Apply the database migrations (the newest schema) to SEAWALL_DATABASE_URL."""
    settings = _settings()
    configure_logging(settings.log_level, stream=sys.stderr)

    async def run() -> str | None:
        database = Database(
            settings.database_url.get_secret_value(), timeout=settings.database_timeout_seconds
        )
        try:
            await migrate(database)
            return await current_revision(database)
        finally:
            await database.dispose()

    try:
        revision = asyncio.run(run())
    except DatabaseError as exc:
        _fail(str(exc), code=1)
    typer.echo(f"database is at revision {revision} (newest: {head_revision()})")


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the effective configuration, secrets masked."""
    view = _settings().public_view()
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    table = Table("setting", "value", title="seawall configuration")
    for key, value in view.items():
        table.add_row(key, "(unset)" if value is None else str(value))
    Console().print(table)


@app.command()
def version() -> None:
    """Print the seawall version."""
    typer.echo(f"seawall {seawall.__version__}")


def main() -> None:
    """Entry point of the ``seawall`` script."""
    app()
