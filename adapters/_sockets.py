"""Socket options every TCP connection of ours wants."""

from __future__ import annotations

import contextlib
import socket

__all__ = ["no_delay"]


def no_delay(sock: socket.socket) -> None:
    """Turn off Nagle's algorithm on a TCP socket (a Unix socket is left alone).

    SMTP is a dialogue of short lines: with Nagle on, a short write that follows
    another waits for the peer's delayed ACK, about 40 ms per exchange.  asyncio
    and trio set this themselves; plain and gevent sockets do not.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
