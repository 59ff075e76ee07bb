"""``seawall import``: a drop folder (or the store's watched prefix) into case documents."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.exc import SQLAlchemyError

from seawall.config import Settings, load_settings
from seawall.errors import ConfigurationError, DatabaseError, SeawallError
from seawall.process import freeze_startup_heap
from seawall.process import run as run_process

if TYPE_CHECKING:
    from seawall.app._imports import ImportOutcome

_out = Console()
_err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"seawall: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def import_command(
    folder: Annotated[
        Path | None,
        typer.Argument(help="The folder whose files become documents (recursively)."),
    ] = None,
    case: Annotated[
        str | None,
        typer.Option("--case", help="Attach every file to this case (id or external id)."),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(help='A JSON file: {"path/in/folder.pdf": "case id or external id"}.'),
    ] = None,
    from_store: Annotated[
        bool,
        typer.Option(
            "--from-store",
            help="Import the blobs under the store's watched prefix "
            "[SEAWALL_STORAGE__IMPORT_PREFIX] instead of a folder.",
        ),
    ] = False,
    watch: Annotated[
        float | None,
        typer.Option(help="With --from-store: scan again every this many seconds, until stopped."),
    ] = None,
) -> None:
    """Turn each new file into a document on its case, idempotently.

    A file's case is named by the manifest, by --case, by its first folder
    (ACME-42/invoice.pdf) or by its name before '__' (ACME-42__invoice.pdf); a
    case id or external id that no case has opens a new case. The same file
    imported twice is one document.
    """
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    if from_store == (folder is not None):
        raise _fail("give a FOLDER or --from-store (one of them)")
    if folder is not None and not folder.is_dir():
        raise _fail(f"{str(folder)!r} is not a folder")
    entries: dict[str, str] = {}
    if manifest is not None:
        from seawall.app._imports import read_manifest  # noqa: PLC0415 - keeps the CLI fast

        try:
            entries = read_manifest(manifest)
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise _fail(f"cannot read the manifest: {exc}") from None
    try:
        freeze_startup_heap()
        failed = run_process(_run(settings, folder, case, entries, watch))
    except (DatabaseError, SeawallError) as exc:
        raise _fail(str(exc), code=1) from None
    except SQLAlchemyError as exc:
        raise _fail(f"database error ({type(exc).__name__}); is the schema migrated?", 1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if failed:
        raise typer.Exit(1)


async def _run(
    settings: Settings,
    folder: Path | None,
    case: str | None,
    manifest: dict[str, str],
    watch: float | None,
) -> int:
    # The service's modules load only for this command.
    from seawall.app._documents import build_blob_store  # noqa: PLC0415
    from seawall.app._imports import (  # noqa: PLC0415
        files_in,
        import_folder,
        import_prefix_once,
    )
    from seawall.db import Database, migrate, require_schema  # noqa: PLC0415

    database = Database(
        settings.database_url.get_secret_value(),
        pool_size=settings.database_pool_size,
        timeout=settings.database_timeout_seconds,
    )
    blobs = build_blob_store(settings.storage)
    try:
        await (migrate(database) if settings.should_auto_migrate else require_schema(database))
        await blobs.open()
        if folder is None:
            outcomes: list[ImportOutcome] = []
            while True:
                outcomes += await import_prefix_once(database, blobs, settings.storage)
                if watch is None:
                    break
                await asyncio.sleep(watch)
        else:
            total = sum(path.stat().st_size for _, path in files_in(folder))
            with Progress(
                TextColumn("[bold]importing"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
                console=_err,
            ) as progress:
                task = progress.add_task("", total=total)

                def advance(outcome: ImportOutcome, size: int) -> None:
                    progress.update(task, advance=size, description=outcome.name)

                outcomes = await import_folder(
                    database,
                    blobs,
                    settings.storage,
                    folder,
                    case_ref=case,
                    manifest=manifest,
                    on_file=advance,
                )
    finally:
        await blobs.aclose()
        await database.dispose()
    return _report(outcomes)


def _report(outcomes: list[ImportOutcome]) -> int:
    created = sum(1 for o in outcomes if o.created)
    failed = [o for o in outcomes if o.error is not None]
    for outcome in failed:
        _err.print(f"skipped {outcome.name}: {outcome.error}", markup=False, highlight=False)
    known = len(outcomes) - created - len(failed)
    _out.print(
        f"imported {created}, already there {known}, skipped {len(failed)}",
        markup=False,
        highlight=False,
    )
    return len(failed)
