"""Incremental server-sent-events scanning that keeps the original bytes.

The scanner finds whole events in an upstream byte stream that arrives in arbitrary pieces.
It returns the bytes of every complete event untouched, so a proxy can forward exactly what the
upstream sent, cut only at event boundaries (an error chunk appended after a break then always
starts a fresh event). Line endings follow the WHATWG rules: ``\\r\\n``, ``\\n`` or ``\\r``,
including a ``\\r`` at the end of one read and its ``\\n`` at the start of the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["SSEEvent", "SSEScanner", "encode_event"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its ``data`` lines joined with ``\\n``, and its ``event`` name.

    ``end`` is the offset just past the event in the bytes :meth:`SSEScanner.feed` returned
    with it, so a reader can forward a stream up to and including one particular event.
    """

    data: bytes
    event: bytes | None = None
    end: int = field(default=0, compare=False)


def encode_event(data: bytes) -> bytes:
    """Frame one single-line ``data`` payload as an event."""
    return b"data: " + data + b"\n\n"


class SSEScanner:
    """Feed it bytes; it answers with the bytes of the complete events and the events."""

    __slots__ = ("_buf", "_scan", "_data", "_event", "_skip_lf", "_started")
    _fast = True  # take the shortcuts (tests switch them off to compare)

    def __init__(self) -> None:
        self._buf = b""
        self._scan = 0  # where the next unread line starts in _buf
        self._data: list[bytes] = []
        self._event: bytes | None = None
        self._skip_lf = False
        self._started = False

    def feed_simple(self, chunk: bytes) -> tuple[bytes, list[SSEEvent] | int]:
        """:meth:`feed`, except that only the number of complete events comes back when
        every line ends in ``\\n`` and events are separated by exactly one blank line (what
        OpenAI-compatible servers send). The events are then not read: the caller checks with
        a few C-level searches that each is one it can read so (``data: {``, say), and else
        reads them with :meth:`feed` of a new scanner."""
        if not self._started and chunk[:1] not in (b"", _BOM[:1]) and not self._buf:
            self._started = True  # no byte-order mark to strip
        if self._started and self._scan == 0 and not self._skip_lf and not self._data and (
            self._event is None
        ):
            buf = self._buf + chunk if self._buf else chunk
            end = buf.rfind(b"\n\n") + 2
            if end > 1 and buf.find(b"\r") < 0 and buf.find(b"\n\n\n") < 0:
                self._buf = buf[end:]
                out = buf[:end]
                return out, out.count(b"\n\n")
            return self.feed(chunk)
        return self.feed(chunk)

    def feed(self, chunk: bytes) -> tuple[bytes, list[SSEEvent]]:
        """Consume ``chunk``; return (bytes ending at the last event boundary, events)."""
        buf = self._buf + chunk if self._buf else chunk
        pos = self._scan
        if not self._started and buf:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf
                return b"", []
            self._started = True
            if buf.startswith(_BOM):
                pos = len(_BOM)
        if self._fast and not self._skip_lf and not self._data and self._event is None and (
            buf.find(b"\r", pos) < 0 and buf.find(b"\n\n\n", pos) < 0
        ):
            return self._feed_lf(buf, pos)
        if self._skip_lf and pos < len(buf):
            self._skip_lf = False
            if buf[pos] == 0x0A:
                pos += 1
        boundary = 0
        events: list[SSEEvent] = []
        for match in _LINE_END.finditer(buf, pos):
            line = buf[pos : match.start()]
            pos = match.end()
            if line:
                self._field(line)
                continue
            boundary = pos
            if self._data:  # a block without data (only "event:", or comments) is no event
                events.append(SSEEvent(b"\n".join(self._data), self._event, pos))
            self._data = []
            self._event = None
        if pos == len(buf) and buf[-1:] == b"\r":
            self._skip_lf = True
        self._buf = buf[boundary:]
        self._scan = pos - boundary
        return buf[:boundary], events

    def _feed_lf(self, buf: bytes, pos: int) -> tuple[bytes, list[SSEEvent]]:
        """:meth:`feed` for the common case: ``\\n`` line endings, one blank line between
        events, no event half-read.

        Whole events are cut at ``\\n\\n`` in one C-level split instead of line by line; an
        event that is one ``data: ...`` line (what OpenAI-compatible servers send) costs one
        check. Lines after the last event boundary are scanned again with the next chunk.
        """
        end = buf.rfind(b"\n\n", pos)
        if end < 0:
            if buf[pos : pos + 1] == b"\n":  # an empty line first: a boundary, no event
                self._buf = buf[pos + 1 :]
                self._scan = 0
                return buf[: pos + 1], []
            self._buf = buf
            self._scan = pos
            return b"", []
        events: list[SSEEvent] = []
        offset = pos
        for block in buf[pos:end].split(b"\n\n"):
            offset += len(block) + 2
            if block[:6] == b"data: " and block.find(b"\n") < 0:
                events.append(SSEEvent(block[6:], None, offset))
                continue
            for line in block.split(b"\n"):
                if line:
                    self._field(line)
            if self._data:
                events.append(SSEEvent(b"\n".join(self._data), self._event, offset))
            self._data = []
            self._event = None
        self._buf = buf[offset:]
        self._scan = 0
        return buf[:offset], events

    def remainder(self) -> bytes:
        """Bytes received after the last complete event (call at end of input)."""
        return self._buf

    def _field(self, line: bytes) -> None:
        if line[0] == 0x3A:  # ":" starts a comment (keep-alives such as ": OPENROUTER PROCESSING")
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
