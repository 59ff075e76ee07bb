"""The ``seawall`` command line: serve, relay, worker, dlq, outbox, webhooks, migrate, config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

import seawall
from seawall.cli_admin import admin_app, status
from seawall.cli_demo import demo_command
from seawall.cli_import import import_command
from seawall.config import LogLevel, Settings, load_settings
from seawall.db import Database, current_revision, head_revision, migrate, require_schema
from seawall.errors import ConfigurationError, DatabaseError, SeawallError
from seawall.observability import configure_logging
from seawall.process import freeze_startup_heap
from seawall.process import run as run_process

T = TypeVar("T")

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
dlq_app = typer.Typer(
    help="Dead letters: messages a consumer gave up on. List, show, replay, purge.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")
outbox_app = typer.Typer(help="The transactional outbox: lag, parked events.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
webhooks_app = typer.Typer(
    help="Stored webhook deliveries: list, show, replay.", no_args_is_help=True
)
app.add_typer(webhooks_app, name="webhooks")
sync_app = typer.Typer(help="Pull changes from external systems into cases.", no_args_is_help=True)
app.add_typer(sync_app, name="sync")
app.add_typer(admin_app, name="admin")

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

    from seawall.app import ProblemHttpProtocol, create_app  # noqa: PLC0415

    settings = _settings(host=host, port=port, log_level=log_level)
    configure_logging(settings.log_level)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the
    # handler it found. With the default one that kills the process (status -15) after a
    # clean stop; a requested stop is a successful run, so it exits 0 instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    service = create_app(settings)
    freeze_startup_heap()
    uvicorn.run(
        service,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        http=ProblemHttpProtocol,
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


def _database(settings: Settings) -> Database:
    return Database(
        settings.database_url.get_secret_value(),
        pool_size=settings.database_pool_size,
        timeout=settings.database_timeout_seconds,
    )


def _run_messaging(*, relay: bool, worker: bool) -> None:
    from seawall.messaging import Messaging  # noqa: PLC0415 - keeps other commands fast

    settings = _settings()
    configure_logging(settings.log_level)
    if settings.nats_url is None:
        _fail(
            "SEAWALL_NATS_URL is not set: on the embedded default the relay and the "
            "consumers run inside `seawall serve`"
        )

    async def run() -> None:
        database = _database(settings)
        try:
            await require_schema(database)
            from seawall.app._sync import consumers_with_crm  # noqa: PLC0415 - the CRM bridge

            messaging = Messaging(
                settings,
                database,
                relay=relay,
                worker=worker,
                consumers=consumers_with_crm(settings),
            )
            main = asyncio.current_task()
            assert main is not None
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, main.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await messaging.run()
        finally:
            await database.dispose()

    try:
        freeze_startup_heap()
        run_process(run())
    except (ConfigurationError, DatabaseError) as exc:
        _fail(str(exc), code=2 if isinstance(exc, ConfigurationError) else 1)


@app.command()
def relay() -> None:
    """Publish outbox events to NATS JetStream until stopped (needs SEAWALL_NATS_URL).

    Any number of relays may run against one PostgreSQL database.
    """
    _run_messaging(relay=True, worker=False)


@app.command()
def worker() -> None:
    """Run the consumers of SEAWALL_CONSUMER_MODULES until stopped (needs SEAWALL_NATS_URL).

    Workers with the same consumers share the work; each consumer group gets every event.
    """
    _run_messaging(relay=False, worker=True)


# Commands of their own modules, listed after the processes above.
app.command("status")(status)
app.command("import")(import_command)
app.command("demo")(demo_command)


def _with_database(work: Callable[[Database], Awaitable[T]]) -> T:
    settings = _settings()
    configure_logging(settings.log_level, stream=sys.stderr)

    async def run() -> T:
        database = _database(settings)
        try:
            return await work(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except DatabaseError as exc:
        _fail(str(exc), code=1)
    except SQLAlchemyError as exc:
        _fail(f"database error ({type(exc).__name__}); is the schema migrated?", code=1)


_STATES = ("dead", "replay", "replayed", "all")


@dlq_app.command("list")
def dlq_list(
    consumer: Annotated[str | None, typer.Option(help="Only this consumer group.")] = None,
    state: Annotated[str, typer.Option(help="dead, replay (requested), replayed or all.")] = "dead",
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List dead letters, newest first."""
    from seawall.messaging import DeadLetters  # noqa: PLC0415

    if state not in _STATES:
        _fail(f"--state must be one of {', '.join(_STATES)}")
    chosen: Any = None if state == "all" else state
    letters = _with_database(
        lambda db: DeadLetters(db).list(consumer=consumer, state=chosen, limit=limit)
    )
    if as_json:
        for letter in letters:
            typer.echo(json.dumps(letter.summary()))
        return
    if not letters:
        typer.echo("no dead letters")
        return
    table = Table("id", "consumer", "event type", "state", "attempts", "error", "updated")
    for letter in letters:
        table.add_row(
            str(letter.id),
            letter.consumer,
            letter.event_type or "-",
            letter.state,
            str(letter.attempts),
            letter.error[:60],
            letter.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    Console().print(table)


@dlq_app.command("show")
def dlq_show(dead_letter_id: Annotated[int, typer.Argument(help="The dead letter's id.")]) -> None:
    """Print one dead letter as JSON: body, error and the history of attempts."""
    from seawall.messaging import DeadLetters  # noqa: PLC0415

    letter = _with_database(lambda db: DeadLetters(db).get(dead_letter_id))
    if letter is None:
        _fail(f"no dead letter {dead_letter_id}", code=1)
    try:
        body: Any = json.loads(letter.body)
    except ValueError:
        body = letter.body
    view = {**letter.summary(), "subject": letter.subject, "body": body}
    view["history"] = letter.history
    view["created_at"] = letter.created_at.isoformat()
    typer.echo(json.dumps(view, indent=2))


def _selection(ids: list[int] | None, consumer: str | None, everything: bool) -> None:
    if not ids and consumer is None and not everything:
        _fail("name dead letter ids, or --consumer NAME, or --all")


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids.")] = None,
    consumer: Annotated[str | None, typer.Option(help="Every dead letter of this group.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
) -> None:
    """Hand dead letters back to their consumer (a running worker replays them, once)."""
    from seawall.messaging import DeadLetters  # noqa: PLC0415

    _selection(ids, consumer, everything)
    count = _with_database(
        lambda db: DeadLetters(db).request_replay(ids or None, consumer=consumer)
    )
    typer.echo(f"{count} dead letter(s) queued for replay")
    _all_found(ids, count, "waiting in state dead (unknown, or queued or replayed already)")


@dlq_app.command("purge")
def dlq_purge(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids.")] = None,
    consumer: Annotated[str | None, typer.Option(help="Every dead letter of this group.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Delete dead letters for good."""
    from seawall.messaging import DeadLetters  # noqa: PLC0415

    _selection(ids, consumer, everything)
    if not yes and not typer.confirm("Delete these dead letters for good?"):
        raise typer.Exit(1)
    count = _with_database(lambda db: DeadLetters(db).purge(ids or None, consumer=consumer))
    typer.echo(f"{count} dead letter(s) purged")
    _all_found(ids, count, "in state dead or replayed (unknown, or queued for a replay)")


def _all_found(ids: list[int] | None, count: int, what: str) -> None:
    """Fail (exit 1) when some of the *ids* a user named were not acted on."""
    named = sorted(set(ids or ()))
    if len(named) == 1 and count == 0:
        _fail(f"no dead letter {named[0]} {what}", 1)
    if named and count < len(named):
        _fail(f"{len(named) - count} of the {len(named)} ids given are not dead letters {what}", 1)


def _webhook_filter(
    provider: str | None, event_type: str | None, status: str | None, since: str | None
) -> Any:
    from seawall.webhooks import WebhookFilter  # noqa: PLC0415

    try:
        start = None if since is None else datetime.fromisoformat(since)
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        return WebhookFilter(provider=provider, event_type=event_type, status=status, since=start)
    except ValueError as exc:
        _fail(str(exc))


_PROVIDER = Annotated[str | None, typer.Option(help="Only this provider.")]
_TYPE = Annotated[str | None, typer.Option("--type", help="Event type; * matches anything.")]
_STATUS = Annotated[
    str | None, typer.Option(help="received, processed, ignored, parked or failed.")
]
_SINCE = Annotated[str | None, typer.Option(help="Received at or after (ISO 8601, UTC).")]


@webhooks_app.command("list")
def webhooks_list(
    provider: _PROVIDER = None,
    event_type: _TYPE = None,
    status: _STATUS = None,
    since: _SINCE = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List stored webhook deliveries, newest first."""
    from seawall.webhooks import WebhookLog  # noqa: PLC0415

    selection = _webhook_filter(provider, event_type, status, since)
    found = _with_database(lambda db: WebhookLog(db).list(selection, limit=limit))
    if as_json:
        for item in found:
            typer.echo(json.dumps(item.summary()))
        return
    if not found:
        typer.echo("no webhook deliveries")
        return
    table = Table("id", "provider", "type", "status", "attempts", "received", "error")
    for item in found:
        table.add_row(
            item.id,
            item.provider,
            item.event_type or "-",
            item.status,
            str(item.attempts),
            item.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            (item.last_error or "")[:50],
        )
    Console().print(table)


@webhooks_app.command("show")
def webhooks_show(webhook_id: Annotated[str, typer.Argument(help="The delivery's id.")]) -> None:
    """Print one stored delivery as JSON, with its headers and body."""
    from seawall.webhooks import WebhookLog  # noqa: PLC0415

    found = _with_database(lambda db: WebhookLog(db).get(webhook_id))
    if found is None:
        _fail(f"no webhook delivery {webhook_id!r}", code=1)
    typer.echo(json.dumps(found.detail(), indent=2))


@webhooks_app.command("replay")
def webhooks_replay(
    ids: Annotated[list[str] | None, typer.Argument(help="Delivery ids.")] = None,
    provider: _PROVIDER = None,
    event_type: _TYPE = None,
    status: _STATUS = None,
    since: _SINCE = None,
    force: Annotated[
        bool, typer.Option("--force", help="Run the handlers even if already processed.")
    ] = False,
) -> None:
    """Run processing again (not verification); a running worker does it, once each."""
    from seawall.webhooks import WebhookLog  # noqa: PLC0415

    selection = _webhook_filter(provider, event_type, status, since)
    if not ids and selection.empty:
        _fail("name delivery ids, or filter with --provider, --type, --status or --since")
    count = _with_database(lambda db: WebhookLog(db).replay(ids or None, selection, force=force))
    typer.echo(f"{count} webhook delivery(ies) queued for replay")


@webhooks_app.command("recover")
def webhooks_recover(
    source: Annotated[str, typer.Argument(help="github or stripe.")],
    since: Annotated[str, typer.Option(help="Start of the window (ISO 8601, UTC).")],
    provider: Annotated[
        str | None, typer.Option(help="The webhook provider to store under (default: SOURCE).")
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(help="The SEAWALL_SERVICES__<NAME> of the provider's API (default: SOURCE)."),
    ] = None,
    repo: Annotated[str | None, typer.Option(help="GitHub: owner/name of the repository.")] = None,
    hook_id: Annotated[
        int | None, typer.Option(help="GitHub: the repository webhook's id.")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Stripe: only this type.")
    ] = None,
) -> None:
    """Fetch deliveries that never arrived from the provider's API and store them.

    They take the same dedupe, store and process path as a delivery that
    arrived; those already stored are counted as duplicates.
    """
    from seawall.app._webhooks import build_webhooks  # noqa: PLC0415
    from seawall.http import service_from_settings  # noqa: PLC0415
    from seawall.webhooks import (  # noqa: PLC0415
        WebhookProvider,
        recover_github,
        recover_stripe,
    )

    if source not in {"github", "stripe"}:
        _fail("SOURCE must be github or stripe")
    if source == "github" and (repo is None or hook_id is None):
        _fail("github needs --repo owner/name and --hook-id")
    start = _webhook_filter(None, None, None, since).since
    assert start is not None
    settings = _settings()
    api_name = service or source
    api_settings = settings.services.get(api_name)
    if api_settings is None:
        _fail(
            f"no SEAWALL_SERVICES__{api_name.upper()}__BASE_URL: the {source} API is not declared"
        )
    name = provider or source

    async def work(database: Database) -> dict[str, Any]:
        receiver, _ = build_webhooks(settings, database)
        target = receiver.providers.get(name) or WebhookProvider(
            name=name, scheme=source, secrets=()
        )
        async with service_from_settings(api_name, api_settings) as api:
            if source == "github":
                assert repo is not None
                assert hook_id is not None
                report = await recover_github(
                    api, receiver, target, repository=repo, hook_id=hook_id, since=start
                )
            else:
                report = await recover_stripe(api, receiver, target, since=start, types=event_type)
        return report.as_dict()

    try:
        counts = _with_database(work)
    except SeawallError as exc:
        _fail(str(exc), code=1)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(counts))


@outbox_app.command("status")
def outbox_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the outbox lag: pending rows, the oldest one's age, retrying and parked rows."""
    from seawall.messaging import outbox_lag  # noqa: PLC0415

    lag = _with_database(outbox_lag)
    view = {
        "pending": lag.pending,
        "oldest_age_seconds": round(lag.oldest_age_seconds, 3),
        "retrying": lag.retrying,
        "parked": lag.parked,
    }
    if as_json:
        typer.echo(json.dumps(view))
        return
    table = Table("measure", "value", title="outbox")
    for key, value in view.items():
        table.add_row(key, str(value))
    Console().print(table)


@outbox_app.command("requeue")
def outbox_requeue(
    seqs: Annotated[list[int] | None, typer.Argument(help="Sequence numbers; all if none.")] = None,
) -> None:
    """Put parked outbox events (refused by the broker) back in line for the relay."""
    from seawall.messaging import InProcessBus, OutboxRelay  # noqa: PLC0415

    count = _with_database(lambda db: OutboxRelay(db, InProcessBus()).requeue(seqs or None))
    typer.echo(f"{count} event(s) requeued")


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


@config_app.command("reference")
def config_reference() -> None:
    """Print every setting with its type, default and meaning, as Markdown."""
    from seawall._config_reference import reference_markdown  # noqa: PLC0415

    typer.echo(reference_markdown(), nl=False)


@sync_app.command("crm")
def sync_crm(
    full: Annotated[
        bool, typer.Option("--full", help="Read the whole feed; resumes a full sync that stopped.")
    ] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="With --full: start the full sync over.")
    ] = False,
) -> None:
    """Apply the CRM's changes since the last sync to cases, with a progress bar."""
    from seawall.app._sync import sync_crm_command  # noqa: PLC0415 - keeps other commands fast

    code = sync_crm_command(_settings(), full=full, restart=restart)
    if code:
        raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the seawall version."""
    typer.echo(f"seawall {seawall.__version__}")


def main() -> None:
    """Entry point of the ``seawall`` script."""
    app()
