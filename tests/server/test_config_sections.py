"""The limiter's and the quota's sections of the settings, as `create_app` builds them: every
field carries the value of the setting of the same name, and the key is never printed."""

from __future__ import annotations

import dataclasses

import pytest

from zai_proxy.limiter.config import LimiterConfig
from zai_proxy.quota.config import QuotaConfig
from zai_proxy.server.accounts import account_of, limiter_config, quota_config
from zai_proxy.server.config import Settings, load_settings

KEY = "upstream-key.secret-part-42"
# A value unlike its default, and unlike every other, for each setting a section reads: a field
# wired from the wrong setting cannot pass.
ENV = {
    "ZAI_API_KEY": KEY, "DEPLOYMENT_VARIANT": "canary", "MAX_WORKERS": "7",
    "RATE_LIMIT_INITIAL": "3.5", "RATE_LIMIT_MIN": "0.25", "RATE_LIMIT_MAX": "40",
    "RATE_LIMIT_WINDOW": "12", "RATE_LIMIT_BURST": "2.5", "RATE_LIMIT_UPSTREAM_BURST": "6",
    "RATE_LIMIT_HOLD_MARGIN": "0.15", "RATE_LIMIT_PROBE_INTERVAL": "9",
    "RATE_LIMIT_STATE_FILE": "/tmp/limiter-{account}.json", "RATE_LIMIT_STATE_MAX_AGE": "4321",
    "RATE_LIMIT_STORAGE_URI": "redis://redis:6379/3", "RATE_LIMIT_REPLICAS": "4",
    "QUEUE_MAX": "77", "QUEUE_TIMEOUT_SECONDS": "33", "ADMISSION_BATCH_FLOOR": "0.35",
    "ZAI_MONITOR_URL": "https://monitor.example", "QUOTA_POLL_SECONDS": "45",
    "QUOTA_POLL_TIMEOUT": "8", "QUOTA_LOCAL_REJECT": "false", "QUOTA_PACING": "even",
    "QUOTA_PACING_EXEMPT": "ops,batch", "QUOTA_BURN_WINDOW": "600",
    "ACCOUNT_STOP_PROBE_SECONDS": "17",
}


@pytest.fixture
def settings() -> Settings:
    return load_settings(ENV)


@pytest.mark.parametrize("build, section", [(limiter_config, LimiterConfig),
                                            (quota_config, QuotaConfig)])
def test_each_field_is_the_setting_of_its_name(settings: Settings, build: object,
                                               section: type) -> None:
    assert callable(build)
    config = build(settings, account_of(settings))
    assert isinstance(config, section)
    for field in dataclasses.fields(section):
        assert getattr(config, field.name) == getattr(settings, field.name), field.name


def test_the_settings_read_differ_from_their_defaults(settings: Settings) -> None:
    defaults = Settings()
    names = {f.name for section in (LimiterConfig, QuotaConfig)
             for f in dataclasses.fields(section)}
    same = sorted(n for n in names if getattr(settings, n) == getattr(defaults, n))
    assert same == [], "each section field must be set away from its default here"


def test_the_sections_are_frozen_and_never_print_the_key(settings: Settings) -> None:
    quota = quota_config(settings, account_of(settings))
    assert KEY not in repr(quota) and quota.zai_api_key == KEY
    with pytest.raises(dataclasses.FrozenInstanceError):
        quota.quota_poll_seconds = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        limiter_config(settings, account_of(settings)).rate_limit_max = 1.0  # type: ignore[misc]
