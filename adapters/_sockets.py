"""Socket options of ours: Nagle off for every TCP connection, kernel-kept timeouts."""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["KERNEL_TIMEOUTS", "limit_unsent", "no_delay", "set_kernel_timeout", "still_connected", "wrapped_for_tls"]

_Tls = TypeVar("_Tls")

#: Whether plain sockets may wait with the kernel's timeouts (``SO_RCVTIMEO`` and
#: ``SO_SNDTIMEO`` on a socket in blocking mode): where the ``struct timeval``
#: layout they take is known.  With a Python timeout instead, every ``recv`` and
#: ``send`` polls first and every ``settimeout`` is a system call of its own; a
#: thread-per-connection server or a threaded client then pays a GIL hand-off for
#: each.  With the kernel's, a wait that runs out fails with ``EAGAIN``, which
#: Python raises as ``BlockingIOError``.  Never for gevent's sockets (blocking mode
#: would block the hub) or TLS sockets (``EAGAIN`` inside OpenSSL is not a timeout).
KERNEL_TIMEOUTS = sys.platform.startswith("linux") and hasattr(socket, "SO_RCVTIMEO")


def no_delay(sock: socket.socket) -> None:
    """Turn off Nagle's algorithm on a TCP socket (a Unix socket is left alone).

    SMTP is a dialogue of short lines: with Nagle on, a short write that follows
    another waits for the peer's delayed ACK, about 40 ms per exchange.  asyncio
    and trio set this themselves; plain and gevent sockets do not.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


#: What trio sets on every TCP stream, and for the same reason (python-trio/trio#72).
UNSENT_LIMIT = 16 * 1024


def limit_unsent(sock: Any) -> None:  # (a socket, or the TransportSocket of an asyncio transport)
    """Keep at most :data:`UNSENT_LIMIT` octets written but unsent in the kernel (``TCP_NOTSENT_LOWAT``).

    A client's wait for a data block (RFC 5321 §4.5.3.2.5) must measure the
    server, not the kernel: with megabytes queued, a blocked write wakes only
    once about a third has drained, so a server reading steadily but slowly ran
    out a 1 s wait that trio's client, with this set, never did.  Throughput
    over loopback is the same either way (measured with 100 KiB messages).
    Where the option does not exist (not Linux or macOS), nothing changes.
    """
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    if option is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, UNSENT_LIMIT)


def set_kernel_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    """Set ``SO_RCVTIMEO`` or ``SO_SNDTIMEO`` (see :data:`KERNEL_TIMEOUTS`)."""
    # A zero timeval means "wait forever": never round a short wait down to it.
    micro = max(1000, int(seconds * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("@ll", micro // 1_000_000, micro % 1_000_000))


def still_connected(sock: socket.socket, peer: str = "server") -> None:
    """Raise ``ConnectionResetError`` if the ``peer`` has reset ``sock``: asked before TLS wraps it.

    ``ssl.wrap_socket`` takes the descriptor from ``sock`` first; finding the
    socket unconnected (a reset leaves it so), it reads from it and raises, with
    the new TLS socket, which nothing can close, kept alive by the exception's
    frames: a retry queue that keeps its errors would keep the descriptors.
    """
    try:
        sock.getpeername()
    except OSError:
        raise ConnectionResetError(f"the {peer} closed the connection before the TLS handshake") from None


def wrapped_for_tls(sock: socket.socket, wrap: Callable[[], _Tls], kind: type[Any], peer: str = "server") -> _Tls:
    """``wrap()``, the TLS socket of ``kind`` it makes over ``sock``; closed if it cannot be made.

    :func:`still_connected` catches a reset that came before the wrap, but a
    reset may still arrive between that look and the wrap's own: the TLS socket,
    which already holds the descriptor, then raises from its constructor without
    closing itself.  It is found in the frames of the error (the constructor's
    ``self``) and closed here, so that no descriptor outlives the failure.
    """
    still_connected(sock, peer)
    try:
        return wrap()
    except OSError as exc:
        traceback = exc.__traceback__
        while traceback is not None:
            made = traceback.tb_frame.f_locals.get("self")
            if isinstance(made, kind):
                with contextlib.suppress(OSError):
                    made.close()
            traceback = traceback.tb_next
        raise
