"""``seawall admin keys create | list | revoke`` and ``seawall status``.

Registered on the main command in `seawall.cli`. Both read the database
directly, so they work without a running server; ``status --url`` also asks a
running service for its dependencies and their breakers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from seawall.db import Database, webhook_events

admin_app = typer.Typer(help="Administration of the admin API: its keys.", no_args_is_help=True)
keys_app = typer.Typer(
    help="API keys of the admin API (shown once, stored hashed).", no_args_is_help=True
)
admin_app.add_typer(keys_app, name="keys")

_SCOPES = ("read", "operate")
_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}


def _cli() -> Any:
    # The helpers of the main command; imported late because it registers this module.
    from seawall import cli  # noqa: PLC0415

    return cli


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what uses the key (shown in lists).")],
    scope: Annotated[str, typer.Option(help="read (GET only) or operate (also POST, DELETE).")],
    expires_days: Annotated[
        float | None, typer.Option(min=0.01, max=3650, help="Expire after so many days.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a key and print it once: it is stored hashed and cannot be shown again."""
    from seawall.auth import ApiKeys, Scope  # noqa: PLC0415

    cli = _cli()
    if scope not in _SCOPES:
        cli._fail("--scope must be read or operate")
    expires = None if expires_days is None else datetime.now(UTC) + timedelta(days=expires_days)

    chosen: Scope = "read" if scope == "read" else "operate"

    async def create(database: Database) -> Any:
        return await ApiKeys(database).create(name, chosen, expires_at=expires)

    try:
        record, token = cli._with_database(create)
    except ValueError as exc:
        cli._fail(str(exc))
    secret = token.get_secret_value()
    if as_json:
        typer.echo(json.dumps({**record.summary(), "key": secret}))
        return
    typer.echo(secret)
    cli._err.print(
        f"key {record.id} ({record.scope}) created for {record.name!r}: store it now, "
        "it cannot be shown again",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@keys_app.command("list")
def keys_list(
    active: Annotated[bool, typer.Option("--active", help="Hide revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List the keys (ids, names, scopes, use), never their secrets."""
    from seawall.auth import ApiKeys  # noqa: PLC0415

    found = _cli()._with_database(lambda db: ApiKeys(db).list(include_revoked=not active))
    if as_json:
        for record in found:
            typer.echo(json.dumps(record.summary()))
        return
    if not found:
        typer.echo("no API keys")
        return
    table = Table("id", "name", "scope", "state", "created", "last used", "expires")
    for record in found:
        state = "revoked" if record.revoked_at else "active" if record.active else "expired"
        table.add_row(
            record.id,
            record.name,
            record.scope,
            state,
            _when(record.created_at),
            _when(record.last_used_at),
            _when(record.expires_at),
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (sw_<id>_...).")]) -> None:
    """Revoke a key for good: requests with it get 401 from now on."""
    from seawall.auth import ApiKeys  # noqa: PLC0415

    cli = _cli()
    revoked = cli._with_database(lambda db: ApiKeys(db).revoke(key_id))
    if not revoked:
        cli._fail(f"no active key {key_id!r}", code=1)
    typer.echo(f"key {key_id} revoked")


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


async def _database_facts(database: Database) -> dict[str, Any]:
    import sqlalchemy as sa  # noqa: PLC0415

    from seawall.messaging import DeadLetters, outbox_lag  # noqa: PLC0415

    await database.ping()
    lag = await outbox_lag(database)
    dead = await DeadLetters(database).count(state="dead")
    async with database.reading() as session:
        parked = await session.scalar(
            sa.select(sa.func.count()).where(webhook_events.c.status == "parked")
        )
    return {
        "outbox": {
            "pending": lag.pending,
            "oldest_age_seconds": round(lag.oldest_age_seconds, 3),
            "retrying": lag.retrying,
            "parked": lag.parked,
        },
        "dead_letters": dict(sorted(dead.items())),
        "parked_webhooks": int(parked or 0),
    }


def _service_report(url: str, timeout: float) -> dict[str, Any]:
    try:
        response = httpx.get(url.rstrip("/") + "/health/dependencies", timeout=timeout)
        report = response.json()
        if not isinstance(report, dict) or "dependencies" not in report:
            raise ValueError("not a dependency report")
    except (httpx.HTTPError, ValueError) as exc:
        return {"status": "unreachable", "error": f"{type(exc).__name__}: {exc}"[:200]}
    return report


def status(
    url: Annotated[
        str | None,
        typer.Option(help="A running service (http://host:port) to ask for its dependencies."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, max=60, help="Seconds for --url.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show health, dependencies with their breakers, outbox lag and dead letters.

    Reads the database directly; with --url also the running service's
    /health/dependencies. Exits 1 when the database or a critical dependency is down.
    """
    # A database that cannot be reached ends the command here, with exit status 1.
    facts: dict[str, Any] = _cli()._with_database(_database_facts)
    facts["database"] = {"status": "healthy"}
    if url is not None:
        facts["service"] = _service_report(url, timeout)
    overall = _overall(facts)
    facts["status"] = overall
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
    else:
        _print_status(facts)
    if overall == "unhealthy":
        raise typer.Exit(1)


def _overall(facts: dict[str, Any]) -> str:
    if facts["database"]["status"] != "healthy":
        return "unhealthy"
    service = facts.get("service")
    if service is not None and service.get("status") in {"unhealthy", "unreachable"}:
        return "unhealthy"
    outbox = facts.get("outbox", {})
    late = outbox.get("parked") or outbox.get("oldest_age_seconds", 0) > 60
    if late or facts.get("dead_letters") or (service or {}).get("status") == "degraded":
        return "degraded"
    return "healthy"


def _print_status(facts: dict[str, Any]) -> None:
    console = Console()
    overall = facts["status"]
    console.print(f"seawall: [bold {_STYLE.get(overall, 'red')}]{overall}[/]")
    table = Table("dependency", "status", "critical", "breaker", "detail", title="dependencies")
    database = facts["database"]
    table.add_row("database", _styled(database["status"]), "yes", "-", database.get("error", ""))
    service = facts.get("service")
    if service is not None and "dependencies" in service:
        for name, dep in sorted(service["dependencies"].items()):
            if name == "database":
                continue
            table.add_row(
                name,
                _styled(dep.get("status", "?")),
                "yes" if dep.get("critical") else "no",
                str(dep.get("breaker") or "-"),
                str(dep.get("error") or "")[:60],
            )
    elif service is not None:
        table.add_row("service", _styled("unhealthy"), "yes", "-", service.get("error", ""))
    console.print(table)
    if "outbox" in facts:
        lag = Table("measure", "value", title="outbox")
        for key, value in facts["outbox"].items():
            lag.add_row(key, str(value))
        lag.add_row("parked webhooks", str(facts["parked_webhooks"]))
        console.print(lag)
        dead = Table("consumer", "dead letters", title="dead letters")
        for consumer, count in facts["dead_letters"].items():
            dead.add_row(consumer, str(count))
        if not facts["dead_letters"]:
            dead.add_row("-", "0")
        console.print(dead)


def _styled(status: str) -> str:
    return f"[{_STYLE.get(status, 'red')}]{status}[/]"
