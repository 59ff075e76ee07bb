"""`seawall.observability`: JSON log lines, redaction, correlation ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from seawall.observability import (
    bind_correlation,
    configure_logging,
    current_causation_id,
    current_correlation_id,
    redact,
)


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()
    logging.captureWarnings(False)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_are_json_with_the_correlation_id(lines: io.StringIO) -> None:
    log = structlog.get_logger("test")

    with bind_correlation("corr-1", "cause-1"):
        log.info("thing_happened", count=3)

    [record] = records(lines)
    assert record["event"] == "thing_happened"
    assert record["count"] == 3
    assert record["correlation_id"] == "corr-1"
    assert record["causation_id"] == "cause-1"
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_standard_library_logs_are_json_too(lines: io.StringIO) -> None:
    with bind_correlation("corr-2"):
        logging.getLogger("uvicorn.error").warning("plain %s", "text")

    [record] = records(lines)
    assert record["event"] == "plain text"
    assert record["correlation_id"] == "corr-2"


def test_secrets_are_redacted_from_log_lines(lines: io.StringIO) -> None:
    log = structlog.get_logger("test")

    log.info(
        "connected",
        password="hunter2",
        api_key="sk_live_123",
        settings={"token": "t0k3n", "nested": {"client_secret": "cs"}},
        url="postgresql://app:pg-pass@db/cases",
        header="Bearer abc.def.ghi",
        wrapped=SecretStr("inside"),
        harmless="visible",
    )

    text = lines.getvalue()
    for secret in ("hunter2", "sk_live_123", "t0k3n", 'cs"', "pg-pass", "abc.def.ghi", "inside"):
        assert secret not in text
    assert records(lines)[0]["harmless"] == "visible"


def test_debug_lines_are_dropped_at_info_level(lines: io.StringIO) -> None:
    structlog.get_logger("test").debug("noise")

    assert records(lines) == []


def test_redact_keeps_structure() -> None:
    assert redact({"a": [1, {"password": "x"}], "b": "ok"}) == {
        "a": [1, {"password": "**********"}],
        "b": "ok",
    }


def test_bound_ids_are_restored_after_the_block() -> None:
    with bind_correlation("outer"):
        with bind_correlation("inner", "why"):
            assert (current_correlation_id(), current_causation_id()) == ("inner", "why")
        assert (current_correlation_id(), current_causation_id()) == ("outer", None)

    assert current_correlation_id() is None


@pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "new\nline", "é"])
def test_malformed_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="correlation"), bind_correlation(bad):
        pass


def test_query_string_passwords_are_redacted() -> None:
    line = "connecting to postgresql://app@db/cases?sslmode=require&password=hunter2"

    assert redact(line) == "connecting to postgresql://app@db/cases?sslmode=require&password=***"
