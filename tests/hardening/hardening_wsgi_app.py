"""The WSGI app gunicorn serves in test_disconnect_timing.py: badgr alone, configured from
the JSON in ``HARDENING_BADGR_CONFIG``."""

from __future__ import annotations

import json
import os

from badgr_middleware import BadgrWSGIApp

application = BadgrWSGIApp(json.loads(os.environ["HARDENING_BADGR_CONFIG"]))
