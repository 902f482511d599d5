"""The HTML status page in a real headless Chromium (Debian's ``chromium``), driven over the
DevTools protocol: the page loads, shows a provider turning from up to down after injected
failures without reloading, and logs no console error. A screenshot is saved in the test's
temporary folder.

When Chromium is missing and the tests run as root, the fixture installs it with apt-get
(bounded in time); the test is skipped, with the reason shown, only when that is impossible.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from status_support import CLIENT_KEY, STATUS_KEY, UPSTREAM_KEY, Upstreams

from badgr_middleware import BadgrApp
from badgr_middleware.simulator import SimulatedServer

BINARIES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
INSTALL_LIMIT = 900  # seconds apt-get may take, in all
START_LIMIT = 30.0  # seconds Chromium may take to open its DevTools port


def _find() -> str | None:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _install() -> str:
    """apt-get install chromium, as root only; '' on success, else why not."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "not root, so it cannot be installed here (apt-get install -y chromium)"
    if shutil.which("apt-get") is None:
        return "no apt-get to install it with"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    deadline = time.monotonic() + INSTALL_LIMIT
    for args in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        left = deadline - time.monotonic()
        try:
            result = subprocess.run(args, env=env, capture_output=True, timeout=max(1, left),
                                    check=False)
        except subprocess.TimeoutExpired:
            return f"'{' '.join(args)}' took longer than {INSTALL_LIMIT} s"
        if result.returncode != 0 and args[1] == "install":
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            return f"apt-get install chromium failed: {' '.join(tail)}"
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    binary = _find()
    if binary is None:
        reason = _install()
        binary = _find()
        if binary is None:
            pytest.skip(f"Chromium is not installed and {reason or 'could not be installed'}")
    return binary


class DevTools:
    """A minimal DevTools-protocol client over one websocket (flattened target sessions)."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, max_size=None, open_timeout=10))
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def call(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"never true in the page: {expression}")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        self.call("Runtime.evaluate", expression="1")  # drain pending events
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error",
                                                                               "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url')}")
        return found

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[DevTools]:
    pytest.importorskip("websockets", reason="install the test extra: pip install -e '.[test]'")
    profile = tmp_path / "profile"
    process = subprocess.Popen(
        [chromium, *FLAGS, "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
         f"--user-data-dir={profile}", "--window-size=1280,900", "--no-first-run",
         "--no-default-browser-check", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    tools: DevTools | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_LIMIT
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if process.poll() is not None:
                pytest.fail(f"Chromium exited at start with {process.returncode}")
            if time.monotonic() > deadline:
                pytest.fail(f"Chromium did not open its DevTools port in {START_LIMIT} s")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        tools = DevTools(f"ws://127.0.0.1:{port}{path}")
        target = tools.call("Target.createTarget", url="about:blank")["targetId"]
        tools.session = tools.call("Target.attachToTarget", targetId=target,
                                   flatten=True)["sessionId"]
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            tools.call(domain)
        yield tools
    finally:
        if tools is not None:
            with contextlib.suppress(Exception):
                tools.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def gateway(upstreams: Upstreams) -> Iterator[str]:
    config = upstreams.config(status_keys=[STATUS_KEY],
                              breaker={"consecutive_failures": 2, "open_for": 300})
    with SimulatedServer(BadgrApp(config)) as server:
        yield server.base_url


def provider_status(tools: DevTools, name: str) -> Any:
    return tools.evaluate(
        f"(document.querySelector('tr[data-provider=\"{name}\"]') || {{dataset: {{}}}})"
        ".dataset.status || null"
    )


def test_status_page_in_chromium(browser: DevTools, gateway: str, upstreams: Upstreams,
                                 tmp_path: Path) -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(timeout=10) as http:
        assert http.post(f"{gateway}/chat/completions", json=chat,
                         headers=auth).headers["x-badgr-provider"] == "a"

        browser.call("Page.navigate", url=f"{gateway}/status?key={STATUS_KEY}&refresh=1")
        browser.wait_for("document.querySelector('tr[data-provider=\"a\"]') !== null")
        assert provider_status(browser, "a") == "up"
        assert provider_status(browser, "b") == "up"
        # the key moved to sessionStorage and out of the address bar
        assert browser.evaluate("window.location.search") == "?refresh=1"
        assert browser.evaluate("sessionStorage.getItem('badgr-status-key')") == STATUS_KEY
        browser.evaluate("window.badgrSameDocument = true")
        updates = int(browser.evaluate("document.body.dataset.updates"))

        # inject failures: a answers 503 until its breaker opens
        upstreams.a.set_fault("503")
        for _ in range(2):
            served = http.post(f"{gateway}/chat/completions", json=chat, headers=auth)
            assert served.headers["x-badgr-provider"] == "b"

    browser.wait_for(
        "(document.querySelector('tr[data-provider=\"a\"]') || {dataset: {}})"
        ".dataset.status === 'down'", timeout=15)
    assert browser.evaluate("window.badgrSameDocument") is True  # refreshed, never reloaded
    assert int(browser.evaluate("document.body.dataset.updates")) > updates
    assert provider_status(browser, "b") == "up"
    text = browser.evaluate("document.body.innerText")
    assert "server_error 503" in text
    assert UPSTREAM_KEY not in browser.evaluate("document.documentElement.outerHTML")

    shot = browser.call("Page.captureScreenshot", format="png")
    path = tmp_path / "status-page.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {path}")

    assert browser.errors() == []
    assert browser.evaluate("window.badgrErrors") == []


def test_status_page_asks_for_a_key(browser: DevTools, gateway: str) -> None:
    browser.call("Page.navigate", url=f"{gateway}/status?refresh=1")
    browser.wait_for("!document.getElementById('login').hidden")
    assert "key is needed" in browser.evaluate("document.getElementById('notice').textContent")
    browser.evaluate(f"document.getElementById('key').value = {json.dumps(STATUS_KEY)};"
                     "document.getElementById('login').requestSubmit(); true")
    browser.wait_for("document.querySelector('tr[data-provider=\"a\"]') !== null")
    assert browser.evaluate("document.getElementById('login').hidden") is True
    # the 401 of the first read is a network error Chromium logs; nothing else may be
    errors = [e for e in browser.errors() if "401" not in e]
    assert errors == []
