"""Incremental Server-Sent Events parser: bytes in, complete blocks out, no I/O.

Contract: for any way of splitting a stream into chunks, the concatenation of ``raw`` of every
block returned by :meth:`SSEParser.feed` and :meth:`SSEParser.close` reproduces the input
exactly, so a relay that forwards ``raw`` never alters a byte. Line endings may be CRLF, LF or
a lone CR (WHATWG SSE), mixed freely.

One choice needs stating: when a chunk ends with the CR of what may be a CRLF blank line, the
block is emitted at once rather than held back for one more read (relaying must not wait on the
network). If the next chunk then starts with the LF, that LF comes out as its own field-less
block (``raw == b"\\n"``, ``data is None``), which every consumer relays untouched.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEBlock", "SSEParser", "parse_block"]

_CR = 0x0D
_LF = 0x0A
_BOM = b"\xef\xbb\xbf"
# Every blank line (a terminator directly followed by another) contains one of these pairs;
# "\r\n" is deliberately absent because it is a single terminator.
_PAIRS = (b"\n\n", b"\n\r", b"\r\r")


class SSEBlock(NamedTuple):
    """One SSE message: its exact bytes and the fields parsed from them.

    ``data`` joins multiple ``data:`` lines with "\\n" and is None when the block had no data
    field (comment-only keep-alives, blank lines). ``complete`` is False only for the
    unterminated tail returned by :meth:`SSEParser.close`. A NamedTuple: immutable and about
    three times cheaper to create than a frozen dataclass, which matters once per chunk.
    """

    raw: bytes
    event: str | None = None
    data: str | None = None
    id: str | None = None
    retry: int | None = None
    complete: bool = True


def parse_block(raw: bytes, *, complete: bool = True, strip_bom: bool = False) -> SSEBlock:
    """Parse the fields of one block's bytes (per the WHATWG event-stream rules)."""
    if raw[:6] == b"data: " and raw.find(b"\n") == len(raw) - 2 and raw[-1] == _LF:
        # The usual block, one ``data:`` line and LF endings: skip the general line loop.
        if b"\r" not in raw:
            return SSEBlock(raw, None, raw[6:-2].decode("utf-8", errors="replace"), None, None,
                            complete)
    body = raw[3:] if strip_bom and raw.startswith(_BOM) else raw
    text = body.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    event: str | None = None
    data: list[str] | None = None
    ident: str | None = None
    retry: int | None = None
    for line in text.split("\n"):
        if not line or line[0] == ":":
            continue
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            if data is None:
                data = [value]
            else:
                data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            if "\0" not in value:
                ident = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
    return SSEBlock(
        raw=raw,
        event=event,
        data=None if data is None else "\n".join(data),
        id=ident,
        retry=retry,
        complete=complete,
    )


class SSEParser:
    """Split a byte stream into SSE blocks; keeps only the incomplete tail between feeds.

    Cost is linear in the input. A chunk that completes blocks is scanned with ``bytes.find``
    (per-pattern positions cached, so many blocks in one chunk do not rescan) and, when
    nothing is pending, sliced without copying; a chunk that cannot complete a block is just
    appended to a list, so one huge event arriving in many reads is joined only once.
    """

    __slots__ = ("_at_start", "_last", "_parts")

    def __init__(self) -> None:
        self._parts: list[bytes] = []  # the incomplete tail, as received
        self._last = -1  # last byte of the tail: a terminator pair may straddle two chunks
        self._at_start = True  # the stream's first block may start with a BOM

    @property
    def idle(self) -> bool:
        """True when no incomplete block is held: the next byte starts a new block."""
        return not self._parts

    @property
    def pending(self) -> bytes:
        """Bytes of the incomplete tail, not yet part of any returned block."""
        return b"".join(self._parts)

    def feed(self, chunk: bytes) -> list[SSEBlock]:
        """Add ``chunk``; return every block it completed, in order."""
        return [self._block(raw, complete=True) for raw in self.feed_raw(chunk)]

    def feed_raw(self, chunk: bytes) -> list[bytes]:
        """Like :meth:`feed`, but the blocks' bytes only: fields are parsed by whoever needs
        them (:func:`parse_block`), which on a relay path is almost nobody."""
        if not chunk:
            return []
        parts = self._parts
        scan = 0
        if parts:
            # A blank line split across the reads: LF+LF, LF+CR or CR+CR. CR+LF is one line
            # ending, never a block's end by itself (a pair after it is inside `chunk`); joining
            # on it made a huge event whose reads all end between CR and LF cost quadratic work.
            last, first = self._last, chunk[0]
            straddle = (last == _LF and first in (_CR, _LF)) or (last == _CR and first == _CR)
            if not straddle and all(pair not in chunk for pair in _PAIRS):
                parts.append(chunk)
                self._last = chunk[-1]
                return []
            scan = sum(map(len, parts)) - 1
            parts.append(chunk)
            chunk = b"".join(parts)
            parts.clear()
        return self._split(bytes(chunk), scan)

    def _split(self, data: bytes, scan: int) -> list[bytes]:
        n = len(data)
        if data[-2:] == b"\n\n" and data.find(b"\n\n") == n - 2 and data[0] not in (_CR, _LF):
            if b"\r" not in data:  # the usual read: exactly one LF-terminated block
                return [data]
        blocks: list[bytes] = []
        start = 0
        found = [-2, -2, -2]  # -2: not searched yet, -1: absent from here to the end
        while start < n:
            first = data[start]
            if first == _LF:  # an empty line opening a block is a block of its own
                end = start + 1
            elif first == _CR:
                end = start + 2 if start + 1 < n and data[start + 1] == _LF else start + 1
            else:
                lo = max(scan, start)
                best = -1
                for k, pair in enumerate(_PAIRS):
                    pos = found[k]
                    if pos != -1 and pos < lo:
                        pos = found[k] = data.find(pair, lo)
                    if pos != -1 and (best == -1 or pos < best):
                        best = pos
                if best == -1:
                    self._parts.append(data[start:])
                    self._last = data[-1]
                    break
                end = best + 2
                if data[best + 1] == _CR and end < n and data[end] == _LF:
                    end += 1
            blocks.append(data[start:end])
            start = end
        return blocks

    def close(self) -> list[SSEBlock]:
        """End of stream: return the unterminated tail (if any) as an incomplete block.

        Its fields are parsed anyway (an upstream that omits the final blank line still sent
        its data); consumers can tell it apart by ``complete=False``. The parser is reset.
        """
        tail = b"".join(self._parts)
        self._parts.clear()
        self._last = -1
        block = [self._block(tail, complete=False)] if tail else []
        self._at_start = True
        return block

    def _block(self, raw: bytes, *, complete: bool) -> SSEBlock:
        strip = self._at_start
        self._at_start = False
        return parse_block(raw, complete=complete, strip_bom=strip)
