"""Binding a listening socket before anything else starts, so that a port in use is said at
once, in one line, not after a model has loaded."""

from __future__ import annotations

import socket

__all__ = ["bind_listener"]


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` as uvicorn binds one (address reuse on), for
    ``uvicorn.Server.run(sockets=[...])``; ``ValueError`` saying why when it cannot be."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port} ({_reason(exc)})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({_reason(exc)})") from None
    return sock


def _reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()
