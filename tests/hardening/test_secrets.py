"""Secrets and SSRF: keys never leak, inbound credentials never travel upstream, and upstream
URLs come only from the configuration.

The fault matrix (test_fault_matrix.py) already checks every response, log record and signal
payload of every fault for the fake keys. This file adds what the matrix cannot reach: an
upstream that *echoes the key it was sent* in its errors (the scrubbing path), the ``repr``
of the configuration, configuration error messages, the status page (JSON and HTML), the
``badgr`` CLI, and what a fake upstream saw of the client's headers.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hardening_gateways import Gateway, Upstreams, serve_gateway
from hardening_support import (
    ALL_SECRETS,
    CLIENT_KEY,
    MESSAGES,
    PRIMARY_KEY,
    Recorder,
    exchange,
)

from badgr_middleware import cli
from badgr_middleware.config import ConfigError, load_config
from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

ECHO_KEY = "sk-hardening-echo-SECRET-3141592653589793"
SECRETS = (*ALL_SECRETS, ECHO_KEY)


def _assert_clean(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret[:16]}... leaked into: {text[:400]}"


# -- an upstream that echoes its key ----------------------------------------------------------


class EchoingUpstream:
    """Answers every request with an error that quotes the Authorization header it got
    (as some providers do: "Incorrect API key provided: sk-..."). ``mode`` picks the shape."""

    def __init__(self) -> None:
        self.mode = "401"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        key = dict(scope["headers"]).get(b"authorization", b"").decode()
        error = {"error": {"message": f"Incorrect API key provided: {key}", "type": "x",
                           "param": None, "code": "echo"}}
        status, ctype, body = 401, b"application/json", json.dumps(error).encode()
        if self.mode == "400":
            status = 400
        elif self.mode == "error-body":
            status = 200
        elif self.mode in ("stream-first", "stream-mid"):
            status, ctype = 200, b"text/event-stream"
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "finish_reason": None}]}
            first = b"data: " + json.dumps(chunk).encode() + b"\n\n"
            body = (first if self.mode == "stream-mid" else b"") + b"data: " + body + b"\n\n"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def echo_gateways(upstreams: Upstreams) -> Iterator[tuple[EchoingUpstream, dict[str, Gateway]]]:
    echo = EchoingUpstream()
    with SimulatedServer(echo) as server:
        config = upstreams.config()
        config["providers"]["echo"] = {"kind": "openai", "base_url": server.base_url,
                                       "api_key": ECHO_KEY}
        config["models"]["fo-echo"] = ["echo/m-echo", "backup/m-backup"]
        config["models"]["solo-echo"] = ["echo/m-echo"]
        with serve_gateway("asgi", config) as asgi, serve_gateway("wsgi", config) as wsgi:
            yield echo, {"asgi": asgi, "wsgi": wsgi}


MODES = ["401", "400", "error-body", "stream-first", "stream-mid"]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("route", ["fo", "solo"])
@pytest.mark.parametrize("mode", MODES)
def test_an_upstream_echoing_its_key_never_leaks_it(
    mode: str, route: str, kind: str, echo_gateways: Any, sims: Upstreams, recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    echo, gateways = echo_gateways
    echo.mode = mode
    gateway = gateways[kind]
    gateway.reset_health()
    caplog.set_level(logging.DEBUG)
    reply = exchange(f"{gateway.base_url}/chat/completions",
                     {"model": f"{route}-echo", "messages": MESSAGES,
                      "stream": mode.startswith("stream")},
                     headers={"x-request-id": f"req-echo-{mode}-{route}-{kind}"})
    recorder.wait_for_end(f"req-echo-{mode}-{route}-{kind}")
    _assert_clean(reply.text(), *(repr(r.event) for r in recorder.records), caplog.text)


# -- configuration, status page, CLI ----------------------------------------------------------


def test_config_repr_and_errors_hide_keys(upstreams: Upstreams) -> None:
    config = load_config(upstreams.config())
    _assert_clean(repr(config), str(config), repr(config.providers), repr(config.client_keys))
    for provider in config.providers.values():
        _assert_clean(repr(provider), str(provider))
    # a key pasted in the wrong places: the messages name the path, never the value
    broken = upstreams.config()
    broken["timeouts"] = {"read": PRIMARY_KEY}
    broken["client_keys"] = [CLIENT_KEY, 5]
    broken["providers"]["primary"]["api_key"] = 42
    # (a key used as a key *name* would be echoed: messages name paths, which is documented)
    broken["providers"]["bad name!"] = {"kind": "openai", "base_url": PRIMARY_KEY}
    broken["default_provider"] = CLIENT_KEY
    with pytest.raises(ConfigError) as info:
        load_config(broken)
    error = info.value
    _assert_clean(str(error), repr(error), *(repr(p) for p in error.problems))


def test_status_page_hides_keys(gateway: Gateway, sims: Upstreams) -> None:
    sims.primary.set_fault("401")  # leave the provider cooling down, with a reason to show
    exchange(f"{gateway.base_url}/chat/completions", {"model": "fo-primary",
                                                       "messages": MESSAGES})
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    for suffix, accept in (("", "application/json"), ("?format=html", "text/html"),
                           ("", "text/html")):
        response = httpx.get(f"{gateway.base_url}/status{suffix}", timeout=10,
                             headers={**auth, "accept": accept})
        assert response.status_code == 200, response.text
        if accept == "application/json":
            assert "primary" in response.json()["providers"]
        _assert_clean(response.text, str(response.headers))


def test_cli_output_hides_keys(upstreams: Upstreams, tmp_path: Any,
                               monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    config = upstreams.config()
    toml = ["client_keys = [\"${HARDENING_CLIENT_KEY}\"]"]
    for name, provider in config["providers"].items():
        toml.append(f"[providers.{name}]")
        toml += [f'{key} = "{value}"' for key, value in provider.items()]
    toml.append("[models]")
    toml += [f'"{alias}" = {json.dumps(targets)}' for alias, targets in config["models"].items()]
    path = tmp_path / "badgr.toml"
    path.write_text("\n".join(toml) + "\n", encoding="utf-8")
    monkeypatch.setenv("HARDENING_CLIENT_KEY", CLIENT_KEY)
    out = io.StringIO()
    assert cli.main(["check", "--config", str(path)], out=out) == 0
    assert "fo-primary" in out.getvalue()
    # a broken file: the problems are printed, the keys in it are not
    path.write_text(path.read_text() + f'[timeouts]\nread = "{PRIMARY_KEY}"\n')
    broken = io.StringIO()
    assert cli.main(["check", "--config", str(path)], out=broken) == 1
    with serve_gateway("asgi", config) as gateway:
        status = io.StringIO()
        assert cli.main(["status", "--url", gateway.base_url, "--key", CLIENT_KEY],
                        out=status) == 0
    captured = capsys.readouterr()
    _assert_clean(out.getvalue(), broken.getvalue(), status.getvalue(), captured.out,
                  captured.err)


# -- what the upstream saw --------------------------------------------------------------------

CLIENT_HEADERS = {
    "authorization": f"Bearer {CLIENT_KEY}",
    "cookie": "sessionid=hardening-cookie-value; csrftoken=hardening-csrf",
    "proxy-authorization": "Basic aGFyZGVuaW5nOnByb3h5",
    "x-forwarded-for": "203.0.113.7",
    "x-forwarded-host": "evil.example",
    "x-real-ip": "203.0.113.8",
    "forwarded": "for=203.0.113.9;host=evil.example",
    "user-agent": "hardening-client-agent/1.0",
    "referer": "https://hardening-referer.example/page",
    "origin": "https://hardening-origin.example",
    "x-api-key": "hardening-x-api-key",
    "openai-organization": "org-hardening",
    "x-sim-fault": "503",  # a client must not be able to drive the upstream's behaviour
    "x-badgr-base-url": "http://127.0.0.1:9/v1",
    "te": "trailers",
    "upgrade": "websocket",
}
# what badgr itself sends upstream (the simulator lower-cases names)
EXPECTED_UPSTREAM = {"host", "content-type", "accept", "accept-encoding", "authorization",
                     "content-length", "user-agent", "connection"}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_client_headers_are_never_forwarded(stream: bool, gateway: Gateway,
                                            sims: Upstreams) -> None:
    reply = exchange(f"{gateway.base_url}/chat/completions",
                     {"model": "fo-primary", "messages": MESSAGES, "stream": stream},
                     headers=CLIENT_HEADERS)
    assert reply.status == 200, reply.text()
    (seen,) = sims.primary.requests
    assert seen.fault is None  # x-sim-fault did not travel
    assert set(seen.headers) <= EXPECTED_UPSTREAM, set(seen.headers) - EXPECTED_UPSTREAM
    assert seen.headers["authorization"] == f"Bearer {PRIMARY_KEY}"
    values = " ".join(seen.headers.values())
    for name, value in CLIENT_HEADERS.items():
        if name not in ("te", "upgrade"):
            assert value not in values, name
    assert CLIENT_KEY not in values and "hardening" not in seen.headers.get("user-agent", "")


@pytest.fixture(scope="module")
def canary() -> Iterator[tuple[SimulatedProvider, SimulatedServer]]:
    provider = SimulatedProvider("canary")
    with SimulatedServer(provider) as server:
        yield provider, server


def test_base_urls_come_only_from_config(gateway: Gateway, sims: Upstreams,
                                         canary: tuple[SimulatedProvider, SimulatedServer]
                                         ) -> None:
    provider, server = canary
    provider.clear()
    attempts = [
        server.base_url, f"{server.url}/v1/chat/completions", f"primary@127.0.0.1:{server.port}",
        f"primary/../../{server.url}", f"//127.0.0.1:{server.port}/v1", f"primary/{server.url}",
        f"primary/?x=@127.0.0.1:{server.port}",
    ]
    for model in attempts:
        body = {"model": model, "messages": MESSAGES, "models": [server.base_url],
                "provider": {"order": [server.url]}}
        reply = exchange(f"{gateway.base_url}/chat/completions", body, headers={
            "host": f"127.0.0.1:{server.port}", "x-forwarded-host": f"127.0.0.1:{server.port}",
            "x-badgr-base-url": server.base_url})
        assert reply.status in (200, 400, 404), reply.text()
    assert provider.requests == []
    # the models that named a configured provider went to that provider's configured URL
    for seen in sims.primary.requests:
        assert seen.path == "/v1/chat/completions"
