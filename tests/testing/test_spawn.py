"""Fakes in a child process: ``python -m seawall.testing`` and `spawn_fake`, steered over HTTP."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from seawall.testing import FakePaymentGateway, SpawnedServer, spawn_fake


@pytest.fixture(scope="module")
def spawned_echo() -> Iterator[SpawnedServer]:
    with spawn_fake("echo", seed=5) as child:
        yield child


def test_a_spawned_fake_listens_on_the_printed_url(spawned_echo: SpawnedServer) -> None:
    response = httpx.get(f"{spawned_echo.url}/items/7")

    assert response.json()["id"] == "7"
    assert spawned_echo.url == f"http://127.0.0.1:{spawned_echo.port}"
    assert str(spawned_echo.pid) in repr(spawned_echo)


def test_chaos_of_a_spawned_fake_is_set_through_the_admin_endpoint(
    spawned_echo: SpawnedServer,
) -> None:
    answer = spawned_echo.configure_chaos(reset=True, fail_next={"n": 2, "status": 503})

    with httpx.Client(base_url=spawned_echo.url) as http:
        statuses = [http.get("/ping").status_code for _ in range(3)]
    stats = spawned_echo.stats()
    spawned_echo.configure_chaos(reset=True)

    assert answer["pending"] == 2
    assert statuses == [503, 503, 200]
    assert stats["chaos"]["injected"]["fail"] == 2
    assert stats["requests"] >= 3


def test_a_provider_class_spawns_itself_and_stops_cleanly_on_sigterm() -> None:
    child = FakePaymentGateway.spawn(record=False)
    with child:
        response = httpx.post(
            f"{child.url}/v1/charges",
            data={"amount": "500", "currency": "eur", "source": "tok_visa"},
            headers={"Authorization": "Bearer sk_test_fake"},
        )

    assert response.json()["status"] == "succeeded"
    assert child.process.returncode == 0


def test_sigint_stops_a_spawned_fake_cleanly() -> None:
    child = spawn_fake("crm")

    child.process.send_signal(signal.SIGINT)
    code = child.process.wait(10)
    child.stop()

    assert code == 0


def test_the_smtp_sink_can_be_spawned_too() -> None:
    with spawn_fake("smtp") as child:
        host, port = child.url.removeprefix("smtp://").split(":")
        with smtplib.SMTP(host, int(port), timeout=5) as smtp:
            code, _ = smtp.noop()

    assert child.url.startswith("smtp://127.0.0.1:")
    assert code == 250


def test_spawning_an_unknown_provider_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="known: "):
        spawn_fake("fax")


def test_a_child_that_cannot_bind_is_reported(spawned_echo: SpawnedServer) -> None:
    with pytest.raises(RuntimeError, match="exited with code 1"):
        spawn_fake("echo", port=spawned_echo.port)


def test_the_command_line_refuses_an_unknown_provider() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "seawall.testing", "fax"],
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert b"invalid choice" in result.stderr
