"""The asyncio adapter: the dispatcher's actions, carried out from protocol callbacks.

The story of every adapter, told with asyncio: read, feed, next_event, call the
(async) hook, send the reply, write.  The protocol is in ``smtpcore`` and the hook
dispatch in ``_handler.Dispatcher``; this file only moves bytes and keeps time.

asyncio's own dialect is the callback, so that is what drives a session: when
bytes arrive, :class:`_Connection` hands them to the dispatcher at once and runs
it until it needs more, writing replies on the way.  A session has no task of
its own.  Measured with Postfix's smtp-source, a task woken for every read cost
a fifth of the time of a small message, and the plain ``Protocol`` cost more
still: asyncio allocates 256 KiB for every ``recv``, which the C allocator
served by mapping and unmapping memory each time.  A :class:`~asyncio.BufferedProtocol`
reads into one buffer per connection instead.

Hooks are coroutines, and each runs in a task of its own, in one context per
connection: a hook may use ``asyncio.timeout()``, ``wait_for()`` (which needs a
task from 3.12), httpx or anyio (which ask sniffio, which asks for the task),
and a ``ContextVar`` it sets is seen by the next hook, as in trio's task per
connection.  Stepping a hook's coroutine by hand from the callback, as this
adapter once did, ran it outside any task, and those failed.  A hook that never
waits is still done within the callback: from 3.12 as a task started eagerly,
before 3.12 as the connection's one runner task, made current for the step
(:meth:`_Connection._call_as_runner`).  Either way the task that carries on a
hook that waited goes on with the session itself.

Replies that come before a read are not written at once but at the start of
the loop's next turn, every connection's together (``adapters._outbox``), as Redis
writes its replies just before its loop sleeps.  On one host (a local MTA, an
LMTP client, the benchmarks' load generator) each write to a peer that is
waiting wakes it, and waking it is most of what a write costs; a turn's replies
written back to back wake it once.  Everything else (a reply with no read
after it, STARTTLS, closing) hands over what is pending first, so each
connection's bytes keep their order.

Flow control is visible here: at most :data:`HIGH_WATER` octets are buffered
while the session is busy before the transport stops reading, and a reply
written to a client that does not read makes the session wait, within the
command timeout.  STARTTLS uses ``loop.start_tls()``; whatever was buffered
before the handshake is dropped.  Implicit TLS uses it too, on a connection
counted against ``max_connections`` from its accept, as in the other adapters.
Behind a PROXY-protocol proxy on an implicit-TLS port, the header is read first,
in reads the dispatcher bounds (``Receive.limit``): each lands in a slice of the
buffer that size, and the transport stops reading after it until the next
``Receive``, so that the ClientHello after the header is left to ``start_tls()``.

A connection counts until its socket is closed, not only until its session
ends: the last replies may still be on their way (see :meth:`_Connection._close`),
and a TLS connection is then closed at once, without waiting for the client's
close_notify, as the other adapters close theirs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import ssl
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from smtpcore import ServerConfig

from ._handler import (
    FLUSH_AT,
    LOST,
    READ_SIZE,
    SHUTDOWN,
    TIMED_OUT,
    AsyncHandler,
    CallHook,
    Close,
    Dispatcher,
    Pause,
    Receive,
    Send,
    Session,
    StartTls,
    _HookFailed,
    check_handler,
    handshake_first,
    refusal,
    unused_hooks,
    wants_transcript,
)
from ._outbox import Outbox
from ._tls import server_context, tls_info

__all__ = ["SMTPServer", "serve"]

#: Whether a connection does its implicit-TLS handshake itself, once it is counted
#: against max_connections (_Connection.start).  Python 3.10's transports start
#: reading even when paused in connection_made (3.11's ask is_reading() first), so
#: a ClientHello could reach the plain protocol before start_tls() took over: there
#: asyncio does the handshake (ssl= on the server), and a connection counts only
#: once it is done.
OWN_HANDSHAKE = sys.version_info >= (3, 11)

log = logging.getLogger("smtpcore.adapters")

#: Octets buffered before the transport stops reading (flow control).
HIGH_WATER = 4 * READ_SIZE
#: How often a closing connection looks whether its last bytes have left (see _Connection._close).
CLOSE_POLL = 0.1
#: The most one read takes.  More than READ_SIZE: each read is a turn of the
#: loop, and larger messages need fewer.  Measured with smtp-source (20
#: sessions, kept alive), against 64 KiB: 1 MiB messages 14.7x -> 16.2x
#: aiosmtpd, 100 KiB 9.5x -> 11.0x, 1 KiB unchanged; 128 KiB was worse again
#: for 100 KiB messages (8.6x).
LANDING_SIZE = 96 * 1024

# What a session is waiting for, if anything (None: it is running, or has ended).
_READ = "read"
_DRAIN = "drain"  # the transport's write buffer to empty
_TASK = "task"  # a hook's task, the TLS handshake or a pause
_TURN = "turn"  # the loop's next turn, after one piece of a long burst's replies


class _Resumed:
    """Awaiting it carries on a coroutine that was started by hand and is waiting on ``pending``.

    Task-driven coroutines talk to their task through what they yield (a future
    to wait for, or None to let others run); this passes every such message up
    to the awaiting task and every answer back down, as ``await coroutine``
    would have done from the start.
    """

    def __init__(self, coroutine: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coroutine = coroutine
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, pending = self._coroutine, self._pending
        while True:
            try:
                answer = yield pending
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # a cancellation: the hook decides what to make of it
                try:
                    pending = coroutine.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coroutine.send(answer)
                except StopIteration as done:
                    return done.value


#: Python 3.12's eager tasks: a task per hook, started within the callback.
_EAGER_TASKS = sys.version_info >= (3, 12)


def _uncancel() -> None:
    """Forget the current task's cancellations (3.11 counts them; asyncio.timeout() reads the count)."""
    if sys.version_info >= (3, 11):
        task = asyncio.current_task()
        assert task is not None
        while task.cancelling():
            task.uncancel()


async def _hook_result(hook: Awaitable[Any]) -> Any:
    """What a hook gives the dispatcher: its result, its failure, or LOST."""
    try:
        return await hook
    except asyncio.CancelledError:
        # The shutdown deadline passed while the hook was stuck: the session ends as if
        # the client had left, and the dispatcher still calls message_aborted and connection_closed.
        return LOST
    except Exception as exc:
        return _HookFailed(exc)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    """A coroutine for a hook that returned some other awaitable."""
    return await awaitable


class _Connection(asyncio.BufferedProtocol):
    """One connection: protocol callbacks in, the dispatcher's actions out."""

    def __init__(self, server: SMTPServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        # The transport connection_made gave: TCP, whose write buffer is the last before
        # the kernel, even once start_tls() has put a TLS transport above it.  (On 3.10,
        # with implicit TLS, asyncio's TLS transport; it reports its TCP's buffer.)
        self._tcp: asyncio.Transport | None = None
        #: Done when both the session and the socket are over, and the connection no
        #: longer counts (what a shutdown waits for).
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._ended = False  # the session is over: its generator closed, its last hooks called
        self._closing = False  # _close() began: the last bytes are on their way
        self._closed = False  # the socket is closed: aborted, lost, or closed with nothing left to write
        self._close_deadline = 0.0
        self._close_timer: asyncio.TimerHandle | None = None
        self._landing = server.landing  # every recv lands here
        self._outbox = server.outbox
        self._buffer = bytearray()  # what came while the session was busy
        self._eof = False
        self._reading_paused = False
        self._writing_paused = False
        self._aborting = False
        # The read in progress (or owed after a drain) is an idle one: a shutdown ends it at once.
        self._idle = False
        # The transport is TLS: once the handshake is done (implicit TLS's, or STARTTLS's).
        self._tls = False
        self._actions: Generator[Any, Any, None] | None = None
        self.session: Session | None = None
        self._waiting: str | None = None
        self._task: asyncio.Task[Any] | None = None
        # Every hook of the connection runs in this context, so a ContextVar set in
        # connection_opened is still set in mail_from, as in trio's task per connection.
        self._context = contextvars.copy_context()
        self._pausing = False  # a Pause action's task is running (see abort())
        # The task is a TLS handshake's, until its done callback (see drain()).
        self._handshaking = False
        # Before 3.12: the task every hook runs as, what it is parked on, and a hook for it
        # to carry on (see _call_as_runner).
        self._runner: asyncio.Task[None] | None = None
        self._handoff: asyncio.Future[None] | None = None
        self._suspended: tuple[Coroutine[Any, Any, Any], Any] | None = None
        self._calling = False  # inside _call: a hook's task that ends at once returns its result
        # One timer per session, moved only when a wait must end sooner than it
        # would fire: most reads push the deadline later, and then cost nothing.
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # The read a Receive still owes once its write has drained (None: a Send's write).
        self._read_after_drain: float | None = None
        # The current Receive's bound on its read (None: none, nearly always), and whether
        # reading stopped after a bounded read, until the next Receive (see buffer_updated).
        self._read_limit: int | None = None
        self._held = False

    # Protocol callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.transport is None:  # not again after start_tls()
            self.transport = self._tcp = transport
            self._tls = transport.get_extra_info("ssl_object") is not None  # (asyncio's own handshake done)
            self._server._connection_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        limit = self._read_limit
        return self._landing if limit is None else self._landing[:limit]

    def buffer_updated(self, nbytes: int) -> None:
        if self._read_limit is not None:
            # A bounded read (a PROXY header before an implicit-TLS handshake): the
            # transport reads whenever the socket is readable, so it stops here, and
            # reads again only when the next Receive says how much may come.
            self._held = True
            assert self.transport is not None
            self.transport.pause_reading()
        if self._waiting is _READ and not self._buffer:
            self._waiting = None
            # Not copied: the core copies what it is fed, and a copy here made
            # glibc give back and take again the heap's top for every large read
            # (strace: 19 times the brk calls, at 128 KiB reads).
            self._advance(self._landing[:nbytes])
            return
        self._buffer += self._landing[:nbytes]
        if self._waiting is _READ:
            self._waiting = None
            self._advance(self._take())
        elif len(self._buffer) >= HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self._waiting is _READ:
            self._waiting = None
            self._advance(b"")
        # Keep the write side open for the last replies; we close it ourselves.  Not over TLS:
        # there the transport shuts down at the peer's close_notify whatever we answer, and
        # asyncio logs a warning for every session that answers True.  (A flag, not the
        # transport's extra info: this can come after the TLS transport has let go of it.)
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._closed = True
        if self._closing:
            self._release()
        elif self._waiting is _READ:
            self._waiting = None
            self._advance(b"")
        elif self._waiting is _DRAIN:
            self._waiting = self._read_after_drain = None
            self._advance(LOST)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._waiting is _DRAIN:
            # At the loop's next turn, not here: asyncio calls this from inside its write
            # callback, which, once the buffer is empty, calls connection_lost itself if the
            # transport is closing; a session that ended here and closed it would get
            # connection_lost twice ("Exception in callback ..._call_connection_lost").
            _soon(self._drained)

    def _drained(self) -> None:
        # Unless the wait ended meanwhile (connection lost, deadline) or writing paused again.
        if self._waiting is _DRAIN and not self._writing_paused:
            self._waiting = None
            timeout, self._read_after_drain = self._read_after_drain, None
            if timeout is None:  # a Send: its write is the whole action
                self._advance(None)
                return
            result = self._read(timeout)  # a Receive: now its read
            if result is not _WAITING:
                self._advance(result)

    def _turned(self) -> None:
        if self._waiting is _TURN:  # unless the session ended meanwhile
            self._waiting = None
            self._advance(None)

    # Running the dispatcher ------------------------------------------------------------------------

    def start(self, actions: Generator[Any, Any, None], session: Session, handshake: float | None = None) -> None:
        """Run the session; with implicit TLS, once the ``handshake`` (its timeout) is done."""
        self._actions, self.session = actions, session
        if handshake is None:
            self._advance(None)
            return
        assert self.transport is not None
        self.transport.pause_reading()  # nothing is read in plaintext: the client's bytes are the TLS layer's
        self._waiting = _TASK
        self._task = self._loop.create_task(self._start_tls(handshake))
        self._task.add_done_callback(self._handshake_done)

    def _handshake_done(self, task: asyncio.Task[Any]) -> None:
        self._task = None
        self._waiting = None
        self._handshaking = False
        info = None if task.cancelled() else task.result()  # cancelled: by a shutdown (see drain())
        if info is None:  # no session, as in the other adapters: not a hook is called
            self._end()
            return
        assert self.session is not None
        self.session.tls_info = info
        self._advance(None)

    def _advance(self, result: Any) -> None:
        """Carry out the dispatcher's actions until it must wait for the client, the socket or a hook."""
        actions, transport = self._actions, self.transport
        assert actions is not None
        assert transport is not None
        while True:
            try:
                action = actions.send(result)
            except StopIteration:
                self._end()
                return
            except Exception:
                log.exception("session with %s failed", self.session.peer if self.session else None)
                self._end()
                return
            kind = type(action)
            if kind is Receive:
                self._idle = action.idle
                self._read_limit = action.limit
                if self._held:  # after a bounded read: the next one may come now
                    self._held = False
                    transport.resume_reading()
                if action.send:  # the replies owed so far go out first
                    result = self._write(action.send, then_read=action.timeout)
                    if result is _WAITING:
                        return
                    if result is LOST:
                        continue
                result = self._read(action.timeout)
                if result is _WAITING:
                    return
            elif kind is Send:
                result = self._write(action.data)
                if result is _WAITING:
                    return
                if len(action.data) > FLUSH_AT and result is None:
                    # A piece of the replies to a long pipelined burst (the dispatcher
                    # writes them every FLUSH_AT): let the other connections have the
                    # loop before the next piece, as trio's send_all does at every write.
                    # Otherwise a 96 KiB read of NOOPs is some 55 ms in one callback.
                    self._waiting = _TURN
                    _soon(self._turned)
                    return
            elif kind is CallHook:
                result = self._call(action)
                if result is _WAITING:
                    return
            elif kind is StartTls:
                self._run(self._start_tls(action.timeout))
                return
            elif kind is Pause:
                self._pausing = True
                self._run(self._pause(action.seconds))
                return
            elif kind is Close:
                self._close()
                result = None
            else:  # pragma: no cover - the dispatcher has no other action
                raise AssertionError(action)

    def _write(self, data: bytes, then_read: float | None = None) -> Any:
        """Write ``data``: None, LOST, or ``_WAITING`` for the transport to drain
        (``resume_writing`` carries on, with the read ``then_read`` if a Receive owes one)."""
        assert self.transport is not None
        if self.transport.is_closing():
            return LOST
        if then_read is None or not self._outbox.put(self, data):
            # Nothing to read after it, or a reply of ours already waits: out now, behind what is pending.
            self._outbox.flush()
            self.transport.write(data)
        # Paused by what was written before (a put reply is written later): a client that
        # does not read its replies makes us hold the transport's limit and one reply more.
        if self._writing_paused:  # a client that does not read its replies is as gone as one that left
            self._read_after_drain = then_read
            self._wait(_DRAIN, self._server.config.command_timeout)
            return _WAITING
        return None

    def write_now(self, data: bytes) -> None:
        """The outbox's write (see ``adapters._outbox``)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():  # gone meanwhile: its session hears when it reads
            transport.write(data)

    def _read(self, timeout: float) -> Any:
        """What a read gets at once, or ``_WAITING`` (``buffer_updated`` carries on)."""
        if self._aborting or (self._idle and self._server.draining):
            return SHUTDOWN
        if self._buffer:
            return self._take()
        if self._eof:
            return b""
        self._wait(_READ, timeout)
        return _WAITING

    def _take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def _call(self, action: CallHook) -> Any:
        """Run a hook as a task: its result, or ``_WAITING`` (the task carries on).

        As a task, because a hook may do what any coroutine does:
        ``asyncio.timeout()`` and (from 3.12) ``wait_for()`` need a current task,
        and so does sniffio, which httpx and anyio ask.  A hook that never waits
        is done within this callback all the same: from 3.12 in a task of its own
        started eagerly, before 3.12 as the connection's runner (see
        :meth:`_call_as_runner`).  Either way the task that carries on a hook
        that waited goes on with the session itself.
        """
        try:
            coroutine = getattr(self._server.handler, action.name)(*action.args)
        except Exception as exc:
            return _HookFailed(exc)
        if type(coroutine) is not types.CoroutineType:
            coroutine = _awaited(coroutine)
        if not _EAGER_TASKS:
            return self._call_as_runner(coroutine)
        self._calling = True
        try:
            task = self._hook_task(self._hook_then_advance(coroutine))
        finally:
            self._calling = False
        if task.done():  # (from 3.12: it ran to its end at once)
            return task.result()
        self._waiting = _TASK
        self._task = task
        return _WAITING

    async def _hook_then_advance(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """The hook, then the session after it, in the hook's task.

        Carrying on here rather than in a done callback saves a turn of the loop.
        """
        result = await _hook_result(coroutine)
        if self._calling:  # done at once, inside _call (an eager start): _call takes the result
            return result
        self._task = None
        self._waiting = None
        if not self._ended:  # meanwhile (see end())
            self._advance(result)
        return None

    def _call_as_runner(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """(Before 3.12.)  Step the hook at once as the connection's runner task.

        3.10 and 3.11 have no eager tasks, and a task per hook costs a turn of the
        loop each (a tenth of a kept-alive message).  So every hook runs as one
        task per connection, the runner: stepped here, with the runner made the
        current task for the step (asyncio's own ``_enter_task``, private but
        fixed in these versions), and carried on by the runner itself if it
        waits.  A timeout it set then cancels the runner, which passes the
        cancellation down to the hook, as a task of its own would.
        """
        runner = self._runner
        if runner is None:
            runner = self._runner = _task_in(self._loop, self._run_hooks(), self._context)
        current = asyncio.current_task()
        inside = current is runner  # the runner went on with the session
        pending = None  # (another task is running, a shutdown say: the runner starts the hook)
        try:
            if inside:
                pending = coroutine.send(None)
            elif current is None:  # a protocol callback, as nearly always
                asyncio.tasks._enter_task(self._loop, runner)
                try:
                    pending = self._context.run(coroutine.send, None)
                finally:
                    asyncio.tasks._leave_task(self._loop, runner)
        except StopIteration as done:
            return done.value
        except Exception as exc:
            return _HookFailed(exc)
        self._suspended = (coroutine, pending)
        self._waiting = _TASK
        self._task = runner
        if not inside and self._handoff is not None and not self._handoff.done():
            self._handoff.set_result(None)
        return _WAITING

    async def _run_hooks(self) -> None:
        """The runner: carries on each hook that waited, then the session after it."""
        while not self._ended:
            if self._suspended is None:  # (a hook may have waited before the runner's first turn)
                self._handoff = self._loop.create_future()
                await self._handoff  # until a hook waits (cancelled when the session ends)
            while self._suspended is not None and not self._ended:
                coroutine, pending = self._suspended
                self._suspended = None
                result = await _hook_result(_Resumed(coroutine, pending))
                _uncancel()  # (a cancellation the hook took, or made into LOST, is over)
                self._task = None
                self._waiting = None
                if not self._ended:
                    self._advance(result)  # which may step another hook, left in _suspended

    def _hook_task(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """(From 3.12.)  A task for a hook, in the connection's context, started eagerly.

        Not from inside a hook's task that went on with the session (see
        _hook_then_advance): that is already inside the context, which cannot be
        entered twice, nor can a task start eagerly in it.  That one starts at
        the loop's next turn, after the task it was made in.
        """
        if sys.version_info >= (3, 12) and asyncio.current_task() is None:
            return asyncio.Task(coroutine, loop=self._loop, context=self._context, eager_start=True)
        return _task_in(self._loop, coroutine, self._context)

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Let a task finish ``coroutine``; its result is the current action's."""
        self._waiting = _TASK
        self._task = self._loop.create_task(coroutine)
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A TLS handshake's or a pause's task is over: the session goes on."""
        self._task = None
        self._waiting = None
        handshake, self._handshaking = self._handshaking, False
        if self._ended:  # meanwhile (see end())
            return
        if task.cancelled():  # by a shutdown: a handshake's as one that failed, a pause's as a lost client
            self._advance(None if handshake else LOST)
            return
        error = task.exception()
        if error is not None:  # pragma: no cover - neither raises (_start_tls catches what it can)
            self._end()
            raise error
        self._advance(task.result())

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            pass  # the shutdown deadline ends it sooner (abort()): the owed replies go, then the 421
        finally:
            self._pausing = False

    async def _start_tls(self, timeout: float) -> Any:
        assert self.transport is not None
        assert self._server.tls is not None  # the core offers STARTTLS only when configured for it
        self._buffer.clear()  # plaintext sent after STARTTLS is never read
        self._read_limit, self._held = None, False  # start_tls() reads for itself, then for us as ever
        if self._server.draining:  # as if drain() had come a moment later
            log.info("TLS handshake not begun: the server is shutting down")
            self._abort_transport()
            return None
        self._handshaking = True
        try:
            transport = await self._loop.start_tls(
                self.transport, self, self._server.tls, server_side=True, ssl_handshake_timeout=timeout
            )
        except Exception as exc:  # OSError, ssl.SSLError, TimeoutError: all end the connection
            log.info("TLS handshake failed: %s", exc)
            self._abort_transport()
            return None
        except asyncio.CancelledError:  # by a shutdown (see drain()): the task's done callback says what follows
            log.info("TLS handshake cut short: the server is shutting down")
            self._abort_transport()
            raise
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._reading_paused = False
        self._tls = True
        return tls_info(transport.get_extra_info("ssl_object"))

    # Time ------------------------------------------------------------------------------------------

    def _wait(self, what: str, timeout: float) -> None:
        self._waiting = what
        deadline = self._deadline = self._loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._waiting is not _READ and self._waiting is not _DRAIN:
            return  # running, or in a hook (hooks have no time limit)
        if self._loop.time() < self._deadline:  # this wait began after the timer was set
            self._timer = self._loop.call_at(self._deadline, self._expired)
            return
        what, self._waiting = self._waiting, None
        self._read_after_drain = None
        if what is _READ:
            self._advance(TIMED_OUT)
        else:
            self._abort_transport()  # its connection_lost comes later; the write has failed now
            self._advance(LOST)

    # Ending ----------------------------------------------------------------------------------------

    def drain(self) -> None:
        """A graceful shutdown began: an idle read in progress gets SHUTDOWN now (later ones at once),
        and a TLS handshake in progress ends as one that failed.

        Mid-handshake no SMTP can be spoken, so nothing is lost by closing it, and
        a client that opened port 465 and says nothing (a scanner) would hold the
        shutdown for its whole grace period.  The cancelled task aborts the
        transport (see ``_start_tls``); a session after a PROXY header or STARTTLS
        then hears ``None``, as for a failed handshake (see ``_task_done``)."""
        if self._handshaking and self._task is not None:
            self._task.cancel()
        elif self._waiting is _READ and self._idle:
            self._waiting = None
            self._advance(SHUTDOWN)

    def abort(self) -> None:
        """The shutdown deadline passed: the next (or current) read gets SHUTDOWN."""
        self._aborting = True
        if self._pausing and self._task is not None:
            self._task.cancel()
        elif self._waiting is _READ:
            self._waiting = None
            self._advance(SHUTDOWN)

    def cancel(self) -> None:
        """Still running after the deadline and the 421: stop what it waits for (a hook, most
        likely), and let the session end as if the client had left (see ``_task_done``)."""
        if self._task is not None:
            self._task.cancel()
        elif self._waiting is not None:  # a write that does not drain, say
            self._waiting = self._read_after_drain = None
            self._advance(LOST)
        elif self._closing:  # over, its last replies unread: the same
            self._close_now()
        else:
            self._end()

    def end(self) -> None:
        """Still running a second after :meth:`cancel`: stuck in its last hooks too; just end."""
        if self._task is not None:
            self._task.cancel()
        self._end()
        self._close_now()

    def _end(self) -> None:
        self._ended = True
        if self._actions is not None:
            self._actions.close()
        if self._runner is not None:
            self._runner.cancel()  # parked, or about to park: it has nothing more to carry on
        self._waiting = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close()
        self._release()

    # Closing ---------------------------------------------------------------------------------------

    def _close(self) -> None:
        """Close the connection once its last bytes have left; until then it still counts.

        asyncio's close() writes what is left, then closes; over TLS it then waits
        for the client's close_notify too, for ``ssl_shutdown_timeout`` (30 s) on
        Python 3.11 and for ever on 3.10.  A client that never sent one held its
        socket that long after its session had stopped counting: a flood of them
        ran the process out of descriptors.  So a TLS connection is aborted as soon
        as its last bytes, our close_notify among them, are in the kernel (which
        still delivers them), as trio, gevent and the blocking server close theirs
        at once.  A client that does not read them has the command timeout, as it
        has for any reply, and counts against ``max_connections`` meanwhile.
        """
        if self._closing:
            return
        self._closing = True
        transport = self.transport
        assert transport is not None
        self._outbox.flush()  # its last replies first
        # Once only: a second close() makes asyncio's TLS transport drop its link to the TLS
        # layer, and whatever asks it something afterwards fails.
        if not transport.is_closing():
            transport.close()  # over TLS, this writes our close_notify
        self._close_deadline = self._loop.time() + self._server.config.command_timeout
        self._closed_yet()

    def _closed_yet(self) -> None:
        """Abort the connection once its last bytes have left (TLS) or its time is up, or
        look again in a moment; release it once its socket is closed.

        A moment, polled: asyncio tells a protocol that its transport's buffer has
        drained only after it went over the high-water mark, and a TLS transport
        on 3.11 does not count what waits in the TCP transport beneath it."""
        self._close_timer = None
        if self._closed:
            pass
        elif self._unsent() == 0 and not self._tls:
            self._closed = True  # a plain transport's close() closes at once with nothing left to write
        elif self._unsent() == 0 or self._loop.time() >= self._close_deadline:
            self._abort_transport()
        else:
            self._close_timer = self._loop.call_later(CLOSE_POLL, self._closed_yet)
            return
        self._release()

    def _unsent(self) -> int:
        """Octets written that the kernel has not taken yet."""
        assert self._tcp is not None
        try:
            return self._tcp.get_write_buffer_size()
        except AttributeError:  # 3.10's TLS transport once its TCP transport is gone: nothing is left
            return 0

    def _close_now(self) -> None:
        """Close the socket now, whatever is still unsent."""
        self._abort_transport()
        self._release()

    def _abort_transport(self) -> None:
        # (asyncio closes an aborted socket at its next turn: as good as closed now.)
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.abort()

    def _release(self) -> None:
        """Stop counting the connection once both its session and its socket are over."""
        if self._ended and self._closed and not self.done.done():
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
            self.done.set_result(None)
            self._server._connection_ended(self)


if sys.version_info >= (3, 11):

    def _task_in(
        loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, Any], context: contextvars.Context
    ) -> asyncio.Task[Any]:
        """A task that runs ``coroutine`` in ``context``, from the loop's next turn."""
        return loop.create_task(coroutine, context=context)

else:

    def _task_in(
        loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, Any], context: contextvars.Context
    ) -> asyncio.Task[Any]:
        # 3.10's create_task takes no context: made inside it, the task runs in a copy of it,
        # so a ContextVar set in the task is not seen outside.  (Called from a callback, where
        # the context is not entered.)
        return context.run(loop.create_task, coroutine)


def _soon(callback: Callable[[], None]) -> None:
    asyncio.get_running_loop().call_soon(callback)


#: What ``_Connection._call`` returns for a hook that went on in a task.
_WAITING = object()


class SMTPServer:
    """An asyncio SMTP/LMTP server for an :class:`~adapters.AsyncHandler`.

    ``async with SMTPServer(handler, config, host="127.0.0.1", port=0) as server``
    listens on TCP (``"::1"`` for IPv6) or, with ``unix_path=``, on a Unix
    socket; ``server.port`` is the real port.  ``tls=`` (an ``ssl.SSLContext``) or
    ``certfile=``/``keyfile=`` enable STARTTLS or implicit TLS, as ``config`` says.
    Leaving the block is a graceful :meth:`shutdown`.
    """

    def __init__(
        self,
        handler: AsyncHandler,
        config: ServerConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 25,
        unix_path: str | None = None,
        tls: ssl.SSLContext | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        max_connections: int = 100,
        shutdown_timeout: float = 30.0,
    ) -> None:
        check_handler(handler, "asyncio")
        self.handler = handler
        self.config = config or ServerConfig()
        self.tls = server_context(tls, certfile, keyfile, self.config)
        self.max_connections = max_connections
        self.shutdown_timeout = shutdown_timeout
        self._host, self._port, self._unix_path = host, port, unix_path
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        #: A graceful shutdown has begun: idle sessions are told 421 at once.
        self.draining = False
        #: Where every connection's reads land: one buffer for all of them, since
        #: the loop calls get_buffer(), reads, then buffer_updated(), whose session
        #: has the core copy the bytes (or keeps them in its own buffer) before
        #: anything else runs.  That is 96 KiB less per connection, and none to
        #: allocate and clear for each.
        self.landing = memoryview(bytearray(LANDING_SIZE))
        #: Every connection's replies, written together once a turn of the loop.
        self.outbox = Outbox(_soon)

    async def start(self) -> None:
        # No ssl= for implicit TLS where the connection can do its own handshake
        # (OWN_HANDSHAKE): asyncio would make the connection only after the handshake,
        # and a flood of clients that never finish one would not count against
        # max_connections.
        loop = asyncio.get_running_loop()
        implicit = self.tls if handshake_first(self.config) and not OWN_HANDSHAKE else None
        timeout = self.config.tls_handshake_timeout if implicit else None
        if self._unix_path is not None:
            if os.path.exists(self._unix_path):
                os.unlink(self._unix_path)
            self._server = await loop.create_unix_server(
                lambda: _Connection(self), self._unix_path, ssl=implicit, ssl_handshake_timeout=timeout
            )
        else:
            self._server = await loop.create_server(
                lambda: _Connection(self), self._host, self._port, ssl=implicit, ssl_handshake_timeout=timeout
            )

    @property
    def address(self) -> Any:
        """Where the server listens: ``(host, port, ...)`` with the real port, or the Unix path."""
        assert self._server is not None, "start() the server first"
        return self._server.sockets[0].getsockname()

    @property
    def port(self) -> int:
        return int(self.address[1])

    @property
    def connections(self) -> int:
        return len(self._connections)

    def _connection_made(self, connection: _Connection) -> None:
        transport = connection.transport
        assert transport is not None
        if len(self._connections) >= self.max_connections or self._server is None or not self._server.is_serving():
            transport.write(refusal(self.config))
            if connection._tls:  # (asyncio did the handshake, see OWN_HANDSHAKE) do not wait for close_notify
                transport.abort()
            else:
                transport.close()
            return
        self._connections.add(connection)
        session = Session(peer=transport.get_extra_info("peername"), local=transport.get_extra_info("sockname"))
        # Per connection, as every adapter does: a hook the handler gains later is called from then on.
        dispatcher = Dispatcher(
            self.config, session, transcript=wants_transcript(self.handler), unused=unused_hooks(self.handler)
        )
        if connection._tls:  # asyncio did the handshake (see OWN_HANDSHAKE)
            session.tls_info = tls_info(transport.get_extra_info("ssl_object"))
        handshake = self.config.tls_handshake_timeout if handshake_first(self.config) and not connection._tls else None
        connection.start(dispatcher.actions(), session, handshake)

    def _connection_ended(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            await self.shutdown()
            raise

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting, 421 to the idle sessions now, let the others finish their transactions
        for up to ``timeout`` seconds, then 421 and close the rest."""
        timeout = self.shutdown_timeout if timeout is None else timeout
        if self._server is not None:
            self._server.close()
        if self._unix_path is not None and os.path.exists(self._unix_path):
            os.unlink(self._unix_path)
        self.draining = True
        for connection in list(self._connections):
            connection.drain()
        if self._connections:
            await asyncio.wait([connection.done for connection in self._connections], timeout=timeout)
        for connection in list(self._connections):
            connection.abort()
        if self._connections:
            await asyncio.wait([connection.done for connection in self._connections], timeout=1.0)
        for connection in list(self._connections):  # stuck in a hook: cancel it
            connection.cancel()
        if self._connections:  # a second for their message_aborted and connection_closed hooks
            await asyncio.wait([connection.done for connection in self._connections], timeout=1.0)
        for connection in list(self._connections):
            connection.end()

    async def __aenter__(self) -> SMTPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()


async def serve(handler: AsyncHandler, config: ServerConfig | None = None, **options: Any) -> SMTPServer:
    """Start an :class:`SMTPServer` (like ``asyncio.start_server``) and return it."""
    server = SMTPServer(handler, config, **options)
    await server.start()
    return server
