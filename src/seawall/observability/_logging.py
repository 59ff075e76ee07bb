"""structlog configuration: JSON lines on stdout with secrets redacted.

Both structlog loggers and the standard library's (uvicorn, alembic, SQLAlchemy)
go through the same processors, so every line is JSON, carries the correlation
id from the context and has passed the redaction step.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog
from pydantic import SecretBytes, SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "**********"

# Keys whose values are secrets whatever their type.
_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|authorization|cookie|credential|signature|dsn)",
    re.IGNORECASE,
)
# user:password@ inside any URL-looking string.
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^/\s@]+@", re.IGNORECASE)
# Credentials passed as URL query parameters (libpq and asyncpg accept ?password=).
_SECRET_PARAMS = frozenset(
    {"password", "sslpassword", "secret", "token", "api_key", "apikey", "access_token", "auth"}
)
_QUERY_SECRET = re.compile(
    r"(?P<prefix>[?&](?:" + "|".join(sorted(_SECRET_PARAMS)) + r")=)[^&\s#]+", re.IGNORECASE
)
# Bearer and basic credentials that end up inside free text.
_AUTH_VALUE = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)
# Cheap first look: a string without any of these cannot hold what the three above match.
_MAYBE_SECRET = re.compile(r"@|[?&][^=\s]*=|bearer|basic", re.IGNORECASE)
_MAX_DEPTH = 6
# Whether a key names a secret, remembered: log lines reuse a small set of keys.
_SECRET_KEYS: dict[str, bool] = {}
_SECRET_KEYS_LIMIT = 4096


def _is_secret_key(key: str) -> bool:
    known = _SECRET_KEYS.get(key)
    if known is None:
        known = _SECRET_KEY.search(key) is not None
        if len(_SECRET_KEYS) < _SECRET_KEYS_LIMIT:
            _SECRET_KEYS[key] = known
    return known


def redact(value: Any, *, key: str | None = None, _depth: int = 0) -> Any:
    """Return *value* with secrets replaced by ``**********``.

    A value is a secret when its key looks like one (password, token, api_key,
    authorization, ...), when it is a `SecretStr`, or, inside strings, when it is
    the password of a URL or the credential of an ``Authorization`` value.
    """
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if key is not None and value is not None and _is_secret_key(key):
        return REDACTED
    if isinstance(value, str):
        if _MAYBE_SECRET.search(value) is None:
            return value
        value = _URL_PASSWORD.sub(r"\g<prefix>***@", value)
        value = _QUERY_SECRET.sub(r"\g<prefix>***", value)
        return _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {REDACTED}", value)
    if _depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: redact(v, key=str(k), _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v, _depth=_depth + 1) for v in value)
    return value


def mask_url(url: str) -> str:
    """Return *url* with its password (``user:pass@`` or ``?password=``) replaced by ``***``.

    User names, hosts, paths and harmless query parameters are kept; a URL that
    cannot be parsed is replaced whole.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{port}" if port is not None else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name.lower() in _SECRET_PARAMS for name, _ in pairs):
            masked = [(n, "***" if n.lower() in _SECRET_PARAMS else v) for n, v in pairs]
            query = urlencode(masked, safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret; urlunsplit would also drop an empty "//" authority
    return urlunsplit(parts._replace(netloc=netloc, query=query))


# Values of these types hold no secret and need no look (the common case).
_PLAIN = (int, float, bool, type(None))


def _redact_processor(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    redacted: MutableMapping[str, Any] = {}
    for k, v in event_dict.items():
        if isinstance(v, _PLAIN) and (k == "event" or not _is_secret_key(k)):
            redacted[k] = v
        else:
            redacted[k] = redact(v, key=None if k == "event" else k)
    return dict(redacted)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
    ]


def configure_logging(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Send structlog and standard-library logs to *stream* as JSON lines.

    Args:
        level: the lowest level written (``debug`` ... ``critical``).
        stream: where lines go; standard output by default.
    """
    numeric = logging.getLevelNamesMapping()[level.upper()]
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared_processors(),
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # uvicorn installs its own handlers; ours are the only ones, and we log requests ourselves.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Python warnings (deprecations in a dependency, say) become JSON lines too.
    logging.captureWarnings(True)
    # At DEBUG, aiosqlite logs every statement with its parameters: request bodies,
    # idempotency keys and stored responses, which must never reach the logs.
    logging.getLogger("aiosqlite").setLevel(max(numeric, logging.INFO))
    # httpx logs every request at INFO with its full URL, query included (where an
    # API key may sit). ExternalService logs each call itself, path template only.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    # structlog's own loggers skip the standard library: a level check that is a
    # no-op method, then the processors and one write of the rendered line (a
    # third of the cost of going through a LogRecord and a Formatter).
    target = stream or sys.stdout
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=lambda *args: _LineWriter(args[0] if args else None, target),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )


class _LineWriter:
    """What structlog's loggers write through: one rendered line per call, under a lock."""

    __slots__ = ("name", "stream")
    _lock = threading.Lock()

    def __init__(self, name: object, stream: TextIO) -> None:
        self.name = name if isinstance(name, str) else None
        self.stream = stream

    def msg(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _add_logger_name(logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict["logger"] = name
    return event_dict
