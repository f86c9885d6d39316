"""Settings from the environment: every malformed value names its variable; nothing falls back."""

from __future__ import annotations

from pathlib import Path

import pytest

from cctg_mcp.config import load_settings
from cctg_mcp.resilience.errors import ConfigurationError

TOKEN = "123456:ABCdefGhIJKlmnOPQrstUVwxyz0123456789"


def test_defaults_without_a_token_stay_telegram_delivery_and_say_what_is_missing(tmp_path: Path) -> None:
    s = load_settings({"CCTG_DATA_DIR": str(tmp_path)})
    assert s.delivery == "telegram" and s.environment == "production"
    problems = " ".join(s.problems())
    assert "TELEGRAM_BOT_TOKEN" in problems and "TELEGRAM_ALLOWED_USERS" in problems
    assert load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_DELIVERY": "bridge"}).delivery == "bridge"
    assert s.events_dir == tmp_path / "events" and s.responses_dir == tmp_path / "responses"
    assert s.api_base_url == "https://api.telegram.org"


def test_a_full_configuration(tmp_path: Path) -> None:
    s = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_ALLOWED_USERS": " 1, 2,2 ,3",
            "CCTG_DATA_DIR": str(tmp_path),
            "TELEGRAM_API_BASE_URL": "http://127.0.0.1:9/",
            "CCTG_ENVIRONMENT": "Staging",
        }
    )
    assert s.delivery == "telegram" and s.allowed_users == (1, 2, 3)
    assert s.api_base_url == "http://127.0.0.1:9" and s.environment == "staging"
    assert s.problems() == [] and s.token == TOKEN
    assert TOKEN not in repr(s) and TOKEN not in str(s.model_dump())


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TELEGRAM_ALLOWED_USERS": "12,abc"}, "TELEGRAM_ALLOWED_USERS"),
        ({"TELEGRAM_BOT_TOKEN": "no colon here"}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_API_BASE_URL": "ftp://x"}, "TELEGRAM_API_BASE_URL"),
        ({"CCTG_DELIVERY": "pigeon"}, "CCTG_DELIVERY"),
        ({"CCTG_ENVIRONMENT": "prod"}, "CCTG_ENVIRONMENT"),
        ({"CC_TELEGRAM_BRIDGE_HEALTH_URL": "localhost"}, "CC_TELEGRAM_BRIDGE_HEALTH_URL"),
        ({"CCTG_RATE_PER_CHAT": "-1"}, "CCTG_RATE_PER_CHAT"),
        ({"CCTG_RATE_GLOBAL": "fast"}, "CCTG_RATE_GLOBAL"),
        ({"CCTG_RATE_PER_CHAT_BURST": "0.5"}, "CCTG_RATE_PER_CHAT_BURST"),  # was truncated to 0
        ({"CCTG_RATE_PER_CHAT_BURST": "0"}, "CCTG_RATE_PER_CHAT_BURST"),
    ],
)
def test_malformed_values_name_the_variable(tmp_path: Path, env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({"CCTG_DATA_DIR": str(tmp_path), **env})
    assert variable in str(info.value)


def test_the_per_chat_burst_is_a_whole_number(tmp_path: Path) -> None:
    settings = load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_RATE_PER_CHAT_BURST": "5"})
    assert settings.rate_per_chat_burst == 5
    with pytest.raises(ConfigurationError, match=r"CCTG_RATE_PER_CHAT_BURST='2.5'.*whole number"):
        load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_RATE_PER_CHAT_BURST": "2.5"})


def test_a_malformed_token_is_never_echoed(tmp_path: Path) -> None:
    secret = "123456 ABCdefGhIJKlmnOPQrstUVwxyz0123456789"
    with pytest.raises(ConfigurationError) as info:
        load_settings({"TELEGRAM_BOT_TOKEN": secret, "CCTG_DATA_DIR": str(tmp_path)})
    assert secret not in str(info.value) and "TELEGRAM_BOT_TOKEN" in str(info.value)


def test_problems_say_what_to_set(tmp_path: Path) -> None:
    s = load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_DELIVERY": "telegram"})
    text = " ".join(s.problems())
    assert "TELEGRAM_BOT_TOKEN" in text and "TELEGRAM_ALLOWED_USERS" in text


def test_cctg_names_and_the_seed_aliases(tmp_path: Path) -> None:
    seed = load_settings({"CCTG_DATA_DIR": str(tmp_path), "CC_TELEGRAM_EVENTS_DIR": str(tmp_path / "seed")})
    assert seed.events_dir == tmp_path / "seed"
    both = load_settings(
        {
            "CCTG_DATA_DIR": str(tmp_path),
            "CC_TELEGRAM_EVENTS_DIR": str(tmp_path / "seed"),
            "CCTG_EVENTS_DIR": str(tmp_path / "ours"),
            "CCTG_ALLOWED_USERS": "7",
            "TELEGRAM_ALLOWED_USERS": "8",
        }
    )
    assert both.events_dir == tmp_path / "ours" and both.allowed_users == (7,)  # the CCTG_ name wins
    assert load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_TELEGRAM_BOT_TOKEN": TOKEN}).token == TOKEN


@pytest.mark.parametrize(("raw", "seconds"), [("120", 120.0), ("30s", 30.0), ("2m", 120.0), ("90000ms", 90.0)])
def test_durations_accept_units(tmp_path: Path, raw: str, seconds: float) -> None:
    assert load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_LEASE_SECONDS": raw}).lease_seconds == seconds


def test_one_error_style_without_class_names_or_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_HTTP_PORT": "http"})
    assert str(info.value) == "CCTG_HTTP_PORT='http' is not a whole number: use 0..65535."
    with pytest.raises(ConfigurationError) as info:
        load_settings({"CCTG_DATA_DIR": str(tmp_path), "CCTG_READ_ONLY": "maybe"})
    assert "CCTG_READ_ONLY='maybe' is not a boolean" in str(info.value)
    assert "pydantic" not in str(info.value) and "http" not in str(info.value)


def test_seed_durations_accept_units() -> None:
    from cctg_mcp.resilience.config import load_resilience_config

    config = load_resilience_config({"HEALTH_CHECK_INTERVAL": "30s", "CIRCUIT_BREAKER_TIMEOUT": "500ms"})
    assert config.health.interval == 30_000
    assert config.circuit_breaker["telegram"].timeout == 500
    assert load_resilience_config({"HEALTH_CHECK_INTERVAL": "45000"}).health.interval == 45_000
    with pytest.raises(ConfigurationError, match=r"HEALTH_CHECK_INTERVAL='soon'.*500ms, 30s"):
        load_resilience_config({"HEALTH_CHECK_INTERVAL": "soon"})
