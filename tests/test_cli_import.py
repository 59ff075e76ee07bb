"""``seawall import``: a drop folder, or the store's watched prefix, into case documents.

The command runs in-process through typer's `CliRunner` on a migrated SQLite file
and a local blob store under the test's folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from typer.testing import CliRunner

from seawall.cli import app
from seawall.db import Database, cases, documents, outbox
from seawall.storage import LocalBlobStore
from tests.app.documents_helpers import make_pdf


@pytest.fixture(autouse=True)
def environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_template: Path
) -> dict[str, Any]:
    """No SEAWALL_* variable of the host; a migrated SQLite file and a blob folder of the test's."""
    for name in list(os.environ):
        if name.upper().startswith("SEAWALL_"):
            monkeypatch.delenv(name)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    database = tmp_path / "cli.db"
    shutil.copyfile(sqlite_template, database)
    blobs = tmp_path / "blobs"
    monkeypatch.setenv("SEAWALL_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("SEAWALL_DATABASE_URL", f"sqlite:///{database}")
    monkeypatch.setenv("SEAWALL_STORAGE__PATH", str(blobs))
    monkeypatch.setenv("SEAWALL_STORAGE__SIGNING_SECRET", "cli-test-secret")
    return {"database": f"sqlite:///{database}", "blobs": blobs}


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["import", *args])


def rows(url: str, table: sa.Table) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        database = Database(url)
        try:
            async with database.sessions() as session:
                return [dict(r) for r in (await session.execute(sa.select(table))).mappings()]
        finally:
            await database.dispose()

    return asyncio.run(read())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    drop = tmp_path / "drop"
    (drop / "ACME-1").mkdir(parents=True)
    (drop / "ACME-1__note.txt").write_text("call the customer back")
    (drop / "ACME-1" / "invoice.pdf").write_bytes(make_pdf("Invoice"))
    (drop / "ACME-2__list.csv").write_text("a,b\n1,2\n")
    (drop / ".hidden").write_text("never imported")
    return drop


def test_each_file_becomes_a_document_on_the_case_its_name_gives(
    folder: Path, environment: dict[str, Any]
) -> None:
    result = run(str(folder))

    assert result.exit_code == 0, result.output
    assert "imported 3, already there 0, skipped 0" in result.stdout
    by_ref = {c["external_id"]: c["id"] for c in rows(environment["database"], cases)}
    assert sorted(by_ref) == ["ACME-1", "ACME-2"]
    found = {
        (d["case_id"], d["filename"], d["source"]) for d in rows(environment["database"], documents)
    }
    assert found == {
        (by_ref["ACME-1"], "note.txt", "import"),
        (by_ref["ACME-1"], "invoice.pdf", "import"),
        (by_ref["ACME-2"], "list.csv", "import"),
    }
    types = sorted(e["event_type"] for e in rows(environment["database"], outbox))
    assert types == ["case.created"] * 2 + ["document.uploaded"] * 3
    assert len(list((environment["blobs"] / "data" / "documents").iterdir())) == 3


def test_importing_the_same_folder_again_adds_nothing(
    folder: Path, environment: dict[str, Any]
) -> None:
    run(str(folder))

    again = run(str(folder))

    assert again.exit_code == 0, again.output
    assert "imported 0, already there 3, skipped 0" in again.stdout
    assert len(rows(environment["database"], documents)) == 3
    assert len(rows(environment["database"], cases)) == 2
    assert len(list((environment["blobs"] / "data" / "documents").iterdir())) == 3


def test_a_manifest_and_case_option_name_the_case(
    tmp_path: Path, environment: dict[str, Any]
) -> None:
    drop = tmp_path / "plain"
    drop.mkdir()
    (drop / "a.txt").write_text("first")
    (drop / "b.txt").write_text("second")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"a.txt": "CRM-7"}))

    result = run(str(drop), "--case", "CRM-8", "--manifest", str(manifest))

    assert result.exit_code == 0, result.output
    by_id = {c["id"]: c["external_id"] for c in rows(environment["database"], cases)}
    placed = {d["filename"]: by_id[d["case_id"]] for d in rows(environment["database"], documents)}
    assert placed == {"a.txt": "CRM-7", "b.txt": "CRM-8"}


def test_a_file_without_a_case_is_skipped_with_the_reason(
    tmp_path: Path, environment: dict[str, Any]
) -> None:
    drop = tmp_path / "nameless"
    drop.mkdir()
    (drop / "orphan.txt").write_text("whose?")
    (drop / "X__tool.exe").write_bytes(b"MZ")

    result = run(str(drop))

    assert result.exit_code == 1
    assert "skipped orphan.txt: no case" in result.stderr
    assert "skipped X__tool.exe: type application/" in result.stderr
    assert rows(environment["database"], documents) == []


def test_the_watched_prefix_is_imported_and_emptied(environment: dict[str, Any]) -> None:
    async def drop() -> None:
        store = LocalBlobStore(environment["blobs"], signing_secret=SecretStr("x"))
        await store.put("imports/ACME-9/scan.txt", b"scanned", content_type="text/plain")
        await store.put("imports/ACME-9__again.txt", b"scanned", content_type="text/plain")

    asyncio.run(drop())

    result = run("--from-store")

    assert result.exit_code == 0, result.output
    assert "imported 1, already there 1, skipped 0" in result.stdout
    assert len(rows(environment["database"], documents)) == 1
    assert not list((environment["blobs"] / "data" / "imports").rglob("*.txt"))


@pytest.mark.parametrize("args", [[], ["somewhere", "--from-store"], ["/no/such/folder"]])
def test_it_needs_exactly_one_source(args: list[str]) -> None:
    result = run(*args)

    assert result.exit_code == 2
