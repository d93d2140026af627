"""Polling Z.AI's quota monitor: one GET (`MonitorClient`) and the poll health (`PollHealth`).

The poll is not a request of the proxy's clients: it never passes admission, never uses the
upstream connection pool, and its failures never reach a request. Each failure is a value
(`Invalid` with a bounded reason), counted, shown on /health, and logged once per change of
state (ok -> failing, one reason -> another, failing -> ok), never once per poll. The key goes
only into the `Authorization` header (raw, no `Bearer`: the monitor wants it so) and is scrubbed
from any error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from zai_proxy.zai.monitor_report import (
    MAX_BODY_BYTES,
    REASONS,
    Invalid,
    QuotaReport,
    Reason,
    parse_monitor,
)

log = logging.getLogger("zai_proxy.quota")
MONITOR_PATH = "/api/monitor/usage/quota/limit"


class MonitorClient:
    """GET the monitor with the account key; returns a report or why there is none."""

    def __init__(self, base_url: str, key: str, *, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.url = base_url.rstrip("/") + MONITOR_PATH
        self._key = key
        self.timeout = timeout
        self._sleep = sleep
        self._client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout),
                                         follow_redirects=False)

    async def fetch(self) -> QuotaReport | Invalid:
        try:
            got = await self._within_timeout()
        except httpx.TimeoutException:
            return Invalid("timeout", f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return Invalid("unreachable", self._scrub(f"{type(exc).__name__}: {exc}"))
        if got is None:
            return Invalid("timeout", f"no answer within {self.timeout:g} s")
        status, body = got
        if status in (401, 403):
            return Invalid("unauthorized", f"HTTP {status}: the monitor refused the key")
        if status != 200:
            return Invalid("http_error", f"HTTP {status}")
        if body is None:
            return Invalid("invalid_response", f"answer larger than {MAX_BODY_BYTES} bytes")
        result = parse_monitor(body)
        if isinstance(result, Invalid):  # its detail quotes the monitor's own message
            return Invalid(result.reason, self._scrub(result.detail))
        return result

    async def _within_timeout(self) -> tuple[int, bytes | None] | None:
        """The GET's status and body, None when `timeout` passed first (on the injected sleep:
        it bounds a body that trickles in, too; httpx's own timeouts stay as a backstop)."""
        get = asyncio.ensure_future(self._get())
        timer = asyncio.ensure_future(self._sleep(self.timeout))
        try:
            await asyncio.wait({get, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not get.done():
                get.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await get
        if get.cancelled():
            return None
        return get.result()  # raises what the GET raised

    async def _get(self) -> tuple[int, bytes | None]:
        headers = {"authorization": self._key, "accept": "application/json"}
        async with self._client.stream("GET", self.url, headers=headers) as response:
            parts: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return response.status_code, None
                parts.append(chunk)
            return response.status_code, b"".join(parts)

    def _scrub(self, text: str) -> str:
        return (text.replace(self._key, "<key>") if self._key else text)[:200]

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass
class PollHealth:
    """Where polling stands, for /health; `record` says what to log when the state changed."""

    state: str = "pending"  # pending (no poll yet), ok, failing
    reason: str | None = None
    detail: str | None = None
    since: float | None = None
    last_attempt_at: float | None = None
    last_success_at: float | None = None
    failures: int = 0  # in a row

    def record(self, result: QuotaReport | Invalid, at: float) -> tuple[int, str] | None:
        """Note one poll; returns (log level, message) when the state changed, else None."""
        self.last_attempt_at = at
        if isinstance(result, Invalid):
            self.failures += 1
            changed = self.state != "failing" or self.reason != result.reason
            previous = self.state
            self.state, self.reason, self.detail = "failing", result.reason, result.detail
            if changed:
                self.since = at
                prefix = "quota poll failing" if previous != "failing" else "quota poll now failing"
                return logging.WARNING, f"{prefix} ({result.reason}): {result.detail}"
            return None
        recovered = self.state == "failing"
        first = self.state == "pending"
        self.state, self.reason, self.detail, self.failures = "ok", None, None, 0
        self.last_success_at = at
        if recovered or first:
            self.since = at
            return logging.INFO, ("quota poll recovered" if recovered else "quota poll ok")
        return None

    def adopt(self, doc: dict[str, Any]) -> tuple[int, str] | None:
        """The leader's poll outcome (shared state), recorded as if it were ours."""
        at = float(doc.get("at") or 0.0)
        if doc.get("ok"):
            return self.record(QuotaReport(None, ()), at)
        reason: Reason = next((r for r in REASONS if r == doc.get("reason")), "invalid_response")
        return self.record(Invalid(reason, str(doc.get("detail") or "")[:200]), at)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "detail": self.detail,
                "since": self.since, "last_attempt_at": self.last_attempt_at,
                "last_success_at": self.last_success_at, "consecutive_failures": self.failures}

