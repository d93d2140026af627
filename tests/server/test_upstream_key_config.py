"""ZAI_API_KEY must be a key that can go in an HTTP header: refused at start otherwise.

A newline or space inside the key (a Secret pasted with a line break) used to start a proxy that
said ready and failed every request. One trailing newline (a Secret file's final line break) and
surrounding blanks are stripped, as the help text says.
"""

from __future__ import annotations

import pytest

from zai_proxy.core.errors import ConfigError
from zai_proxy.server.config import load_settings

SECRET = "zai-secret-0123456789"


@pytest.mark.parametrize("key", [
    "zai-sec\nret-0123456789", "zai-sec ret-0123456789", "zai-secret\r-0123", "zai\tsecret-0123",
    "zai-secret-\x00123", "zai-secret-\x7f123", "zai-sécret-0123456789", "zai\u2028secret-012",
])
def test_an_upstream_key_that_cannot_go_in_a_header_is_refused(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"ZAI_API_KEY": key})
    message = str(info.value)
    assert "ZAI_API_KEY" in message
    assert key not in message and "secret" not in message


@pytest.mark.parametrize("raw", [SECRET + "\n", SECRET + "\r\n", "  " + SECRET + " \n"])
def test_a_trailing_newline_and_surrounding_blanks_are_stripped(raw: str) -> None:
    assert load_settings({"ZAI_API_KEY": raw}).zai_api_key == SECRET
