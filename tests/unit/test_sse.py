"""The incremental SSE scanner: same events and same bytes however the stream is cut."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from badgr_middleware.sse import SSEEvent, SSEScanner, encode_event

STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"a":1}\n\n'
    b'event: error\ndata: {"error":{}}\n\n'
    b"data: line1\ndata: line2\n\n"
    b"data:nospace\r\n\r\n"
    b"data:  two spaces\r\n"
    b": a comment inside an event\r\n\r\n"
    b"data: cr\r\r"
    b"id: 5\nretry: 10\nunknown: x\ndata: x\n\n"
    b"data\n\n"
    b"data: [DONE]\n\n"
    b"data: partial"
)
EVENTS = [
    SSEEvent(b'{"a":1}'),
    SSEEvent(b'{"error":{}}', b"error"),
    SSEEvent(b"line1\nline2"),
    SSEEvent(b"nospace"),
    SSEEvent(b" two spaces"),
    SSEEvent(b"cr"),
    SSEEvent(b"x"),
    SSEEvent(b""),
    SSEEvent(b"[DONE]"),
]
LAST_BOUNDARY = len(STREAM) - len(b"data: partial")


def scan(chunks: Iterable[bytes]) -> tuple[bytes, list[SSEEvent], bytes]:
    scanner = SSEScanner()
    out: list[bytes] = []
    events: list[SSEEvent] = []
    for chunk in chunks:
        data, found = scanner.feed(chunk)
        out.append(data)
        events.extend(found)
    return b"".join(out), events, scanner.remainder()


def test_whole_stream_at_once() -> None:
    forwarded, events, remainder = scan([STREAM])
    assert events == EVENTS
    assert forwarded == STREAM[:LAST_BOUNDARY]
    assert remainder == b"data: partial"


@pytest.mark.parametrize("split", range(len(STREAM) + 1))
def test_every_split_point_gives_the_same_events_and_bytes(split: int) -> None:
    forwarded, events, remainder = scan([STREAM[:split], STREAM[split:]])
    assert events == EVENTS
    assert forwarded == STREAM[:LAST_BOUNDARY]
    assert remainder == b"data: partial"


def test_byte_by_byte() -> None:
    scanner = SSEScanner()
    events: list[SSEEvent] = []
    forwarded = b""
    for i in range(len(STREAM)):
        data, found = scanner.feed(STREAM[i : i + 1])
        # bytes leave the scanner only at event boundaries
        if data:
            assert data.endswith((b"\n\n", b"\r\r", b"\r\n\r\n", b"\r\n\r")), data[-6:]
        forwarded += data
        events.extend(found)
    assert events == EVENTS
    assert forwarded == STREAM[:LAST_BOUNDARY]
    assert scanner.remainder() == b"data: partial"


@pytest.mark.parametrize("size", [2, 3, 5, 7, 16, 64])
def test_fixed_size_chunks(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    forwarded, events, remainder = scan(chunks)
    assert (forwarded, events, remainder) == (STREAM[:LAST_BOUNDARY], EVENTS, b"data: partial")


def test_each_feed_returns_exactly_its_complete_events() -> None:
    scanner = SSEScanner()
    assert scanner.feed(b"data: a\n") == (b"", [])
    assert scanner.feed(b"\ndata: b\n\nda") == (b"data: a\n\ndata: b\n\n",
                                                [SSEEvent(b"a"), SSEEvent(b"b")])
    assert scanner.feed(b"ta: c") == (b"", [])
    assert scanner.remainder() == b"data: c"
    assert scanner.feed(b"\n\n") == (b"data: c\n\n", [SSEEvent(b"c")])
    assert scanner.remainder() == b""


def test_empty_feeds_change_nothing() -> None:
    scanner = SSEScanner()
    assert scanner.feed(b"") == (b"", [])
    assert scanner.feed(b"data: a\r") == (b"", [])
    assert scanner.feed(b"") == (b"", [])
    assert scanner.feed(b"\n\n") == (b"data: a\r\n\n", [SSEEvent(b"a")])


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_endings(eol: bytes) -> None:
    stream = b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    forwarded, events, remainder = scan([stream])
    assert events == [SSEEvent(b"a\nb"), SSEEvent(b"c")]
    assert (forwarded, remainder) == (stream, b"")


def test_cr_at_the_end_of_a_feed_dispatches_at_once_and_its_lf_is_not_a_second_line() -> None:
    scanner = SSEScanner()
    assert scanner.feed(b"data: a\r\n\r") == (b"data: a\r\n\r", [SSEEvent(b"a")])
    # the \n completing that \r\n is not an empty line, so it does not end the next event
    data, events = scanner.feed(b"\ndata: b\r")
    assert (data, events) == (b"", [])
    data, events = scanner.feed(b"\n\r\n")
    assert (data, events) == (b"\ndata: b\r\n\r\n", [SSEEvent(b"b")])


def test_split_crlf_inside_an_event() -> None:
    forwarded, events, _ = scan([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert events == [SSEEvent(b"a\nb")]
    assert forwarded == b"data: a\r\ndata: b\r\n\r"


def test_comments_are_forwarded_but_are_not_events() -> None:
    stream = b": OPENROUTER PROCESSING\n\n: ping\n\n"
    forwarded, events, remainder = scan([stream])
    assert events == []
    assert forwarded == stream
    assert remainder == b""


def test_event_name_is_reported_and_reset_after_dispatch() -> None:
    _, events, _ = scan([b"event: delta\ndata: 1\n\ndata: 2\n\n"])
    assert events == [SSEEvent(b"1", b"delta"), SSEEvent(b"2", None)]


@pytest.mark.parametrize("split", range(1, 6))
def test_a_leading_utf8_bom_is_skipped_even_when_split(split: int) -> None:
    stream = b"\xef\xbb\xbfdata: a\n\n"
    forwarded, events, _ = scan([stream[:split], stream[split:]])
    assert events == [SSEEvent(b"a")]
    assert forwarded == stream


def test_a_bom_later_in_the_stream_is_data() -> None:
    _, events, _ = scan([b"data: a\n\n\xef\xbb\xbfdata: b\n\ndata: c\n\n"])
    # "\ufeffdata" is an unknown field name: that block dispatches nothing
    assert events == [SSEEvent(b"a"), SSEEvent(b"c")]


def test_a_partial_bom_alone_is_held_back() -> None:
    scanner = SSEScanner()
    assert scanner.feed(b"\xef\xbb") == (b"", [])
    assert scanner.remainder() == b"\xef\xbb"


def test_not_a_bom_after_all() -> None:
    _, events, remainder = scan([b"\xef", b"data: a\n\n"])
    assert events == []  # the field name is "\xefdata", which is no field
    assert remainder == b""


def test_remainder_is_what_follows_the_last_boundary() -> None:
    scanner = SSEScanner()
    scanner.feed(b"data: a\n\ndata: b\n")
    assert scanner.remainder() == b"data: b\n"


def test_encode_event() -> None:
    assert encode_event(b'{"x":1}') == b'data: {"x":1}\n\n'
    _, events, _ = scan([encode_event(b"payload")])
    assert events == [SSEEvent(b"payload")]


def test_a_block_without_data_is_not_an_event() -> None:
    scanner = SSEScanner()
    forwarded, events = scanner.feed(b"event: ping\n\n: comment\n\ndata: x\n\n")
    assert events == [SSEEvent(b"x")]
    assert forwarded == b"event: ping\n\n: comment\n\ndata: x\n\n"


def test_event_end_offsets_point_past_each_event() -> None:
    forwarded, events = SSEScanner().feed(b"data: a\n\n: c\n\ndata: b\r\n\r\n")
    assert [forwarded[: e.end] for e in events] == [b"data: a\n\n", forwarded]
