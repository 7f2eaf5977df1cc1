"""The gevent adapter: ``gevent.server.StreamServer``, one greenlet per connection.

The story of every adapter, told with gevent -- which is the blocking story on
cooperative sockets: the connection loop is :func:`adapters.blocking_server.serve_socket`,
run in a greenlet on gevent's sockets, with TLS through ``gevent.ssl`` so that a
handshake never blocks the hub.  No monkey-patching is needed or done.

The greenlets live in a :class:`gevent.pool.Group` owned by the server, so a
shutdown can wait for them and, at its deadline, make their reads answer 421;
``shutdown()`` returns only when every one has finished.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from typing import Any

import gevent
import gevent.pool
import gevent.server
import gevent.socket
import gevent.ssl

from smtpcore import ServerConfig

from ._handler import Handler, refusal
from ._tls import server_context
from .blocking_server import TICK, serve_socket

__all__ = ["SMTPServer"]

log = logging.getLogger("smtpcore.adapters")


class SMTPServer:
    """A gevent SMTP/LMTP server for a blocking :class:`~adapters.Handler`.

    Same arguments as :class:`adapters.blocking_server.SMTPServer`.  Call
    :meth:`start` (or use it as a context manager) from the hub's thread.
    """

    def __init__(
        self,
        handler: Handler,
        config: ServerConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 25,
        unix_path: str | None = None,
        tls: ssl.SSLContext | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        max_connections: int = 100,
    ) -> None:
        self.handler = handler
        self.config = config or ServerConfig()
        self.tls = server_context(tls, certfile, keyfile, self.config)
        self.max_connections = max_connections
        self._unix_path = unix_path
        self._address = (host, port)
        self._group = gevent.pool.Group()
        self._aborting = False
        self._server: gevent.server.StreamServer | None = None

    def _listener(self) -> Any:
        if self._unix_path is not None:
            if os.path.exists(self._unix_path):
                os.unlink(self._unix_path)
            sock = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(self._unix_path)
            sock.listen(128)
            return sock
        host = self._address[0]
        if ":" in host:
            sock = gevent.socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self._address)
            sock.listen(128)
            return sock
        return self._address

    def start(self) -> None:
        self._server = gevent.server.StreamServer(self._listener(), self._handle, spawn=self._group.spawn)
        self._server.start()

    @property
    def address(self) -> Any:
        """Where the server listens: ``(host, port, ...)`` with the real port, or the Unix path."""
        assert self._server is not None, "start() the server first"
        return self._server.socket.getsockname()

    @property
    def port(self) -> int:
        return int(self.address[1])

    @property
    def connections(self) -> int:
        return len(self._group)

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        return gevent.ssl.SSLSocket(  # type: ignore[no-any-return]
            sock=sock, server_side=True, do_handshake_on_connect=False, _context=self.tls
        )

    def _handle(self, sock: socket.socket, address: Any) -> None:
        # The group already counts this greenlet.
        if len(self._group) > self.max_connections:
            try:
                sock.settimeout(1.0)
                sock.sendall(refusal(self.config))
            except OSError:
                pass
            sock.close()
            return
        try:
            serve_socket(
                sock,
                self.handler,
                self.config,
                self._wrap_tls if self.tls else None,
                lambda: self._aborting,
                peer=address,
            )
        except Exception:
            log.exception("session with %s failed", address)

    def serve_forever(self) -> None:
        if self._server is None:
            self.start()
        assert self._server is not None
        self._server.serve_forever()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, let sessions finish for up to ``timeout`` seconds, then 421 and close the rest."""
        if self._server is not None:
            self._server.close()
        if self._unix_path is not None and os.path.exists(self._unix_path):
            os.unlink(self._unix_path)
        self._group.join(timeout=timeout)
        self._aborting = True
        self._group.join(timeout=max(1.0, TICK * 10))
        self._group.kill(block=True, timeout=1.0)  # a hook that still runs is killed

    def __enter__(self) -> SMTPServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
