"""badgr's WSGI app under a real gunicorn (sync and gthread workers), driven by the openai SDK."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

if TYPE_CHECKING:
    from conftest import Gunicorn, GunicornFactory, Upstreams

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


def new_request_id() -> str:
    return f"req_test_{uuid.uuid4().hex[:16]}"


def names(records: list[dict[str, Any]]) -> list[str]:
    return [r["signal"] for r in records]


def test_non_stream_success(gateway: Gunicorn, sims: Upstreams) -> None:
    rid = new_request_id()
    with gateway.sdk() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, extra_headers={"x-request-id": rid}
        )
    reply = raw.parse()
    assert reply.choices[0].message.content == sims.primary.reply
    assert raw.headers["x-badgr-provider"] == "primary"
    assert raw.headers["x-badgr-model"] == "sim-small"
    assert raw.headers["x-badgr-attempts"] == "1"
    assert raw.headers["x-request-id"] == rid
    # the client's key stays here; the upstream gets the provider's own key
    assert len(sims.primary.requests) == 1
    assert gateway.client_key not in sims.primary.requests[0].headers.get("authorization", "")
    records = gateway.wait_for_signal(rid, "request_finished")
    assert names(records) == ["request_started", "request_finished"]
    assert records[-1]["provider"] == "primary"
    assert records[-1]["stream"] is False


def test_stream_success(gateway: Gunicorn, sims: Upstreams) -> None:
    rid = new_request_id()
    with gateway.sdk() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, stream=True, extra_headers={"x-request-id": rid}
        )
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["x-badgr-provider"] == "primary"
        assert "content-length" not in raw.headers
        with raw.parse() as stream:
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == sims.primary.reply
    records = gateway.wait_for_signal(rid, "request_finished")
    assert names(records) == ["request_started", "request_finished"]
    assert records[-1]["stream"] is True


def test_503_fails_over_to_second_target(gateway: Gunicorn, sims: Upstreams) -> None:
    sims.primary.fail_next("503")
    rid = new_request_id()
    with gateway.sdk() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, extra_headers={"x-request-id": rid}
        )
    assert raw.parse().choices[0].message.content == sims.secondary.reply
    assert raw.headers["x-badgr-provider"] == "secondary"
    assert raw.headers["x-badgr-attempts"] == "2"
    assert [r.fault for r in sims.primary.requests] == ["503"]
    assert len(sims.secondary.requests) == 1

    records = gateway.wait_for_signal(rid, "request_finished")
    assert names(records) == ["request_started", "attempt_failed", "failover", "request_finished"]
    started, failed, failover, finished = records
    assert started["model"] == "chat"
    assert (failed["provider"], failed["status"], failed["error_kind"]) == (
        "primary", 503, "server_error",
    )
    assert (failover["from_provider"], failover["to_provider"]) == ("primary", "secondary")
    assert (finished["provider"], finished["attempts"]) == ("secondary", 2)
    # every line of one request comes from the worker that served it
    assert len({r["pid"] for r in records}) == 1


def test_stream_arrives_incrementally(gateway: Gunicorn, sims: Upstreams) -> None:
    chunks, delay = sims.slow.stream_chunks, sims.slow.chunk_delay
    arrivals: list[float] = []
    pieces: list[str] = []
    with gateway.sdk() as client, client.chat.completions.create(
        model="slow", messages=MESSAGES, stream=True
    ) as stream:
        for chunk in stream:
            content = chunk.choices[0].delta.content if chunk.choices else None
            if content:
                arrivals.append(time.monotonic())
                pieces.append(content)
    assert "".join(pieces) == sims.slow.reply
    assert len(arrivals) == chunks
    # The upstream spaces its events `delay` apart, so it cannot send the last content
    # chunk before received_at + chunks * delay. A buffering server would hand the client
    # every chunk at once, after that moment.
    received_at = sims.slow.requests[0].received_at
    assert arrivals[0] < received_at + (chunks - 1) * delay
    assert arrivals[-1] - arrivals[0] > (chunks - 1) * delay / 2


def test_client_disconnect_mid_stream_closes_upstream(gateway: Gunicorn, sims: Upstreams) -> None:
    rid = new_request_id()
    body = {"model": "long", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {gateway.client_key}", "x-request-id": rid}
    with httpx.Client(timeout=10) as client, client.stream(
        "POST", f"{gateway.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        assert response.status_code == 200
        first = next(response.iter_raw())
        assert first.startswith(b"data: ")
        response.close()
    # gunicorn notices when its next write fails, calls close() on the iterable, and badgr
    # closes the upstream connection: the upstream sees the client go away
    assert sims.long.wait_for_disconnect(2.0)
    assert len(sims.long.requests) == 1
    records = gateway.wait_for_signal(rid, "request_failed")
    failed = records[-1]
    assert (failed["status"], failed["error_kind"]) == (499, "client_disconnected")
    assert "request_finished" not in names(records)


def test_stream_cut_after_failover_raises_api_error(gateway: Gunicorn, sims: Upstreams) -> None:
    sims.primary.fail_next("503")
    sims.secondary.fail_next("cut=2")
    rid = new_request_id()
    pieces: list[str] = []
    with gateway.sdk() as client:
        stream = client.chat.completions.create(
            model="chat", messages=MESSAGES, stream=True, extra_headers={"x-request-id": rid}
        )
        with stream, pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
    assert not isinstance(caught.value, openai.APIConnectionError)
    assert len(pieces) == 2
    assert sims.secondary.reply.startswith("".join(pieces))
    assert caught.value.body is not None
    assert caught.value.body["type"] == "upstream_error"  # type: ignore[index]
    assert caught.value.code == "stream_interrupted"
    records = gateway.wait_for_signal(rid, "request_failed")
    assert names(records)[:3] == ["request_started", "attempt_failed", "failover"]
    assert records[-1]["error_kind"] == "stream_broken"


def test_chunked_request_body(gateway: Gunicorn, sims: Upstreams) -> None:
    body = json.dumps({"model": "chat", "messages": MESSAGES}).encode()
    pieces = [body[:10], body[10:30], body[30:]]  # an iterator: httpx sends it chunked
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        content=iter(pieces),
        headers={"authorization": f"Bearer {gateway.client_key}",
                 "content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.json()["choices"][0]["message"]["content"] == sims.primary.reply
    assert sims.primary.requests[0].json["messages"] == MESSAGES


def test_body_over_the_limit_is_413(gateway: Gunicorn, sims: Upstreams) -> None:
    too_long = [{"role": "user", "content": "x" * 70_000}]  # max_body_bytes is 65536
    with gateway.sdk() as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="chat", messages=too_long)
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"
    assert not sims.primary.requests


def test_mounted_under_script_name(mounted_gateway: Gunicorn, sims: Upstreams) -> None:
    assert mounted_gateway.base_url.endswith("/api/v1")
    with mounted_gateway.sdk() as client:
        reply = client.chat.completions.create(model="chat", messages=MESSAGES)
        assert reply.choices[0].message.content == sims.primary.reply
        with client.chat.completions.create(model="chat", messages=MESSAGES, stream=True) as s:
            text = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
        assert text == sims.primary.reply
        assert [m.id for m in client.models.list()] == [
            "chat", "solo", "slow", "long", "dead",
        ]
    missing = httpx.get(f"{mounted_gateway.base_url}/nope", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_url"
    assert missing.json()["error"]["message"] == "Invalid URL (GET /api/v1/nope)"


@pytest.mark.parametrize("path", ["/hello", "/", "/v1x", "/v2/models"])
def test_middleware_passes_other_paths_to_the_app(
    mounted_gateway: Gunicorn, sims: Upstreams, path: str
) -> None:
    response = httpx.get(f"{mounted_gateway.url}{path}", timeout=5)
    assert response.status_code == 200
    assert response.text == "hello"
    assert response.headers["x-script-name"] == "/api"
    assert response.headers["x-path-info"] == path
    assert not any(p.requests for p in sims.all())


def test_two_sync_workers_serve_concurrent_streams(
    gunicorn_factory: GunicornFactory, sims: Upstreams
) -> None:
    server = gunicorn_factory(worker_class="sync", workers=2)
    assert len(server.booted_pids()) == 2
    rids = [new_request_id() for _ in range(2)]
    texts: dict[str, str] = {}
    errors: list[BaseException] = []

    def stream_one(rid: str) -> None:
        try:
            with server.sdk() as client, client.chat.completions.create(
                model="slow", messages=MESSAGES, stream=True, extra_headers={"x-request-id": rid}
            ) as stream:
                texts[rid] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=stream_one, args=(rid,)) for rid in rids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert not any(t.is_alive() for t in threads)
    assert not errors
    assert texts == dict.fromkeys(rids, sims.slow.reply)
    finished = [server.wait_for_signal(rid, "request_finished")[-1] for rid in rids]
    # a sync worker serves one request at a time: overlapping streams need both workers
    assert {r["pid"] for r in finished} == server.booted_pids()



def test_gthread_worker_overlaps_concurrent_streams(
    gunicorn_factory: GunicornFactory, sims: Upstreams
) -> None:
    server = gunicorn_factory(worker_class="gthread")
    done: list[float] = []
    errors: list[BaseException] = []

    def stream_one() -> None:
        try:
            with server.sdk() as client, client.chat.completions.create(
                model="slow", messages=MESSAGES, stream=True
            ) as stream:
                for _ in stream:
                    pass
            done.append(time.monotonic())
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=stream_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert not any(t.is_alive() for t in threads)
    assert not errors
    # one process, four threads, one shared upstream pool: every upstream request started
    # before the first stream ended, so nothing in badgr serialises them
    assert len(sims.slow.requests) == 4
    assert max(r.received_at for r in sims.slow.requests) < min(done)
