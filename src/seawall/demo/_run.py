"""`run_demo`: start the fakes and the service, play the scenario, summarise, stop cleanly."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Final

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.text import Text

from seawall.demo._report import Reporter
from seawall.demo._scenario import BREAKER_FAILURES, BREAKER_RECOVERY_SECONDS, Scenario
from seawall.demo._stack import (
    DemoError,
    DemoSecrets,
    ServiceProcess,
    pick_port,
    prepare_folder,
    service_environment,
)
from seawall.observability import configure_logging, observe_resilience
from seawall.testing import FakeNotifications, FakePaymentGateway

__all__ = ["DEFAULT_FOLDER", "DEFAULT_PORT", "run_demo"]

DEFAULT_FOLDER: Final = Path("var/demo")
DEFAULT_PORT: Final = 8000
EXIT_INTERRUPTED: Final = 130


def run_demo(
    *,
    folder: Path = DEFAULT_FOLDER,
    port: int = DEFAULT_PORT,
    keep_running: bool = True,
    console: Console | None = None,
) -> int:
    """Run the demo: the fakes, ``seawall serve``, the scenario and its summary.

    Args:
        folder: the working folder; emptied at start (only if an earlier demo made it).
        port: where the service listens on 127.0.0.1; 0 picks a free port.
        keep_running: after the summary, keep the service and the fakes running
            until SIGINT (Ctrl-C) or SIGTERM; otherwise stop at once.
        console: where the output goes; standard output by default.

    Returns:
        The exit status: 0 when every step passed (and, with *keep_running*,
        the demo was then stopped by a signal), 1 when a step failed or the
        service could not run, 130 when interrupted before the summary.
    """
    demo = _Demo(console or Console(highlight=False), keep_running=keep_running)
    return asyncio.run(demo.main(folder, port))


class _Demo:
    def __init__(self, console: Console, *, keep_running: bool) -> None:
        self.console = console
        self.reporter = Reporter(console)
        self.keep_running = keep_running
        self.waiting = False
        self.interrupted = False

    async def main(self, folder: Path, port: int) -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            # A second Ctrl-C must not cut the clean stop short.
            if self.interrupted:
                return
            self.interrupted = True
            if not self.waiting:
                self.reporter.fail("interrupted; stopping")
            task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, interrupt)
        try:
            return await self.run(folder, port)
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
            task.uncancel()
            return 0 if self.waiting else EXIT_INTERRUPTED
        except DemoError as exc:
            # Like every seawall command's own errors: one line on standard error.
            Console(stderr=True).print(
                f"seawall: {exc}", markup=False, highlight=False, soft_wrap=True
            )
            return 1
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    async def run(self, folder: Path, port: int) -> int:
        # The port first: a demo still running there keeps its folder.
        chosen = pick_port(port)
        where = prepare_folder(folder)
        secrets = DemoSecrets.generate()
        self.reporter.heading("seawall demo: the cases service against failing third parties")
        self.reporter.line(f"working folder {where}, fresh (SQLite, in-process bus)")
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        with (where / "demo.log").open("a", encoding="utf-8") as demo_log:
            # The demo's own library calls (the payments adapter, its breaker) log here,
            # so that the terminal shows only the story.
            configure_logging("info", stream=demo_log)
            # Breaker transitions and retries as log lines too (breaker_opened, ...).
            unsubscribe = observe_resilience(metrics=False)
            try:
                return await self._run_in(where, chosen, secrets)
            finally:
                for undo in unsubscribe:
                    undo()
                # The file closes here: logging must not keep writing to it.
                root.handlers[:], root.level = handlers, level

    async def _run_in(self, where: Path, chosen: int, secrets: DemoSecrets) -> int:
        async with (
            FakePaymentGateway(api_key=secrets.gateway_api_key) as payments,
            FakeNotifications(
                slack_webhook_path=secrets.slack_path.get_secret_value()
            ) as notifications,
        ):
            self.reporter.line(f"fake payment gateway (Stripe-style) on {payments.url}")
            self.reporter.line(f"fake Slack incoming webhook on {notifications.url}")
            service = ServiceProcess(
                where,
                service_environment(
                    where,
                    run_secrets=secrets,
                    payments_url=payments.url,
                    slack_url=notifications.url + secrets.slack_path.get_secret_value(),
                    poison_flag=where / "poison.flag",
                    breaker_failures=BREAKER_FAILURES,
                    breaker_recovery_seconds=BREAKER_RECOVERY_SECONDS,
                ),
                port=chosen,
            )
            migrated = await asyncio.to_thread(service.command, "migrate")
            self.reporter.line(f"seawall migrate: {migrated.strip()}")
            made = json.loads(
                await asyncio.to_thread(
                    service.command,
                    *("admin", "keys", "create", "--name", "demo", "--scope", "operate"),
                    "--json",
                )
            )
            key = SecretStr(made["key"])
            self.reporter.line(f"seawall admin keys create: key {made['id']}, scope operate")
            service.start()
            try:
                return await self.play(service, key, payments, notifications, secrets)
            finally:
                status = await service.stop()
                self.console.print()
                self.reporter.line(
                    f"stopped seawall serve (exit status {status}) and the fake providers"
                )

    async def play(
        self,
        service: ServiceProcess,
        key: SecretStr,
        payments: FakePaymentGateway,
        notifications: FakeNotifications,
        secrets: DemoSecrets,
    ) -> int:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=10.0) as client:
            await service.wait_until_ready(client)
            self.reporter.line(f"seawall serve on {service.base_url}, log in {service.log_path}")
            scenario = Scenario(
                client=client,
                admin_key=key,
                payments=payments,
                notifications=notifications,
                secrets=secrets,
                poison_flag=service.folder / "poison.flag",
                service=service,
                reporter=self.reporter,
            )
            outcomes = await scenario.play()
        self.reporter.summary(outcomes)
        if any(outcome.status != "passed" for outcome in outcomes):
            self.reporter.line(f"the service's log: {service.log_path}")
            return 1
        self._where_to_look(service, key)
        if not self.keep_running:
            self.console.print()
            self.console.print("--exit: stopping now; without it the demo keeps running.")
            return 0
        self.console.print()
        self.console.print(Text("Press Ctrl-C to stop.", style="bold"))
        self.waiting = True
        await service.wait_exited()
        self.waiting = False
        self.reporter.fail(
            f"seawall serve exited on its own (status {service.exit_status()}); "
            f"see {service.log_path}"
        )
        return 1

    def _where_to_look(self, service: ServiceProcess, key: SecretStr) -> None:
        rows = [
            ("Console", f"{service.base_url}/console"),
            ("Admin key", key.get_secret_value()),
            ("", "(scope operate: log in to the console with it; shown only here)"),
            ("API docs", f"{service.base_url}/docs"),
            ("Service log", str(service.log_path)),
        ]
        self.console.print()
        for name, value in rows:
            label = f"{name + ':' if name else '':<13}"
            # soft_wrap: a URL or a key broken over two lines cannot be copied.
            self.console.print(Text.assemble((label, "bold"), value), soft_wrap=True)
