"""Read Z.AI error answers: the business code (its row in `codes`), and retry / reset hints.

Pure functions: no I/O, never raise on bad input. Z.AI puts the code in several envelopes (see
docs in the shared notes); hints come under several keys and time formats, naive times being
Beijing time (UTC+8).

One classifier, `classify_error`, whatever carried the error: a 429 is always a throttle (an
unknown code reads the `UNKNOWN` row). Other carriers are errors only when they say so:
`business_error` finds a code with a row of its own in another 4xx body, or in a 2xx body that
is an error object (`{"error": {...}}`, `{"code": ..., "msg": ..., "success": false}`,
Anthropic's `{"type": "error", ...}`; a body with `choices` or `content` is an answer, never an
error); the stream watch hands it the JSON of an error event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from zai_proxy.zai.codes import ThrottleClass, ZaiCode, known, lookup, of_class

BEIJING = timezone(timedelta(hours=8))
MAX_BODY_BYTES = 64 * 1024  # 429 bodies are tiny; anything bigger is not worth parsing
_RESET_KEYS = ("reset_time", "resetTime", "reset_at", "resetAt", "next_reset_time", "nextResetTime")
_RETRY_KEYS = ("retry_after", "retryAfter")
_CODE_PREFIX = re.compile(r"^\s*\[?(\d{4})\]?\s*[:\-]")
_RESET_TEXT = re.compile(r"reset at\s+(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?)", re.IGNORECASE)


@dataclass(frozen=True)
class Throttle:
    """One classified error answer (a 429, or a business code in another carrier).
    `retry_after` in seconds, `reset_at` as epoch seconds (UTC)."""

    cls: ThrottleClass
    code: str | None = None
    retry_after: float | None = None
    reset_at: float | None = None
    # Z.AI's own words (the first message in the body), for errors that quote them.
    message: str | None = field(default=None, compare=False)

    @property
    def row(self) -> ZaiCode:
        """The code's row in the table; the class's row when the code is missing or another's."""
        row = lookup(self.code)
        return row if row.cls is self.cls else of_class(self.cls)

    @property
    def retryable(self) -> bool:
        """Whether another attempt is worth it (never for quota exhaustion)."""
        return self.row.retryable

    @property
    def feeds(self) -> Literal["rate", "concurrency"] | None:
        """Which limit controller learns from this answer (congestion has its own backoff)."""
        learns = self.row.learns
        return learns if learns == "rate" or learns == "concurrency" else None

    def wait_seconds(self, now: float) -> float | None:
        """Seconds a client should wait: the Retry-After hint, else time to the reset."""
        if self.retry_after is not None:
            return self.retry_after
        if self.reset_at is not None:
            return max(0.0, self.reset_at - now)
        return None


def _epoch(now: datetime | float) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


def parse_time(value: object) -> float | None:
    """Epoch seconds from epoch s/ms (number or numeric string), RFC 3339, or naive Beijing time."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=BEIJING)
            return parsed.timestamp()
    else:
        return None
    if number != number or number <= 0:  # NaN or nonsense
        return None
    return number / 1000.0 if number > 1e11 else number  # 1e11 s is year 5138: it is ms


def next_beijing_midnight(now: float) -> float:
    """Epoch seconds of the first midnight, Beijing time, after `now` (when Z.AI's daily call
    limit resets)."""
    today = datetime.fromtimestamp(now, BEIJING).replace(hour=0, minute=0, second=0,
                                                         microsecond=0)
    return (today + timedelta(days=1)).timestamp()


def parse_retry_after(value: str | float | None, now: datetime | float) -> float | None:
    """Seconds to wait from a Retry-After value: delta seconds or an HTTP date; None if invalid."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return max(0.0, float(value)) if value == value else None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - _epoch(now))
    return max(0.0, seconds) if seconds == seconds else None


def _code_of(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def _envelopes(doc: object) -> list[dict[str, Any]]:
    """The dicts that may hold code / hints, innermost first."""
    if not isinstance(doc, dict):
        return []
    found: list[dict[str, Any]] = []
    for key in ("error", "data"):
        inner = doc.get(key)
        if isinstance(inner, dict):
            found.append(inner)
    found.append(doc)
    return found


def classify_error(body: bytes, headers: Mapping[str, str], now: datetime | float) -> Throttle:
    """Classify an error body. Never raises: oversized or malformed input gives `unknown`."""
    if len(body) > MAX_BODY_BYTES:
        retry_after = parse_retry_after(_header(headers, "Retry-After"), _epoch(now))
        return Throttle(ThrottleClass.UNKNOWN, None, retry_after, None)
    text = body.decode("utf-8", errors="replace")
    try:
        doc: object = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    return classify_doc(doc, headers, now, text=text)


# The name it had while only 429s were read.
classify_429 = classify_error


def classify_doc(doc: object, headers: Mapping[str, str], now: datetime | float, *,
                 text: str = "") -> Throttle:
    """Classify an error body already parsed (`doc`; None when it was not JSON, then the raw
    `text` is searched for a code prefix and a reset time)."""
    now_s = _epoch(now)
    retry_after = parse_retry_after(_header(headers, "Retry-After"), now_s)
    code: str | None = None
    messages: list[str] = []
    reset_at: float | None = None
    for env in _envelopes(doc):
        code = code or _code_of(env.get("code"))
        for key in ("message", "msg"):
            if isinstance(env.get(key), str):
                messages.append(env[key])
        for key in _RETRY_KEYS:
            if retry_after is None and key in env:
                retry_after = parse_retry_after(_as_hint(env[key]), now_s)
        for key in _RESET_KEYS:
            if reset_at is None and key in env:
                reset_at = parse_time(env[key])
    if doc is None and text:
        messages.append(text)
    for message in messages:
        if code is None and (match := _CODE_PREFIX.match(message)):
            code = match.group(1)
        if reset_at is None and (match := _RESET_TEXT.search(message)):
            reset_at = parse_time(match.group(1))
    return Throttle(lookup(code).cls, code, retry_after, reset_at,
                    messages[0] if messages else None)


def is_error_object(doc: object) -> bool:
    """Whether a 2xx JSON body is an error object rather than an answer."""
    if not isinstance(doc, dict) or "choices" in doc or "content" in doc:
        return False
    if doc.get("type") == "error" or isinstance(doc.get("error"), dict):
        return True
    if doc.get("success") is True:
        return False
    return doc.get("success") is False or ("code" in doc and ("msg" in doc or "message" in doc))


def business_error(doc: object, headers: Mapping[str, str],
                   now: datetime | float) -> Throttle | None:
    """The classified error of an answer that is not a 429 (a 4xx body, a 2xx error object
    (check `is_error_object` first), a stream's error event): None unless its code has a row of
    its own (`codes.known`)."""
    throttle = classify_doc(doc, headers, now)
    return throttle if known(throttle.code) else None


def _as_hint(value: object) -> str | float | None:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return None
