"""``python -m badgr_middleware`` is the ``badgr`` command."""

import sys

from .cli import main

sys.exit(main())
