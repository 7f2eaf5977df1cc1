"""One benchmark server in a process of its own: ``python -m benchmarks._serve NAME``.

The end-to-end benchmarks run every server in a separate process, so that the
load generator never shares its GIL.  Each server listens on 127.0.0.1 on an
ephemeral port, prints that port on its first line of output, and discards
every message as it streams in (the hooks that do nothing are the base
classes' own).  It exits when its standard input closes -- the parent closing
the pipe, or the parent dying -- so no server outlives the suite.

NAME is one of :data:`SERVERS`: our four adapters, aiosmtpd as the peer, and
``bare-asyncio``, the floor: an asyncio protocol that answers every line with a
canned reply and only looks for the end of data, with no parsing, checks or
hooks.  No real asyncio SMTP server can be faster, so its ratio to aiosmtpd is
the ceiling of what any asyncio adapter can show on this machine.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING

from smtpcore import ServerConfig

if TYPE_CHECKING:
    from adapters import AsyncHandler, Handler

SERVERS = ("asyncio", "trio", "gevent", "blocking", "aiosmtpd", "bare-asyncio")

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


def serve_bare_asyncio() -> None:
    import asyncio

    hello = b"250-bench.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n"

    class Bare(asyncio.Protocol):
        """Canned replies; the end of data is the only thing searched for."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.pending = b""
            self.in_data = False
            transport.write(b"220 bench.example ESMTP\r\n")

        def data_received(self, data: bytes) -> None:
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
                    out.append(hello)
                elif verb == b"DATA":
                    out.append(b"354 go ahead\r\n")
                    self.in_data = True
                    buffer = b"\r\n" + buffer  # the DATA line's CRLF starts the end marker
                elif verb == b"QUIT":
                    out.append(b"221 bye\r\n")
                    self.transport.write(b"".join(out))
                    self.transport.close()
                    return
                else:
                    out.append(b"250 ok\r\n")
            self.pending = buffer
            if out:
                self.transport.write(b"".join(out))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Bare, "127.0.0.1", 0)
        _announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)  # aiosmtpd's per-session chatter
    _exit_with_stdin()
    globals()[f"serve_{argv[0].replace('-', '_')}"]()


if __name__ == "__main__":
    main(sys.argv[1:])
