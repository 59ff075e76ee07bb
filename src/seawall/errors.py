"""The seawall error tree.

Every failure of the outside world that seawall reports is a `SeawallError`.
Bases end in ``Error``; leaves name the condition. Each error carries its facts
as attributes and its message says what happened and what to do.

    SeawallError
    ├── ConfigurationError          a setting is missing or invalid
    ├── DatabaseError               the database could not be reached or migrated
    │   └── MigrationError
    └── IdempotencyError            an idempotency key cannot be honoured
        ├── IdempotencyKeyInFlight  the first request with this key is still running
        └── IdempotencyKeyMismatch  the key was used with a different request body

API misuse (wrong argument types or values) raises `TypeError` or `ValueError`,
not a `SeawallError`.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "IdempotencyError",
    "IdempotencyKeyInFlight",
    "IdempotencyKeyMismatch",
    "MigrationError",
    "SeawallError",
]


class SeawallError(Exception):
    """Base of every error seawall raises for a failure outside the caller's code."""


class ConfigurationError(SeawallError):
    """A setting is missing or has an invalid value.

    Attributes:
        key: the environment variable name of the offending setting, when known.
        reason: what is wrong with it (never the secret value itself).
    """

    def __init__(self, reason: str, *, key: str | None = None) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"invalid configuration: {key}: {reason}" if key else reason)


class DatabaseError(SeawallError):
    """The database could not be reached or used."""


class MigrationError(DatabaseError):
    """Applying the schema migrations failed."""


class IdempotencyError(SeawallError):
    """An idempotency key cannot be honoured for this request."""

    def __init__(self, message: str, *, key: str) -> None:
        self.key = key
        super().__init__(message)


class IdempotencyKeyInFlight(IdempotencyError):  # noqa: N818 - leaves name the condition
    """A request with the same idempotency key is still being processed."""

    def __init__(self, *, key: str) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still being processed; retry later",
            key=key,
        )


class IdempotencyKeyMismatch(IdempotencyError):  # noqa: N818 - leaves name the condition
    """The idempotency key was already used with a different request."""

    def __init__(self, *, key: str) -> None:
        super().__init__(
            "this Idempotency-Key was already used with a different request body; "
            "use a new key for a new request",
            key=key,
        )
