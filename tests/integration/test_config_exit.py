"""Bad configuration stops `zai-proxy serve` before it serves: exit 2, the variable named on
stderr, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import free_port


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ZAI_", "PROXY_"))}
    return subprocess.run(
        [sys.executable, "-m", "zai_proxy", "serve", "--host", "127.0.0.1", "--port",
         str(free_port())], env={**base, "ZAI_API_KEY": "upstream-key-config-test",
                                 "RATE_LIMIT_STATE_FILE": "", **env},
        capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("content", [None, '{"models": {"glm-4.7": {"input": "cheap"}}}'])
def test_a_bad_pricing_file_exits_2_naming_it(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "pricing.json"
    if content is not None:
        path.write_text(content)
    result = serve({"PRICING_FILE": str(path)})
    assert result.returncode == 2, result.stderr
    assert "PRICING_FILE" in result.stderr and "Traceback" not in result.stderr


def test_a_short_admin_key_exits_2_naming_it() -> None:
    result = serve({"ADMIN_API_KEY": "admin-123"})
    assert result.returncode == 2, result.stderr
    assert "ADMIN_API_KEY" in result.stderr and "admin-123" not in result.stderr


def test_an_upstream_key_with_a_line_break_inside_exits_2_naming_it() -> None:
    result = serve({"ZAI_API_KEY": "upstream-key\nconfig-test"})
    assert result.returncode == 2, result.stderr
    assert "ZAI_API_KEY" in result.stderr and "config-test" not in result.stderr
    assert "Traceback" not in result.stderr
