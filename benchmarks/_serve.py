"""One benchmark server in a process of its own: ``python -m benchmarks._serve NAME``.

The end-to-end benchmarks run every server in a separate process, so that the
load generator never shares its GIL.  Each server listens on 127.0.0.1 on an
ephemeral port, prints that port on its first line of output, and discards
every message as it streams in (the hooks that do nothing are the base
classes' own).  It exits when its standard input closes -- the parent closing
the pipe, or the parent dying -- so no server outlives the suite.

NAME is one of :data:`SERVERS`: our four adapters, aiosmtpd as the peer, and
the floors, one per concurrency model: ``bare-asyncio``, ``bare-trio``,
``bare-gevent`` and ``bare-threads`` (a pool of threads, a connection each, on plain
sockets).  A floor answers every line with a canned reply and only looks for
the end of data (:class:`Canned`), with no parsing, checks, hooks or timeouts.
No real SMTP server on the same model can be faster, so a floor's ratio to
aiosmtpd is the ceiling of what that adapter can show on this machine.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import threading
from typing import TYPE_CHECKING

from smtpcore import ServerConfig

if TYPE_CHECKING:
    from adapters import AsyncHandler, Handler

#: Each of our adapters, and its floor: the same concurrency model with no SMTP work at all.
FLOOR_OF = {"asyncio": "bare-asyncio", "trio": "bare-trio", "gevent": "bare-gevent", "blocking": "bare-threads"}
SERVERS = (*FLOOR_OF, "aiosmtpd", *FLOOR_OF.values())

#: How many threads bare-threads keeps: more than the suite's concurrent sessions.
BARE_THREADS = 32
#: No size limit (a 100 MiB message must pass); every other setting is the default.
CONFIG = ServerConfig(hostname="bench.example", max_message_size=0)


def _handlers() -> tuple[Handler, AsyncHandler]:
    """Our discarding handlers, blocking and async.

    They take every piece of content and the end of every message, as aiosmtpd's
    ``handle_DATA`` below does: hooks a handler leaves out are not called at all,
    and a benchmark of a handler that wants nothing would flatter us.
    """
    from adapters import AsyncHandler, Handler

    class Discard(Handler):
        def data_chunk(self, session: object, data: bytes) -> None:
            return None

        def message_complete(self, session: object, envelope: object) -> None:
            return None

    class AsyncDiscard(AsyncHandler):
        async def data_chunk(self, session: object, data: bytes) -> None:
            return None

        async def message_complete(self, session: object, envelope: object) -> None:
            return None

    return Discard(), AsyncDiscard()


def _announce(port: int) -> None:
    print(port, flush=True)


def _exit_with_stdin() -> None:
    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def serve_asyncio() -> None:
    import asyncio

    from adapters.asyncio_server import SMTPServer

    async def main() -> None:
        async with SMTPServer(_handlers()[1], CONFIG, port=0) as server:
            _announce(server.port)
            await server.serve_forever()

    asyncio.run(main())


def serve_trio() -> None:
    import trio

    from adapters.trio_server import SMTPServer

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(SMTPServer(_handlers()[1], CONFIG, port=0).serve)
            _announce(server.port)

    trio.run(main)


def serve_gevent() -> None:
    from adapters.gevent_server import SMTPServer

    server = SMTPServer(_handlers()[0], CONFIG, port=0)
    server.start()
    _announce(server.port)
    server.serve_forever()


def serve_blocking() -> None:
    from adapters.blocking_server import SMTPServer

    server = SMTPServer(_handlers()[0], CONFIG, port=0)
    server.start()
    _announce(server.port)
    server.serve_forever()


def serve_aiosmtpd() -> None:
    import asyncio

    from aiosmtpd.smtp import SMTP

    class Discard:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 2.0.0 OK"

    handler = Discard()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            # aiosmtpd's defaults would refuse a 100 MiB message (data_size_limit) and a kept-alive
            # session's 21st MAIL (command_call_limit); lift both, as a benchmark must.
            lambda: SMTP(handler, hostname="bench.example", data_size_limit=None, command_call_limit=10**9),
            "127.0.0.1",
            0,
        )
        _announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


class Canned:
    """The floors' whole protocol: canned replies, and a search for the end of data.

    ``feed(data)`` returns the replies owed for what has arrived and whether the
    client said QUIT.  No parsing, no checks, no hooks: no SMTP server on the
    same concurrency model can answer the same traffic with less work.
    """

    GREETING = b"220 bench.example ESMTP\r\n"
    HELLO = b"250-bench.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n"

    def __init__(self) -> None:
        self.pending = b""
        self.in_data = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        buffer = self.pending + data
        out = []
        while True:
            if self.in_data:
                end = buffer.find(b"\r\n.\r\n")
                if end < 0:
                    buffer = buffer[-4:]  # all that could start the end marker
                    break
                buffer = buffer[end + 5 :]
                self.in_data = False
                out.append(b"250 2.0.0 ok\r\n")
                continue
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                break
            verb = buffer[:4].upper()
            buffer = buffer[line_end + 2 :]
            if verb == b"EHLO":
                out.append(self.HELLO)
            elif verb == b"DATA":
                out.append(b"354 go ahead\r\n")
                self.in_data = True
                buffer = b"\r\n" + buffer  # the DATA line's CRLF starts the end marker
            elif verb == b"QUIT":
                out.append(b"221 bye\r\n")
                return b"".join(out), True
            else:
                out.append(b"250 ok\r\n")
        self.pending = buffer
        return b"".join(out), False


def serve_bare_asyncio() -> None:
    import asyncio

    from adapters.asyncio_server import LANDING_SIZE

    class Bare(asyncio.BufferedProtocol):
        """A BufferedProtocol with a landing buffer of our adapter's size (LANDING_SIZE, 96 KiB).

        A plain Protocol gets a new 256 KiB bytes object from every read, which
        glibc serves with an mmap and a munmap each time in some processes and
        from the heap in others (its mmap threshold adapts, or not, with the
        process's history): the floor measured 50 or 120 msg/s for 10 MiB from
        one run to the next.  This one does not depend on that.
        """

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.canned = Canned()
            self.landing = memoryview(bytearray(LANDING_SIZE))
            transport.write(Canned.GREETING)

        def get_buffer(self, sizehint: int) -> memoryview:
            return self.landing

        def buffer_updated(self, nbytes: int) -> None:
            out, quit = self.canned.feed(bytes(self.landing[:nbytes]))
            if out:
                self.transport.write(out)
            if quit:
                self.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Bare, "127.0.0.1", 0)
        _announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def _bare_session(sock: socket.socket) -> None:
    """One floor session on a blocking (or gevent) socket: read, answer, until QUIT or EOF."""
    canned = Canned()
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(Canned.GREETING)
        while data := sock.recv(65536):
            out, quit = canned.feed(data)
            if out:
                sock.sendall(out)
            if quit:
                return


def serve_bare_threads() -> None:
    """Threads that accept for themselves, a session each at a time, as the blocking adapter's pool.

    (An acceptor thread that starts a thread per connection answered half as
    many 1 KiB messages sent with a connection each.)  Enough of them for the
    suite's 20 sessions; the adapter grows its pool as it needs to.  On one
    CPU, as the adapter's workers are (``adapters/_cpu.py``).
    """
    from adapters._cpu import cpu_for_workers, keep_on

    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    _announce(listener.getsockname()[1])
    cpu = cpu_for_workers()

    def work() -> None:
        keep_on(cpu)
        while True:
            sock, _ = listener.accept()
            _bare_session(sock)

    for _ in range(BARE_THREADS):
        threading.Thread(target=work, daemon=True).start()
    threading.Event().wait()


def serve_bare_gevent() -> None:
    import gevent.server

    server = gevent.server.StreamServer(("127.0.0.1", 0), lambda sock, address: _bare_session(sock))
    server.start()
    _announce(server.server_port)
    server.serve_forever()


def serve_bare_trio() -> None:
    import trio

    async def session(stream: trio.SocketStream) -> None:
        canned = Canned()
        async with stream:
            await stream.send_all(Canned.GREETING)
            while data := await stream.receive_some(65536):
                out, quit = canned.feed(data)
                if out:
                    await stream.send_all(out)
                if quit:
                    return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, session, 0, host="127.0.0.1"))
            _announce(listeners[0].socket.getsockname()[1])

    trio.run(main)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)  # aiosmtpd's per-session chatter
    _exit_with_stdin()
    globals()[f"serve_{argv[0].replace('-', '_')}"]()


if __name__ == "__main__":
    main(sys.argv[1:])
