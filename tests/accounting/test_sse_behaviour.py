"""What blocks the SSE parser returns for a given stream and split, and what fields a block
parses to (behaviour the mutation survivors showed untested)."""

from __future__ import annotations

from zai_proxy.accounting.sse import SSEParser, parse_block


def _raws(parser: SSEParser, *chunks: bytes) -> list[list[bytes]]:
    return [[b.raw for b in parser.feed(chunk)] for chunk in chunks]


def test_parse_block_keeps_a_bom_unless_asked_to_strip_it() -> None:
    # kills x_parse_block__mutmut_1 and _2 (strip_bom default True)
    raw = b"\xef\xbb\xbfdata: x\n\n"
    assert parse_block(raw).data is None  # the field name is "\ufeffdata"
    assert parse_block(raw, strip_bom=True).data == "x"
    assert parse_block(raw).complete is True


def test_parse_block_of_a_one_line_data_block_reports_complete_as_given() -> None:
    # kills x_parse_block__mutmut_28 (the fast path dropped `complete`)
    block = parse_block(b"data: x\n\n", complete=False)
    assert block.data == "x" and block.complete is False


def test_invalid_utf8_in_data_is_replaced_not_raised() -> None:
    # kills x_parse_block__mutmut_38 and _39 (unknown error handler)
    assert parse_block(b"data: a\xffb\n\n").data == "a\ufffdb"
    assert parse_block(b"event: e\ndata: a\xff\n\n").data == "a\ufffd"


def test_crlf_then_lf_block_data_has_no_cr() -> None:
    # kills x_parse_block__mutmut_18 and _19 (fast path taken with a CR in the block)
    parser = SSEParser()
    blocks = parser.feed(b"data: x\r\n\ndata: y\n\n")
    assert [b.raw for b in blocks] == [b"data: x\r\n\n", b"data: y\n\n"]
    assert [b.data for b in blocks] == ["x", "y"]
    assert parse_block(b"data: x\r\n\n").data == "x"


def test_unterminated_tail_with_a_second_short_line_parses_only_the_data_line() -> None:
    # kills x_parse_block__mutmut_14 (fast path taken when the first LF is not the last line's)
    parser = SSEParser()
    assert parser.feed(b"data: x\nz\n") == []
    (tail,) = parser.close()
    assert tail.raw == b"data: x\nz\n" and tail.complete is False
    assert tail.data == "x"
    assert parse_block(b"data: x\nz\n").data == "x"


def test_a_comment_before_the_data_does_not_hide_it() -> None:
    # kills x_parse_block__mutmut_88 (a comment or empty line ended the field loop)
    assert parse_block(b": keep-alive\ndata: x\n\n").data == "x"
    assert parse_block(b"event: e\r\n\r\ndata: late\n\n").data == "late"
    parser = SSEParser()
    (block,) = parser.feed(b":ping\nevent: delta\ndata: {}\n\n")
    assert (block.event, block.data) == ("delta", "{}")


def test_lf_cr_lf_ends_a_block_as_one_blank_line() -> None:
    # kills xǁSSEParserǁ_split__mutmut_108 (the LF after "\n\r" split off into its own block)
    parser = SSEParser()
    out = _raws(parser, b"data: x\n\r\ndata: y\n\n")
    assert out == [[b"data: x\n\r\n", b"data: y\n\n"]]


def test_a_crlf_blank_line_between_blocks_is_one_block() -> None:
    # kills xǁSSEParserǁ_split__mutmut_43, _46 and _49 (CRLF at a block's start)
    parser = SSEParser()
    assert _raws(parser, b"data: x\n\n\r\ndata: y\n\n") == [
        [b"data: x\n\n", b"\r\n", b"data: y\n\n"]]
    assert parser.idle
    parser = SSEParser()
    assert _raws(parser, b"data: x\n\n\r\n") == [[b"data: x\n\n", b"\r\n"]]
    assert parser.idle and parser.close() == []


def test_cr_cr_blank_line_split_across_reads_ends_the_block() -> None:
    # kills xǁSSEParserǁfeed_raw__mutmut_17 (CR then CR across two reads not seen as a pair)
    parser = SSEParser()
    assert _raws(parser, b"data: x\r", b"\rdata: y") == [[], [b"data: x\r\r"]]
    assert parser.pending == b"data: y"
    (tail,) = parser.close()
    assert tail.data == "y" and not tail.complete


def test_blank_line_whose_two_lfs_arrive_in_separate_later_reads() -> None:
    # kills xǁSSEParserǁfeed_raw__mutmut_29 (last byte of the tail not updated on append)
    parser = SSEParser()
    assert _raws(parser, b"data: x", b"\n", b"\n", b"data: y", b"\r", b"\r") == [
        [], [], [b"data: x\n\n"], [], [], [b"data: y\r\r"]]
    assert parser.idle


def test_every_split_reproduces_the_stream_and_the_same_blocks() -> None:
    stream = (b"\xef\xbb\xbfdata: a\r\n\r\n: c\n\ndata: b\n\r\ndata: c\r\rdata: d\n\n\r\n"
              b"event: e\ndata: f\n\n")
    whole = SSEParser()
    expected = [b.raw for b in whole.feed(stream)] + [b.raw for b in whole.close()]
    assert b"".join(expected) == stream
    for size in range(1, 8):
        parser = SSEParser()
        got: list[bytes] = []
        for i in range(0, len(stream), size):
            got += [b.raw for b in parser.feed(stream[i:i + size])]
        got += [b.raw for b in parser.close()]
        assert b"".join(got) == stream, size
