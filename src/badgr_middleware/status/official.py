"""The providers' official status pages: parsing, and a poller that never blocks a request.

Two formats are read (reference: wire-formats §8): Atlassian Statuspage's public v2 JSON
(``summary.json`` or ``status.json``: ``status.indicator`` is none, minor, major or critical)
and an RSS 2.0 or Atom incident feed, for pages that offer nothing else (OnlineOrNot,
OpenRouter's ``incidents.rss``). A feed has no state: its newest entry counts as an ongoing
incident while it is recent (``FEED_RECENT``) and does not say it is resolved; it is a major
outage when its words say so (outage, down, unavailable), else minor.

:class:`StatusPoller` polls in a daemon thread, started lazily by the engine on its first
request under every adapter (ASGI, WSGI, Django, Flask), so a request only ever reads the
last result from memory. With a shared (Redis) store one worker at a time holds the poll
lease (``SET NX PX``) and publishes what it read; every worker reads that. A page that fails,
times out, is too large or does not parse changes nothing: the last good reading is kept for
``3 × interval``, then the provider's official status becomes ``unknown``, never an outage.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from xml.etree import ElementTree

import httpx

__all__ = [
    "DEFAULT_SOURCES",
    "FEED_RECENT",
    "OUTAGE",
    "StatusPoller",
    "parse_feed",
    "parse_status",
    "parse_statuspage",
    "sources_for",
]

logger = logging.getLogger("badgr_middleware.status")

# Machine-readable status of well-known providers (wire-formats §8.2); a provider configured
# under one of these names is polled here unless its source is set or switched off.
DEFAULT_SOURCES: Mapping[str, str] = {
    "openai": "https://status.openai.com/api/v2/summary.json",
    "anthropic": "https://status.claude.com/api/v2/summary.json",
    "openrouter": "https://status.openrouter.ai/incidents.rss",
    "groq": "https://groqstatus.com/api/v2/summary.json",
}

OUTAGE = frozenset({"major", "critical"})  # indicators that deprioritise a provider
INDICATORS = ("none", "minor", "major", "critical")
FEED_RECENT = 3 * 3600.0  # seconds a feed's newest unresolved entry counts as ongoing
MAX_BYTES = 1024 * 1024  # a status page larger than this is broken
KEEP_FOR = 3  # intervals a last good reading outlives failed polls

_RESOLVED = re.compile(r"\b(resolved|completed|recovered|back to normal|postmortem)\b", re.I)
_MAJOR = re.compile(r"\b(major|outage|down|unavailable|not available)\b", re.I)
_ATOM = "{http://www.w3.org/2005/Atom}"


class StatusPageError(ValueError):
    """A status page that cannot be read as one."""


def sources_for(providers: Mapping[str, Any], configured: Mapping[str, str | bool]) -> dict[
    str, str
]:
    """The URL to poll for each configured provider: the defaults, overlaid with config."""
    out = {name: url for name, url in DEFAULT_SOURCES.items() if name in providers}
    for name, url in configured.items():
        if url is False:
            out.pop(name, None)
        elif isinstance(url, str) and name in providers:
            out[name] = url
    return out


def parse_statuspage(data: Any) -> dict[str, Any]:
    """An Atlassian Statuspage v2 ``summary.json`` / ``status.json`` document."""
    if not isinstance(data, dict):
        raise StatusPageError("not a Statuspage document")
    status = data.get("status")
    indicator = description = None
    if isinstance(status, dict):
        indicator, description = status.get("indicator"), status.get("description")
    components = data.get("components")
    if indicator not in INDICATORS:
        if not isinstance(components, list):
            raise StatusPageError("no status indicator")
        states = {c.get("status") for c in components if isinstance(c, dict)}
        indicator = ("major" if "major_outage" in states else
                     "minor" if states & {"partial_outage", "degraded_performance"} else "none")
    incidents = [
        str(i.get("name"))[:200] for i in data.get("incidents") or []
        if isinstance(i, dict) and i.get("status") not in ("resolved", "postmortem")
    ][:5]
    return {"indicator": indicator, "description": str(description or indicator)[:200],
            "incidents": incidents}


def parse_feed(body: bytes, now: float) -> dict[str, Any]:
    """An RSS 2.0 or Atom incident feed: its newest entry, if recent and unresolved."""
    head = body[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in body.lower():
        raise StatusPageError("feeds with a DTD are refused")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise StatusPageError("not XML") from None
    entries: list[tuple[float, str, str]] = []  # (time, title, all its words)
    if root.tag == "rss" or root.find("channel") is not None:
        for item in root.iter("item"):
            when = _rss_time(item.findtext("pubDate"))
            title = item.findtext("title") or ""
            entries.append((when, title, f"{title} {item.findtext('description') or ''}"))
    elif root.tag == f"{_ATOM}feed":
        for entry in root.iter(f"{_ATOM}entry"):
            stamp = entry.findtext(f"{_ATOM}updated") or entry.findtext(f"{_ATOM}published")
            title = entry.findtext(f"{_ATOM}title") or ""
            text = " ".join(entry.findtext(f"{_ATOM}{tag}") or ""
                            for tag in ("title", "summary", "content"))
            entries.append((_iso_time(stamp), title, text))
    else:
        raise StatusPageError("neither RSS nor Atom")
    if not entries:
        return {"indicator": "none", "description": "No incidents", "incidents": []}
    when, title, text = max(entries, key=lambda e: e[0])
    title = " ".join(title.split())[:200] or "Incident"
    if now - when > FEED_RECENT or _RESOLVED.search(text):
        return {"indicator": "none", "description": "No ongoing incident", "incidents": []}
    indicator = "major" if _MAJOR.search(text) else "minor"
    return {"indicator": indicator, "description": title, "incidents": [title]}


def parse_status(body: bytes, content_type: str, now: float) -> dict[str, Any]:
    """A status page of either format, told apart by its content."""
    stripped = body.lstrip()
    if stripped.startswith((b"{", b"[")) or "json" in content_type:
        try:
            data = json.loads(body)
        except ValueError:
            raise StatusPageError("not JSON") from None
        return parse_statuspage(data)
    return parse_feed(body, now)


def _rss_time(value: str | None) -> float:
    try:
        return parsedate_to_datetime((value or "").strip()).timestamp()
    except (TypeError, ValueError, IndexError):
        return 0.0


def _iso_time(value: str | None) -> float:
    try:
        return datetime.fromisoformat((value or "").strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class StatusPoller:
    """Polls the official status pages in a daemon thread and keeps the last readings.

    ``statuses`` (provider -> reading) and ``deprioritised`` (providers whose reading is a
    major outage) are replaced whole on each poll, so readers need no lock.
    ``store`` is the health store: when it is Redis-backed, workers share one poll.
    """

    def __init__(
        self,
        sources: Mapping[str, str],
        *,
        interval: float = 60.0,
        timeout: float = 5.0,
        store: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = dict(sources)
        self.interval = interval
        self.timeout = timeout
        self.store = store
        self.clock = clock
        self.statuses: dict[str, dict[str, Any]] = {}
        self.deprioritised: frozenset[str] = frozenset()
        self._owner = uuid.uuid4().hex
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    # -- lifecycle ------------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the polling thread unless it runs (again after a fork); cheap to call often."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._stop.is_set():
                return
            thread = self._thread
            if thread is not None and thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="badgr-status-poller",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop polling; wait up to ``timeout`` seconds for a poll in progress (the thread is
        a daemon: one still waiting on a slow page never holds up the process's exit)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # never let one bad poll end polling
                logger.exception("badgr: polling the official status pages failed")
            self._stop.wait(self.interval)

    # -- polling --------------------------------------------------------------------------------

    def poll_once(self) -> None:
        """One tick: poll (if this worker holds the lease) and adopt the shared readings."""
        shared = self.store is not None and hasattr(self.store, "official_lease")
        if not shared or self.store.official_lease(self._owner, self.interval * 0.9):
            readings = self._poll_all()
            if shared:
                self.store.set_official(json.dumps(readings), self.interval * KEEP_FOR)
            self._adopt(readings)
            return
        raw = self.store.get_official()
        if raw is not None:
            try:
                readings = json.loads(raw)
            except ValueError:
                return
            if isinstance(readings, dict):
                self._adopt(readings)

    def _poll_all(self) -> dict[str, dict[str, Any]]:
        readings: dict[str, dict[str, Any]] = {}
        with httpx.Client(timeout=self.timeout, follow_redirects=True,
                          headers={"accept": "application/json, application/rss+xml, "
                                             "application/atom+xml;q=0.9, */*;q=0.5",
                                   "user-agent": "badgr-middleware status poller"}) as client:
            for name, url in self.sources.items():
                if self._stop.is_set():
                    break
                now = self.clock()
                try:
                    reading = {**self._fetch(client, url, now), "error": None}
                except Exception as exc:  # a broken page: keep the last good reading a while
                    reading = self._stale(name, now, type(exc).__name__)
                readings[name] = {**reading, "source": url, "checked_at": round(now, 3)}
        return readings

    def _fetch(self, client: httpx.Client, url: str, now: float) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise StatusPageError(f"HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise StatusPageError("too large")
                if time.monotonic() > deadline:
                    raise TimeoutError("the status page took too long")
            return parse_status(bytes(body), response.headers.get("content-type", ""), now)

    def _stale(self, name: str, now: float, error: str) -> dict[str, Any]:
        last = self.statuses.get(name)
        if last is not None and last.get("indicator") != "unknown":
            good_at = float(last.get("good_at") or last["checked_at"])
            if now - good_at < self.interval * KEEP_FOR:
                kept = {k: v for k, v in last.items() if k not in ("source", "checked_at")}
                return {**kept, "good_at": good_at, "error": error, "stale": True}
        return {"indicator": "unknown", "description": "The status page could not be read",
                "incidents": [], "error": error}

    def _adopt(self, readings: Mapping[str, Any]) -> None:
        statuses = {name: dict(r) for name, r in readings.items()
                    if name in self.sources and isinstance(r, dict)}
        self.statuses = statuses
        self.deprioritised = frozenset(
            name for name, r in statuses.items() if r.get("indicator") in OUTAGE
        )
