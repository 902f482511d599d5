"""A fake OpenAI-compatible provider with injectable faults, served over real HTTP.

Used by ``badgr demo``, by badgr's own tests, and by yours::

    from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

    provider = SimulatedProvider("primary", fault="503")
    with SimulatedServer(provider) as server:
        ...  # point a client or badgr at server.base_url

``SimulatedAnthropic`` and ``SimulatedGemini`` are fakes of the native Anthropic and Gemini
APIs that validate requests as the real ones do. See docs/simulator.md for every fault spec.
"""

from __future__ import annotations

from .anthropic import SimulatedAnthropic
from .exchange import SimulatedConnectionAbort
from .faults import Fault, parse_fault
from .gemini import SimulatedGemini
from .provider import RecordedRequest, SimulatedProvider
from .server import SimulatedServer, closed_port

__all__ = [
    "Fault",
    "RecordedRequest",
    "SimulatedAnthropic",
    "SimulatedConnectionAbort",
    "SimulatedGemini",
    "SimulatedProvider",
    "SimulatedServer",
    "closed_port",
    "parse_fault",
]
