"""One benchmark server in a process of its own: ``python -m benchmarks._serve NAME``.

The end-to-end benchmarks run every server in a separate process, so that the
load generator never shares its GIL.  Each server listens on 127.0.0.1 on an
ephemeral port, prints that port on its first line of output, and discards
every message as it streams in (the hooks that do nothing are the base
classes' own).  It exits when its standard input closes -- the parent closing
the pipe, or the parent dying -- so no server outlives the suite.

NAME is one of :data:`SERVERS`: our four adapters, and aiosmtpd as the peer.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from smtpcore import ServerConfig

SERVERS = ("asyncio", "trio", "gevent", "blocking", "aiosmtpd")

#: No size limit (a 100 MiB message must pass); every other setting is the default.
CONFIG = ServerConfig(hostname="bench.example", max_message_size=0)


def _announce(port: int) -> None:
    print(port, flush=True)


def _exit_with_stdin() -> None:
    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def serve_asyncio() -> None:
    import asyncio

    from adapters import AsyncHandler
    from adapters.asyncio_server import SMTPServer

    async def main() -> None:
        async with SMTPServer(AsyncHandler(), CONFIG, port=0) as server:
            _announce(server.port)
            await server.serve_forever()

    asyncio.run(main())


def serve_trio() -> None:
    import trio

    from adapters import AsyncHandler
    from adapters.trio_server import SMTPServer

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(SMTPServer(AsyncHandler(), CONFIG, port=0).serve)
            _announce(server.port)

    trio.run(main)


def serve_gevent() -> None:
    from adapters import Handler
    from adapters.gevent_server import SMTPServer

    server = SMTPServer(Handler(), CONFIG, port=0)
    server.start()
    _announce(server.port)
    server.serve_forever()


def serve_blocking() -> None:
    from adapters import Handler
    from adapters.blocking_server import SMTPServer

    server = SMTPServer(Handler(), CONFIG, port=0)
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


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)  # aiosmtpd's per-session chatter
    _exit_with_stdin()
    globals()[f"serve_{argv[0]}"]()


if __name__ == "__main__":
    main(sys.argv[1:])
