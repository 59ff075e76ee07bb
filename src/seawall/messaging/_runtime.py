"""`Messaging`: the relay and the worker of one process, wired from `Settings`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import structlog

from seawall.config import Settings
from seawall.db import Database
from seawall.errors import ConfigurationError, StreamMismatch
from seawall.messaging._bus import Bus, InProcessBus
from seawall.messaging._consumer import Consumer, Worker, registry
from seawall.messaging._event import SUBJECT_PREFIX
from seawall.messaging._relay import OutboxRelay
from seawall.messaging._stopping import GRACE_SECONDS, finish

log = structlog.get_logger("seawall.messaging")


def build_bus(settings: Settings) -> Bus:
    """Return `NatsBus` when ``SEAWALL_NATS_URL`` is set, else a new `InProcessBus`."""
    if settings.nats_url is None:
        return InProcessBus()
    from seawall.messaging._nats import NatsBus  # noqa: PLC0415 - nats-py only when used

    return NatsBus(settings.nats_url.get_secret_value(), stream=settings.nats_stream)


def load_consumers(modules: Iterable[str]) -> list[Consumer]:
    """Import *modules* (which register their ``@consumer`` handlers) and return the registry's.

    Raises:
        ConfigurationError: a module cannot be imported.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(
                f"cannot import consumer module {name!r} ({exc})",
                key="SEAWALL_CONSUMER_MODULES",
            ) from exc
    return list(registry)


class Messaging:
    """Runs an `OutboxRelay` and/or a `Worker` on one bus, reconnecting until stopped.

    The HTTP service must serve while the broker is down (events wait in the
    outbox), so `start` returns at once; connecting, and connecting again after
    a failure, happens in the background with capped exponential back-off.

    Args:
        settings: where the bus, batch sizes and retentions come from.
        database: the open database.
        relay: run the relay.
        worker: run the consumers.
        consumers: the consumers to run; by default those of ``SEAWALL_CONSUMER_MODULES``.
        bus: a bus to use instead of the one the settings name.
    """

    def __init__(
        self,
        settings: Settings,
        database: Database,
        *,
        relay: bool = True,
        worker: bool = True,
        consumers: Iterable[Consumer] | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus or build_bus(settings)
        # A bus may route under its own prefix (NatsBus(subject_prefix=...)).
        self.subject_prefix: str = getattr(self.bus, "subject_prefix", SUBJECT_PREFIX)
        if not self.bus.durable and relay != worker:
            raise ConfigurationError(
                "the in-process bus needs the relay and the consumers in one process; "
                "set SEAWALL_NATS_URL to run `seawall relay` and `seawall worker` apart",
                key="SEAWALL_NATS_URL",
            )
        self.relay = (
            OutboxRelay(
                database,
                self.bus,
                batch_size=settings.relay_batch_size,
                poll_interval=settings.relay_poll_seconds,
                retention=timedelta(hours=settings.outbox_retention_hours),
                subject_prefix=self.subject_prefix,
            )
            if relay
            else None
        )
        chosen = list(consumers) if consumers is not None else None
        if worker and chosen is None:
            chosen = load_consumers(settings.consumer_modules)
        self.worker = (
            Worker(
                database,
                self.bus,
                chosen or [],
                inbox_retention=timedelta(days=settings.inbox_retention_days),
                subject_prefix=self.subject_prefix,
            )
            if worker
            else None
        )
        self.connected = False
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Messaging(bus={self.bus!r}, relay={self.relay is not None}, worker={self.worker})"

    async def start(self) -> None:
        """Start connecting and running in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="seawall-messaging")

    async def run(self) -> None:
        """Run in the foreground until cancelled (what `seawall relay` and `worker` do)."""
        await self.start()
        assert self._task is not None
        try:
            await asyncio.shield(self._task)
        finally:
            await self.stop()

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.bus.start()
                break
            except StreamMismatch as exc:
                # Not something waiting fixes: say so loudly, keep the service up.
                self.last_error = str(exc)
                log.error("messaging_stream_mismatch", error=str(exc))
                return
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("messaging_connect_failed", error=self.last_error, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.connected, self.last_error = True, None
        parts = []
        if self.worker is not None:
            # Consumers first: on the in-process bus they must exist before events flow.
            await self._start_worker(self.worker)
            parts.append(asyncio.create_task(self.worker.serve(), name="seawall-worker"))
        if self.relay is not None:
            parts.append(asyncio.create_task(self.relay.run(), name="seawall-relay"))
        try:
            await asyncio.gather(*parts)
        finally:
            self._ask_to_stop()
            await finish(parts, GRACE_SECONDS)

    async def _start_worker(self, worker: Worker) -> None:
        delay = 0.5
        while True:
            try:
                await worker.start()
                return
            except Exception as exc:  # the database or the broker; both come back
                log.warning("worker_start_failed", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _ask_to_stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        if self.worker is not None:
            self.worker.stop()

    async def stop(self) -> None:
        """Stop the relay and the worker between two rounds, then close the bus.

        Work in a database transaction gets a grace period to finish: cancelling it
        midway would leave a connection that cannot be closed cleanly.
        """
        if self._task is not None:
            if not self.connected:
                self._task.cancel()  # still connecting: nothing in flight
            self._ask_to_stop()
            await finish([self._task], GRACE_SECONDS)
            self._task = None
        with contextlib.suppress(Exception):
            await self.bus.close()
        self.connected = False

    async def health(self) -> dict[str, Any]:
        """The bus's health plus whether the relay and worker run here."""
        report: dict[str, Any] = (
            await self.bus.health() if self.connected else {"kind": self.bus.kind}
        )
        if not self.connected:
            report["status"] = "down"
            if self.last_error:
                report["error"] = self.last_error
        report["relay"] = self.relay is not None
        report["consumers"] = sorted(self.worker.consumers) if self.worker else []
        return report
