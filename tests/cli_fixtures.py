"""Fixtures of the CLI tests, registered as a plugin by ``tests/conftest.py``.

The test modules of the command line turn on what they need with
``pytestmark = pytest.mark.usefixtures(...)``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog


@pytest.fixture
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SEAWALL_* variable, .env file or secrets directory of the host leaks in.

    Returns:
        The empty working directory the test runs in.
    """
    for name in list(os.environ):
        if name.upper().startswith("SEAWALL_"):
            monkeypatch.delenv(name)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    monkeypatch.setenv("SEAWALL_SECRETS_DIR", str(secrets))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """Undo what the commands' `configure_logging` does to this process."""
    names = ("", "aiosqlite", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled)
        for name in names
        for lg in [logging.getLogger(name)]
    }
    config = structlog.get_config()
    yield
    logging.captureWarnings(False)
    for name, (handlers, level, propagate, disabled) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled
    structlog.configure(**config)


@pytest.fixture
def database_file(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite file, named by SEAWALL_DATABASE_URL; returns its URL."""
    target = tmp_path / "cli.db"
    shutil.copyfile(sqlite_template, target)
    url = f"sqlite:///{target}"
    monkeypatch.setenv("SEAWALL_DATABASE_URL", url)
    return url
