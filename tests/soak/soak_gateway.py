"""badgr's ``BadgrApp`` under uvicorn in its own process, for the soak tests.

The app is wrapped in the hardening suite's ``ProbedApp`` (``GET /__probe/tasks``: the serving
loop's task count; ``POST /__probe/close``: close badgr's upstream pools on that loop).

Run: ``python tests/soak/soak_gateway.py CONFIG_JSON``; prints the port it listens on (one
line), then serves until terminated.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hardening"))

import uvicorn  # noqa: E402
from hardening_support import ProbedApp  # noqa: E402

from badgr_middleware import BadgrApp  # noqa: E402


def main() -> None:
    app = BadgrApp(json.loads(sys.argv[1]))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(ProbedApp(app, app.engine), log_level="warning", access_log=False,
                            lifespan="on", backlog=2048)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
