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

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
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
    "AdminSettings",
    "CrmSyncSettings",
    "LogLevel",
    "ServiceSettings",
    "Settings",
    "StorageSettings",
    "SyncSettings",
    "TracingSettings",
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

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    base_url: str = Field(pattern=r"^https?://[^\s]+$", description="The API's root URL.")
    critical: bool = Field(
        default=True,
        description="Whether the service is needed to work (unhealthy) or optional (degraded).",
    )
    auth: Literal["none", "bearer", "api_key", "basic", "oauth2"] | None = None
    """The authentication scheme; inferred from the credentials set when unset."""
    api_key: SecretStr | None = None
    """An API key, sent in API_KEY_HEADER (or the API_KEY_QUERY parameter)."""
    api_key_header: str = "X-Api-Key"
    """The header that carries API_KEY."""
    api_key_query: str | None = None
    """Send API_KEY as this query parameter instead of a header (never logged)."""
    token: SecretStr | None = None
    """A bearer token."""
    username: str | None = None
    """HTTP basic user name (with PASSWORD)."""
    password: SecretStr | None = None
    """HTTP basic password."""
    client_id: str | None = None
    """OAuth 2.0 client credentials: the client id (with CLIENT_SECRET and TOKEN_URL)."""
    client_secret: SecretStr | None = None
    """OAuth 2.0 client secret."""
    token_url: str | None = None
    """OAuth 2.0 token endpoint; tokens are cached until shortly before they expire."""
    scope: str | None = None
    """OAuth 2.0 scope to ask for."""
    timeout_connect: _Seconds = 5.0
    """Seconds to open a connection."""
    timeout_read: _Seconds = 10.0
    """Seconds to wait for each read of the answer."""
    timeout_write: _Seconds = 10.0
    """Seconds to wait for each write of the request."""
    timeout_pool: _Seconds = 5.0
    """Seconds to wait for a free pooled connection."""
    total_timeout_seconds: _Seconds | None = None
    """Deadline for a call with all its retries."""
    retry_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Attempts per idempotent call (1 turns retries off); Retry-After is honoured."""
    breaker_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    """Consecutive failures that open the circuit breaker."""
    breaker_recovery_seconds: _Seconds = 30.0
    """How long the breaker stays open before one trial call."""
    rate_limit: str | None = Field(default=None, description="Such as 100/second or 5000/hour.")
    max_concurrent: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """Bulkhead: calls in flight at once (ten times as many may queue)."""
    cache_seconds: dict[str, Annotated[float, Field(gt=0, le=30 * 86400)]] = Field(
        default_factory=dict, description="Seconds to cache each GET path template, as JSON."
    )
    stale_seconds: Annotated[float, Field(gt=0, le=30 * 86400)] | None = None
    """How long past its TTL a cached answer may be served while the provider fails."""
    health_path: str | None = Field(default=None, pattern=r"^/")
    """A cheap GET the health monitor probes; unset: health is judged from the calls made."""
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Connection pool size."""

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

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Signing secrets, comma separated or a JSON list; any one may match.",
    )
    scheme: WebhookScheme | None = None
    """The signature scheme; unset means the provider's name."""
    tolerance_seconds: Annotated[float, Field(gt=0, le=86400)] = 300.0
    """How old (or, where the scheme says, how far ahead) a signed timestamp may be."""
    rate_limit: str = Field(default="1000/second", description="Per-provider request rate.")
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="The URL the provider calls, when a proxy changes it (Twilio signs it).",
    )
    # The generic scheme (SCHEME=hmac): where the signature is and how it is made.
    header: str | None = None
    """SCHEME=hmac: the header that carries the signature."""
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    """SCHEME=hmac: the HMAC hash."""
    encoding: Literal["hex", "base64"] = "hex"
    """SCHEME=hmac: how the signature is written."""
    prefix: str = ""
    """SCHEME=hmac: text before the signature, such as sha256=."""
    timestamp_header: str | None = None
    """SCHEME=hmac: the header with the signed Unix timestamp, if any."""
    id_header: str | None = None
    """SCHEME=hmac: the header with the delivery id (for dedupe)."""
    template: str = "{body}"
    """SCHEME=hmac: what is signed, from {body}, {timestamp} and {id}."""

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


class TracingSettings(BaseModel):
    """OpenTelemetry tracing, from ``SEAWALL_TRACING__<KEY>`` (needs ``seawall[otel]``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    enabled: bool = Field(default=False, description="Emit OpenTelemetry spans.")
    exporter: Literal["otlp", "console", "global"] = Field(
        default="otlp",
        description="otlp (HTTP/protobuf), console, or global: the provider already installed.",
    )
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="The OTLP traces URL; OTEL_EXPORTER_OTLP_* variables apply when unset.",
    )
    service_name: str = Field(default="seawall", min_length=1, max_length=200)
    """The service.name resource attribute of the spans."""
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Fraction of traces sampled (parent-based)."""


class StorageSettings(BaseModel):
    """The blob store of documents, from ``SEAWALL_STORAGE__<KEY>`` variables.

    ``BACKEND=local`` (the default) keeps files under ``PATH``; ``BACKEND=s3`` uses
    ``BUCKET`` on S3 or the S3-compatible server at ``ENDPOINT_URL`` (needs
    ``seawall[s3]``).
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    backend: Literal["local", "s3"] = "local"
    """Where documents are kept: local files, or S3 and compatible servers."""
    path: Path = Field(default=Path("./var/blobs"), description="The local store's directory.")
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    """The S3 bucket (BACKEND=s3)."""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    """An S3-compatible server (MinIO, R2, ...); unset means AWS."""
    region: str = "us-east-1"
    """The S3 region."""
    access_key_id: SecretStr | None = None
    """S3 access key id; unset uses the AWS credential chain."""
    secret_access_key: SecretStr | None = None
    """S3 secret access key."""
    signing_secret: SecretStr | None = Field(
        default=None,
        description="Key of the local store's signed URLs; unset means a random one per process.",
    )
    url_expiry_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] = Field(
        default=300, description="Lifetime of the signed URLs that GET /documents/{id} returns."
    )
    max_upload_bytes: Annotated[int, Field(ge=1, le=1 << 40)] = Field(
        default=200 << 20, description="Largest document accepted; larger is 413."
    )
    allowed_types: Annotated[list[str], NoDecode] = Field(
        default=[
            "application/pdf",
            "text/plain",
            "text/markdown",
            "text/csv",
            "application/json",
            "image/png",
            "image/jpeg",
        ],
        description="Media types a document may have (comma separated; 'text/*' allowed).",
    )
    import_prefix: str = Field(
        default="imports/", description="The watched prefix: new blobs there become documents."
    )

    @field_validator("allowed_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip().lower() for part in text.split(",") if part.strip()]
        return value


class CrmSyncSettings(BaseModel):
    """The CRM sync, from ``SEAWALL_SYNC__CRM__<KEY>`` variables (see docs/sync.md)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True)

    interval_seconds: Annotated[float, Field(gt=0, le=86400)] | None = Field(
        default=None,
        validation_alias=AliasChoices("interval_seconds", "interval"),
        description="Seconds between scheduled syncs in `seawall serve` (INTERVAL); unset: none.",
    )
    page_size: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=500, description="Changes read per page of the CRM's feed."
    )
    full_rate_limit: str | None = Field(
        default=None, description="Pages per period a full resync may read, such as 10/second."
    )


class SyncSettings(BaseModel):
    """Syncs from external systems, from ``SEAWALL_SYNC__<SOURCE>__<KEY>`` variables."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    crm: CrmSyncSettings = Field(default_factory=CrmSyncSettings)


class AdminSettings(BaseModel):
    """The admin API's authentication, from ``SEAWALL_ADMIN__<KEY>`` variables.

    API keys (``seawall admin keys create``) always work; JWTs are accepted when
    ``JWKS_URL`` is set, and then ``ISSUER`` and ``AUDIENCE`` are required.
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    jwks_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="The identity provider's JWKS URL; unset means API keys only.",
    )
    issuer: str | None = Field(default=None, description="The required 'iss' of a JWT.")
    audience: str | None = Field(default=None, description="The required 'aud' of a JWT.")
    scopes_claim: str = Field(
        default="scope", min_length=1, description="The JWT claim holding read/operate."
    )
    algorithms: list[str] = Field(
        default=["RS256", "PS256", "ES256", "EdDSA"],
        description="Allowed JWT algorithms (asymmetric only), as JSON.",
    )
    jwks_cache_seconds: Annotated[float, Field(gt=0, le=86400)] = 300.0
    """How long fetched JWKS keys are reused (an unknown kid refetches sooner)."""
    leeway_seconds: Annotated[float, Field(ge=0, le=600)] = 30.0
    """Clock skew allowed on a JWT's exp and nbf."""
    failed_auth_rate_limit: str = Field(
        default="10/minute", description="Failed authentications allowed per client address."
    )

    @model_validator(mode="after")
    def _jwt_needs_issuer_and_audience(self) -> AdminSettings:
        if self.jwks_url is not None and not (self.issuer and self.audience):
            raise ValueError("JWKS_URL needs ISSUER and AUDIENCE too")
        return self


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
        default=1000, description="Outbox rows the relay claims per round."
    )
    relay_poll_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=1.0, description="Seconds between outbox polls when nothing wakes the relay."
    )
    outbox_retention_hours: Annotated[float, Field(ge=0, le=24 * 365)] = Field(
        default=24.0,
        description=(
            "How long published outbox rows are kept; 0 deletes each row once published "
            "(needs SEAWALL_NATS_URL: the in-process bus redelivers from published rows)."
        ),
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
    admin: AdminSettings = Field(
        default_factory=AdminSettings,
        description="Admin API authentication, as SEAWALL_ADMIN__JWKS_URL and friends.",
    )
    storage: StorageSettings = Field(default_factory=StorageSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    metrics_cache_seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=5.0, description="How long database-derived metrics are reused between scrapes."
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

    @field_validator("outbox_retention_hours", mode="after")
    @classmethod
    def _deleting_needs_a_broker(cls, value: float, info: ValidationInfo) -> float:
        if not value and info.data.get("nats_url") is None:
            raise ValueError(
                "0 (delete rows once published) needs SEAWALL_NATS_URL: "
                "the in-process bus redelivers from published rows"
            )
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
            if isinstance(value, BaseModel):
                # A nested group (SEAWALL_ADMIN__JWKS_URL): JSON mode masks its secrets.
                for key, item in value.model_dump(mode="json").items():
                    view[f"{ENV_PREFIX}{name.upper()}__{key.upper()}"] = item
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
        if error["type"] == "value_error":  # our own validators' words, without pydantic's prefix
            message = message.removeprefix("Value error, ")
        problems.append(f"{key}: {message}")
    if len(problems) == 1 and first_key is not None:
        return ConfigurationError(problems[0].split(": ", 1)[1], key=first_key)
    return ConfigurationError("invalid configuration: " + "; ".join(problems), key=None)
