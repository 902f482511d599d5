"""A Flask app that serves badgr's OpenAI-compatible endpoint beside its own pages.

One command, no keys, no internet — two simulated providers on 127.0.0.1, ``primary``
answering 503 and ``backup`` healthy, so every request fails over and the app logs it::

    pip install -e '.[flask,demo]'
    python examples/flask_app.py            # --port 5000, --fault 503 (or none, 429, ...)

Then point any OpenAI client at the URL it prints (``model="chat"``).

The same app under gunicorn, against upstreams you run yourself::

    BADGR_EXAMPLE_PRIMARY_URL=http://127.0.0.1:8001/v1 \\
    BADGR_EXAMPLE_BACKUP_URL=http://127.0.0.1:8002/v1 BADGR_CLIENT_KEY=dev-key \\
    gunicorn --chdir examples --worker-class gthread --threads 8 'flask_app:create_app()'

and ``flask --app examples/flask_app.py badgr check`` with the same variables.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from flask import Flask

from badgr_middleware import signals
from flask_badgr import Badgr

badgr = Badgr()


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """The app factory: config, the badgr extension, a failover log, the app's own pages."""
    app = Flask(__name__)
    app.config["BADGR"] = {
        "providers": {  # any OpenAI-compatible servers; real ones take a real api_key
            "primary": {"kind": "openai", "base_url": "${BADGR_EXAMPLE_PRIMARY_URL}",
                        "api_key": "${BADGR_EXAMPLE_PRIMARY_KEY:-sim}"},
            "backup": {"kind": "openai", "base_url": "${BADGR_EXAMPLE_BACKUP_URL}",
                       "api_key": "${BADGR_EXAMPLE_BACKUP_KEY:-sim}"},
        },
        "models": {"chat": ["primary/sim-small", "backup/sim-small"]},
        "client_keys": ["${BADGR_CLIENT_KEY}"],
    }
    app.config.update(overrides or {})
    badgr.init_app(app)
    # the app itself is the sender: this receiver hears this app's failovers only
    signals.failover.connect(log_failover, sender=app)

    @app.get("/")
    def index() -> dict[str, str]:
        return {"app": "flask example", "llm_endpoint": "/v1/chat/completions"}

    return app


def log_failover(sender: Flask, event: signals.Failover) -> None:
    sender.logger.warning(
        "LLM failover %s -> %s (%s), request %s", event.from_provider, event.to_provider,
        event.error_kind, event.request_id,
    )


def main(argv: list[str] | None = None) -> int:
    """Serve the example against simulated providers on 127.0.0.1 until Ctrl-C."""
    parser = argparse.ArgumentParser(description="badgr in a Flask app, with simulated upstreams")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    parser.add_argument("--fault", default="503",
                        help="what the primary provider answers: a fault spec of "
                             "docs/simulator.md, or 'none' (default %(default)s)")
    args = parser.parse_args(argv)

    from werkzeug.serving import make_server

    from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

    fault = None if args.fault.lower() == "none" else args.fault
    primary = SimulatedProvider("primary", fault=fault)
    backup = SimulatedProvider("backup", stream_chunks=8, chunk_delay=0.05)
    with SimulatedServer(primary) as primary_server, SimulatedServer(backup) as backup_server:
        os.environ["BADGR_EXAMPLE_PRIMARY_URL"] = primary_server.base_url
        os.environ["BADGR_EXAMPLE_BACKUP_URL"] = backup_server.base_url
        key = os.environ.setdefault("BADGR_CLIENT_KEY", "dev-key")
        app = create_app()
        server = make_server("127.0.0.1", args.port, app, threaded=True)
        base_url = f"http://127.0.0.1:{server.port}/v1"
        print(f"badgr example serving {base_url} (api_key={key!r}, model='chat'); primary "
              f"answers {fault or 'normally'}, backup is healthy. Ctrl-C stops.\n"
              f"  python -c \"from openai import OpenAI; c = OpenAI(base_url='{base_url}', "
              f"api_key='{key}'); print(c.chat.completions.create(model='chat', "
              f"messages=[{{'role': 'user', 'content': 'hi'}}]).choices[0].message.content)\"",
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            Badgr.engine_for(app).close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
