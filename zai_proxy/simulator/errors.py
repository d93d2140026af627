"""Error answers shaped like Z.AI's: 429 business codes, auth failures, edge pages.

Each builder returns `(status, headers, body)` ready for the ASGI layer.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta, timezone

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]

JSON_TYPE = (b"content-type", b"application/json")
HTML_TYPE = (b"content-type", b"text/html")
BEIJING = timezone(timedelta(hours=8))

MESSAGES_429: dict[int, str] = {
    1302: "High concurrency usage of this API, please reduce concurrency or contact customer "
    "service to increase limits",
    1303: "Rate limit reached for requests",
    1305: "The service may be temporarily overloaded, please try again later",
    1312: "The model is currently experiencing high traffic, please try again later",
}

# Account-state codes: never worth a retry. Z.AI answers each with HTTP 429 as far as the notes
# tell (1113 is reported as 429 "Insufficient balance or no resource package"; for 1309, 1311
# and 1313 no other status has been seen), so the simulator uses 429 for all of them by default;
# `x-sim-error-status` picks another status for a test that needs one.
ACCOUNT_MESSAGES: dict[int, str] = {
    1113: "Insufficient balance or no resource package. Please recharge.",
    1309: "Your GLM Coding Plan package has expired. Please renew your plan to continue.",
    1311: "Your current subscription plan does not include access to this model.",
    1313: "Your account's current usage violates the fair use policy and has been restricted. "
    "Please try again later or contact customer service.",
}
DAILY_LIMIT = 1304


def json_answer(status: int, payload: object, extra: Headers | None = None) -> Answer:
    """A JSON answer with `payload` serialised compactly."""
    return status, [JSON_TYPE, *(extra or [])], json.dumps(payload).encode()


def zai_error(status: int, code: str, message: str, extra: Headers | None = None) -> Answer:
    """`{"error":{"code":"<code>","message":"..."}}`, Z.AI's OpenAI-route envelope."""
    return json_answer(status, {"error": {"code": code, "message": message}}, extra)


def retry_after_header(seconds: float) -> tuple[bytes, bytes]:
    """`Retry-After` in whole seconds, at least 1."""
    return b"retry-after", str(max(1, math.ceil(seconds))).encode()


def reset_text(seconds_to_reset: float, now_epoch: float | None = None) -> tuple[str, int]:
    """The reset moment as Z.AI prints it (naive Beijing time) and as epoch milliseconds."""
    epoch = (time.time() if now_epoch is None else now_epoch) + seconds_to_reset
    stamp = datetime.fromtimestamp(epoch, BEIJING).strftime("%Y-%m-%d %H:%M:%S")
    return stamp, int(epoch * 1000)


def quota_exhausted(code: int, seconds_to_reset: float, now_epoch: float | None = None) -> Answer:
    """429 for a used-up quota: 1308 (five-hour window) or 1310 (weekly/monthly)."""
    stamp, epoch_ms = reset_text(seconds_to_reset, now_epoch)
    period = "5 hour" if code == 1308 else "weekly/monthly"
    message = f"Usage limit reached for {period}. Your limit will reset at {stamp}"
    body = {"error": {"code": str(code), "message": message, "next_reset_time": epoch_ms}}
    return json_answer(429, body)


def next_beijing_midnight(now_epoch: float) -> float:
    """Epoch seconds of the next 00:00:00 in Beijing time (UTC+8) strictly after `now_epoch`."""
    today = datetime.fromtimestamp(now_epoch, BEIJING).replace(hour=0, minute=0, second=0,
                                                               microsecond=0)
    return (today + timedelta(days=1)).timestamp()


def daily_limit(now_epoch: float | None = None, status: int = 429) -> Answer:
    """1304, the daily call limit: the message names the reset at the next midnight Beijing
    time ("... will reset at 2026-12-08 00:00:00") and `next_reset_time` carries it in epoch ms."""
    now = time.time() if now_epoch is None else now_epoch
    stamp, epoch_ms = reset_text(next_beijing_midnight(now) - now, now)
    message = f"You have reached the daily call limit. Your limit will reset at {stamp}"
    body = {"error": {"code": str(DAILY_LIMIT), "message": message, "next_reset_time": epoch_ms}}
    return json_answer(status, body)


def business_error(code: int, now_epoch: float | None = None, status: int = 429,
                   retry_after: float | None = None) -> Answer:
    """Z.AI's answer for business code `code` with HTTP `status`: 1304 with its reset, the
    account codes (1113/1309/1311/1313) with their messages, others as `too_many` (Retry-After
    only when `retry_after` is given). 1308/1310 need their window's reset: see `forced_429`."""
    if code == DAILY_LIMIT:
        return daily_limit(now_epoch, status)
    if code in ACCOUNT_MESSAGES:
        return zai_error(status, str(code), ACCOUNT_MESSAGES[code])
    extra = [retry_after_header(retry_after)] if retry_after is not None else []
    return zai_error(status, str(code), MESSAGES_429.get(code, "Too many requests"), extra)


def too_many(code: int, retry_after: float | None = None) -> Answer:
    """429 with a ceiling code (1302 concurrency, 1303/1305 frequency, 1312 congestion, ...)."""
    extra = [retry_after_header(retry_after)] if retry_after is not None else []
    message = MESSAGES_429.get(code, "Too many requests")
    return zai_error(429, str(code), message, extra)


def forced_429(code: int, retry_after: float | None, seconds_to_reset: float,
               now_epoch: float | None = None, status: int = 429) -> Answer:
    """The answer a test asked for with `x-sim-429-code` (HTTP `status`, 429 unless
    `x-sim-error-status` says otherwise): quota codes with their reset, 1304 with the next
    Beijing midnight, account codes with their messages (no Retry-After: retrying is useless),
    load codes with Retry-After (default 1 s)."""
    if code in (1308, 1310):
        _, headers, body = quota_exhausted(code, seconds_to_reset, now_epoch)
        return status, headers, body
    if code == DAILY_LIMIT or code in ACCOUNT_MESSAGES:
        return business_error(code, now_epoch, status)
    answer = too_many(code, retry_after if retry_after is not None else 1.0)
    return status, answer[1], answer[2]


def server_error(status: int) -> Answer:
    """5xx: JSON for 500, an nginx-style HTML page for gateway errors (what the edge sends)."""
    if status == 500:
        return zai_error(500, "500", "Internal Error")
    reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}
    title = f"{status} {reason.get(status, 'Error')}"
    page = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1>"
    page += "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    return status, [HTML_TYPE], page.encode()


def status_answer(status: int) -> Answer:
    """Any status a test forced with `x-sim-status` (429 defaults to code 1303)."""
    if status >= 500:
        return server_error(status)
    if status == 429:
        return too_many(1303, 1.0)
    if status == 401:
        return unauthorized_openai()
    return zai_error(status, str(status), f"Simulated status {status}")


def unauthorized_openai(wrong_key: bool = False) -> Answer:
    """401 on the OpenAI routes: 1001 when no Bearer token came, 1000 when it is not accepted."""
    if wrong_key:
        return zai_error(401, "1000", "Authentication Failed")
    return zai_error(401, "1001", "Authentication parameter not received in Header")


def unauthorized_anthropic() -> Answer:
    """401 on the Anthropic routes (no or wrong `x-api-key`), in Anthropic's envelope."""
    body = {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    return json_answer(401, body)


def edge_not_found() -> Answer:
    """The bare CDN 404 page Z.AI's edge serves to `Authorization: Bearer` on /api/anthropic."""
    page = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    page += "<center><h1>404 Not Found</h1></center>\r\n</body>\r\n</html>\r\n"
    return 404, [HTML_TYPE], page.encode()


def bad_request(message: str) -> Answer:
    """400 with Z.AI's parameter-error code 1214."""
    return zai_error(400, "1214", message)


ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                   404: "not_found_error", 405: "invalid_request_error",
                   413: "request_too_large", 429: "rate_limit_error"}


def anthropic_error(status: int, error: dict[str, object]) -> dict[str, object]:
    """`error` (code, message, ...) in Anthropic's envelope, its type chosen by `status`."""
    return {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"), **error}}


def error_in_200(answer: Answer, anthropic: bool) -> Answer:
    """A JSON error answer re-sent as HTTP 200 with the same body (Z.AI has put business errors
    inside 200s); on the Anthropic routes in Anthropic's envelope, typed by the original status."""
    _, headers, body = anthropic_envelope(answer) if anthropic else answer
    # A 200 carries no Retry-After: the client has only the body to go on.
    return 200, [h for h in headers if h[0] != b"retry-after"], body


def anthropic_envelope(answer: Answer) -> Answer:
    """A Z.AI JSON error re-wrapped the way the Anthropic route sends it:
    `{"type":"error","error":{"type":"rate_limit_error","code":"1303","message":...}}`.
    Non-JSON answers and bodies already in that envelope pass through unchanged."""
    status, headers, body = answer
    if JSON_TYPE not in headers:
        return answer
    payload = json.loads(body)
    error = payload.get("error")
    if payload.get("type") == "error" or not isinstance(error, dict):
        return answer
    return status, headers, json.dumps(anthropic_error(status, error)).encode()


def stream_error_event(answer: Answer, anthropic: bool) -> bytes:
    """The SSE event Z.AI ends a stream with when a business error strikes mid-stream, carrying
    the error of the JSON `answer`: `data: {"error": {"code": ..., "message": ...}}` on the
    OpenAI routes, `event: error` with Anthropic's envelope (typed as a 429) on the Anthropic
    route."""
    payload = json.loads(answer[2])
    if anthropic:
        return b"event: error\ndata: " + json.dumps(anthropic_error(429, payload["error"])).encode(
        ) + b"\n\n"
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
