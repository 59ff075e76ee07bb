"""Configuration: one `Settings` object read from the environment.

Sources, highest priority first: arguments passed to `Settings(...)`, environment
variables (prefix ``SEAWALL_``, nested keys joined by ``__``), a ``.env`` file in
the working directory, and files in the secrets directory (``/run/secrets`` when it
exists, or ``SEAWALL_SECRETS_DIR``), one file per key as Docker and Kubernetes mount
them.

Anything that can carry a credential is a `pydantic.SecretStr`: it prints as
``**********`` in reprs, logs and errors. `Settings.public_view()` renders the
effective configuration with URL passwords masked, for ``seawall config show``.

This is the only module of seawall that reads ``os.environ``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from seawall.errors import ConfigurationError
from seawall.observability import mask_url

__all__ = [
    "DEFAULT_DATABASE_URL",
    "ENV_PREFIX",
    "LogLevel",
    "Settings",
    "load_settings",
    "mask_url",
]

ENV_PREFIX = "SEAWALL_"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/seawall.db"
_DEFAULT_SECRETS_DIR = Path("/run/secrets")

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Settings(BaseSettings):
    """The effective configuration of a seawall process.

    Every field maps to an environment variable named ``SEAWALL_<FIELD>``
    (for example ``SEAWALL_DATABASE_URL``); see the README for the full table.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="SQLAlchemy URL; sqlite:// and postgresql:// get their async drivers.",
    )
    nats_url: SecretStr | None = Field(
        default=None, description="NATS JetStream URL; unset means the in-process bus."
    )
    redis_url: SecretStr | None = Field(
        default=None, description="Redis URL for shared state; unset means in-memory state."
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address to listen on.")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8000, description="TCP port to listen on."
    )
    log_level: LogLevel = Field(default="info", description="Minimum level of log lines.")
    auto_migrate: bool | None = Field(
        default=None,
        description="Apply migrations at start-up; unset means only on the embedded SQLite.",
    )
    idempotency_ttl_seconds: Annotated[int, Field(ge=1, le=30 * 86400)] = Field(
        default=86400, description="How long an Idempotency-Key and its response are kept."
    )
    idempotency_lock_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        default=60,
        description="After this long, an unfinished request's key is taken as abandoned.",
    )
    max_body_bytes: Annotated[int, Field(ge=1, le=1 << 30)] = Field(
        default=1 << 20, description="Largest request body accepted; larger is 413."
    )
    database_pool_size: Annotated[int, Field(ge=1, le=200)] = Field(
        default=10, description="Connections kept open per process (PostgreSQL)."
    )
    database_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = Field(
        default=5.0, description="Time to wait for a connection or a locked SQLite database."
    )
    relay: bool = Field(default=True, description="Run the outbox relay inside `seawall serve`.")
    worker: bool = Field(
        default=True, description="Run the event consumers inside `seawall serve`."
    )
    consumer_modules: Annotated[list[str], NoDecode] = Field(
        default=["seawall.app.consumers"],
        description="Modules whose @consumer handlers the worker runs (comma separated).",
    )
    nats_stream: str = Field(
        default="SEAWALL",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="JetStream stream of the events (dead letters go to <name>_DLQ).",
    )
    relay_batch_size: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=500, description="Outbox rows the relay claims per round."
    )
    relay_poll_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=1.0, description="Seconds between outbox polls when nothing wakes the relay."
    )
    outbox_retention_hours: Annotated[float, Field(gt=0, le=24 * 365)] = Field(
        default=24.0, description="How long published outbox rows are kept."
    )
    inbox_retention_days: Annotated[float, Field(gt=0, le=365)] = Field(
        default=7.0,
        description="How long consumers remember processed message ids (the duplicate guard).",
    )

    @field_validator("consumer_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url", mode="after")
    @classmethod
    def _known_database(cls, value: SecretStr) -> SecretStr:
        scheme = value.get_secret_value().split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @property
    def is_embedded_database(self) -> bool:
        """Whether the database is the embedded SQLite file (no server)."""
        return self.database_url.get_secret_value().startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        """Whether start-up applies migrations (default: only on SQLite)."""
        return self.is_embedded_database if self.auto_migrate is None else self.auto_migrate

    def public_view(self) -> dict[str, Any]:
        """Return the effective settings, keyed by environment variable, secrets masked.

        URLs keep their scheme, host and path with the password replaced by ``***``;
        other secrets show as ``**********``.
        """
        view: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = mask_url(value.get_secret_value()) if name.endswith("_url") else str(value)
            view[f"{ENV_PREFIX}{name.upper()}"] = value
        return view


def _secrets_dir() -> Path | None:
    configured = os.environ.get(f"{ENV_PREFIX}SECRETS_DIR")
    if configured:
        return Path(configured)
    return _DEFAULT_SECRETS_DIR if _DEFAULT_SECRETS_DIR.is_dir() else None


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, ``.env`` and the secrets directory.

    Args:
        **overrides: field values that win over every other source.

    Returns:
        The validated settings.

    Raises:
        ConfigurationError: a value is invalid; the message is one line naming the
            environment variable and never includes a secret value.
    """
    secrets_dir = _secrets_dir()
    if secrets_dir is not None and not secrets_dir.is_dir():
        raise ConfigurationError(
            f"secrets directory {str(secrets_dir)!r} does not exist",
            key=f"{ENV_PREFIX}SECRETS_DIR",
        )
    try:
        return Settings(_secrets_dir=secrets_dir, **overrides)
    except ValidationError as exc:
        raise _configuration_error(exc) from None


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    problems = []
    first_key: str | None = None
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in error["loc"]]
        key = ENV_PREFIX + "__".join(loc).upper() if loc else ENV_PREFIX.rstrip("_")
        first_key = first_key or key
        message = str(error["msg"]).rstrip(".")
        problems.append(f"{key}: {message}")
    if len(problems) == 1 and first_key is not None:
        return ConfigurationError(problems[0].split(": ", 1)[1], key=first_key)
    return ConfigurationError("invalid configuration: " + "; ".join(problems), key=None)
