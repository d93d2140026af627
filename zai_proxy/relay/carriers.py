"""Which Z.AI error an upstream answer carries, and what carried it: pure, no I/O.

The forwarder judges every answer `carried` returns by its code's row (`zai/codes.py`), the
same way whatever carried it; the carrier is the `carrier` label of
`zai_proxy_upstream_business_errors_total`:

- `429`: an HTTP 429, always a throttle (an unknown code, or none, reads the `UNKNOWN` row);
- `4xx`: another 4xx whose code has a row of its own (a 400's parameter-error code is no
  throttle: such a 4xx stays a plain 4xx);
- `200`: a 2xx body that is an error object (`classify.is_error_object`) with such a code;
- `stream`: an error event with such a code before a stream's first content (after content the
  client has bytes, so the stream is relayed; the watch counts it as a stream error).

The common answer, a 2xx JSON body parsed already, costs a type test and a key test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from zai_proxy.relay.stream_errors import StreamWatch
from zai_proxy.wire.headers import RawHeaders
from zai_proxy.wire.json_body import PARSE_ERRORS
from zai_proxy.zai.classify import (
    MAX_BODY_BYTES,
    Throttle,
    business_error,
    classify_doc,
    classify_error,
    is_error_object,
)
from zai_proxy.zai.codes import known

Carried = tuple[Throttle, str]


def carried(status: int, headers: RawHeaders, body: bytes | None, parsed: Any, json_ok: bool,
            watch: StreamWatch | None, now: Callable[[], float]) -> Carried | None:
    """The Z.AI error of an answer (`body` when read whole, `parsed` its JSON when `json_ok`,
    `watch` the stream's when it is one), and its carrier; None for any other answer. `now`
    (epoch seconds) is read only for an error."""
    if status == 429:
        return classify_error(body or b"", _str_headers(headers), now()), "429"
    if 400 <= status < 500:
        if not body:
            return None
        throttle = classify_error(body, _str_headers(headers), now())
        return (throttle, "4xx") if known(throttle.code) else None
    if not 200 <= status < 300:
        return None
    if watch is not None:
        fault = watch.fault
        if (fault is None or not fault.before_content or fault.kind != "error"
                or not known(fault.code)):
            return None
        return classify_doc(fault.doc, _str_headers(headers), now()), "stream"
    doc: Any = None
    if json_ok:
        doc = parsed
    elif body and len(body) <= MAX_BODY_BYTES and (b'"error"' in body or b'"code"' in body):
        try:  # a body nobody parsed (a pass-through route): only when it may be one
            doc = json.loads(body)
        except PARSE_ERRORS:
            return None
    if not is_error_object(doc):
        return None
    found = business_error(doc, _str_headers(headers), now())
    return (found, "200") if found is not None else None


def _str_headers(raw: RawHeaders) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
