"""Fixtures for the fakes: each test gets its own server on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from seawall.testing import EchoServer


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    """A started `EchoServer`, stopped after the test."""
    with EchoServer(seed=1) as fake:
        yield fake


@pytest.fixture
def client(echo: EchoServer) -> Iterator[httpx.Client]:
    """An httpx client of the echo fake with a short timeout."""
    with httpx.Client(base_url=echo.url, timeout=5.0) as http:
        yield http
