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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from seawall.errors import ConfigurationError
from seawall.observability import mask_url

__all__ = [
    "DEFAULT_DATABASE_URL",
    "ENV_PREFIX",
    "LogLevel",
    "ServiceSettings",
    "Settings",
    "WebhookScheme",
    "WebhookSettings",
    "load_settings",
    "mask_url",
]

ENV_PREFIX = "SEAWALL_"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/seawall.db"
_DEFAULT_SECRETS_DIR = Path("/run/secrets")

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


_Seconds = Annotated[float, Field(gt=0, le=3600)]


class ServiceSettings(BaseModel):
    """One external service, from ``SEAWALL_SERVICES__<NAME>__<KEY>`` variables.

    The authentication scheme follows from what is set, unless ``AUTH`` names
    it: ``CLIENT_ID`` with ``TOKEN_URL`` is OAuth 2.0 client credentials,
    ``TOKEN`` a bearer token, ``API_KEY`` an API key (in ``API_KEY_HEADER``,
    or the ``API_KEY_QUERY`` parameter), ``USERNAME`` HTTP basic.
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(pattern=r"^https?://[^\s]+$", description="The API's root URL.")
    critical: bool = Field(
        default=True,
        description="Whether the service is needed to work (unhealthy) or optional (degraded).",
    )
    auth: Literal["none", "bearer", "api_key", "basic", "oauth2"] | None = None
    api_key: SecretStr | None = None
    api_key_header: str = "X-Api-Key"
    api_key_query: str | None = None
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    token_url: str | None = None
    scope: str | None = None
    timeout_connect: _Seconds = 5.0
    timeout_read: _Seconds = 10.0
    timeout_write: _Seconds = 10.0
    timeout_pool: _Seconds = 5.0
    total_timeout_seconds: _Seconds | None = None
    retry_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    breaker_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    breaker_recovery_seconds: _Seconds = 30.0
    rate_limit: str | None = Field(default=None, description="Such as 100/second or 5000/hour.")
    max_concurrent: Annotated[int, Field(ge=1, le=10_000)] | None = None
    cache_seconds: dict[str, Annotated[float, Field(gt=0, le=30 * 86400)]] = Field(
        default_factory=dict, description="Seconds to cache each GET path template, as JSON."
    )
    stale_seconds: Annotated[float, Field(gt=0, le=30 * 86400)] | None = None
    health_path: str | None = Field(default=None, pattern=r"^/")
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 100

    def scheme(self) -> str:
        """The authentication scheme in effect."""
        if self.auth is not None:
            return self.auth
        if self.client_id and self.token_url:
            return "oauth2"
        if self.token is not None:
            return "bearer"
        if self.api_key is not None:
            return "api_key"
        if self.username is not None:
            return "basic"
        return "none"


WebhookScheme = Literal["github", "stripe", "shopify", "slack", "twilio", "standard", "hmac"]


class WebhookSettings(BaseModel):
    """One webhook provider, from ``SEAWALL_WEBHOOKS__<NAME>__<KEY>`` variables.

    ``<name>`` is the path segment (``POST /webhooks/<name>``); the signature
    scheme is the name unless ``SCHEME`` says otherwise (two GitHub apps can be
    ``github`` and ``github-ops``, both ``SCHEME=github``).
    """

    model_config = ConfigDict(extra="forbid")

    secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Signing secrets, comma separated or a JSON list; any one may match.",
    )
    scheme: WebhookScheme | None = None
    tolerance_seconds: Annotated[float, Field(gt=0, le=86400)] = 300.0
    rate_limit: str = Field(default="1000/second", description="Per-provider request rate.")
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="The URL the provider calls, when a proxy changes it (Twilio signs it).",
    )
    # The generic scheme (SCHEME=hmac): where the signature is and how it is made.
    header: str | None = None
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    id_header: str | None = None
    template: str = "{body}"

    @field_validator("secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def scheme_for(self, name: str) -> str:
        """The signature scheme: ``scheme`` when set, else the provider's name."""
        return self.scheme or name


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
        # A secret file named seawall_webhooks__github__secrets sets one nested key.
        secrets_nested_delimiter="__",
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

    services: dict[str, ServiceSettings] = Field(
        default_factory=dict,
        description="External services, as SEAWALL_SERVICES__<NAME>__BASE_URL and friends.",
    )
    webhooks: dict[str, WebhookSettings] = Field(
        default_factory=dict,
        description="Webhook providers, as SEAWALL_WEBHOOKS__<NAME>__SECRETS and friends.",
    )
    webhook_dedup_days: Annotated[float, Field(gt=0, le=365)] = Field(
        default=7.0,
        description="How long delivery ids are remembered (providers retry for up to 3 days).",
    )
    health_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=10.0, description="Seconds between background dependency checks."
    )
    alert_webhook_url: SecretStr | None = Field(
        default=None,
        description="Where a breaker opening is posted as JSON (Slack-compatible), if set.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources, with secret files that may set one nested key each."""
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            NestedSecretsSettingsSource(file_secret_settings),
        )

    @field_validator("services", "webhooks", mode="before")
    @classmethod
    def _lower_names(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(name).lower(): config for name, config in value.items()}
        return value

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
                # A webhook URL's path is its secret: it shows as a secret whole.
                plain_url = name.endswith("_url") and name != "alert_webhook_url"
                value = mask_url(value.get_secret_value()) if plain_url else str(value)
            elif name in {"services", "webhooks"}:
                for member, config in value.items():
                    for key, item in config.model_dump(exclude_none=True).items():
                        shown: Any = item
                        if isinstance(item, SecretStr):
                            shown = str(item)
                        elif isinstance(item, list):
                            shown = [str(x) if isinstance(x, SecretStr) else x for x in item]
                        elif key == "base_url":
                            shown = mask_url(item)
                        view[f"{ENV_PREFIX}{name.upper()}__{member.upper()}__{key.upper()}"] = shown
                continue
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
