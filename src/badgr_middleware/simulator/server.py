"""Running an ASGI app under uvicorn on a loopback port, in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .exchange import Receive, Scope, Send

if TYPE_CHECKING:
    import uvicorn

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_START_TIMEOUT = 5.0
_STOP_TIMEOUT = 2.0


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening on it, for "connection refused" tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class SimulatedServer:
    """Serve any ASGI app (typically a SimulatedProvider) over real HTTP in a daemon thread.

    ``with SimulatedServer(SimulatedProvider()) as server:`` then point a client at
    ``server.base_url``. The app's ASGI lifespan runs (``lifespan="auto"``), so a badgr
    app closes its upstream connections on stop. Needs uvicorn
    (``pip install 'badgr-middleware[server]'``).
    """

    def __init__(
        self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, lifespan: str = "auto"
    ) -> None:
        self.app = app
        self.lifespan = lifespan
        self.host = host
        self.port = port
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL: ``url + "/v1"``."""
        return f"{self.url}/v1"

    def start(self) -> SimulatedServer:
        """Bind, start serving, and return once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("SimulatedServer is already running")
        uvicorn = _import_uvicorn()
        # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets
        # whose listener says so, and without it every response stalls ~40 ms (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan=self.lifespan,
            http="h11",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        self._server = server = uvicorn.Server(config)
        self._error = None
        self._thread = threading.Thread(
            target=self._run, name=f"SimulatedServer:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SimulatedServer failed to start: {self._error!r}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving; requests still in flight see their connection closed."""
        server, thread, loop = self._server, self._thread, self._loop
        if server is not None:
            server.should_exit = True
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                loop.call_soon_threadsafe(self._drop_connections)
        if thread is not None:
            thread.join(_STOP_TIMEOUT)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(_STOP_TIMEOUT)
        if self._sock is not None:
            self._sock.close()
        self._sock = self._server = self._thread = self._loop = None

    def __enter__(self) -> SimulatedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by start(); a thread has nowhere to raise
            self._error = error

    async def _serve(self) -> None:
        assert self._server is not None and self._sock is not None
        self._loop = asyncio.get_running_loop()
        await self._server.serve(sockets=[self._sock])

    def _drop_connections(self) -> None:
        # Closing the sockets makes handlers see http.disconnect at once, so a "hang" fault
        # ends now instead of after uvicorn's graceful-shutdown timeout.
        if self._server is None:
            return
        for connection in list(self._server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


def _import_uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError as error:
        raise RuntimeError(
            "SimulatedServer needs uvicorn: pip install 'badgr-middleware[server]'"
        ) from error
    return uvicorn
