"""Server-Sent Events broker: named events with ids, a bounded replay ring, per-client queues.

Ids look like `BOOT-SEQ`: BOOT changes with every process, so a client resuming across a restart
(or from further back than the ring holds) gets a `reset` event telling it to reload history
instead of silently missing data. Publishing never waits: a client whose queue is full is dropped
and its stream ends; it reconnects and resumes with `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    id: str | None
    name: str
    data: str

    def encode(self) -> bytes:
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.name}\ndata: {self.data}\n\n".encode()


@dataclass(eq=False)
class Subscriber:
    queue: asyncio.Queue[Event | None]
    dropped: bool = False
    replay: list[Event] = field(default_factory=list)


class Broker:
    """Fans events out to subscribers; keeps the last `ring_size` events for resume."""

    def __init__(
        self,
        ring_size: int = 512,
        queue_size: int = 64,
        retry_ms: int = 3000,
        heartbeat: float = 15.0,
    ) -> None:
        self.boot = format(time.time_ns() // 1_000_000, "x")
        self.retry_ms = retry_ms
        self.heartbeat = heartbeat
        self._queue_size = queue_size
        self._ring: deque[tuple[int, Event]] = deque(maxlen=ring_size)
        self._seq = 0
        self._subscribers: set[Subscriber] = set()
        self.dropped_total = 0

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def publish(self, name: str, payload: Any) -> Event:
        """Queue `payload` (as JSON) for every subscriber without ever waiting on one."""
        self._seq += 1
        event = Event(f"{self.boot}-{self._seq}", name, json.dumps(payload, separators=(",", ":")))
        self._ring.append((self._seq, event))
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(sub)
        return event

    def _drop(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        sub.dropped = True
        self.dropped_total += 1
        while not sub.queue.empty():  # free the backlog now; the stream ends at the sentinel
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)

    def subscribe(self, last_event_id: str | None) -> Subscriber:
        """Register a client; with `last_event_id`, pre-load what it missed (or a reset)."""
        sub = Subscriber(asyncio.Queue(self._queue_size))
        self._subscribers.add(sub)
        if last_event_id:
            sub.replay = self._missed(last_event_id)
        return sub

    def _missed(self, last_event_id: str) -> list[Event]:
        boot, _, seq_text = last_event_id.strip().rpartition("-")
        oldest = self._ring[0][0] if self._ring else self._seq + 1
        if boot == self.boot and seq_text.isdigit():
            seq = int(seq_text)
            if oldest - 1 <= seq <= self._seq:
                return [event for s, event in self._ring if s > seq]
        # Unknown id: another process, or further back than the ring reaches.
        return [Event(None, "reset", json.dumps({"reason": "history not in replay buffer"}))]

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def close_all(self) -> None:
        """End every stream (on shutdown) so the server need not wait for clients."""
        for sub in list(self._subscribers):
            self._drop(sub)

    async def stream(self, sub: Subscriber, hello: Any) -> AsyncIterator[bytes]:
        """The bytes of one client's stream: retry hint, hello, replay, live events, pings."""
        try:
            yield f"retry: {self.retry_ms}\n\n".encode()
            yield Event(None, "hello", json.dumps(hello, separators=(",", ":"))).encode()
            for missed in sub.replay:
                yield missed.encode()
            sub.replay = []
            while True:
                event: Event | None
                try:
                    async with asyncio.timeout(self.heartbeat):
                        event = await sub.queue.get()
                except TimeoutError:
                    yield b": ping\n\n"  # keeps proxies from closing an idle stream
                    continue
                if event is None:
                    return
                yield event.encode()
        finally:
            self.unsubscribe(sub)
