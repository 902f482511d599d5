"""badgr's ASGI app (``BadgrApp``) for the benchmarks: ``uvicorn badgr_asgi:app``.

Run by ``run_all.py`` as ``python benchmarks/apps/badgr_asgi.py --port P`` (uvicorn, one
process, the same settings as ``floors.py``); the config comes from ``bench_config.py``.
"""

from __future__ import annotations

import argparse

from bench_config import bench_config

from badgr_middleware import BadgrApp

app = BadgrApp(bench_config())


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8003)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                lifespan="on", backlog=1024)


if __name__ == "__main__":
    main()
