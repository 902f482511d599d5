"""The OpenAI wire sends the client's own body bytes with only the model replaced, when it can
prove that is the same as re-serialising the parsed body (issue 8: pass bytes through)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from badgr_middleware.config import Config
from badgr_middleware.providers.openai import OpenAICompatible
from badgr_middleware.routing.plan import Plan, RoutedRequest, Target

CONFIG = Config.from_dict({
    "providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    "allow_anonymous": True,
})
WIRE = OpenAICompatible(CONFIG.providers["local"])
TARGET = Target("local", "llama-3.1-8b")


def routed(raw: bytes) -> RoutedRequest:
    return RoutedRequest("chat/completions", json.loads(raw), Plan((TARGET,)), "req_1",
                         raw=raw)


def dumped(request: RoutedRequest) -> bytes:
    """What the wire sends when it re-serialises the body."""
    return WIRE.build_request(dataclasses.replace(request, raw=b""), TARGET).content


@pytest.mark.parametrize("raw", [
    b'{"model":"smart","messages":[{"role":"user","content":"hi"}],"temperature":0.5}',
    b'{"messages": [{"role": "user", "content": "h\xc3\xa9llo \\"model\\": \\"x\\""}],\n'
    b'  "model" :  "smart", "stream": false}',
    b'{"model":"sm\\"art","messages":[{"role":"user","content":"hi"}]}',
])
def test_only_the_model_value_changes(raw: bytes) -> None:
    request = routed(raw)
    content = WIRE.build_request(request, TARGET).content
    old = json.dumps(request.body["model"], ensure_ascii=False).encode()
    at = raw.index(old, raw.index(b'"model"'))
    assert content == raw[:at] + b'"llama-3.1-8b"' + raw[at + len(old):]
    assert json.loads(content) == {**request.body, "model": "llama-3.1-8b"}
    assert WIRE._as_sent(request, TARGET) == content  # kept, not re-serialised


@pytest.mark.parametrize(("raw", "why"), [
    (b'{"model":"smart","messages":[{"role":"user","content":"caf\\u00e9"}]}',
     "a \\u escape could spell another key"),
    (b'{"model":"smart","messages":[],"tools":[{"type":"function","function":'
     b'{"name":"f","parameters":{"properties":{"model":{"type":"string"}}}}}]}',
     "a second \"model\" key"),
    (b'{"model":"smart","models":["cheap"],"messages":[]}', "an OpenRouter-only field to drop"),
    (b'{"models":["smart"],"messages":[]}', "no top-level model string"),
])
def test_anything_else_is_re_serialised(raw: bytes, why: str) -> None:
    request = routed(raw)
    assert WIRE._as_sent(request, TARGET) is None, why
    content = WIRE.build_request(request, TARGET).content
    assert content == dumped(request)
    sent: dict[str, Any] = json.loads(content)
    assert sent["model"] == "llama-3.1-8b"
    assert "models" not in sent


def test_a_changed_body_is_never_sent_as_received() -> None:
    raw = b'{"model":"smart","messages":[{"role":"user","content":"hi"}]}'
    request = dataclasses.replace(routed(raw), body={"model": "smart", "messages": []},
                                  raw=b"")
    assert json.loads(WIRE.build_request(request, TARGET).content) == {
        "model": "llama-3.1-8b", "messages": []}
