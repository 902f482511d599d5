"""The sync driver (WSGI servers, Django/Flask under WSGI) with the native wires."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from native_support import CLIENT_KEY, Upstreams, native_config

from badgr_middleware.engine import Engine
from badgr_middleware.messages import HttpRequest


@pytest.fixture
def engine(fakes: Upstreams) -> Iterator[Engine]:
    engine = Engine(native_config(fakes))
    try:
        yield engine
    finally:
        engine.close()


def post(engine: Engine, body: dict[str, object]) -> tuple[int, dict[str, str], bytes]:
    request = HttpRequest("POST", "/chat/completions",
                          {"authorization": f"Bearer {CLIENT_KEY}",
                           "content-type": "application/json"}, json.dumps(body).encode())
    response = engine.handle(request)
    content = response.body
    if response.stream is not None:
        content += b"".join(response.stream)  # type: ignore[arg-type]
    return response.status, dict(response.headers), content


@pytest.mark.parametrize("model", ["claude", "flash"])
def test_plain_and_streamed(engine: Engine, model: str) -> None:
    messages = [{"role": "user", "content": "Hi"}]
    status, headers, body = post(engine, {"model": model, "messages": messages})
    assert status == 200
    assert json.loads(body)["choices"][0]["message"]["content"].startswith("Hello from ")
    status, headers, body = post(engine, {"model": model, "messages": messages,
                                          "stream": True})
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in body.split(b"\n\n") if line.startswith(b"data: {"))
    assert text.startswith("Hello from ")


def test_overloaded_before_content_fails_over(engine: Engine, fakes: Upstreams) -> None:
    fakes.anthropic.fail_next("midstream-error=0")
    status, headers, body = post(engine, {"model": "claude-then-openai", "stream": True,
                                          "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200 and headers["x-badgr-provider"] == "openai"
    assert b"error" not in body
