"""The outbox: replies that wait for the event loop's next turn, then go out together.

On one host (a local MTA, an LMTP client, a load generator) every write to a
peer that is waiting for it wakes that peer, and the writer's system call does
the waking.  The adapters whose sessions share a thread (asyncio, trio, gevent)
put the replies that precede a read here instead of writing them, and their
loop writes what a turn put back to back at the start of the next: the first
write wakes the peer and the rest find it awake.  Redis writes its replies the
same way, just before its event loop sleeps.  A reply waits at most for the
rest of the turn it was made in.

Measured with Postfix's smtp-source (20 sessions, 1 KiB messages, five runs
interleaved with aiosmtpd's), a connection per message / kept alive, as ratios
to aiosmtpd: asyncio 2.78x -> 3.12x / 3.99x -> 4.44x, trio 1.65x -> 1.78x /
2.21x -> 2.72x, gevent 2.08x -> 2.44x / 2.76x -> 3.74x.  What the servers save
is mostly system time: gevent's went from 142 to 100 µs a message with a
connection each.

What keeps each connection's bytes in order is the adapter's part: anything a
session writes itself (a reply with no read after it, a shutdown's 421,
STARTTLS's 220, what is left at a close) flushes the outbox first.  What a
socket does not take at once is the adapter's to write as the socket drains,
not at its session's next write: the session is reading, and a client that
pipelined waits for the rest of its replies before it sends more.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

__all__ = ["SOCKETS_ARE_FILES", "Outbox", "Writer", "write_at_once"]

#: ``os.write()`` writes to a socket where a socket is a file descriptor (not on Windows).
SOCKETS_ARE_FILES = os.name == "posix"


class Writer(Protocol):
    def write_now(self, data: bytes) -> None:
        """Write ``data`` without waiting (what cannot go now, the writer writes as the socket drains)."""


class Outbox:
    """Writes put during a turn of the loop, written in order when ``schedule``'s callback runs.

    ``schedule(flush)`` must have the loop call ``flush`` once, soon: asyncio's
    ``call_soon``, gevent's ``loop.run_callback``, or waking a trio task.
    """

    def __init__(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        self._schedule = schedule
        self._pending: list[tuple[Writer, bytes]] = []
        self._writers: set[Writer] = set()  # those with a write in _pending

    @property
    def empty(self) -> bool:
        return not self._pending

    def put(self, writer: Writer, data: bytes) -> bool:
        """Put ``data`` to be written soon; False, and nothing put, if ``writer`` has a write waiting.

        A session may outrun its loop (gevent's reads that find data waiting
        never yield to the hub): its next write is then its own to make, with
        its deadline, after a :meth:`flush`.  So the outbox holds at most one
        write per connection, and a client that never reads cannot make it grow.
        """
        if writer in self._writers:
            return False
        if not self._pending:
            self._schedule(self.flush)
        self._pending.append((writer, data))
        self._writers.add(writer)
        return True

    def flush(self) -> None:
        """Write everything pending now (also before anything that must come after it)."""
        pending, self._pending = self._pending, []
        self._writers.clear()
        for writer, data in pending:
            writer.write_now(data)


def write_at_once(fileno: int, data: bytes) -> bytes | None:
    """Write what a non-blocking socket takes of ``data`` now: the rest (``b""`` when all
    went), or None when the socket is closed or broken (its session's next read finds out).
    """
    if fileno < 0:
        return None
    try:
        written = os.write(fileno, data)
    except BlockingIOError:
        return data
    except OSError:
        return None
    return data[written:]
