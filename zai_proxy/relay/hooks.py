"""What the relay asks of the features that may refuse, pace or learn from a request.

The relay knows no feature by name: `create_app` hands `ProxyHandler` and `Forwarder` one
sequence of `RequestHook`s (the plan quota, the per-client limits, ...) and the relay calls each,
in that order, at five fixed points of a request's life:

1. `check(ex)`, once per request the proxy would send: after everything that can refuse the
   request itself (route, body, JSON, the upstream URL), before it asks for admission. A hook
   answers a refusal (the first one returned is the request's answer, and later hooks are not
   asked) or None; it may set `ex.paced` (the request waits for the quota pacer at admission).
   A hook may count the request here (a client's request budget): a refused request costs
   nothing only in the hooks that were not asked.
2. `recheck(ex)`, after admission, before each upstream attempt (so again before a retry): a
   refusal that began while the request queued. Synchronous and cheap; the first refusal is the
   answer and the attempt is not made.
3. `observe(ex, throttle)`, at most once: the upstream answer the client will get carried a
   Z.AI error, classified as `throttle` (a 429, a business code in another 4xx, an error object
   in a 200 body, an error event before a stream's first content).
4. `answered(ex, status, throttle)`, at most once, after `observe`: the upstream answer about
   to be relayed, its status and (when one was classified) its throttle; every hook is told.
   A hook may return an error to answer in its place (the first one returned is the answer;
   the upstream body is then closed unread). A request that ended with no upstream answer
   (refused, failed, the client gone) gets no call: its record's `status` says it ended.
5. `settled(ex, client, counts)`, at most once, after the response went to the client: the
   request's final token counts (a counted route relayed a 2xx). `client` is the name usage is
   reported under (`anonymous` while the proxy is open); `ex.client` is the caller's identity.

A hook never raises for a refusal (it returns it), never sends to the client, never touches the
upstream request or response (it may only replace the answer, through `answered`), and never
blocks the event loop; an exception from it is a bug and fails the request. Accounting (which
rewrites the body and follows the stream) is the relay's own job, not a hook.

The argument types come from the layers below the features (`Exchange` in wire, `ProxyError` in
core, `Throttle` in zai), so a feature implements the protocol without importing the relay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from zai_proxy.core.errors import ProxyError
from zai_proxy.wire.exchange import Exchange
from zai_proxy.wire.headers import RawHeaders
from zai_proxy.zai.classify import Throttle


class RequestHook(Protocol):
    """A feature the relay calls at the four points above; see the module docstring."""

    async def check(self, ex: Exchange) -> ProxyError | None:
        """The refusal to answer instead of going upstream, or None."""

    def recheck(self, ex: Exchange) -> ProxyError | None:
        """Before an upstream attempt: the refusal to answer instead, or None."""

    def observe(self, ex: Exchange, throttle: Throttle) -> None:
        """The relayed upstream answer carried this classified Z.AI error."""

    def answered(self, ex: Exchange, status: int, throttle: Throttle | None) -> ProxyError | None:
        """The upstream answer about to be relayed; an error to answer instead, or None."""

    async def settled(self, ex: Exchange, client: str, counts: Mapping[str, int]) -> None:
        """The request's final token counts, by direction."""


class ClientIdentity(Protocol):
    """Who is calling: the client's name from its credentials (None without credentials while
    the proxy is open; `Unauthorized` for bad ones)."""

    @property
    def open(self) -> bool:
        """Whether the proxy serves callers without a key."""

    def client_id(self, headers: RawHeaders) -> str | None:
        """The caller's name, from its request headers."""
