"""Where every finished request is recorded: metrics and one log line, exactly once."""

from __future__ import annotations

import logging
import time
from typing import Any

from zai_proxy.observe.logs import ACCESS
from zai_proxy.observe.metrics import Metrics
from zai_proxy.wire.exchange import Exchange


class Recorder:
    """Turns an `Exchange` into metric updates and a JSON log line."""

    def __init__(self, metrics: Metrics, max_workers: int) -> None:
        self.metrics = metrics
        self.max_workers = max_workers
        self._log = logging.getLogger(ACCESS)

    def in_flight(self, count: int) -> None:
        self.metrics.set_in_flight(count, self.max_workers)

    def upstream_error(self, error_type: str) -> None:
        self.metrics.upstream_error(error_type)

    def rejected(self, reason: str) -> None:
        self.metrics.rejections.labels(reason).inc()

    def finished(self, ex: Exchange) -> None:
        now = time.perf_counter()
        duration = now - ex.started
        status = ex.status or 500
        self.metrics.finished(ex.method, ex.route, status, duration, ex.request_bytes,
                              ex.response_bytes)
        upstream_ttfb = upstream_duration = None
        if ex.upstream_started is not None:
            if ex.upstream_ttfb is not None:
                upstream_ttfb = ex.upstream_ttfb - ex.upstream_started
            end = ex.upstream_ended if ex.upstream_ended is not None else now
            upstream_duration = end - ex.upstream_started
            self.metrics.upstream_timing(ex.route, upstream_ttfb,
                                         upstream_duration if ex.upstream_ended else None)
        if self._log.isEnabledFor(logging.INFO):
            self._log.info(self._line(ex, status, duration, upstream_ttfb, upstream_duration))

    @staticmethod
    def _line(ex: Exchange, status: int, duration: float, ttfb: float | None,
              upstream: float | None) -> dict[str, Any]:
        line: dict[str, Any] = {
            "msg": "request",
            "request_id": ex.request_id,
            "method": ex.method,
            "route": ex.route,
            "status": status,
            "outcome": ex.outcome,
            "client": ex.client,
            "model": ex.model,
            "stream": ex.stream,
            "duration_ms": round(duration * 1000, 3),
            "upstream_ms": None if upstream is None else round(upstream * 1000, 3),
            "ttfb_ms": None if ttfb is None else round(ttfb * 1000, 3),
            "request_bytes": ex.request_bytes,
            "response_bytes": ex.response_bytes,
            "upstream_status": ex.upstream_status,
            "attempts": ex.attempts,
        }
        if ex.admission_wait:
            line["admission_wait_ms"] = round(ex.admission_wait * 1000, 3)
        if ex.error:
            line["error"] = ex.error
        if ex.usage is not None:
            line["tokens"] = ex.usage
            line["cost_usd"] = ex.cost
        return line
