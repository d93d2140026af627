"""The one shared upstream client, and the boundary where foreign exceptions become ours.

One `httpx.AsyncClient` (over aiohttp by default: several times less CPU per request than
httpx's own transport) with explicit pool limits and timeouts. Three separate timeouts, none of
them a total: connect, first byte (response headers; a non-stream LLM call sends them only when
done) and between chunks (a long stream is never cut while it keeps talking).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType

import httpx

from zai_proxy.errors import (
    UpstreamError,
    UpstreamInterrupted,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from zai_proxy.headers import RawHeaders


def default_transport(pool_size: int) -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size,
                          keepalive_expiry=30.0)
    transport: httpx.AsyncBaseTransport = AiohttpTransport(limits=limits, trust_env=False)
    return transport


class Upstream:
    """Sends requests upstream and streams their bodies, translating every failure."""

    def __init__(self, *, connect_timeout: float, first_byte_timeout: float,
                 chunk_timeout: float, pool_size: int,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.first_byte_timeout = first_byte_timeout
        self.chunk_timeout = chunk_timeout
        # The transport's own read timeout is only a backstop; the phases are timed below.
        timeout = httpx.Timeout(connect=connect_timeout,
                                read=max(first_byte_timeout, chunk_timeout) + 1.0,
                                write=max(connect_timeout, 30.0), pool=first_byte_timeout)
        self.client = httpx.AsyncClient(
            transport=transport or default_transport(pool_size), timeout=timeout,
            follow_redirects=False, trust_env=False)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, method: str, url: str, headers: RawHeaders,
                   body: bytes) -> httpx.Response:
        """Send and wait for the response headers (not the body)."""
        request = httpx.Request(method, url, headers=headers, content=body)
        try:
            async with asyncio.timeout(self.first_byte_timeout):
                return await self.client.send(request, stream=True)
        except TimeoutError:
            raise UpstreamTimeout(
                f"upstream sent no response within {self.first_byte_timeout:g}s") from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                httpx.ReadError, httpx.WriteError, httpx.UnsupportedProtocol,
                httpx.PoolTimeout) as exc:
            raise UpstreamUnreachable(f"upstream unreachable: {type(exc).__name__}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream timed out: {type(exc).__name__}") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise UpstreamUnreachable(f"upstream request failed: {type(exc).__name__}") from exc

    def chunks(self, response: httpx.Response) -> BodyReader:
        """The response body as it arrives, with the between-chunks timeout."""
        return BodyReader(response, self.chunk_timeout)


class BodyReader:
    """Async iterator over an upstream body; failures become UpstreamError subclasses.

    The silence timer runs only while waiting for the upstream, not while the caller relays a
    chunk to a slow client.
    """

    def __init__(self, response: httpx.Response, chunk_timeout: float) -> None:
        self._response = response
        self._chunk_timeout = chunk_timeout
        self._iterator: AsyncIterator[bytes] = (
            _already_read(response) if response.is_stream_consumed else response.aiter_raw())

    def __aiter__(self) -> BodyReader:
        return self

    async def __anext__(self) -> bytes:
        try:
            async with asyncio.timeout(self._chunk_timeout):
                return await self._iterator.__anext__()
        except StopAsyncIteration:
            raise
        except TimeoutError:
            raise UpstreamTimeout(
                f"upstream was silent for {self._chunk_timeout:g}s mid-body") from None
        except UpstreamError:
            raise
        except (httpx.HTTPError, OSError) as exc:
            raise UpstreamInterrupted(
                f"upstream connection broke mid-body: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
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
