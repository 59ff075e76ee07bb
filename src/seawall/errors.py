"""The seawall error tree.

Every failure of the outside world that seawall reports is a `SeawallError`.
Bases end in ``Error``; leaves name the condition. Each error carries its facts
as attributes and its message says what happened and what to do.

    SeawallError
    ├── ConfigurationError          a setting is missing or invalid
    ├── DatabaseError               the database could not be reached or migrated
    │   └── MigrationError
    ├── ExternalServiceError        a third-party service did not give a usable answer
    │   ├── ServiceTimeout          it did not answer in time (connect, read, write, pool)
    │   ├── ServiceUnavailable      a 5xx, or the connection failed
    │   ├── ServiceRateLimited      a 429, with the delay it asked for
    │   ├── ServiceClientError      a 4xx: the request was refused, with the provider's message
    │   └── InvalidResponse         wrong content type, malformed JSON, or failed validation
    ├── IdempotencyError            an idempotency key cannot be honoured
    │   ├── IdempotencyKeyInFlight  the first request with this key is still running
    │   ├── IdempotencyKeyMismatch  the key was used with a different request body
    │   └── IdempotencyClaimLost    this run's key was taken over; its work must roll back
    ├── InvalidSignature            a webhook request is not proven to come from its provider
    ├── MessagingError              the bus, the relay or a consumer could not do its job
    │   ├── PublishError            the broker did not take an event (``permanent`` or not)
    │   ├── Unprocessable           a handler says a message can never succeed: dead-letter it
    │   └── StreamMismatch          a stream exists with a configuration seawall did not ask for
    └── ResilienceError             a resilience policy refused or gave up on a call
        ├── CircuitOpenError        the circuit is open: the call was not attempted
        ├── RateLimitExceeded       no slot within the limit (and no waiting allowed)
        ├── BulkheadFull            too many calls in flight and in the queue
        ├── TimeoutExceeded         an attempt or the whole call took too long
        └── RetryError              every attempt failed (tenacity-compatible)

API misuse (wrong argument types or values) raises `TypeError` or `ValueError`,
not a `SeawallError`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BulkheadFull",
    "CircuitOpenError",
    "ConfigurationError",
    "DatabaseError",
    "ExternalServiceError",
    "IdempotencyClaimLost",
    "IdempotencyError",
    "IdempotencyKeyInFlight",
    "IdempotencyKeyMismatch",
    "InvalidResponse",
    "InvalidSignature",
    "MessagingError",
    "MigrationError",
    "PublishError",
    "RateLimitExceeded",
    "ResilienceError",
    "RetryError",
    "SeawallError",
    "ServiceClientError",
    "ServiceRateLimited",
    "ServiceTimeout",
    "ServiceUnavailable",
    "StreamMismatch",
    "TimeoutExceeded",
    "Unprocessable",
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


class ExternalServiceError(SeawallError):
    """A third-party service did not give a usable answer.

    Attributes:
        service: the `seawall.http.ExternalService`'s name.
        method: the HTTP method of the call.
        path: the path template of the call (``/customers/{id}``), never the query.
        correlation_id: the ``X-Correlation-Id`` sent with the call, to find it in
            the provider's logs and ours.
        status: the HTTP status when the service answered (or the protocol's own
            reply code, such as SMTP's 550, for a service that is not HTTP).
        transient: whether trying again later can succeed (read by `Retry`).
    """

    transient = False

    def __init__(
        self,
        reason: str,
        *,
        service: str,
        method: str = "",
        path: str = "",
        correlation_id: str | None = None,
        status: int | None = None,
    ) -> None:
        self.service = service
        self.method = method
        self.path = path
        self.correlation_id = correlation_id
        self.status = status
        self.reason = reason
        call = f" ({method} {path})" if method else ""
        super().__init__(f"service {service!r}{call}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_external, (type(self), str(self), dict(self.__dict__)))


def _rebuild_external(
    cls: type[ExternalServiceError], message: str, fields: dict[str, Any]
) -> ExternalServiceError:
    # The subclasses' constructors differ; rebuild from the message and the facts.
    error = cls.__new__(cls)
    SeawallError.__init__(error, message)
    error.__dict__.update(fields)
    return error


class ServiceTimeout(ExternalServiceError):  # noqa: N818 - leaves name the condition
    """The service did not answer in time.

    Attributes:
        phase: ``connect``, ``read``, ``write`` or ``pool`` (waiting for a free
            connection of our own pool), or ``total``.
    """

    transient = True

    def __init__(self, *, phase: str, seconds: float | None = None, **call: Any) -> None:
        self.phase = phase
        self.seconds = seconds
        limit = f" of {seconds:g}s" if seconds is not None else ""
        super().__init__(f"{phase} timeout{limit} exceeded; retry later", **call)


class ServiceUnavailable(ExternalServiceError):  # noqa: N818 - leaves name the condition
    """The service answered 5xx, or could not be reached at all (``status`` is None).

    Attributes:
        retry_after: the seconds a ``Retry-After`` header asked for, if any.
    """

    transient = True
    retry_after: float | None = None


class ServiceRateLimited(ExternalServiceError):  # noqa: N818 - leaves name the condition
    """The service answered 429 Too Many Requests.

    Attributes:
        retry_after: the seconds it asked us to wait (``Retry-After``), if it said.
    """

    transient = True

    def __init__(self, *, retry_after: float | None, **call: Any) -> None:
        self.retry_after = retry_after
        wait = f"; it asked us to wait {retry_after:g}s" if retry_after is not None else ""
        super().__init__(f"rate limited (429){wait}", status=429, **call)


class ServiceClientError(ExternalServiceError):
    """The service refused the request with a 4xx; sending it again will not help.

    Attributes:
        provider_message: the message the provider gave, cut to 500 characters.
        code: the provider's error code, when it gave one.
    """

    def __init__(
        self,
        *,
        status: int,
        provider_message: str | None = None,
        code: str | None = None,
        **call: Any,
    ) -> None:
        self.provider_message = provider_message
        self.code = code
        said = f": {provider_message}" if provider_message else ""
        super().__init__(f"refused with {status}{said}", status=status, **call)


class InvalidResponse(ExternalServiceError):  # noqa: N818 - leaves name the condition
    """The service answered, but not with what we can use.

    A wrong content type, malformed JSON, a body over the size limit, or a body
    that fails validation into the expected model (``errors`` lists where).
    """

    def __init__(self, reason: str, *, errors: list[str] | None = None, **call: Any) -> None:
        self.errors = errors or []
        super().__init__(reason, **call)


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


class IdempotencyClaimLost(IdempotencyError):  # noqa: N818 - leaves name the condition
    """This run's claim on the key was taken over after the lock timeout.

    Another request owns the key now; the work of this run must roll back so
    that it is not done twice.
    """

    def __init__(self, *, key: str) -> None:
        super().__init__(
            "this request ran past the idempotency lock timeout and its key was taken "
            "over by a retry; nothing was saved, check the key's outcome and retry",
            key=key,
        )


class InvalidSignature(SeawallError):  # noqa: N818 - leaves name the condition
    """A webhook request failed signature verification: do not act on it.

    Raised by `seawall.webhooks.verify`. The message says what was wrong, never
    a secret or the signature expected.

    Attributes:
        provider: the provider the request claimed to come from (``stripe``, or an
            `HmacScheme`'s name).
        reason: a code, one of `seawall.webhooks.REASONS`: ``missing_header``,
            ``malformed_header``, ``header_too_large``, ``bad_signature`` (no
            signature matches any secret), ``timestamp_out_of_tolerance`` (signed,
            but too old or too far ahead: a replay or a clock out of sync),
            ``no_secret`` (none configured), ``unknown_provider``, and for Twilio
            ``unsigned_body``, ``malformed_body`` and ``body_hash_mismatch``.
        header: the header concerned, when one is.
        detail: what was found, in words.
    """

    def __init__(
        self, *, provider: str, reason: str, detail: str = "", header: str | None = None
    ) -> None:
        self.provider = provider
        self.reason = reason
        self.detail = detail
        self.header = header
        said = f": {detail}" if detail else ""
        super().__init__(f"webhook from {provider!r} rejected ({reason}){said}")

    def __reduce__(self) -> tuple[Any, ...]:
        fields = {"provider": self.provider, "reason": self.reason}
        return (_rebuild, (type(self), {**fields, "detail": self.detail, "header": self.header}))


class MessagingError(SeawallError):
    """The bus, the outbox relay or a consumer could not do its job."""


class PublishError(MessagingError):
    """The broker did not take an event.

    Attributes:
        permanent: True when sending it again cannot help (too large, rejected by the
            broker); the relay sets such an event aside instead of retrying it.
        transient: the opposite of ``permanent``, read by `seawall.resilience.Retry`.
    """

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        self.permanent = permanent
        self.transient = not permanent
        super().__init__(reason)


class Unprocessable(MessagingError):  # noqa: N818 - leaves name the condition
    """Raised by a consumer's handler: this message can never succeed, dead-letter it now.

    Any other exception is retried up to the consumer's ``max_deliver`` attempts.
    """


class StreamMismatch(MessagingError):  # noqa: N818 - leaves name the condition
    """A stream exists with settings other than the ones seawall needs; it is not changed.

    Attributes:
        stream: the stream's name.
        differences: ``{setting: (found, wanted)}``.
    """

    def __init__(self, *, stream: str, differences: dict[str, tuple[object, object]]) -> None:
        self.stream = stream
        self.differences = differences
        listed = "; ".join(f"{k}: found {f!r}, wanted {w!r}" for k, (f, w) in differences.items())
        super().__init__(
            f"stream {stream!r} exists with other settings ({listed}); "
            "seawall does not change a stream: update or delete it yourself"
        )


class ResilienceError(SeawallError):
    """A resilience policy refused a call or gave up on it."""


class CircuitOpenError(ResilienceError):
    """The circuit is open, so the call was not attempted.

    Raised on the fast path of every rejection, so it is cheap to build: the
    message is formatted only when read. A fresh instance per rejection keeps
    memory flat (a reused one would grow its traceback without bound).

    Attributes:
        breaker: the breaker's name.
        retry_after: seconds until the breaker lets a probe call through.
    """

    __slots__ = ("breaker", "retry_after")

    def __init__(self, *, breaker: str, retry_after: float) -> None:
        self.breaker = breaker
        self.retry_after = retry_after if retry_after > 0.0 else 0.0

    def __str__(self) -> str:
        return f"circuit {self.breaker!r} is open; next probe in {self.retry_after:.1f}s"

    def __repr__(self) -> str:
        return f"CircuitOpenError(breaker={self.breaker!r}, retry_after={self.retry_after!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), {"breaker": self.breaker, "retry_after": self.retry_after}))


def _rebuild(cls: type[SeawallError], fields: dict[str, Any]) -> SeawallError:
    return cls(**fields)


class RateLimitExceeded(ResilienceError):  # noqa: N818 - the name our patterns use
    """No slot is free within the rate limit.

    Attributes:
        limiter: the rate limit's name.
        key: the partition that is exhausted (a tenant, an endpoint), if any.
        retry_after: seconds until a slot frees.
    """

    def __init__(self, *, limiter: str, retry_after: float, key: str | None = None) -> None:
        self.limiter = limiter
        self.key = key
        self.retry_after = max(0.0, retry_after)
        where = f" for key {key!r}" if key else ""
        super().__init__(
            f"rate limit {limiter!r} exceeded{where}; retry in {self.retry_after:.2f}s"
        )


class BulkheadFull(ResilienceError):  # noqa: N818 - leaves name the condition
    """Too many calls are in flight and the queue is full (or the wait timed out).

    Attributes:
        bulkhead: the bulkhead's name.
        max_concurrent: calls allowed in flight at once.
        max_queue: calls allowed to wait for a slot.
    """

    def __init__(self, *, bulkhead: str, max_concurrent: int, max_queue: int) -> None:
        self.bulkhead = bulkhead
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        super().__init__(
            f"bulkhead {bulkhead!r} is full ({max_concurrent} in flight, "
            f"{max_queue} queued); shed load or retry later"
        )


class TimeoutExceeded(ResilienceError):  # noqa: N818 - the name our patterns use
    """An attempt, or the whole call with its retries, took too long.

    Attributes:
        timeout: the policy's name.
        seconds: the limit that was passed.
        scope: ``"attempt"`` or ``"total"``.
    """

    def __init__(self, *, timeout: str, seconds: float, scope: str = "attempt") -> None:
        self.timeout = timeout
        self.seconds = seconds
        self.scope = scope
        super().__init__(f"{scope} timeout {timeout!r} of {seconds:g}s exceeded")


class RetryError(ResilienceError):
    """Every attempt failed; raised by `retry` unless ``reraise=True`` (as in tenacity).

    Attributes:
        attempts: how many attempts were made.
        last_exception: the last attempt's exception, if it raised one.
        last_result: the last attempt's result, if it returned one that was retried.
    """

    def __init__(
        self,
        *,
        name: str,
        attempts: int,
        last_exception: BaseException | None = None,
        last_result: object = None,
    ) -> None:
        self.attempts = attempts
        self.last_exception = last_exception
        self.last_result = last_result
        cause = type(last_exception).__name__ if last_exception is not None else "a retried result"
        super().__init__(f"{name!r} failed after {attempts} attempts; last: {cause}")
