"""Start the review server: bind the socket first (so the printed URL has the real port), a fresh token."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marrowscope.errors import InputError, MissingDependencyError

log = logging.getLogger(__name__)


def reviewer_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class ReviewServer:
    service: Any  # ReviewService
    app: Any  # FastAPI
    token: str
    sock: socket.socket
    host: str

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"

    def run(self) -> None:
        """Serve until interrupted (uvicorn on the bound socket)."""
        import uvicorn

        server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        try:
            server.run(sockets=[self.sock])
        finally:
            self.service.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        raise InputError(
            f"{host}:{port}",
            f"cannot listen there ({e.strerror}); pick another --port (or --port 0 for any free one)",
        ) from e
    s.listen(128)
    return s


def open_review(out: str | Path, *, host: str = "127.0.0.1", port: int = 8765, reviewer: str) -> ReviewServer:
    """The service over ``out``, its app with a new token, and the bound socket (not yet serving)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            f"the review app needs FastAPI and uvicorn ({e.name} is missing): "
            "pip install 'marrowscope[review]'"
        ) from e
    from marrowscope.review.server import create_app, new_token
    from marrowscope.review.service import ReviewService

    service = ReviewService(out, reviewer)
    token = new_token()
    app = create_app(service, token)
    sock = _bind(host, port)
    threading.Thread(target=service.warm_up, name="review-warm-up", daemon=True).start()
    return ReviewServer(service, app, token, sock, host)
