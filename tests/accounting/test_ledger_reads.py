"""A stream's blank line split between two reads: the event it ends is relayed whole as the
second read arrives, and not one byte of the next event goes with it (stripping relays whole
events only)."""

from __future__ import annotations

from tests.support.streams import stream_ledger

FIRST = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
SECOND = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":" there"}}]}\n\n'


def test_an_event_whose_blank_line_spans_two_reads_is_relayed_alone() -> None:
    ledger = stream_ledger("openai", True)
    assert ledger.relay(FIRST[:-1]) == b"", "incomplete: held"
    # The read brings the blank line's second LF and the start of the next event.
    assert ledger.relay(b"\n" + SECOND[:20]) == FIRST
    assert ledger.relay(SECOND[20:]) == SECOND
    assert ledger.flush() == b""
