"""Settings are parsed once, hide secrets, and a bad value stops the CLI with exit code 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from service.__main__ import cli
from service.errors import ConfigError
from service.settings import load_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    # No developer .env or exported variable may leak into these tests.
    monkeypatch.chdir(str(tmp_path))
    for name in ("NOVITA_API_KEY", "DATABASE_URL", "API_KEYS", "WEBHOOK_SECRET", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_and_csv_lists() -> None:
    settings = load_settings(api_keys="k1, k2,,", inbound_webhook_secrets=f"{SECRET},{SECRET}")
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.api_key_values() == ("k1", "k2")
    assert len(settings.inbound_webhook_secrets) == 2
    assert settings.max_retry_attempts == 3 and settings.rate_limit_per_minute == 100
    assert settings.trusted_proxies == ()  # X-Forwarded-* believed from nobody by default


def test_trusted_proxies_take_addresses_networks_or_any() -> None:
    settings = load_settings(trusted_proxies="10.0.0.7, 172.16.0.0/12,::1,*")
    assert settings.trusted_proxies == ("10.0.0.7", "172.16.0.0/12", "::1", "*")


def test_repr_hides_every_secret() -> None:
    settings = load_settings(
        novita_api_key="nv-secret-key",
        api_keys="client-secret-key",
        webhook_secret=SECRET,
        database_url="postgresql+asyncpg://svc:db-password@db/novita",
    )
    shown = repr(settings) + str(settings)
    for secret in ("nv-secret-key", "client-secret-key", SECRET, "db-password"):
        assert secret not in shown


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.max_retry_attempts = 5  # type: ignore[misc]


def test_env_file_is_read(tmp_path: object) -> None:
    with open(f"{tmp_path}/.env", "w") as env_file:
        env_file.write("RATE_LIMIT_PER_MINUTE=42\n")
    assert load_settings().rate_limit_per_minute == 42


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DATABASE_URL", "mysql://db/x", "DATABASE_URL driver 'mysql' is not supported"),
        ("DATABASE_URL", "not a url", "DATABASE_URL is not a valid SQLAlchemy URL"),
        ("MAX_RETRY_ATTEMPTS", "many", "MAX_RETRY_ATTEMPTS"),
        ("MAX_RETRY_ATTEMPTS", "0", "MAX_RETRY_ATTEMPTS"),
        ("REQUEST_TIMEOUT", "-1", "REQUEST_TIMEOUT"),
        ("RATE_LIMIT_PER_MINUTE", "0", "RATE_LIMIT_PER_MINUTE"),
        ("WEBHOOK_SECRET", "plain-secret", "WEBHOOK_SECRET must have the form whsec_"),
        ("WEBHOOK_SECRET", "whsec_***", "WEBHOOK_SECRET the part after whsec_ is not valid"),
        ("INBOUND_WEBHOOK_SECRETS", f"{SECRET},nope", "INBOUND_WEBHOOK_SECRETS secret #2"),
        ("WEBHOOK_URL", "ftp://x", "WEBHOOK_URL must be an http"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("STARTUP_TIMEOUT", "soon", "STARTUP_TIMEOUT"),
        ("TRUSTED_PROXIES", "10.0.0.1,proxy.local", "TRUSTED_PROXIES 'proxy.local' is not an IP"),
        ("NOTIFICATION_RETENTION_DAYS", "0", "NOTIFICATION_RETENTION_DAYS"),
        (
            "NOTIFICATION_RETENTION_DAYS",
            "120",  # dead letters (90 by default) would then go before delivered ones
            "DEAD_NOTIFICATION_RETENTION_DAYS must be at least NOTIFICATION_RETENTION_DAYS",
        ),
        ("DEAD_NOTIFICATION_RETENTION_DAYS", "forever", "DEAD_NOTIFICATION_RETENTION_DAYS"),
    ],
)
def test_bad_value_names_the_variable_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=expected):
        load_settings()

    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.output
    assert "Traceback" not in result.output


def test_serve_without_api_key_or_simulator_refuses_with_exit_2() -> None:
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2
    assert "NOVITA_API_KEY is not set" in result.output
    assert "--simulator" in result.output


def test_help_lists_every_environment_variable() -> None:
    from service.settings import Settings

    output = CliRunner().invoke(cli, ["--help"]).output
    for name in Settings.model_fields:
        assert name.upper() in output
