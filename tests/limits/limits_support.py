"""Helpers for the inbound-limits suite (imported by its conftest and tests)."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any

import openai

CLIENT_KEYS = ("limits-client-key-one", "limits-client-key-two", "limits-client-key-three")
UPSTREAM_KEY = "sk-upstream-limits-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "Say hello please"}]


def client_id_of(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass
class Outcome:
    status: int
    headers: Any
    error: openai.APIStatusError | None = None
    content: str = ""

    @property
    def code(self) -> str | None:
        if self.error is None:
            return None
        body = self.error.body
        return body.get("code") if isinstance(body, dict) else None


class Gateway:
    """badgr served over HTTP: its engine and the SDK clients the tests use."""

    def __init__(self, engine: Any, url: str) -> None:
        self.engine = engine
        self.url = url
        self.base_url = url + "/v1"

    def client(self, key: str = CLIENT_KEYS[0], **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 10)
        return openai.OpenAI(base_url=self.base_url, api_key=key, **options)

    def async_client(self, key: str = CLIENT_KEYS[0], **options: Any) -> openai.AsyncOpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 10)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=key, **options)

    def chat(self, model: str = "fast", key: str = CLIENT_KEYS[0], **params: Any) -> Outcome:
        """One non-streaming chat completion; an API error is returned, not raised."""
        with self.client(key) as client:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=model, messages=MESSAGES, **params)
            except openai.APIStatusError as error:
                return Outcome(error.status_code, error.response.headers, error)
            completion = raw.parse()
            return Outcome(raw.status_code, raw.headers,
                           content=completion.choices[0].message.content or "")

    def stream(self, model: str = "slow", key: str = CLIENT_KEYS[0], **params: Any) -> Outcome:
        """One streamed chat completion read to its end."""
        with self.client(key) as client:
            try:
                stream = client.chat.completions.create(
                    model=model, messages=MESSAGES, stream=True, **params)
            except openai.APIStatusError as error:
                return Outcome(error.status_code, error.response.headers, error)
            content = ""
            with stream:
                for chunk in stream:
                    if chunk.choices:
                        content += chunk.choices[0].delta.content or ""
            return Outcome(200, stream.response.headers, content=content)


class WsgiServer:
    """A WSGI app behind werkzeug's threaded server on 127.0.0.1, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> WsgiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
