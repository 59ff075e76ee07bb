"""Services declared in settings: auth inferred, errors naming the variable, state in Redis."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from seawall.config import ServiceSettings, Settings, load_settings
from seawall.errors import CircuitOpenError, ConfigurationError
from seawall.http import (
    ApiKey,
    BasicAuth,
    BearerToken,
    ExternalService,
    OAuth2ClientCredentials,
    ServiceRegistry,
    auth_from_settings,
    service_from_settings,
)
from seawall.testing import EchoServer


def config(**values: object) -> ServiceSettings:
    return ServiceSettings.model_validate({"base_url": "https://api.example.com", **values})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, type(None)),
        ({"token": "t"}, BearerToken),
        ({"api_key": "k"}, ApiKey),
        ({"username": "u", "password": "p"}, BasicAuth),
        (
            {"client_id": "c", "client_secret": "s", "token_url": "https://a/token"},
            OAuth2ClientCredentials,
        ),
        ({"auth": "api_key", "api_key": "k", "token": "t"}, ApiKey),
    ],
)
def test_the_auth_scheme_follows_from_what_is_set(
    values: dict[str, object], expected: type
) -> None:
    assert type(auth_from_settings("crm", config(**values))) is expected


def test_a_scheme_missing_a_value_names_the_variable_not_the_secret() -> None:
    with pytest.raises(ConfigurationError) as caught:
        auth_from_settings("crm", config(auth="basic", password="hunter2"))

    assert caught.value.key == "SEAWALL_SERVICES__CRM__USERNAME"
    assert "hunter2" not in str(caught.value)


def test_services_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_SERVICES__CRM__BASE_URL", "https://crm.example.com/api")
    monkeypatch.setenv("SEAWALL_SERVICES__CRM__API_KEY", "k3y")
    monkeypatch.setenv("SEAWALL_SERVICES__CRM__API_KEY_QUERY", "key")
    monkeypatch.setenv("SEAWALL_SERVICES__CRM__CRITICAL", "false")
    monkeypatch.setenv("SEAWALL_SERVICES__CRM__TIMEOUT_CONNECT", "2.5")
    monkeypatch.setenv("SEAWALL_SERVICES__CRM__RATE_LIMIT", "10/second")
    monkeypatch.setenv("SEAWALL_SERVICES__CRM__CACHE_SECONDS", '{"/rates/{ccy}": 60}')

    settings = load_settings()
    crm = ServiceRegistry.from_settings(settings.services)["crm"]

    assert (crm.critical, crm.timeouts.connect, crm.timeouts.read) == (False, 2.5, 10.0)
    assert isinstance(crm.auth, ApiKey)
    assert crm.auth.query == "key"
    assert crm.rate_limit is not None
    assert "k3y" not in repr(settings)
    assert "k3y" not in str(settings.public_view())


def test_an_invalid_service_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_SERVICES__CRM__BASE_URL", "ftp://nope")

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    assert caught.value.key == "SEAWALL_SERVICES__CRM__BASE_URL"


def test_an_unknown_service_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_SERVICES__CRM__BASE_URL", "https://crm.example.com")
    monkeypatch.setenv("SEAWALL_SERVICES__CRM__TIMEOUT", "3")

    with pytest.raises(ConfigurationError, match="TIMEOUT"):
        load_settings()


def test_a_registry_refuses_two_services_of_one_name() -> None:
    services = ServiceRegistry({"a": ExternalService("a", "https://a.example.com")})

    with pytest.raises(ValueError, match="already registered"):
        services.add(ExternalService("a", "https://b.example.com"))


def test_the_alert_webhook_url_is_shown_as_a_secret() -> None:
    settings = Settings(
        _env_file=None, alert_webhook_url=SecretStr("https://hooks.slack.com/services/T/B/XYZ")
    )

    assert settings.public_view()["SEAWALL_ALERT_WEBHOOK_URL"] == "**********"


async def test_a_breaker_opened_by_one_instance_is_open_for_all(redis: Redis) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    with EchoServer() as echo:
        settings = config(base_url=echo.url, retry_attempts=1, breaker_failures=2)
        one = service_from_settings(name, settings, redis=redis)
        two = service_from_settings(name, settings, redis=redis)
        try:
            echo.chaos.fail_next(2, status=503)
            for _ in range(2):
                with pytest.raises(Exception, match="503"):
                    await one.get("/items/{id}", path_params={"id": "1"})
            assert one.breaker_state() == "open"

            assert two.breaker is not None
            await two.breaker.refresh()
            with pytest.raises(CircuitOpenError):
                await two.get("/items/{id}", path_params={"id": "1"})
            assert len(echo.requests) == 2, "the second instance sent nothing"
        finally:
            assert one.breaker is not None
            await one.breaker.reset()
            await one.aclose()
            await two.aclose()
