"""What carried a Z.AI error: each carrier's rule, on plain values."""

from __future__ import annotations

import json
from typing import Any

import pytest

from zai_proxy.relay.carriers import carried
from zai_proxy.relay.stream_errors import StreamWatch

ROLE = b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
TEXT = b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
JSON = [(b"content-type", b"application/json")]


def error(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": "m"}}


def whole(status: int, doc: Any, *, parsed: bool = True) -> tuple[str, str | None] | None:
    body = json.dumps(doc).encode()
    found = carried(status, JSON, body, doc if parsed else None, parsed, None, lambda: 0.0)
    return None if found is None else (found[1], found[0].code)


def streamed(*chunks: bytes) -> tuple[str, str | None] | None:
    watch = StreamWatch()
    for chunk in chunks:
        watch.feed(chunk)
    found = carried(200, [], None, None, False, watch, lambda: 0.0)
    return None if found is None else (found[1], found[0].code)


@pytest.mark.parametrize(("status", "doc", "expected"), [
    (429, error("1999"), ("429", "1999")),  # a 429 is a throttle whatever its code
    (429, {"oops": 1}, ("429", None)),
    (403, error("1311"), ("4xx", "1311")),
    (400, error("1214"), None),  # a code without a row: a plain 4xx
    (401, {"type": "error", "error": {"type": "authentication_error"}}, None),
    (200, error("1305"), ("200", "1305")),
    (200, {"choices": [], **error("1305")}, None),
    (200, error("1999"), None),
    (500, error("1303"), None),  # a 5xx is a gateway failure, retried as such
])
def test_each_carrier_has_its_rule(status: int, doc: Any,
                                   expected: tuple[str, str | None] | None) -> None:
    assert whole(status, doc) == expected


def test_a_2xx_body_nobody_parsed_is_still_read_when_it_may_be_an_error() -> None:
    assert whole(200, error("1303"), parsed=False) == ("200", "1303")
    assert whole(200, {"id": "x", "data": []}, parsed=False) is None


def test_a_stream_carries_an_error_only_before_its_first_content() -> None:
    event = b"data: " + json.dumps(error("1302")).encode() + b"\n\n"
    assert streamed(ROLE, event) == ("stream", "1302")
    assert streamed(ROLE, TEXT, event) is None
    assert streamed(ROLE, b"data: " + json.dumps(error("1999")).encode() + b"\n\n") is None
