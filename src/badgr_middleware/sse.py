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

    def __init__(self) -> None:
        self._buf = b""
        self._scan = 0  # where the next unread line starts in _buf
        self._data: list[bytes] = []
        self._event: bytes | None = None
        self._skip_lf = False
        self._started = False

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
