import pytest

from zai_proxy.config import load_settings, parse_duration, parse_size, setting_fields
from zai_proxy.errors import ConfigError


def test_defaults_match_the_original_proxy_where_it_had_them() -> None:
    s = load_settings({})
    assert s.deployment_variant == "production"
    assert s.max_workers == 10 and s.max_retries == 3
    assert (s.rate_limit_initial, s.rate_limit_min, s.rate_limit_max) == (10.0, 1.0, 50.0)
    assert s.rate_limit_state_max_age == 6 * 3600
    assert s.zai_target_url == "https://api.z.ai/api/paas/v4"
    assert s.zai_anthropic_url == "https://api.z.ai/api/anthropic"
    assert s.max_request_bytes == 10 * 1024 * 1024
    assert s.needs_simulator


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30.0), ("30s", 30.0), ("250ms", 0.25), ("1.5m", 90.0), ("6h", 21600.0), ("1d", 86400.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_sizes() -> None:
    assert parse_size("10MiB") == 10 * 1024 * 1024
    assert parse_size("512kb") == 512_000
    assert parse_size("123") == 123


@pytest.mark.parametrize(("env", "named"), [
    ({"MAX_WORKERS": "ten"}, "MAX_WORKERS"),
    ({"MAX_WORKERS": "0"}, "MAX_WORKERS"),
    ({"PORT": "-1"}, "PORT"),
    ({"ZAI_TARGET_URL": "ftp://x"}, "ZAI_TARGET_URL"),
    ({"ZAI_TARGET_URL": "https://h/p?q=1"}, "ZAI_TARGET_URL"),
    ({"RATE_LIMIT_WINDOW": "soon"}, "RATE_LIMIT_WINDOW"),
    ({"RATE_LIMIT_HOLD_MARGIN": "2"}, "RATE_LIMIT_HOLD_MARGIN"),
    ({"RATE_LIMIT_BURST": "0.5"}, "RATE_LIMIT_BURST"),
    ({"RATE_LIMIT_UPSTREAM_BURST": "-1"}, "RATE_LIMIT_UPSTREAM_BURST"),
    ({"TOKEN_COUNTING_ENABLED": "maybe"}, "TOKEN_COUNTING_ENABLED"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"DEPLOYMENT_VARIANT": "v 1"}, "DEPLOYMENT_VARIANT"),
    ({"RATE_LIMIT_MIN": "20", "RATE_LIMIT_MAX": "10"}, "RATE_LIMIT_MIN"),
    ({"RATE_LIMIT_INITIAL": "100"}, "RATE_LIMIT_INITIAL"),
    ({"RATE_LIMIT_STORAGE_URI": "mongodb://x"}, "RATE_LIMIT_STORAGE_URI"),
    ({"PROXY_API_KEYS": "short"}, "PROXY_API_KEYS"),
    ({"PROXY_API_KEYS_FILE": "/nonexistent/keys"}, "PROXY_API_KEYS_FILE"),
    ({"MAX_REQUEST_BYTES": "lots"}, "MAX_REQUEST_BYTES"),
])
def test_invalid_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_secrets_are_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"PROXY_API_KEYS": "tiny"})
    assert "tiny" not in str(info.value)


def test_cli_overrides_win_over_environment() -> None:
    s = load_settings({"PORT": "9000", "DEPLOYMENT_VARIANT": "v1"}, {"port": "9100"})
    assert s.port == 9100 and s.deployment_variant == "v1"


def test_key_file_merges_with_key_list(tmp_path) -> None:  # type: ignore[no-untyped-def]
    keys = tmp_path / "keys"
    keys.write_text("# workers\nworker-key-0001\n\nworker-key-0002\n")
    s = load_settings({"PROXY_API_KEYS": "inline-key-001", "PROXY_API_KEYS_FILE": str(keys)})
    assert s.proxy_api_keys == ("inline-key-001", "worker-key-0001", "worker-key-0002")
    assert "worker-key" not in repr(s)


def test_every_setting_has_an_env_name_and_help() -> None:
    rows = setting_fields()
    assert len({env for _, env, _, _ in rows}) == len(rows)
    assert all(help_ for _, _, help_, _ in rows)


def test_configuration_doc_is_generated_from_the_settings() -> None:
    from pathlib import Path

    from zai_proxy.config import settings_markdown

    doc = Path(__file__).parent.parent / "docs" / "configuration.md"
    regenerate = "python -m zai_proxy.config > docs/configuration.md"
    assert doc.read_text() == settings_markdown(), regenerate
