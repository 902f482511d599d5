"""The suite's network guard (tests/conftest.py) refuses everything but loopback."""

from __future__ import annotations

import socket

import httpx
import pytest

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer


def test_non_loopback_connect_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(OSError, match="only 127.0.0.1"):
        sock.connect(("192.0.2.1", 80))


def test_name_lookup_of_a_remote_host_is_refused() -> None:
    with pytest.raises(socket.gaierror, match="only 127.0.0.1"):
        socket.getaddrinfo("api.openai.com", 443)


def test_loopback_still_works() -> None:
    with SimulatedServer(SimulatedProvider()) as server:
        assert httpx.get(f"{server.base_url}/models").status_code == 200
