"""The blocking adapter: plain sockets, one thread per connection.

The story of every adapter, told with ``socket`` and ``threading``: read, feed,
next_event, call the hook, send the reply, write.  The protocol is in
``smtpcore`` and the hook dispatch in ``_handler.Dispatcher``; this file only
moves bytes and keeps time.

A blocking ``recv`` cannot be interrupted from another thread, so a read waits
in slices of :data:`TICK` seconds and checks between slices whether the read's
deadline or the server's shutdown deadline has passed.  :func:`serve_socket` is
also the connection loop of the gevent adapter, where the same code runs on
cooperative sockets.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from smtpcore import ServerConfig

from ._handler import (
    LOST,
    READ_SIZE,
    SHUTDOWN,
    TIMED_OUT,
    CallHook,
    Close,
    Dispatcher,
    Handler,
    Receive,
    Send,
    Session,
    StartTls,
    TlsInfo,
    call_hook,
    refusal,
    unused_hooks,
    wants_transcript,
)
from ._sockets import KERNEL_TIMEOUTS, no_delay, set_kernel_timeout
from ._tls import server_context, tls_info

__all__ = ["SMTPServer", "serve_socket"]

log = logging.getLogger("smtpcore.adapters")

#: How often a waiting read looks at the clock and the shutdown flag.
TICK = 0.1

WrapTls = Callable[[socket.socket], socket.socket]


def _handshake(sock: socket.socket, wrap: WrapTls, timeout: float) -> tuple[socket.socket, TlsInfo | None]:
    tls = sock
    try:
        tls = wrap(sock)
        tls.settimeout(timeout)
        handshaking = cast(ssl.SSLSocket, tls)  # or gevent.ssl.SSLSocket, which has the same methods
        handshaking.do_handshake()
        return tls, tls_info(handshaking)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        log.info("TLS handshake failed: %s", exc)
        tls.close()
        sock.close()
        return sock, None


class _TimedSocket:
    """Reads and writes on a socket, each ended by its deadline, and reads by a shutdown.

    A blocking read cannot be interrupted from another thread, so a read waits
    in slices of at most :data:`TICK` seconds and looks at the deadline and the
    shutdown flag between them.  The subclasses differ in how a slice is timed.
    """

    #: What ``recv`` raises when a slice ends with nothing to read.
    slice_ended: type[OSError]

    def __init__(self, sock: socket.socket, aborting: Callable[[], bool]) -> None:
        self.sock = sock
        self.aborting = aborting

    def receive(self, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while True:
            if self.aborting():
                return SHUTDOWN
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return TIMED_OUT
            self._time_slice(min(remaining, TICK))
            try:
                return self.sock.recv(READ_SIZE)
            except self.slice_ended:
                continue
            except OSError:
                return LOST

    def send(self, data: bytes, timeout: float) -> object:
        try:
            self._time_send(timeout)
            self.sock.sendall(data)
        except OSError:
            return LOST
        return None

    def _time_slice(self, seconds: float) -> None:
        raise NotImplementedError

    def _time_send(self, seconds: float) -> None:
        raise NotImplementedError


class _PolledSocket(_TimedSocket):
    """Deadlines through Python's socket timeouts.

    Works on every socket (TLS, gevent's, any platform), at a price: with a
    timeout set, every ``recv`` and ``send`` first ``poll()``s, and
    ``settimeout`` itself is a system call.
    """

    slice_ended = TimeoutError  # socket.timeout

    def _time_slice(self, seconds: float) -> None:
        self.sock.settimeout(seconds)

    def _time_send(self, seconds: float) -> None:
        self.sock.settimeout(seconds)


class _KernelTimedSocket(_TimedSocket):
    """Deadlines that the kernel keeps, on a plain socket (see ``KERNEL_TIMEOUTS``).

    The socket stays in blocking mode with ``SO_RCVTIMEO``/``SO_SNDTIMEO`` set,
    so a read or a write is one system call and one GIL hand-off where
    :class:`_PolledSocket` makes two or three (measured with 20 sessions of
    1 KiB messages: 58% more messages per second kept alive, 41% with a
    connection per message).
    """

    slice_ended = BlockingIOError

    def __init__(self, sock: socket.socket, aborting: Callable[[], bool], send_timeout: float) -> None:
        super().__init__(sock, aborting)
        sock.settimeout(None)
        self._slice = TICK
        set_kernel_timeout(sock, socket.SO_RCVTIMEO, TICK)
        # Per send() call, not for a whole sendall(): a peer that reads a
        # little now and then keeps a write alive, as it does for Postfix.
        set_kernel_timeout(sock, socket.SO_SNDTIMEO, send_timeout)

    def _time_slice(self, seconds: float) -> None:
        # Only the last slice before a deadline is shorter: set it then, and
        # set the full slice back after it; otherwise leave the kernel alone.
        if seconds < TICK or self._slice < TICK:
            self._slice = seconds
            set_kernel_timeout(self.sock, socket.SO_RCVTIMEO, seconds)

    def _time_send(self, seconds: float) -> None:
        pass  # SO_SNDTIMEO, set once


def serve_socket(
    sock: socket.socket,
    handler: Handler,
    config: ServerConfig,
    wrap_tls: WrapTls | None,
    aborting: Callable[[], bool] = lambda: False,
    *,
    kernel_timeouts: bool = False,
) -> None:
    """Run one SMTP session on a connected socket, then close it.

    ``kernel_timeouts`` lets a plain socket wait with the kernel's timeouts
    (see :class:`_KernelTimedSocket`; Linux only, ignored elsewhere).  It must
    stay off for gevent's sockets, which must never block the hub.
    """
    no_delay(sock)
    session = Session(peer=sock.getpeername(), local=sock.getsockname())
    if config.implicit_tls:
        assert wrap_tls is not None
        sock, session.tls_info = _handshake(sock, wrap_tls, config.tls_handshake_timeout)
        if session.tls_info is None:
            return
    io: _TimedSocket
    if kernel_timeouts and KERNEL_TIMEOUTS and session.tls_info is None:
        io = _KernelTimedSocket(sock, aborting, config.command_timeout)
    else:
        io = _PolledSocket(sock, aborting)
    actions = Dispatcher(config, session, transcript=wants_transcript(handler), unused=unused_hooks(handler)).actions()
    result: Any = None
    try:
        while True:
            action = actions.send(result)
            result = None
            if isinstance(action, Receive):
                result = io.receive(action.timeout)
            elif isinstance(action, Send):
                result = io.send(action.data, config.command_timeout)
            elif isinstance(action, CallHook):
                result = call_hook(handler, action)
            elif isinstance(action, StartTls):
                assert wrap_tls is not None
                sock, result = _handshake(sock, wrap_tls, action.timeout)
                io = _PolledSocket(sock, aborting)  # a TLS socket keeps Python's timeouts
            elif isinstance(action, Close):
                sock.close()
    except StopIteration:
        pass
    finally:
        sock.close()
        actions.close()


class SMTPServer:
    """A threaded SMTP/LMTP server.

    ``SMTPServer(handler, config, host="127.0.0.1", port=0)`` listens on TCP
    (an IPv6 host such as ``"::1"`` works too); ``unix_path=`` listens on a Unix
    socket instead.  ``tls=`` (an ``ssl.SSLContext``) or ``certfile=``/``keyfile=``
    enable STARTTLS or implicit TLS, as ``config`` says.  Use as a context
    manager, or call :meth:`start` and :meth:`shutdown`.
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
        self._address: tuple[str, int] | str = unix_path if unix_path is not None else (host, port)
        self._listener: socket.socket | None = None
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._accepting = threading.Event()
        self._aborting = False
        self._acceptor: threading.Thread | None = None

    @property
    def address(self) -> Any:
        """Where the server listens: ``(host, port, ...)`` with the real port, or the Unix path."""
        assert self._listener is not None, "start() the server first"
        return self._listener.getsockname()

    @property
    def port(self) -> int:
        return int(self.address[1])

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        assert self.tls is not None
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

    def start(self) -> None:
        if isinstance(self._address, str):
            if os.path.exists(self._address):
                os.unlink(self._address)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self._address)
            listener.listen(128)
        else:
            family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
            listener = socket.create_server(self._address, family=family, backlog=128)
        self._listener = listener
        self._accepting.set()
        self._acceptor = threading.Thread(target=self._accept_loop, name="smtp-accept", daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while self._accepting.is_set():
                if not selector.select(TICK):
                    continue
                try:
                    sock, _ = self._listener.accept()
                except OSError:
                    continue
                with self._lock:
                    full = len(self._threads) >= self.max_connections
                    if not full:
                        thread = threading.Thread(target=self._run, args=(sock,), name="smtp-session", daemon=True)
                        self._threads.add(thread)
                if full:
                    self._refuse(sock)
                else:
                    thread.start()

    def _refuse(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(1.0)
            sock.sendall(refusal(self.config))
        except OSError:
            pass
        finally:
            sock.close()

    def _run(self, sock: socket.socket) -> None:
        try:
            serve_socket(
                sock,
                self.handler,
                self.config,
                self._wrap_tls if self.tls else None,
                lambda: self._aborting,
                kernel_timeouts=True,
            )
        except Exception:
            log.exception("session failed")
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def serve_forever(self) -> None:
        if self._listener is None:
            self.start()
        assert self._acceptor is not None
        self._acceptor.join()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, let sessions finish for up to ``timeout`` seconds, then 421 and close the rest."""
        self._accepting.clear()
        if self._acceptor is not None:
            self._acceptor.join()
        if self._listener is not None:
            self._listener.close()
            if isinstance(self._address, str) and os.path.exists(self._address):
                os.unlink(self._address)
        deadline = time.monotonic() + timeout
        for thread in self._sessions():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._aborting = True
        for thread in self._sessions():
            thread.join(max(1.0, TICK * 10))

    def _sessions(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    @property
    def connections(self) -> int:
        """How many sessions are open now."""
        with self._lock:
            return len(self._threads)

    def __enter__(self) -> SMTPServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
