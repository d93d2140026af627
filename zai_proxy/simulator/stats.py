"""Counters served at `GET /_stats`, and what the last requests carried.

Secrets are never stored: an `Authorization` / `x-api-key` value is recorded as presence plus the
SHA-256 hex of its credential (the Bearer token without `Bearer `, the raw `x-api-key`), so a test
can prove which key reached the upstream by comparing `hashlib.sha256(key.encode()).hexdigest()`.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

SECONDS_KEPT = 10


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def describe_request(
    method: str, path: str, headers: Mapping[str, str], body: object, at: float
) -> dict[str, Any]:
    """The test-relevant facts about one request (no secret in clear)."""
    auth = headers.get("authorization")
    key = headers.get("x-api-key")
    token = auth[7:].strip() if auth and auth[:7].lower() == "bearer " else auth
    options = body.get("stream_options") if isinstance(body, dict) else None
    include_usage = options.get("include_usage") if isinstance(options, dict) else None
    return {
        "method": method,
        "path": path,
        "at": at,
        "authorization_present": auth is not None,
        "authorization_scheme": auth.split(" ", 1)[0] if auth and " " in auth else None,
        "authorization_sha256": sha256(token) if token is not None else None,
        "x_api_key_present": key is not None,
        "x_api_key_sha256": sha256(key) if key is not None else None,
        "x_request_id": headers.get("x-request-id"),
        "user_agent": headers.get("user-agent"),
        "content_type": headers.get("content-type"),
        "model": body.get("model") if isinstance(body, dict) else None,
        "stream": bool(body.get("stream")) if isinstance(body, dict) else False,
        "stream_options_present": options is not None,
        "include_usage": include_usage,
        "sim_headers": sorted(h for h in headers if h.startswith("x-sim-")),
    }


class Stats:
    """Request, status and 429 counters plus per-second admissions; `reset()` zeroes them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, keep: int = 50) -> None:
        self._clock = clock
        self._keep = keep
        self.reset()

    def reset(self) -> None:
        self.by_route: Counter[tuple[str, int]] = Counter()
        self.by_code_429: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self._accepted: dict[int, int] = {}
        self._rejected: dict[int, int] = {}
        self.last_request: dict[str, Any] | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=self._keep)
        self.started = self._clock()

    def record_request(self, info: dict[str, Any]) -> None:
        self.last_request = info
        self.recent.append(info)

    def record_status(self, route: str, status: int) -> None:
        self.by_route[(route, status)] += 1

    def record_429(self, code: str) -> None:
        self.by_code_429[code] += 1
        self._bump(self._rejected)

    def record_event(self, name: str) -> None:
        """Count something that is not a status: resets, client disconnects, injected faults."""
        self.events[name] += 1

    def record_accepted(self) -> None:
        self._bump(self._accepted)

    def _bump(self, buckets: dict[int, int]) -> None:
        second = int(self._clock())
        buckets[second] = buckets.get(second, 0) + 1
        if len(buckets) > SECONDS_KEPT * 2:
            for old in [s for s in buckets if s <= second - SECONDS_KEPT]:
                del buckets[old]

    def _series(self, buckets: Mapping[int, int], now: int, seconds: int) -> list[int]:
        return [buckets.get(s, 0) for s in range(now - seconds, now)]

    def snapshot(self, seconds: int = 5) -> dict[str, Any]:
        """JSON-ready counters. Per-second series cover the last `seconds` whole seconds."""
        routes: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self.by_route.items()):
            routes.setdefault(route, {})[str(status)] = count
        now = int(self._clock())
        return {
            "uptime_s": round(self._clock() - self.started, 3),
            "requests_total": sum(self.by_route.values()),
            "requests": routes,
            "status": {str(s): n for s, n in sorted(_by_status(self.by_route).items())},
            "rate_limited": dict(sorted(self.by_code_429.items())),
            "events": dict(sorted(self.events.items())),
            "accepted_per_second": self._series(self._accepted, now, seconds),
            "rejected_per_second": self._series(self._rejected, now, seconds),
            "accepted_current_second": self._accepted.get(now, 0),
            "last_request": self.last_request,
            "recent_requests": list(self.recent),
        }


def _by_status(by_route: Mapping[tuple[str, int], int]) -> Counter[int]:
    totals: Counter[int] = Counter()
    for (_, status), count in by_route.items():
        totals[status] += count
    return totals
