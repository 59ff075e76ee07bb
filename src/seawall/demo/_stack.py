"""What the demo runs: its working folder, its secrets, and ``seawall serve`` as a child process.

The fake providers run in the demo's own process (`seawall.testing`, on
threads); the service runs as ``python -m seawall serve`` on SQLite in the
working folder, configured only through the environment the demo gives it:
none of the caller's ``SEAWALL_*`` variables, no ``.env`` and no secret files
reach it, so the demo never touches a real database or broker.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
from pydantic import SecretStr

from seawall.errors import SeawallError

__all__ = [
    "NOTIFICATIONS_CONSUMER",
    "POISON_FLAG_VARIABLE",
    "SLACK_URL_VARIABLE",
    "DemoError",
    "DemoSecrets",
    "ServiceProcess",
    "pick_port",
    "prepare_folder",
    "service_environment",
]

MARKER: Final = ".seawall-demo"
NOTIFICATIONS_CONSUMER: Final = "notifications__from_cases"
"""The consumer group of `seawall.demo.consumers`."""
# The knobs of the demo's consumer module. Not SEAWALL_ settings, which have no place for
# them; the caller's own DEMO_* variables are dropped like its SEAWALL_* ones.
SLACK_URL_VARIABLE: Final = "DEMO_SLACK_WEBHOOK_URL"
POISON_FLAG_VARIABLE: Final = "DEMO_POISON_FLAG"
CONSUMER_MODULES: Final = "seawall.app.consumers,seawall.demo.consumers"
HEALTH_INTERVAL_SECONDS: Final = 0.5
READY_TIMEOUT_SECONDS: Final = 30.0
STOP_TIMEOUT_SECONDS: Final = 15.0
COMMAND_TIMEOUT_SECONDS: Final = 60.0


class DemoError(SeawallError):
    """The demo cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class DemoSecrets:
    """This run's secrets, random each time: the demo knows them, the logs must not."""

    github_webhook: SecretStr
    stripe_webhook: SecretStr
    gateway_api_key: SecretStr
    slack_path: SecretStr

    @classmethod
    def generate(cls) -> DemoSecrets:
        """Fresh secrets for one run."""
        return cls(
            github_webhook=SecretStr(secrets.token_urlsafe(24)),
            stripe_webhook=SecretStr("whsec_" + secrets.token_urlsafe(24)),
            gateway_api_key=SecretStr("sk_test_" + secrets.token_hex(16)),
            slack_path=SecretStr(
                f"/services/T{secrets.token_hex(4).upper()}/B{secrets.token_hex(4).upper()}/"
                + secrets.token_urlsafe(18)
            ),
        )

    @property
    def slack_token(self) -> str:
        """The last part of the Slack webhook's path: what makes it a credential."""
        return self.slack_path.get_secret_value().rsplit("/", 1)[1]


def prepare_folder(directory: Path) -> Path:
    """Empty *directory* (made by an earlier demo) or create it, and mark it as the demo's.

    Returns:
        The folder as an absolute path.

    Raises:
        DemoError: it is a file, or a folder with files that no demo made:
            the demo deletes only what it made.
    """
    folder = directory.expanduser().resolve()
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir() or folder.is_symlink():
            raise DemoError(f"{folder} is not a folder; choose another --dir")
        if any(folder.iterdir()) and not (folder / MARKER).is_file():
            raise DemoError(
                f"{folder} holds files that `seawall demo` did not make, and the demo wipes "
                "its folder at start; choose an empty or new --dir"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by `seawall demo`, which empties this folder at start\n")
    (folder / "secrets").mkdir()
    return folder


def pick_port(port: int, host: str = "127.0.0.1") -> int:
    """*port* if it is free on *host*, or any free port for 0.

    Raises:
        DemoError: *port* is taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port whose last connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise DemoError(
                f"port {port} on {host} is in use; pass --port with another one, "
                "or --port 0 for any free port"
            ) from None
        chosen: int = sock.getsockname()[1]
        return chosen


def service_environment(
    folder: Path,
    *,
    run_secrets: DemoSecrets,
    payments_url: str,
    slack_url: str,
    poison_flag: Path,
    breaker_failures: int,
    breaker_recovery_seconds: float,
) -> dict[str, str]:
    """The environment of the demo's ``seawall`` processes (pure apart from ``os.environ``).

    The caller's ``SEAWALL_*`` variables are left out, so the demo runs on the
    embedded default in *folder* whatever the shell says.
    """
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("SEAWALL_", "DEMO_"))
    }
    environment.update(
        {
            "SEAWALL_DATABASE_URL": f"sqlite:///{folder}/seawall.db",
            "SEAWALL_SECRETS_DIR": str(folder / "secrets"),
            "SEAWALL_LOG_LEVEL": "info",
            "SEAWALL_CONSUMER_MODULES": CONSUMER_MODULES,
            "SEAWALL_HEALTH_INTERVAL_SECONDS": str(HEALTH_INTERVAL_SECONDS),
            "SEAWALL_SERVICES__PAYMENTS__BASE_URL": payments_url,
            "SEAWALL_SERVICES__PAYMENTS__HEALTH_PATH": "/ping",
            "SEAWALL_SERVICES__PAYMENTS__CRITICAL": "false",
            "SEAWALL_SERVICES__PAYMENTS__BREAKER_FAILURES": str(breaker_failures),
            "SEAWALL_SERVICES__PAYMENTS__BREAKER_RECOVERY_SECONDS": str(breaker_recovery_seconds),
            "SEAWALL_WEBHOOKS__GITHUB__SECRETS": run_secrets.github_webhook.get_secret_value(),
            "SEAWALL_WEBHOOKS__STRIPE__SECRETS": run_secrets.stripe_webhook.get_secret_value(),
            SLACK_URL_VARIABLE: slack_url,
            POISON_FLAG_VARIABLE: str(poison_flag),
        }
    )
    return environment


class ServiceProcess:
    """``seawall`` commands run in the demo's folder, and ``seawall serve`` kept running.

    Args:
        folder: the working folder (the database, the logs).
        environment: from `service_environment`.
        port: where ``seawall serve`` listens, on 127.0.0.1.
    """

    def __init__(self, folder: Path, environment: dict[str, str], *, port: int) -> None:
        self.folder = folder
        self.environment = environment
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = folder / "service.log"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> str:
        """Run ``seawall ARGS`` to the end and return its standard output.

        Raises:
            DemoError: it failed (its standard error is in the message).
        """
        try:
            result = subprocess.run(  # noqa: S603 - our own interpreter and fixed arguments
                [sys.executable, "-m", "seawall", *args],
                cwd=self.folder,
                env=self.environment,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DemoError(
                f"`seawall {args[0]}` did not finish in {COMMAND_TIMEOUT_SECONDS:.0f}s"
            ) from None
        if result.returncode != 0:
            raise DemoError(
                f"`seawall {' '.join(args[:3])}` failed with status {result.returncode}: "
                f"{result.stderr.strip()[-2000:]}"
            )
        return result.stdout

    def start(self) -> None:
        """Start ``seawall serve``; its log lines go to `log_path`."""
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
                [sys.executable, "-m", "seawall", "serve", "--port", str(self.port)],
                cwd=self.folder,
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def exit_status(self) -> int | None:
        """The process's exit status, or None while it runs (or before `start`)."""
        return None if self._process is None else self._process.poll()

    async def wait_until_ready(self, client: httpx.AsyncClient) -> None:
        """Poll ``/health/ready`` until it answers 200.

        Raises:
            DemoError: the process exited, or it was not ready in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_SECONDS
        last = "no answer yet"
        while loop.time() < deadline:
            status = self.exit_status()
            if status is not None:
                raise DemoError(
                    f"seawall serve exited with status {status} while starting; see {self.log_path}"
                )
            try:
                response = await client.get("/health/ready", timeout=2.0)
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            await asyncio.sleep(0.1)
        raise DemoError(
            f"seawall serve was not ready within {READY_TIMEOUT_SECONDS:.0f}s ({last}); "
            f"see {self.log_path}"
        )

    async def wait_exited(self) -> int | None:
        """Wait until the service process ends (on its own, or by `stop`); its exit status."""
        process = self._process
        return None if process is None else await asyncio.to_thread(process.wait)

    async def stop(self) -> int | None:
        """Stop the service with SIGTERM (killed if it hangs) and return its exit status."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(process.wait, STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            return await asyncio.to_thread(process.wait)

    def log_text(self) -> str:
        """What the service has logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
