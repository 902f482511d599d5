"""The fast paths of the SSE scanner and of OpenAIStream agree with reading event by event.

Random OpenAI-like streams (content events, comments, multi-line and ``event:`` blocks, error
and usage events, ``\\r\\n`` endings, ``[DONE]``) cut at random points are fed both to
:class:`OpenAIStream` and to one whose scanner never takes a shortcut; the forwarded bytes and
everything the stream reports must be the same.
"""

from __future__ import annotations

import random

import pytest

from badgr_middleware.providers.openai import OpenAIStream
from badgr_middleware.routing.outcomes import FailureKind
from badgr_middleware.sse import SSEEvent, SSEScanner

PIECES = [
    b'data: {"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"data: [DONE]"},"finish_reason":null}]}\n\n',
    b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n',
    b'data: {"error":{"message":"boom","code":"x"}}\n\n',
    b"event: error\ndata: {\"message\":\"bad\"}\n\n",
    b": OPENROUTER PROCESSING\n\n",
    b"data: line1\ndata: line2\n\n",
    b"data: [DONE]\n\n",
    b"data: [DONE]\r\n\r\n",
    b"data:nospace\n\n",
    b"\n",
    b"id: 5\ndata: x\n\n",
    b'data: {"choices":[{"delta":{"content":"crlf"}}]}\r\n\r\n',
]


class SlowScanner(SSEScanner):
    """Reads line by line, as the scanner does when no shortcut applies."""

    _fast = False

    def feed_simple(self, chunk: bytes) -> tuple[bytes, list[SSEEvent] | int]:
        return self.feed(chunk)


def run(stream: OpenAIStream, chunks: list[bytes]) -> tuple[object, ...]:
    out = [stream.feed(chunk) for chunk in chunks]
    return (out, stream.started, stream.finished, stream.error, stream.error_in_band,
            stream.usage, stream._saw_finish, stream.close())


@pytest.mark.parametrize("seed", range(300))
def test_fast_path_matches_event_by_event(seed: int) -> None:
    rng = random.Random(seed)
    weights = [30, 2, 3, 2, 1, 1, 3, 1, 3, 1, 1, 1, 1, 1]
    if seed % 2:  # half the streams are what OpenAI-compatible servers send: the fast path
        weights = [30, 2, 3, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0]
    body = b"".join(rng.choices(PIECES, weights=weights, k=rng.randint(1, 40)))
    cuts = sorted(rng.sample(range(len(body) + 1), k=min(len(body), rng.randint(0, 6))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    fast = OpenAIStream()
    slow = OpenAIStream()
    slow._scanner = SlowScanner()
    assert run(fast, chunks) == run(slow, chunks)


@pytest.mark.parametrize("seed", range(300))
def test_scanner_shortcut_matches_line_by_line(seed: int) -> None:
    rng = random.Random(seed)
    body = b"".join(rng.choices(PIECES, k=rng.randint(1, 30)))
    cuts = sorted(rng.sample(range(len(body) + 1), k=min(len(body), rng.randint(0, 6))))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    fast, slow = SSEScanner(), SlowScanner()
    assert [fast.feed(c) for c in chunks] == [slow.feed(c) for c in chunks]
    assert fast.remainder() == slow.remainder()


FIRST = b'data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'


@pytest.mark.parametrize("started", [False, True], ids=["before the first event", "after"])
@pytest.mark.parametrize("quoted", [b"data: [DONE]", b"data: {"])
def test_a_quoted_event_prefix_does_not_hide_a_malformed_event(quoted: bytes,
                                                               started: bool) -> None:
    # seed 278 above, reduced: the fast path's check must count event starts, not the same
    # bytes quoted inside another event's content
    quoting = b'data: {"choices":[{"delta":{"content":"' + quoted + b'"}}]}\n\n'
    stream = OpenAIStream()
    if started:
        assert stream.feed(FIRST) == FIRST
    assert stream.feed(quoting + b"data: hello\n\n") == quoting
    assert stream.error is not None  # the quoting event started the stream: malformed
    assert (stream.error.kind, stream.error.code) == (FailureKind.STREAM_MALFORMED,
                                                      "stream_malformed")
