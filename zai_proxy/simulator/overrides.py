"""Per-request knobs: the settings, overridden by `x-sim-*` request headers.

Headers (lower-case names): `x-sim-status`, `x-sim-429-code`, `x-sim-retry-after`,
`x-sim-empty`, `x-sim-truncate`, `x-sim-reset-after-chunks`, `x-sim-delay-ms`, `x-sim-ttft-ms`,
`x-sim-chunks`, `x-sim-chunk-gap-ms`, `x-sim-words-per-chunk`, `x-sim-no-usage`,
`x-sim-cached-tokens`, `x-sim-error-status`, `x-sim-error-in-200`, `x-sim-stream-error`,
`x-sim-finish-reason`; their effects are listed in the `zai_proxy.simulator` docstring.
Malformed values are ignored (the setting applies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from zai_proxy.simulator.settings import SimulatorSettings

PREFIX = "x-sim-"


@dataclass(frozen=True)
class RequestKnobs:
    """The effective behaviour for one request (seconds, counts, forced outcomes)."""

    latency_s: float = 0.0
    ttft_s: float = 0.0
    chunks: int = 5
    gap_s: float = 0.0
    words_per_chunk: int = 2
    status: int | None = None
    code_429: int | None = None
    retry_after: float | None = None
    empty: bool = False
    truncate: bool = False
    no_usage: bool = False
    reset_after: int | None = None
    cached_tokens: int | None = None
    error_status: int | None = None
    error_in_200: int | None = None
    stream_error: tuple[int, int] | None = None  # (business code, content chunks before it)
    finish_reason: str | None = None

    @property
    def forced(self) -> bool:
        """True when the request asked for an error (in a status or a 200) instead of a reply."""
        return (self.code_429 is not None or self.error_in_200 is not None
                or (self.status is not None and self.status != 200))


def base_knobs(settings: SimulatorSettings) -> RequestKnobs:
    """Knobs from the settings alone (what a request without `x-sim-*` headers gets)."""
    return RequestKnobs(
        latency_s=settings.latency_ms / 1000.0,
        ttft_s=settings.ttft_ms / 1000.0,
        chunks=settings.chunks,
        gap_s=settings.chunk_gap_ms / 1000.0,
        words_per_chunk=settings.words_per_chunk,
    )


def _int(value: str | None, minimum: int) -> int | None:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= minimum else None


def _seconds(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number / 1000.0 if number is not None and number >= 0 else None


def _stream_error(value: str | None) -> tuple[int, int] | None:
    """`CODE` or `CODE@K` (K content chunks before the error event, default 0)."""
    if value is None:
        return None
    code_text, at, after_text = value.strip().partition("@")
    code = _int(code_text, 0)
    after = _int(after_text, 0) if at else 0
    return (code, after) if code is not None and after is not None else None


def _word(value: str | None) -> str | None:
    text = value.strip() if value is not None else ""
    return text if text and len(text) <= 64 and text.replace("_", "").isalnum() else None


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def apply_headers(base: RequestKnobs, sim: Mapping[str, str]) -> RequestKnobs:
    """`base` overridden by the `x-sim-*` headers in `sim` (lower-case names, no prefix needed)."""
    if not sim:
        return base
    get = sim.get
    retry = _int(get("x-sim-retry-after"), 0)
    changes = {
        "latency_s": _seconds(get("x-sim-delay-ms")),
        "ttft_s": _seconds(get("x-sim-ttft-ms")),
        "chunks": _int(get("x-sim-chunks"), 1),
        "gap_s": _seconds(get("x-sim-chunk-gap-ms")),
        "words_per_chunk": _int(get("x-sim-words-per-chunk"), 1),
        "status": _int(get("x-sim-status"), 100),
        "code_429": _int(get("x-sim-429-code"), 0),
        "retry_after": float(retry) if retry is not None else None,
        "reset_after": _int(get("x-sim-reset-after-chunks"), 0),
        "cached_tokens": _int(get("x-sim-cached-tokens"), 0),
        "error_status": _int(get("x-sim-error-status"), 100),
        "error_in_200": _int(get("x-sim-error-in-200"), 0),
        "stream_error": _stream_error(get("x-sim-stream-error")),
        "finish_reason": _word(get("x-sim-finish-reason")),
    }
    flags = {
        "empty": _flag(get("x-sim-empty")),
        "truncate": _flag(get("x-sim-truncate")),
        "no_usage": _flag(get("x-sim-no-usage")),
    }
    values: dict[str, object] = {k: v for k, v in changes.items() if v is not None}
    values.update({k: True for k, v in flags.items() if v})
    return replace(base, **values) if values else base  # type: ignore[arg-type]
