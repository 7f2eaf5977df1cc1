"""Where an end-to-end session's time goes between the layers, measured in memory.

The end-to-end cells send, with smtp-source, one command per read: EHLO, MAIL,
RCPT, DATA, 1 KiB of content (12 lines of 80 octets, no dots) and QUIT.  This
replays exactly those reads, without sockets, through each layer in turn:

1. **the floor**: :class:`benchmarks._serve.Canned`, the bare servers' whole
   protocol (canned replies and a search for the end of data);
2. **the core**: :class:`smtpcore.ServerConnection`, every event accepted;
3. **+ the dispatcher**: :class:`adapters.Dispatcher` with the suite's discarding
   handler, its hooks called as the blocking and gevent adapters call them;
4. **+ the asyncio adapter**: the protocol object of a started
   :class:`adapters.asyncio_server.SMTPServer`, fed as the event loop feeds it,
   with a transport that only counts what it is given to write.

Each is timed for a whole connection (greeting to close, one message) and for
one more message on a kept-alive session (MAIL to the end of data).  The
end-to-end figures add what no layer here pays: the kernel's loopback TCP and
the event loop, which the floors' CPU per message in the end-to-end table
measures.  So a target's budget is plain arithmetic: the wall time per message
the target allows, less the floor's, is what the layers may cost (see
docs/benchmarks.md).

Run: ``python -m benchmarks.profile_layers [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from adapters._handler import CallHook, Dispatcher, Receive, Send, Session, call_hook, unused_hooks
from adapters.asyncio_server import SMTPServer, _Connection
from smtpcore import NEED_DATA, ConnectionClosed, ServerConnection

from ._serve import CONFIG, Canned, _handlers
from .profile_server import best

#: smtp-source's 1 KiB message: a few header lines would change nothing, so 12 lines of 80 octets.
CONTENT = b"".join(b"%dX%s\r\n" % (i % 10, b"X" * 76) for i in range(12)) + b".\r\n"
#: One read per command, as smtp-source (which does not pipeline) sends them.
HELLO = [b"EHLO client.example\r\n"]
MESSAGE = [b"MAIL FROM:<sender@example.com>\r\n", b"RCPT TO:<user@example.org>\r\n", b"DATA\r\n", CONTENT]
QUIT = [b"QUIT\r\n"]
SESSION = HELLO + MESSAGE + QUIT


def floor_session(reads: list[bytes]) -> int:
    canned = Canned()
    out = len(Canned.GREETING)
    for data in reads:
        replies, _ = canned.feed(data)
        out += len(replies)
    return out


def core_session(reads: list[bytes]) -> int:
    conn = ServerConnection(CONFIG)
    pending = iter(reads)
    out = 0
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            out += len(conn.data_to_send())
            conn.receive_data(next(pending, b""))
        elif type(event) is ConnectionClosed:
            return out + len(conn.data_to_send())  # QUIT's reply
        elif conn.reply_due:
            conn.accept()


def dispatcher_sessions() -> Callable[[list[bytes]], int]:
    """A session through the dispatcher, its hooks called as the blocking adapter calls them."""
    handler = _handlers()[0]
    unused = unused_hooks(handler)

    def session(reads: list[bytes]) -> int:
        dispatcher = Dispatcher(CONFIG, Session(peer=("127.0.0.1", 1025), local=("127.0.0.1", 25)), unused=unused)
        actions = dispatcher.actions()
        pending = iter(reads)
        out = 0
        result: Any = None
        while True:
            try:
                action = actions.send(result)
            except StopIteration:
                return out
            result = None
            if isinstance(action, Receive):
                out += len(action.send)
                result = next(pending, b"")
            elif isinstance(action, Send):
                out += len(action.data)
            elif isinstance(action, CallHook):
                result = call_hook(handler, action)

    return session


class CountingTransport(asyncio.Transport):
    """A transport that takes every write at once and only counts it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0  # every write is taken at once

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1025), "sockname": ("127.0.0.1", 25)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def asyncio_sessions() -> tuple[Callable[[list[bytes]], Awaitable[int]], SMTPServer]:
    """A session through the asyncio adapter's protocol object, fed as the event loop feeds it.

    Each read is fed from a callback, as the loop feeds a protocol (no task is
    current), once the previous one's hooks are done, as with a client that
    waits for each reply.  The handler's hooks never wait, so each is done within
    the callback; the loop's turns between reads are timed too.
    """
    server = SMTPServer(_handlers()[1], CONFIG, host="127.0.0.1", port=0)

    def feed(protocol: _Connection, data: bytes) -> None:
        size = len(data)
        protocol.get_buffer(size)[:size] = data
        protocol.buffer_updated(size)

    async def settled(protocol: _Connection) -> None:
        await asyncio.sleep(0)  # the callback's turn
        while protocol._task is not None:  # a hook that waited (none here) or a pause
            await asyncio.sleep(0)

    async def session(reads: list[bytes]) -> int:
        loop = asyncio.get_running_loop()
        protocol = _Connection(server)
        transport = CountingTransport()
        loop.call_soon(protocol.connection_made, transport)
        for data in reads:
            await settled(protocol)
            loop.call_soon(feed, protocol, data)
        await settled(protocol)
        return transport.written

    return session, server


async def best_async(func: Callable[[], Awaitable[object]], number: int, repeat: int) -> float:
    """:func:`best` for a coroutine function, run on the current loop."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            await func()
        times.append(time.perf_counter() - start)
    return min(times) / number


def connection_and_message(session: Callable[[list[bytes]], int], number: int, repeat: int) -> tuple[float, float]:
    """(seconds per connection, seconds per kept-alive message): a message more, less the session."""
    one = best(lambda: session(SESSION), number, repeat)
    two = best(lambda: session(HELLO + MESSAGE + MESSAGE + QUIT), number, repeat)
    return one, two - one


def layers(number: int, repeat: int) -> list[tuple[str, float, float]]:
    """(layer, seconds per connection, seconds per kept-alive message), built up."""
    rows = [
        (name, *connection_and_message(session, number, repeat))
        for name, session in (
            ("floor (Canned, the bare servers)", floor_session),
            ("core (ServerConnection)", core_session),
            ("core + dispatcher (blocking handler)", dispatcher_sessions()),
        )
    ]

    async def through_asyncio() -> tuple[float, float]:
        session, server = asyncio_sessions()
        async with server:  # listening, as in production, though no socket is used
            one = await best_async(lambda: session(SESSION), number, repeat)
            two = await best_async(lambda: session(HELLO + MESSAGE + MESSAGE + QUIT), number, repeat)
            return one, two - one

    rows.append(("core + dispatcher + asyncio adapter", *asyncio.run(through_asyncio())))
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke test)")
    args = parser.parse_args(argv)
    number, repeat = (50, 2) if args.quick else (2000, 7)
    rows = layers(number, repeat)
    print("\nthe end-to-end 1 KiB session, in memory (us; minimum of", repeat, "runs)")
    print(f"  {'layer':<40} {'a connection':>14} {'a kept-alive message':>22}")
    for name, connection, message in rows:
        print(f"  {name:<40} {connection * 1e6:>14.2f} {message * 1e6:>22.2f}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
