"""The one shared upstream connection pool, and the boundary where foreign exceptions become ours.

Requests go through one httpx transport (over aiohttp by default: several times less CPU per
request than httpx's own) with explicit pool limits. The proxy calls the transport directly, not
through `httpx.AsyncClient`: a proxy must neither follow redirects nor keep a cookie jar (a
shared jar would replay one client's upstream cookies on every other client's requests), and
skipping that machinery is a quarter of the per-request CPU. The aiohttp session under the
default transport is built here, with a `DummyCookieJar`: left to itself the transport would
make a session with aiohttp's default jar, which stores every upstream `Set-Cookie`.

`build` makes the upstream request (and refuses a URL the client cannot have meant) before the
request is admitted, so a refusal never costs a rate token.

Three separate timeouts, none of them a total: connect, first byte (response headers; a
non-stream LLM call sends them only when done) and between chunks (a long stream is never cut
while it keeps talking).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType

import aiohttp
import httpx

from zai_proxy.errors import (
    InvalidRequest,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamTimeout,
    UpstreamUnreachable,
    UriTooLong,
)
from zai_proxy.headers import RawHeaders

KEEPALIVE_SECONDS = 30.0
# httpx refuses longer URLs (httpx._urlparse.MAX_URL_LENGTH).
MAX_URL_LENGTH = 65536


def default_transport(pool_size: int) -> httpx.AsyncBaseTransport:
    """The aiohttp-backed transport, on a session without a cookie jar."""
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:  # called once, inside the running loop
        connector = aiohttp.TCPConnector(limit=pool_size, keepalive_timeout=KEEPALIVE_SECONDS,
                                         ssl=transport.ssl_context)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                     trust_env=False)

    limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size,
                          keepalive_expiry=KEEPALIVE_SECONDS)
    transport = AiohttpTransport(limits=limits, trust_env=False, client=session)
    return transport


class Upstream:
    """Sends requests upstream and streams their bodies, translating every failure."""

    def __init__(self, *, connect_timeout: float, first_byte_timeout: float,
                 chunk_timeout: float, pool_size: int,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.first_byte_timeout = first_byte_timeout
        self.chunk_timeout = chunk_timeout
        self.transport = transport or default_transport(pool_size)
        # The transport's own read timeout is only a backstop; the phases are timed here.
        backstop = max(first_byte_timeout, chunk_timeout) + 1.0
        self._timeouts = {"connect": connect_timeout, "read": backstop,
                          "write": max(connect_timeout, 30.0), "pool": first_byte_timeout}

    async def aclose(self) -> None:
        await self.transport.aclose()

    def build(self, method: str, url: str, headers: RawHeaders, body: bytes) -> httpx.Request:
        """The upstream request, or UriTooLong / InvalidRequest for a URL httpx refuses."""
        if len(url) > MAX_URL_LENGTH:
            raise UriTooLong(f"the upstream URL would be {len(url)} characters; at most "
                             f"{MAX_URL_LENGTH} are allowed")
        try:
            return httpx.Request(method, url, headers=headers, content=body,
                                 extensions={"timeout": self._timeouts})
        except httpx.InvalidURL as exc:
            error = InvalidRequest(f"invalid request target: {exc}")
            error.code = "proxy_invalid_url"
            raise error from None

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send and wait for the response headers (not the body)."""
        try:
            async with asyncio.timeout(self.first_byte_timeout):
                response = await self.transport.handle_async_request(request)
        except TimeoutError:
            raise UpstreamTimeout(
                f"upstream sent no response within {self.first_byte_timeout:g}s") from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                httpx.ReadError, httpx.WriteError, httpx.UnsupportedProtocol,
                httpx.PoolTimeout) as exc:
            raise UpstreamUnreachable(f"upstream unreachable: {type(exc).__name__}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream timed out: {type(exc).__name__}") from exc
        except aiohttp.ClientResponseError as exc:
            # An answer aiohttp cannot parse (a header over its limit, ...): httpx_aiohttp
            # passes it on untranslated.
            raise UpstreamBadResponse(
                f"upstream answer could not be read: {exc.message[:200]}") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise UpstreamUnreachable(f"upstream request failed: {type(exc).__name__}") from exc
        response.request = request
        return response

    def chunks(self, response: httpx.Response) -> BodyReader:
        """The response body as it arrives, with the between-chunks timeout."""
        return BodyReader(response, self.chunk_timeout)


class BodyReader:
    """Async iterator over an upstream body; failures become UpstreamError subclasses.

    The silence timer runs only while waiting for the upstream, not while the caller relays a
    chunk to a slow client. It is one timer per `chunk_timeout` period, re-armed lazily, rather
    than a timer per chunk: a stream's chunks cost nothing but a timestamp.
    """

    def __init__(self, response: httpx.Response, chunk_timeout: float) -> None:
        self._response = response
        self._chunk_timeout = chunk_timeout
        self._iterator: AsyncIterator[bytes] = (
            _already_read(response) if response.is_stream_consumed else response.aiter_raw())
        self._waiting_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._timed_out = False

    def __aiter__(self) -> BodyReader:
        return self

    async def __anext__(self) -> bytes:
        loop = asyncio.get_running_loop()
        self._waiting_since = loop.time()
        if self._timer is None:
            self._task = asyncio.current_task()
            self._timer = loop.call_at(self._waiting_since + self._chunk_timeout, self._check)
        try:
            return await self._iterator.__anext__()
        except StopAsyncIteration:
            raise
        except asyncio.CancelledError:
            if not self._timed_out:
                raise
            self._timed_out = False
            if self._task is not None:
                self._task.uncancel()
            raise UpstreamTimeout(
                f"upstream was silent for {self._chunk_timeout:g}s mid-body") from None
        except UpstreamError:
            raise
        except (httpx.HTTPError, OSError) as exc:
            raise UpstreamInterrupted(
                f"upstream connection broke mid-body: {type(exc).__name__}") from exc
        finally:
            self._waiting_since = None

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        since = self._waiting_since
        now = loop.time()
        if since is not None and now - since >= self._chunk_timeout:
            self._timer = None
            self._timed_out = True
            if self._task is not None:
                self._task.cancel("upstream silent")
            return
        due = (since if since is not None else now) + self._chunk_timeout
        self._timer = loop.call_at(due, self._check)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._response.aclose()

    async def __aenter__(self) -> BodyReader:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


async def _already_read(response: httpx.Response) -> AsyncIterator[bytes]:
    """A body some transports (e.g. httpx.MockTransport) hand over already read."""
    if response.content:
        yield response.content
