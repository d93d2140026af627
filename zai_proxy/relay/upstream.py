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

Failures are told apart by whether the request can have reached the upstream:
`UpstreamUnreachable` only when it provably did not (the connection was never established, no
pool slot, an unusable URL), `UpstreamDisconnected` when the connection broke after the request
may have been written (closed without an answer, reset, a protocol error): the upstream may have
read it and spent tokens, so the forwarder retries that only for safe methods. A reused pooled
connection that turns out to be dead cannot be told apart from an upstream that read the
request and hung up; aiohttp itself retries the safe methods once on a fresh connection.

Nothing the upstream wrote reaches a client or a log unscrubbed of the upstream key:
`Scrubber` replaces the key in every message built from foreign text here, and the forwarder
applies the same scrubber to relayed response headers and error bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

import aiohttp
import httpx

from zai_proxy.core.errors import (
    InvalidRequest,
    UpstreamBadResponse,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamInterrupted,
    UpstreamTimeout,
    UpstreamUnreachable,
    UriTooLong,
)
from zai_proxy.wire.headers import RawHeaders

KEEPALIVE_SECONDS = 30.0
# httpx refuses longer URLs (httpx._urlparse.MAX_URL_LENGTH).
MAX_URL_LENGTH = 65536


REDACTED = "<redacted>"


class Scrubber:
    """Replaces the upstream key with `REDACTED` in text, bytes and headers quoted from upstream.

    The one scrubber of upstream text: an upstream (or a middlebox) that echoes the request's
    `Authorization` header back, in a status line, an error body or a header, must not hand the
    key to a client or a log. A no-op without a key (the simulator)."""

    __slots__ = ("_key", "_key_bytes")

    def __init__(self, key: str) -> None:
        self._key = key
        self._key_bytes = key.encode("latin-1", errors="replace")

    def text(self, text: str) -> str:
        return text.replace(self._key, REDACTED) if self._key and self._key in text else text

    def data(self, data: bytes) -> bytes:
        """`data` with the key replaced (a different length: the caller sends len() of it)."""
        key = self._key_bytes
        return data.replace(key, REDACTED.encode()) if key and key in data else data

    @property
    def active(self) -> bool:
        return bool(self._key_bytes)

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """`data` scrubbed up to a tail that may be the start of the key (held back: the rest
        of the key may come in the next read), and that tail."""
        key = self._key_bytes
        marker = REDACTED.encode()
        out: list[bytes] = []
        start = 0
        while (found := data.find(key, start)) >= 0:
            out += (data[start:found], marker)
            start = found + len(key)
        held = max(start, len(data) - len(key) + 1)
        out.append(data[start:held])
        return b"".join(out), data[held:]

    def reader(self, body: BodyReader, tail: bytes) -> ScrubbingReader:
        """`body` scrubbed as it is relayed; `tail` is what `split` held back of its start."""
        return ScrubbingReader(body, self, tail)

    def headers(self, raw: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
        """Header values with the key replaced (names cannot carry it: they are tokens)."""
        key = self._key_bytes
        if not key:
            return list(raw)
        return [(name, self.data(value)) for name, value in raw]


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
                 transport: httpx.AsyncBaseTransport | None = None, api_key: str = "") -> None:
        self.scrub = Scrubber(api_key)
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
        except aiohttp.ClientResponseError as exc:
            # An answer aiohttp cannot parse (a bad status line, a header over its limit, ...):
            # httpx_aiohttp passes it on untranslated. Its message quotes the upstream's bytes.
            # `from None`: a logged traceback would show the unscrubbed original.
            raise UpstreamBadResponse("upstream answer could not be read: "
                                      + self.scrub.text(exc.message)[:200]) from None
        except (httpx.HTTPError, OSError) as exc:
            raise _translate(exc) from None
        response.request = request
        return response

    def chunks(self, response: httpx.Response) -> BodyReader:
        """The response body as it arrives, with the between-chunks timeout."""
        return BodyReader(response, self.chunk_timeout)


# aiohttp's exceptions for a connection that was never established (httpx_aiohttp maps
# ServerDisconnectedError to httpx.ConnectTimeout too, so the httpx class alone cannot tell).
_AIOHTTP_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# httpx's own (and httpcore's) exceptions raised before any byte of the request was written.
_HTTPX_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                   httpx.UnsupportedProtocol)


def _translate(exc: httpx.HTTPError | OSError) -> UpstreamError:
    """Our error for a failure before the response headers; see the module docstring.

    Only type names go into the message, never the foreign exception's text."""
    cause = exc.__cause__
    names = type(exc).__name__ + (f" ({type(cause).__name__})"
                                  if isinstance(cause, aiohttp.ClientError) else "")
    if isinstance(cause, aiohttp.ClientError):
        not_sent = isinstance(cause, _AIOHTTP_NOT_SENT)
        timed_out = isinstance(cause, aiohttp.ServerTimeoutError)
    else:
        not_sent = isinstance(exc, _HTTPX_NOT_SENT)
        timed_out = isinstance(exc, httpx.TimeoutException)
    if not_sent:
        return UpstreamUnreachable(f"upstream unreachable: {names}")
    if timed_out:
        return UpstreamTimeout(f"upstream timed out: {names}")
    return UpstreamDisconnected(
        f"upstream connection broke after the request was sent: {names}")


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


class ScrubbingReader:
    """A `BodyReader` whose chunks have the upstream key replaced, even across reads (for a long
    error body relayed as it arrives: the length changes, so it goes without Content-Length)."""

    def __init__(self, body: BodyReader, scrub: Scrubber, tail: bytes) -> None:
        self._body = body
        self._scrub = scrub
        self._tail = tail

    def __aiter__(self) -> ScrubbingReader:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._body.__anext__()
        except StopAsyncIteration:
            if not self._tail:
                raise
            tail, self._tail = self._tail, b""  # shorter than the key: cannot hold it
            return tail
        out, self._tail = self._scrub.split(self._tail + chunk)
        return out

    async def aclose(self) -> None:
        await self._body.aclose()


async def _already_read(response: httpx.Response) -> AsyncIterator[bytes]:
    """A body some transports (e.g. httpx.MockTransport) hand over already read."""
    if response.content:
        yield response.content
