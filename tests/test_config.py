"""`seawall.config`: sources, validation, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from seawall.config import DEFAULT_DATABASE_URL, Settings, load_settings, mask_url
from seawall.errors import ConfigurationError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SEAWALL_* variable or .env file of the developer's leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("SEAWALL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEAWALL_SECRETS_DIR", str(tmp_path / "no-secrets"))
    (tmp_path / "no-secrets").mkdir()


def test_defaults_are_the_embedded_service() -> None:
    settings = load_settings()

    assert settings.database_url.get_secret_value() == DEFAULT_DATABASE_URL
    assert settings.nats_url is None
    assert settings.redis_url is None
    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 8000, "info")
    assert settings.idempotency_ttl_seconds == 86400
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.is_embedded_database
    assert settings.should_auto_migrate


def test_environment_variables_use_the_seawall_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_PORT", "9001")
    monkeypatch.setenv("SEAWALL_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("SEAWALL_DATABASE_URL", "postgresql://db/cases")

    settings = load_settings()

    assert settings.port == 9001
    assert settings.log_level == "debug"
    assert not settings.is_embedded_database
    assert not settings.should_auto_migrate


def test_dotenv_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("SEAWALL_PORT=7000\nSEAWALL_HOST=0.0.0.0\n")
    monkeypatch.setenv("SEAWALL_PORT", "7001")

    settings = load_settings()

    assert settings.host == "0.0.0.0"
    assert settings.port == 7001


def test_secrets_directory_supplies_secret_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "seawall_redis_url").write_text("redis://:from-file@cache:6379/0")
    monkeypatch.setenv("SEAWALL_SECRETS_DIR", str(secrets))

    settings = load_settings()

    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:from-file@cache:6379/0"


def test_missing_secrets_directory_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEAWALL_SECRETS_DIR", str(tmp_path / "nope"))

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    assert caught.value.key == "SEAWALL_SECRETS_DIR"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SEAWALL_PORT", "abc"),
        ("SEAWALL_PORT", "70000"),
        ("SEAWALL_LOG_LEVEL", "loud"),
        ("SEAWALL_MAX_BODY_BYTES", "-1"),
        ("SEAWALL_IDEMPOTENCY_TTL_SECONDS", "0"),
        ("SEAWALL_DATABASE_URL", "mysql://db/x"),
        ("SEAWALL_AUTO_MIGRATE", "perhaps"),
    ],
)
def test_a_bad_value_fails_with_one_line_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    message = str(caught.value)
    assert caught.value.key == name
    assert message.startswith(f"invalid configuration: {name}: ")
    assert "\n" not in message


def test_a_bad_secret_is_reported_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_DATABASE_URL", "oracle://scott:tiger-secret@db/x")

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    assert "tiger-secret" not in str(caught.value)
    assert "tiger-secret" not in repr(caught.value)


def test_secrets_never_appear_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_DATABASE_URL", "postgresql://app:pg-secret@db/cases")
    monkeypatch.setenv("SEAWALL_NATS_URL", "nats://user:nats-secret@bus:4222")

    settings = load_settings()

    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert "pg-secret" not in text
        assert "nats-secret" not in text


def test_public_view_masks_url_passwords_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_DATABASE_URL", "postgresql://app:pg-secret@db:5433/cases")

    view = load_settings().public_view()

    assert view["SEAWALL_DATABASE_URL"] == "postgresql://app:***@db:5433/cases"
    assert view["SEAWALL_NATS_URL"] is None
    assert view["SEAWALL_PORT"] == 8000


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("nats://u:p@[::1]:4222", "nats://u:***@[::1]:4222"),
        ("sqlite:///./var/x.db", "sqlite:///./var/x.db"),
        ("postgresql://db/x", "postgresql://db/x"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_PORT", "9001")

    assert load_settings(port=9002).port == 9002
    assert Settings(_env_file=None, port=9003).port == 9003


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql://app@db/cases?password=hunter2&sslmode=require",
            "postgresql://app@db/cases?password=***&sslmode=require",
        ),
        ("postgresql://app:pw@db:notaport/cases", "**********"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_mask_url_hides_query_passwords_and_survives_bad_ports(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_config_show_masks_a_password_given_as_a_query_parameter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEAWALL_DATABASE_URL", "postgresql://app@db/cases?password=hunter2")

    view = load_settings().public_view()

    assert "hunter2" not in view["SEAWALL_DATABASE_URL"]


def test_a_retention_of_zero_deletes_published_rows_only_with_a_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEAWALL_OUTBOX_RETENTION_HOURS", "0")

    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    monkeypatch.setenv("SEAWALL_NATS_URL", "nats://127.0.0.1:4222")
    settings = load_settings()

    assert caught.value.key == "SEAWALL_OUTBOX_RETENTION_HOURS"
    assert caught.value.reason.startswith("0 (delete rows once published) needs SEAWALL_NATS_URL")
    assert settings.outbox_retention_hours == 0


def test_a_validator_s_message_comes_without_pydantic_s_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEAWALL_DATABASE_URL", "mysql://db/x")

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    assert str(caught.value) == (
        "invalid configuration: SEAWALL_DATABASE_URL: must start with sqlite:// or postgresql://"
    )
