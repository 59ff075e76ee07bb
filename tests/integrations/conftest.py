"""Fixtures: the fake providers of `seawall.testing`, on loopback, one per test.

The fakes serve from threads of their own, so plain (not async) fixtures start them
and async fixtures may ask for them with ``request.getfixturevalue``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from seawall.testing import (
    FakeClock,
    FakeCRM,
    FakeNotifications,
    FakePaymentGateway,
    FakeSMTPServer,
)


@pytest.fixture
def clock() -> FakeClock:
    """Time for retries and breakers: backoffs pass without waiting."""
    return FakeClock()


@pytest.fixture
def registry() -> CollectorRegistry:
    """A Prometheus registry of the test's own, so counts start at zero."""
    return CollectorRegistry()


@pytest.fixture
def payments_fake() -> Iterator[FakePaymentGateway]:
    with FakePaymentGateway() as fake:
        yield fake


@pytest.fixture
def crm_fake() -> Iterator[FakeCRM]:
    with FakeCRM() as fake:
        yield fake


@pytest.fixture
def notifications_fake() -> Iterator[FakeNotifications]:
    with FakeNotifications() as fake:
        yield fake


@pytest.fixture
def smtp_fake() -> Iterator[FakeSMTPServer]:
    with FakeSMTPServer() as fake:
        yield fake
