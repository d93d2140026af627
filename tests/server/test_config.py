from pathlib import Path

import pytest

from zai_proxy.core.errors import ConfigError
from zai_proxy.server.config import load_settings, parse_duration, parse_size, setting_fields


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
    ({"ADMISSION_BATCH_FLOOR": "1"}, "ADMISSION_BATCH_FLOOR"),
    ({"ADMISSION_BATCH_FLOOR": "-0.1"}, "ADMISSION_BATCH_FLOOR"),
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


def test_key_file_is_checked_at_startup_and_kept_apart_from_the_list(tmp_path: Path) -> None:
    # ClientAuth merges both (and re-reads the file when it changes); settings keep the variable.
    keys = tmp_path / "keys"
    keys.write_text("# workers\nworker-key-0001\n\nbob:worker-key-0002\n")
    s = load_settings({"PROXY_API_KEYS": "inline-key-001", "PROXY_API_KEYS_FILE": str(keys)})
    assert s.proxy_api_keys == ("inline-key-001",)
    assert s.proxy_api_keys_file == str(keys)
    assert "worker-key" not in repr(s)
    keys.write_text("bob:short\n")
    with pytest.raises(ConfigError, match="PROXY_API_KEYS_FILE") as info:
        load_settings({"PROXY_API_KEYS_FILE": str(keys)})
    assert "short" not in str(info.value) and "bob" in str(info.value)
    keys.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no key"):
        load_settings({"PROXY_API_KEYS_FILE": str(keys)})
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings({"PROXY_API_KEYS_FILE": str(tmp_path / "missing")})


CLIENTS = '[[client]]\nname = "agents"\nkeys = ["agent-key-secret-01"]\nweight = 3\n'


def test_clients_file_is_checked_at_startup(tmp_path: Path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(CLIENTS)
    s = load_settings({"PROXY_CLIENTS_FILE": str(clients)})
    assert s.proxy_clients_file == str(clients) and load_settings({}).proxy_clients_file == ""
    clients.write_text(CLIENTS + "colour = 'blue'\n")
    with pytest.raises(ConfigError, match=r"PROXY_CLIENTS_FILE=.* is invalid: client 'agents' "
                       r"\(line 1\): unknown field `colour`"):
        load_settings({"PROXY_CLIENTS_FILE": str(clients)})
    with pytest.raises(ConfigError, match=r"PROXY_CLIENTS_FILE=.* cannot be read"):
        load_settings({"PROXY_CLIENTS_FILE": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize("where", ["PROXY_API_KEYS", "PROXY_API_KEYS_FILE"])
def test_a_key_in_the_clients_file_and_in_the_key_list_is_refused_at_start(
        tmp_path: Path, where: str) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(CLIENTS)
    keys = tmp_path / "keys"
    keys.write_text("bot:agent-key-secret-01\n" if where.endswith("FILE") else "x:other-key-01\n")
    env = {"PROXY_CLIENTS_FILE": str(clients), "PROXY_API_KEYS_FILE": str(keys),
           "PROXY_API_KEYS": "bot:agent-key-secret-01" if where == "PROXY_API_KEYS" else ""}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert "PROXY_CLIENTS_FILE" in message and f"also in {where}:" in message
    assert "client 'agents'" in message and "agent-key" not in message


def test_an_invalid_clients_file_stops_serve_with_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from zai_proxy.server.run import main

    clients = tmp_path / "clients.toml"
    clients.write_text(CLIENTS.replace("weight = 3", "weight = 0"))
    monkeypatch.setenv("PROXY_CLIENTS_FILE", str(clients))

    async def serve(settings: object) -> int:
        raise AssertionError("the proxy started with an invalid clients file")

    monkeypatch.setattr("zai_proxy.server.run.serve", serve)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "PROXY_CLIENTS_FILE" in err and "`weight` must be a number > 0" in err
    assert "agent-key" not in err


def test_named_keys_and_quota_settings() -> None:
    s = load_settings({"PROXY_API_KEYS": "alice:worker-key-0001,worker-key-0002",
                       "QUOTA_PACING": "EVEN", "QUOTA_PACING_EXEMPT": "alice, bob",
                       "QUOTA_POLL_SECONDS": "30s"})
    assert s.quota_pacing == "even" and s.quota_pacing_exempt == ("alice", "bob")
    assert s.quota_poll_seconds == 30.0 and s.quota_local_reject is True
    assert s.monitor_url == "https://api.z.ai"
    mirror = load_settings({"ZAI_TARGET_URL": "https://open.bigmodel.cn/api/paas/v4"})
    assert mirror.monitor_url == "https://open.bigmodel.cn"
    assert load_settings({"ZAI_MONITOR_URL": "http://monitor:9/"}).monitor_url == "http://monitor:9"
    for env, named in ({"QUOTA_PACING": "fast"}, "QUOTA_PACING"), (
            {"ZAI_MONITOR_URL": "ftp://x"}, "ZAI_MONITOR_URL"), (
            {"QUOTA_POLL_SECONDS": "-1"}, "QUOTA_POLL_SECONDS"), (
            {"PROXY_API_KEYS": "a:worker-key-0001,b:worker-key-0001"}, "PROXY_API_KEYS"), (
            {"QUOTA_PACING": "even", "QUOTA_POLL_SECONDS": "0"}, "QUOTA_POLL_SECONDS"):
        with pytest.raises(ConfigError, match=named):
            load_settings(env)


def test_every_setting_has_an_env_name_and_help() -> None:
    rows = setting_fields()
    assert len({env for _, env, _, _ in rows}) == len(rows)
    assert all(help_ for _, _, help_, _ in rows)


def test_configuration_doc_is_generated_from_the_settings() -> None:
    from pathlib import Path

    from zai_proxy.server.config import settings_markdown

    doc = Path(__file__).parent.parent.parent / "docs" / "configuration.md"
    regenerate = "python -m zai_proxy.server.config > docs/configuration.md"
    assert doc.read_text() == settings_markdown(), regenerate


def test_an_empty_upstream_key_is_refused_unset_means_the_simulator() -> None:
    import pytest

    from zai_proxy.core.errors import ConfigError as Invalid
    from zai_proxy.server.config import load_settings as load

    for empty in ("", "   "):
        with pytest.raises(Invalid, match="ZAI_API_KEY is set but empty"):
            load({"ZAI_API_KEY": empty})
    assert load({}).needs_simulator
    assert not load({"ZAI_API_KEY": "k" * 12}).needs_simulator


def test_serve_exits_2_naming_an_empty_upstream_key() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAI_", "PROXY_"))}
    done = subprocess.run([sys.executable, "-m", "zai_proxy", "serve", "--port", "1"],
                          env={**env, "ZAI_API_KEY": ""}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "ZAI_API_KEY is set but empty" in done.stderr


@pytest.mark.parametrize("key", ["admin", "0123456789abcde", " " * 20 + "short"])
def test_admin_key_needs_sixteen_characters(key: str) -> None:
    with pytest.raises(ConfigError, match="ADMIN_API_KEY") as info:
        load_settings({"ADMIN_API_KEY": key})
    assert key.strip() not in str(info.value)  # a secret: never echoed
    assert load_settings({"ADMIN_API_KEY": "0123456789abcdef"}).admin_api_key


@pytest.mark.parametrize("content", [None, "{not json", '{"models": {"m": {"input": -1}}}',
                                     "[1, 2]", '{"peak": {"tz": "Mars/Olympus"}}',
                                     "[" * 100_000])
def test_a_bad_pricing_file_is_refused_when_settings_load(tmp_path, content) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "pricing.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="PRICING_FILE"):
        load_settings({"PRICING_FILE": str(path)})


def test_request_path_settings() -> None:
    s = load_settings({})
    assert s.passthrough_unknown is False and s.max_response_bytes == 32 * 1024 * 1024
    s = load_settings({"PASSTHROUGH_UNKNOWN": "1", "MAX_RESPONSE_BYTES": "1MiB"})
    assert s.passthrough_unknown and s.max_response_bytes == 1024 * 1024
    with pytest.raises(ConfigError, match="MAX_RESPONSE_BYTES"):
        load_settings({"MAX_RESPONSE_BYTES": "0"})
