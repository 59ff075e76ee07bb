"""The correlation and causation ids of the current unit of work."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import structlog

CORRELATION_HEADER = "X-Correlation-Id"
CAUSATION_HEADER = "X-Causation-Id"

# Ids travel in headers and logs: keep them short and free of anything a log
# parser or a header could misread. A caller's id that does not fit is replaced.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")

_correlation_id: ContextVar[str | None] = ContextVar("seawall_correlation_id", default=None)
_causation_id: ContextVar[str | None] = ContextVar("seawall_causation_id", default=None)


def new_correlation_id() -> str:
    """Return a fresh correlation id (a UUID4 string)."""
    return str(uuid.uuid4())


def valid_correlation_id(value: str | None) -> bool:
    """Tell whether *value* is acceptable as a correlation or causation id."""
    return value is not None and _ID_PATTERN.fullmatch(value) is not None


def current_correlation_id() -> str | None:
    """Return the correlation id of the current unit of work, if any."""
    return _correlation_id.get()


def current_causation_id() -> str | None:
    """Return the causation id (the id of what caused this work), if any."""
    return _causation_id.get()


@contextmanager
def bind_correlation(correlation_id: str, causation_id: str | None = None) -> Iterator[None]:
    """Make *correlation_id* (and *causation_id*) current for the enclosed code.

    The ids are also bound into structlog's context variables, so every log line
    written inside the block carries them.

    Raises:
        ValueError: an id is not a short token of letters, digits and ``._:-``.
    """
    for value in (correlation_id, causation_id):
        if value is not None and not valid_correlation_id(value):
            raise ValueError("correlation and causation ids are 1-128 chars of [A-Za-z0-9._:-]")
    tokens = (_correlation_id.set(correlation_id), _causation_id.set(causation_id))
    ids = {"correlation_id": correlation_id}
    if causation_id is not None:
        ids["causation_id"] = causation_id
    with structlog.contextvars.bound_contextvars(**ids):
        try:
            yield
        finally:
            _causation_id.reset(tokens[1])
            _correlation_id.reset(tokens[0])
