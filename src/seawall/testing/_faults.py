"""`ServerChaos`: the knobs that make a fake provider misbehave on purpose.

Every fake server has one, as ``fake.chaos``. A test thread turns the knobs
while the server thread reads them, so every method takes a lock. The choice of
what to do to one request is pure: `choose_fault` and `choose_latency` take the
knob state and a random source and return a decision; `fault_reply` turns a
decision into the status, headers and body to send. `ServerChaos` only holds
the state, takes the lock and counts what it injected.

Scheduled faults (``fail_next``, ``rate_limit_next``, ``malformed_next``,
``wrong_content_type_next``, ``hang_next``, ``drop_next``) form one queue, used
in the order they were set: ``rate_limit_next(1)`` then ``fail_next(2)`` answers
the next request with 429 and the two after it with 503.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from http import HTTPStatus
from typing import Any, Final, Literal, NamedTuple

__all__ = [
    "ErrorRate",
    "Fault",
    "FaultKind",
    "LatencyRange",
    "ScheduledFault",
    "ServerChaos",
    "choose_fault",
    "choose_latency",
    "fault_reply",
    "format_retry_after",
]

FaultKind = Literal[
    "error", "fail", "rate_limit", "malformed", "wrong_content_type", "hang", "drop"
]

KNOBS: Final = (
    "latency",
    "error_rate",
    "fail_next",
    "rate_limit_next",
    "malformed_next",
    "wrong_content_type_next",
    "hang_next",
    "drop_next",
)
"""The knob names accepted by `ServerChaos.configure` (and ``POST /_chaos``)."""

_COUNTERS: Final = ("latency", "error", "fail", "rate_limit", "malformed", "wrong_content_type")
_COUNTERS_ALL: Final = (*_COUNTERS, "hang", "drop")

# What a truncated JSON document from a provider that died mid-response looks like.
MALFORMED_BODY: Final = b'{"id": "ch_'
WRONG_CONTENT_TYPE_BODY: Final = (
    b"<!DOCTYPE html><html><head><title>Maintenance</title></head>"
    b"<body><h1>We'll be back soon</h1></body></html>"
)


class Fault(NamedTuple):
    """What to do to one request instead of (or after) answering it normally.

    Attributes:
        kind: ``"error"`` (from `ServerChaos.error_rate`), ``"fail"``,
            ``"rate_limit"``, ``"malformed"``, ``"wrong_content_type"``,
            ``"hang"`` or ``"drop"``.
        status: the HTTP status of the injected answer (200 for malformed and
            wrong-content-type answers; unused for hang and drop).
        retry_after: the ``Retry-After`` header value to send, if any.
        processed: for hang and drop, whether the real handler runs first
            (its side effects happen, only the answer is lost).
    """

    kind: FaultKind
    status: int = 200
    retry_after: str | None = None
    processed: bool = False


class ScheduledFault(NamedTuple):
    """A fault for the next *remaining* requests whose path starts with *path_prefix*."""

    fault: Fault
    remaining: int
    path_prefix: str | None = None


class LatencyRange(NamedTuple):
    """Added delay, uniform in [*low*, *high*] seconds, for paths under *path_prefix*."""

    low: float
    high: float
    path_prefix: str | None = None


class ErrorRate(NamedTuple):
    """A *rate* of requests (under *path_prefix*) answered with *status*."""

    rate: float
    status: int
    path_prefix: str | None = None


def _applies(path_prefix: str | None, path: str) -> bool:
    return path_prefix is None or path.startswith(path_prefix)


def choose_fault(
    scheduled: Sequence[ScheduledFault],
    error_rate: ErrorRate | None,
    path: str,
    draw: Callable[[], float],
) -> tuple[int | None, Fault | None]:
    """Decide the fault for a request to *path* (pure).

    The first scheduled fault whose prefix matches wins; otherwise the error
    rate draws one number. Nothing is drawn when a scheduled fault applies or
    the error rate does not, so a seeded generator repeats its sequence.

    Args:
        scheduled: the queue of scheduled faults, oldest first.
        error_rate: the random error knob, or None.
        path: the request path.
        draw: returns a uniform number in [0, 1) (``random.Random.random``).

    Returns:
        The index in *scheduled* of the entry used (the caller consumes it), or
        None, and the fault to inject, or None for a normal answer.
    """
    for index, entry in enumerate(scheduled):
        if entry.remaining > 0 and _applies(entry.path_prefix, path):
            return index, entry.fault
    if (
        error_rate is not None
        and _applies(error_rate.path_prefix, path)
        and draw() < error_rate.rate
    ):
        return None, Fault("error", error_rate.status)
    return None, None


def choose_latency(
    latency: LatencyRange | None, path: str, uniform: Callable[[float, float], float]
) -> float:
    """Seconds of delay to add before answering a request to *path* (pure).

    Args:
        latency: the latency knob, or None.
        path: the request path.
        uniform: returns a number in [a, b] (``random.Random.uniform``); only
            called when the range is not a single value.
    """
    if latency is None or not _applies(latency.path_prefix, path):
        return 0.0
    if latency.low == latency.high:
        return latency.low
    return uniform(latency.low, latency.high)


def _problem(status: int) -> bytes:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    document = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": "injected by seawall.testing chaos",
    }
    return json.dumps(document).encode()


def fault_reply(fault: Fault) -> tuple[int, dict[str, str], bytes] | None:
    """The status, headers and body that answer a request hit by *fault* (pure).

    Errors, failures and rate limits get an RFC 9457 problem document
    (``application/problem+json``) and, when set, a ``Retry-After`` header.

    Returns:
        The reply, or None for a hang or a drop, which send nothing.
    """
    kind = fault.kind
    if kind in ("hang", "drop"):
        return None
    if kind == "malformed":
        return 200, {"Content-Type": "application/json"}, MALFORMED_BODY
    if kind == "wrong_content_type":
        return 200, {"Content-Type": "text/html; charset=utf-8"}, WRONG_CONTENT_TYPE_BODY
    headers = {"Content-Type": "application/problem+json"}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    return fault.status, headers, _problem(fault.status)


def format_retry_after(value: float | timedelta | str) -> str:
    """A ``Retry-After`` header value: whole seconds as an integer, else the decimal.

    ``1`` and ``1.0`` give ``"1"``, ``0.25`` gives ``"0.25"``; a string (an
    HTTP date, or anything a test wants to send) is sent as it is.

    Raises:
        ValueError: a negative or non-finite number of seconds, or an empty string.
    """
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("retry_after must not be empty")
        return value.strip()
    number = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"retry_after must be a non-negative number of seconds, got {value!r}")
    if number.is_integer():
        return str(int(number))
    return repr(number)


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return n


def _status(status: int, low: int) -> int:
    if isinstance(status, bool) or not isinstance(status, int) or not low <= status <= 599:
        raise ValueError(f"status must be an integer from {low} to 599, got {status!r}")
    return status


def _prefix(path_prefix: str | None) -> str | None:
    if path_prefix is not None and not (isinstance(path_prefix, str) and path_prefix):
        raise ValueError(f"path_prefix must be a non-empty string, got {path_prefix!r}")
    return path_prefix


def _duration(value: float | timedelta, name: str) -> float:
    number = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, got {value!r}")
    return number


class ServerChaos:
    """Thread-safe chaos knobs of one fake server (``fake.chaos``).

    Every knob takes an optional *path_prefix*: only requests whose path starts
    with it are affected (``path_prefix="/api/"`` leaves ``/oauth/token`` alone).
    Admin endpoints (``/_chaos``, ``/_stats``) are never affected.

    Args:
        seed: seeds the random source of `latency` ranges and `error_rate`,
            for repeatable runs.
    """

    def __init__(self, *, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not cryptography
        self._scheduled: list[ScheduledFault] = []
        self._latency: LatencyRange | None = None
        self._error_rate: ErrorRate | None = None
        self._injected = dict.fromkeys(_COUNTERS_ALL, 0)
        # Read without the lock on every request: a stale False only delays a
        # knob set concurrently by one request.
        self._active = False

    def __repr__(self) -> str:
        return f"<ServerChaos active={self._active} pending={self.pending}>"

    @property
    def active(self) -> bool:
        """Whether any knob is set (when not, a request costs one attribute read)."""
        return self._active

    # --- knobs ----------------------------------------------------------------

    def latency(
        self,
        min_seconds: float | timedelta,
        max_seconds: float | timedelta | None = None,
        *,
        path_prefix: str | None = None,
    ) -> None:
        """Delay every answer by *min_seconds*, or by a uniform draw in [min, max].

        ``latency(0)`` turns the added latency off.

        Raises:
            ValueError: a negative duration, or *max_seconds* below *min_seconds*.
        """
        low = _duration(min_seconds, "min_seconds")
        high = low if max_seconds is None else _duration(max_seconds, "max_seconds")
        if high < low:
            raise ValueError("max_seconds must not be below min_seconds")
        knob = None if high == 0 else LatencyRange(low, high, _prefix(path_prefix))
        with self._lock:
            self._latency = knob
            self._refresh()

    def error_rate(
        self,
        rate: float,
        *,
        status: int = 500,
        path_prefix: str | None = None,
        seed: int | None = None,
    ) -> None:
        """Answer a random fraction *rate* of requests with a *status* problem document.

        ``error_rate(0)`` turns it off.

        Args:
            rate: probability in [0, 1] per request.
            status: a 5xx status.
            path_prefix: only affect paths starting with this.
            seed: reseed the random source first (same as `seed`).

        Raises:
            ValueError: *rate* outside [0, 1] or *status* not a 5xx.
        """
        value = float(rate)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {rate!r}")
        knob = ErrorRate(value, _status(status, 500), _prefix(path_prefix)) if value else None
        with self._lock:
            if seed is not None:
                self._rng.seed(seed)
            self._error_rate = knob
            self._refresh()

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        retry_after: float | timedelta | str | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next *n* requests with *status* (a problem document).

        Args:
            n: how many requests.
            status: a 4xx or 5xx status.
            retry_after: seconds (or an HTTP date string) for a ``Retry-After`` header.
            path_prefix: only affect paths starting with this.
        """
        header = None if retry_after is None else format_retry_after(retry_after)
        self._schedule(Fault("fail", _status(status, 400), header), n, path_prefix)

    def rate_limit_next(
        self,
        n: int = 1,
        *,
        retry_after: float | timedelta | str = 1.0,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next *n* requests with 429 and a ``Retry-After`` header.

        Args:
            n: how many requests.
            retry_after: seconds (sent as an integer when whole, else as a
                decimal) or an HTTP date string sent as is.
            path_prefix: only affect paths starting with this.
        """
        self._schedule(Fault("rate_limit", 429, format_retry_after(retry_after)), n, path_prefix)

    def malformed_next(self, n: int = 1, *, path_prefix: str | None = None) -> None:
        """Answer the next *n* requests with 200, ``application/json`` and a truncated body."""
        self._schedule(Fault("malformed"), n, path_prefix)

    def wrong_content_type_next(self, n: int = 1, *, path_prefix: str | None = None) -> None:
        """Answer the next *n* requests with 200 and an HTML page (a proxy's maintenance page)."""
        self._schedule(Fault("wrong_content_type"), n, path_prefix)

    def hang_next(
        self, n: int = 1, *, processed: bool = False, path_prefix: str | None = None
    ) -> None:
        """Never answer the next *n* requests (until the client gives up or the server stops).

        Args:
            n: how many requests.
            processed: run the real handler first, so its side effects happen
                and only the answer is lost (the case idempotency keys exist for).
            path_prefix: only affect paths starting with this.
        """
        self._schedule(Fault("hang", processed=bool(processed)), n, path_prefix)

    def drop_next(
        self, n: int = 1, *, processed: bool = False, path_prefix: str | None = None
    ) -> None:
        """Close the connection of the next *n* requests without sending a byte.

        Args:
            n: how many requests.
            processed: run the real handler first, so its side effects happen
                and only the answer is lost (the case idempotency keys exist for).
            path_prefix: only affect paths starting with this.
        """
        self._schedule(Fault("drop", processed=bool(processed)), n, path_prefix)

    def seed(self, seed: int | None) -> None:
        """Reseed the random source of latency ranges and the error rate."""
        with self._lock:
            self._rng.seed(seed)

    def reset(self) -> None:
        """Turn every knob off, forget scheduled faults and zero the `injected` counters."""
        with self._lock:
            self._scheduled.clear()
            self._latency = None
            self._error_rate = None
            self._injected = dict.fromkeys(_COUNTERS_ALL, 0)
            self._refresh()

    def configure(self, config: Mapping[str, Any]) -> None:
        """Set knobs from a JSON-like mapping, as ``POST /_chaos`` does.

        ``{"reset": true}`` resets first, ``{"seed": 7}`` reseeds, then each knob
        name maps to its arguments: an object of keyword arguments
        (``{"fail_next": {"n": 3, "status": 503}}``), a list of positional ones
        (``{"latency": [0.1, 0.3]}``) or a single value (``{"hang_next": 2}``).

        Raises:
            ValueError: an unknown knob name or a bad argument value.
            TypeError: *config* is not a mapping, or arguments do not fit a knob.
        """
        if not isinstance(config, Mapping):
            raise TypeError("the chaos configuration must be a JSON object")
        unknown = sorted(set(config) - {*KNOBS, "reset", "seed"})
        if unknown:
            raise ValueError(f"unknown chaos knobs {unknown}; known: {sorted(KNOBS)}")
        if config.get("reset"):
            self.reset()
        if "seed" in config:
            self.seed(config["seed"])
        for name, arguments in config.items():
            if name in ("reset", "seed"):
                continue
            knob: Callable[..., None] = getattr(self, name)
            if isinstance(arguments, Mapping):
                knob(**arguments)
            elif isinstance(arguments, list):
                knob(*arguments)
            else:
                knob(arguments)

    # --- state ----------------------------------------------------------------

    @property
    def injected(self) -> dict[str, int]:
        """How many times each kind of chaos was injected (a copy).

        Keys: ``latency``, ``error``, ``fail``, ``rate_limit``, ``malformed``,
        ``wrong_content_type``, ``hang`` and ``drop``.
        """
        with self._lock:
            return dict(self._injected)

    @property
    def pending(self) -> int:
        """How many scheduled faults are still waiting for a request."""
        with self._lock:
            return sum(entry.remaining for entry in self._scheduled)

    def decide(self, path: str) -> tuple[float, Fault | None]:
        """Consume the knobs for one request to *path* (called by the server).

        Returns:
            The seconds of latency to add first, and the fault to inject or None.
        """
        if not self._active:
            return 0.0, None
        with self._lock:
            delay = choose_latency(self._latency, path, self._rng.uniform)
            index, fault = choose_fault(self._scheduled, self._error_rate, path, self._rng.random)
            if index is not None:
                entry = self._scheduled[index]
                if entry.remaining > 1:
                    self._scheduled[index] = entry._replace(remaining=entry.remaining - 1)
                else:
                    del self._scheduled[index]
                    self._refresh()
            if delay > 0:
                self._injected["latency"] += 1
            if fault is not None:
                self._injected[fault.kind] += 1
            return delay, fault

    def _schedule(self, fault: Fault, n: int, path_prefix: str | None) -> None:
        entry = ScheduledFault(fault, _count(n), _prefix(path_prefix))
        with self._lock:
            self._scheduled.append(entry)
            self._refresh()

    def _refresh(self) -> None:
        self._active = bool(self._scheduled) or (
            self._latency is not None or self._error_rate is not None
        )
