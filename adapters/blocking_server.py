"""The blocking adapter: plain sockets, a thread per connection (from a pool).

The story of every adapter, told with ``socket`` and ``threading``: read, feed,
next_event, call the hook, send the reply, write.  The protocol is in
``smtpcore`` and the hook dispatch in ``_handler.Dispatcher``; this file only
moves bytes and keeps time.

A blocking ``recv`` or ``send`` cannot be interrupted from another thread, so a
read or a write waits in slices of :data:`TICK` seconds and checks between
slices whether its deadline or the server's shutdown deadline has passed.
:func:`serve_socket` is also the connection loop of the gevent adapter, where
the same code runs on cooperative sockets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, cast

from smtpcore import ServerConfig

from ._cpu import cpu_for_workers, keep_on
from ._handler import (
    HOOK_FAILURES,
    LOST,
    READ_SIZE,
    SHUTDOWN,
    TIMED_OUT,
    Action,
    CallHook,
    Close,
    Dispatcher,
    Handler,
    Pause,
    Receive,
    Send,
    Session,
    StartTls,
    TlsInfo,
    call_hook,
    check_handler,
    handshake_first,
    refusal,
    unused_hooks,
    wants_transcript,
)
from ._sockets import KERNEL_TIMEOUTS, no_delay, set_kernel_timeout, wrapped_for_tls
from ._tls import server_context, tls_info

__all__ = ["SMTPServer", "serve_socket"]

log = logging.getLogger("smtpcore.adapters")

#: How often a waiting read or write looks at the clock and the shutdown flag.
TICK = 0.1
#: Idle workers kept for the next connections; a worker that would be one more ends.
MAX_IDLE = 32

WrapTls = Callable[[socket.socket], socket.socket]
#: ``deadline(seconds)``: a context manager that ends what runs in it (with an
#: ``OSError``) once ``seconds`` have passed, for the sockets whose timeout does not.
Deadline = Callable[[float], contextlib.AbstractContextManager[object]]


def _no_deadline(seconds: float) -> contextlib.AbstractContextManager[object]:
    return contextlib.nullcontext()


def _handshake(
    sock: socket.socket,
    wrap: WrapTls,
    timeout: float,
    deadline: Deadline = _no_deadline,
    shutting_down: Callable[[], bool] = lambda: False,
) -> tuple[socket.socket, TlsInfo | None]:
    """The server side of a TLS handshake, done within ``timeout`` seconds in all,
    and given up as soon as the server is ``shutting_down``.

    CPython's ``do_handshake`` takes the socket's timeout as a deadline for the
    whole handshake; gevent's applies it to each wait for the client, so a
    client sending a byte at a time would keep it going for ever: gevent passes
    a ``deadline`` of its own.

    A blocking handshake cannot be interrupted from another thread, so it waits
    in slices of :data:`TICK` seconds, as reads do, and a graceful shutdown
    ends it between two: mid-handshake no SMTP can be spoken, so nothing is
    lost, and a client that opened port 465 and said nothing (a scanner) would
    otherwise hold the shutdown for its whole grace period.  A slice that ends
    leaves the handshake where it was: OpenSSL asked for more bytes and was
    given none, and the next ``do_handshake`` goes on from there.
    """
    tls = sock
    try:
        tls = wrap(sock)
        handshaking = cast(ssl.SSLSocket, tls)  # or gevent.ssl.SSLSocket, which has the same methods
        ends = time.monotonic() + timeout
        with deadline(timeout):
            while True:
                if shutting_down():
                    raise ConnectionAbortedError("the server is shutting down")
                remaining = ends - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("TLS handshake timed out")
                tls.settimeout(min(remaining, TICK))
                try:
                    handshaking.do_handshake()
                    break
                except TimeoutError:  # a slice went by (or gevent's ``deadline``: the clock says which)
                    continue
        return tls, tls_info(handshaking)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        log.info("TLS handshake failed: %s", exc)
        tls.close()
        sock.close()
        return sock, None


class _TimedSocket:
    """Reads and writes on a socket, each ended by its deadline and by a shutdown.

    A blocking call cannot be interrupted from another thread, so a read or a
    write waits in slices of at most :data:`TICK` seconds and looks at the
    deadline and the shutdown flag between them.  The subclasses differ in how
    a slice is timed.
    """

    #: What ``recv`` raises when a slice ends with nothing to read (``send``: nothing written).
    slice_ended: type[OSError]

    def __init__(
        self, sock: socket.socket, aborting: Callable[[], bool], draining: Callable[[], bool] = lambda: False
    ) -> None:
        self.sock = sock
        #: The shutdown's grace period is over: every read ends.
        self.aborting = aborting
        #: A graceful shutdown has begun: idle reads (no transaction open) end.
        self.draining = draining

    def shutting_down(self, idle: bool) -> bool:
        """Whether a read (an ``idle`` one, or any) must end now with SHUTDOWN."""
        return self.aborting() or (idle and self.draining())

    def receive(self, timeout: float, idle: bool = False, limit: int | None = None) -> object:
        """The next bytes (``limit`` octets at most, if given), or what ended the wait."""
        size = READ_SIZE if limit is None else limit
        deadline = time.monotonic() + timeout
        while True:
            if self.shutting_down(idle):
                return SHUTDOWN
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return TIMED_OUT
            self._time_slice(min(remaining, TICK))
            try:
                return self.sock.recv(size)
            except self.slice_ended:
                continue
            except OSError:
                return LOST

    def send(self, data: bytes, timeout: float) -> object:
        """Write ``data`` whole within ``timeout`` seconds, or give up (``LOST``).

        The deadline is the whole write's, not each ``send()`` call's: a client
        that reads a little now and then (the kernel growing the socket's
        buffer as it does) would otherwise keep a write going for ever.  Once
        the shutdown's grace period is over, a write the client does not take
        at once ends too, as every read does, so that the session ends (and
        ``connection_closed`` runs) before ``shutdown()`` returns.
        """
        deadline = time.monotonic() + timeout
        remaining, sent = timeout, 0
        try:
            while True:
                self._time_send(min(remaining, TICK))
                # Not contextlib.suppress(): a context manager more for every write.
                try:  # noqa: SIM105
                    # A reply almost always fits the socket's buffer: one send() is then
                    # the whole write.  (gevent's sendall() asks for SO_SNDBUF first, a
                    # system call per write.)
                    sent += self.sock.send(memoryview(data)[sent:] if sent else data)
                except self.slice_ended:  # a slice went by with nothing written
                    pass
                if sent >= len(data):
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.aborting():
                    return LOST
        except OSError:
            return LOST

    def send_before_read(self, data: bytes, timeout: float) -> object:
        """The replies a read comes after: written now here (gevent's may wait for the hub's next turn)."""
        return self.send(data, timeout)

    #: How a pause waits: the thread's sleep here, the hub's in gevent.
    sleep: Callable[[float], object] = staticmethod(time.sleep)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` before the next write, in slices, so that a shutdown's deadline ends it."""
        deadline = time.monotonic() + seconds
        while not self.aborting():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sleep(min(remaining, TICK))

    def close(self, timeout: float) -> None:
        """Close the socket once what is owed is written (within ``timeout``)."""
        self.sock.close()

    def abandon(self) -> None:
        """Close the socket now, writing nothing more: the session is over, with or without
        its :meth:`close` (a client that left, a greenlet killed in a hook).  Idempotent."""
        self.sock.close()

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

    def __init__(
        self, sock: socket.socket, aborting: Callable[[], bool], draining: Callable[[], bool] = lambda: False
    ) -> None:
        super().__init__(sock, aborting, draining)
        if sock.gettimeout() is not None:
            sock.settimeout(None)  # an ioctl: an accepted socket is blocking already
        self._slice = self._send_slice = TICK
        set_kernel_timeout(sock, socket.SO_RCVTIMEO, TICK)
        set_kernel_timeout(sock, socket.SO_SNDTIMEO, TICK)

    def _time_slice(self, seconds: float) -> None:
        # Only the last slice before a deadline is shorter: set it then, and
        # set the full slice back after it; otherwise leave the kernel alone.
        if seconds < TICK or self._slice < TICK:
            self._slice = seconds
            set_kernel_timeout(self.sock, socket.SO_RCVTIMEO, seconds)

    def _time_send(self, seconds: float) -> None:
        # The same for writes: most take one send() in a full slice, and cost nothing here.
        if seconds < TICK or self._send_slice < TICK:
            self._send_slice = seconds
            set_kernel_timeout(self.sock, socket.SO_SNDTIMEO, seconds)


def serve_socket(
    sock: socket.socket,
    handler: Handler,
    config: ServerConfig,
    wrap_tls: WrapTls | None,
    aborting: Callable[[], bool] = lambda: False,
    *,
    draining: Callable[[], bool] = lambda: False,
    kernel_timeouts: bool = False,
    peer: Any = None,
    timed: Callable[[socket.socket], _TimedSocket] | None = None,
    handshake_deadline: Deadline = _no_deadline,
    hook_failures: tuple[type[BaseException], ...] = HOOK_FAILURES,
) -> None:
    """Run one SMTP session on a connected socket, then close it.

    ``peer`` is the client's address as ``accept()`` gave it; without it the
    socket is asked (a system call, and for a thread a GIL hand-off, per connection).

    ``kernel_timeouts`` lets a plain socket wait with the kernel's timeouts
    (see :class:`_KernelTimedSocket`; Linux only, ignored elsewhere).  It must
    stay off for gevent's sockets, which must never block the hub.

    ``timed`` makes the :class:`_TimedSocket` for each socket of the session (the
    plain one, then the TLS one after STARTTLS), for an adapter that keeps time
    its own way; gevent's watchdog does (see ``adapters.gevent_server``).
    ``handshake_deadline`` ends a TLS handshake on time where the socket's
    timeout does not (gevent's: see :func:`_handshake`).  ``hook_failures`` are the
    exceptions a hook fails with (see :func:`~adapters._handler.call_hook`): gevent's
    ``Timeout`` too, in the gevent adapter.
    """
    no_delay(sock)
    session = Session(peer=sock.getpeername() if peer is None else peer, local=sock.getsockname())
    if handshake_first(config):  # (behind a proxy, the dispatcher asks for it after the header)
        assert wrap_tls is not None
        sock, session.tls_info = _handshake(
            sock, wrap_tls, config.tls_handshake_timeout, handshake_deadline, lambda: aborting() or draining()
        )
        if session.tls_info is None:
            return
    io: _TimedSocket
    if timed is not None:
        io = timed(sock)
    elif kernel_timeouts and KERNEL_TIMEOUTS and session.tls_info is None:
        io = _KernelTimedSocket(sock, aborting, draining)
    else:
        io = _PolledSocket(sock, aborting, draining)
    actions = Dispatcher(config, session, transcript=wants_transcript(handler), unused=unused_hooks(handler)).actions()
    result: Any = None
    try:
        while True:
            action = actions.send(result)
            result = None
            if isinstance(action, Receive):
                if action.send and io.send_before_read(action.send, config.command_timeout) is LOST:
                    result = LOST
                else:
                    result = io.receive(action.timeout, action.idle, action.limit)
            elif isinstance(action, Send):
                result = io.send(action.data, config.command_timeout)
            elif isinstance(action, CallHook):
                result = call_hook(handler, action, hook_failures)
            elif isinstance(action, StartTls):
                assert wrap_tls is not None
                sock, result = _handshake(
                    sock, wrap_tls, action.timeout, handshake_deadline, lambda: aborting() or draining()
                )
                # A TLS socket keeps Python's timeouts (or the adapter's own).
                io = timed(sock) if timed is not None else _PolledSocket(sock, aborting, draining)
            elif isinstance(action, Pause):
                io.pause(action.seconds)
            elif isinstance(action, Close):
                io.close(config.command_timeout)
    except StopIteration:
        pass
    except BaseException:
        # Stopped in the middle of an action: gevent kills a greenlet still in a hook at a
        # shutdown's deadline (a thread cannot be).  The session ends as if the client had
        # left, and the handler still hears of it (message_aborted, connection_closed).
        _last_hooks(actions, handler, hook_failures)
        raise
    finally:
        io.abandon()
        actions.close()


def _last_hooks(
    actions: Generator[Action, Any, None], handler: Handler, failures: tuple[type[BaseException], ...]
) -> None:
    """Answer the action in progress LOST, and call the hooks the session still owes."""
    result: Any = LOST
    with contextlib.suppress(StopIteration):
        while True:
            action = actions.send(result)
            # Nothing is read or written any more; the Close is serve_socket's own, as it returns.
            result = call_hook(handler, action, failures) if isinstance(action, CallHook) else LOST


class SMTPServer:
    """A threaded SMTP/LMTP server: a session per thread, on a pool of threads that accept for themselves.

    ``SMTPServer(handler, config, host="127.0.0.1", port=0)`` listens on TCP
    (an IPv6 host such as ``"::1"`` works too); ``unix_path=`` listens on a Unix
    socket instead.  ``tls=`` (an ``ssl.SSLContext``) or ``certfile=``/``keyfile=``
    enable STARTTLS or implicit TLS, as ``config`` says.  Use as a context
    manager, or call :meth:`start` and :meth:`shutdown`.

    Each worker thread waits in ``accept()`` itself and serves the connection it
    gets; a worker that takes the last idle place starts another first, so one
    is always waiting, and a worker that finds :data:`MAX_IDLE` others idle
    when its session is over ends.  No thread hands a socket to another, and a thread
    is not started per connection: with a connection per 1 KiB message (20
    sessions, Postfix's smtp-source) an acceptor thread that started a thread
    per connection was half as fast.  Beyond ``max_connections`` sessions the
    worker that accepts answers 421 and closes (closes only, on an implicit-TLS port:
    see :func:`~adapters._handler.refusal`).

    With ``one_cpu`` (the default) the workers, and only they, run on one CPU
    where the interpreter has a GIL and the platform lets a thread choose its
    CPU (Linux): they then pass the GIL among themselves without waking
    threads on other CPUs, twice as fast for small messages (see
    ``adapters/_cpu.py``).  Pass ``one_cpu=False`` if hooks do heavy work
    outside the GIL (a C extension that releases it) that should use more CPUs.
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
        one_cpu: bool = True,
    ) -> None:
        check_handler(handler, "blocking")
        self.handler = handler
        self.config = config or ServerConfig()
        self.tls = server_context(tls, certfile, keyfile, self.config)
        self.max_connections = max_connections
        self.one_cpu = one_cpu
        # The CPU the workers keep to, chosen at start(); None: wherever the kernel puts them.
        self._cpu: int | None = None
        self._address: tuple[str, int] | str = unix_path if unix_path is not None else (host, port)
        self._listener: socket.socket | None = None
        # Under the lock: every worker alive, how many wait in accept(), how many serve a session.
        self._lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        self._idle = 0
        self._busy = 0
        self._accepting = False
        # A graceful shutdown has begun (idle sessions end), then its grace period is over (all do).
        self._draining = False
        self._aborting = False
        self._stopped = threading.Event()

    @property
    def address(self) -> Any:
        """Where the server listens: ``(host, port, ...)`` with the real port, or the Unix path."""
        assert self._listener is not None, "start() the server first"
        return self._listener.getsockname()

    @property
    def port(self) -> int:
        return int(self.address[1])

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        tls = self.tls
        assert tls is not None

        # A client that resets as the wrap begins must not leave the half-made TLS socket to
        # the garbage collector (a ResourceWarning): see wrapped_for_tls.
        def wrap() -> ssl.SSLSocket:
            return tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

        return wrapped_for_tls(sock, wrap, ssl.SSLSocket, "client")

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
        # Idle workers wait in accept() in slices, to see a shutdown.  With the
        # kernel's timeout the listener stays blocking, and the kernel wakes one
        # waiter per connection; a Python timeout polls, and wakes them all.
        if KERNEL_TIMEOUTS:
            set_kernel_timeout(listener, socket.SO_RCVTIMEO, TICK)
        else:
            listener.settimeout(TICK)
        self._listener = listener
        self._cpu = cpu_for_workers() if self.one_cpu else None
        self._accepting = True
        self._stopped.clear()
        with self._lock:
            self._idle += 1
        self._start_worker()

    def _start_worker(self) -> None:
        """Start a worker already counted idle (so that no two workers start one for the same place)."""
        worker = threading.Thread(target=self._work, name="smtp-worker", daemon=True)
        with self._lock:
            self._workers.add(worker)
        worker.start()

    def _work(self) -> None:
        keep_on(self._cpu)
        listener = self._listener
        assert listener is not None
        idle = True  # counted in self._idle
        try:
            while self._accepting:
                try:
                    sock, peer = listener.accept()
                except (BlockingIOError, TimeoutError):  # a slice ended: look at the flag again
                    continue
                except OSError as exc:  # shut down, or out of descriptors (EMFILE): not a hot loop
                    if self._accepting:
                        log.error("cannot accept a connection (%s); trying again in %s s", exc, TICK)
                        time.sleep(TICK)
                    continue
                with self._lock:
                    self._idle -= 1
                    idle = False
                    full = self._busy >= self.max_connections
                    if not full:
                        self._busy += 1
                    spare = self._idle == 0 and self._accepting
                    if spare:
                        self._idle += 1
                if spare:
                    self._start_worker()
                if full:
                    self._refuse(sock)
                else:
                    self._run(sock, peer)
                with self._lock:
                    if not full:
                        self._busy -= 1
                    if self._idle >= MAX_IDLE:
                        return
                    self._idle += 1
                    idle = True
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())
                if idle:
                    self._idle -= 1

    def _refuse(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(1.0)
            sock.sendall(refusal(self.config))
        except OSError:
            pass
        finally:
            sock.close()

    def _run(self, sock: socket.socket, peer: Any) -> None:
        try:
            serve_socket(
                sock,
                self.handler,
                self.config,
                self._wrap_tls if self.tls else None,
                lambda: self._aborting,
                draining=lambda: self._draining,
                kernel_timeouts=True,
                peer=peer,
            )
        except Exception:
            log.exception("session failed")

    def serve_forever(self) -> None:
        """Block until :meth:`shutdown` (from another thread) has stopped accepting."""
        if self._listener is None:
            self.start()
        self._stopped.wait()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, 421 to the idle sessions now (within a read slice), let the others finish
        their transactions for up to ``timeout`` seconds, then 421 and close the rest."""
        self._accepting = False
        self._draining = True
        listener = self._listener
        if listener is not None:
            # Wakes the workers waiting in accept() at once on Linux (elsewhere
            # they see the flag within a slice); the socket is closed only once
            # none of them can be in accept() on it any more.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + timeout
        for worker in self._sessions():
            worker.join(max(0.0, deadline - time.monotonic()))
        self._aborting = True
        # One more second in all, not per thread: a hook that never returns
        # cannot be interrupted, and a hundred of them must not add a hundred seconds.
        deadline = time.monotonic() + max(1.0, TICK * 10)
        for worker in self._sessions():
            worker.join(max(0.0, deadline - time.monotonic()))
        if listener is not None:
            listener.close()
            if isinstance(self._address, str) and os.path.exists(self._address):
                os.unlink(self._address)
        self._stopped.set()

    def _sessions(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._workers)

    @property
    def connections(self) -> int:
        """How many sessions are open now."""
        with self._lock:
            return self._busy

    def __enter__(self) -> SMTPServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
