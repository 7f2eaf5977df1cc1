"""A multi-process SMTP load generator built on smtpcore's own client, for the end-to-end benchmarks.

Used when Postfix's ``smtp-source`` is not installed (and for the peak-memory
figure, which needs one message of a chosen size).  Every session is a
:class:`smtpcore.ClientConnection`, the client state machine our client
adapters drive: it writes the commands and the dot-stuffed content, reads and
pairs every reply, and pipelines MAIL, RCPT and DATA in one write when the
server offers PIPELINING (RFC 2920), one command at a time when it does not
(aiosmtpd does not).  Around it, the generator is built to cost the server
under test as little CPU as possible:

* each worker is a separate process (the server has its own), so no two share a GIL;
* a worker drives all its sessions from one ``selectors`` loop on non-blocking
  sockets, with no framework between the loop and the socket, and writes as
  soon as it has bytes (the selector is asked only when the socket is full);
* the content goes to the machine in pieces of ``PIECE`` octets, each written
  before the next is made, so a 100 MiB message never sits whole in an output
  buffer.

A session waits for the greeting, sends EHLO, then per message the envelope
(MAIL, RCPT, DATA), the content after the 354, and counts the message on the
reply to its end.  Kept-alive sessions send their next message on the same
connection; otherwise each message has a connection of its own, ended with
QUIT.  Any reply of 400 or more, or a protocol error, fails the session (it is
counted and closed, not retried).

Run it by hand: ``python -m benchmarks.loadgen PORT --size 1024 --messages 2000 --sessions 20 [--keepalive]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import selectors
import socket
import time
from dataclasses import dataclass
from typing import Any

from smtpcore import (
    NEED_DATA,
    ClientConfig,
    ClientConnection,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Hello,
    Mail,
    MessageData,
    ProtocolError,
    Quit,
    Rcpt,
    Reply,
)

__all__ = ["LoadResult", "make_message", "run"]

HOST = "127.0.0.1"
SENDER, RECIPIENT = "sender@loadgen.example", "user@bench.example"
CONFIG = ClientConfig(local_hostname="loadgen.example")
# Events are values: one of each serves every session and message (the machine
# checks an event's syntax when it is made, and need not for each message).
HELLO, QUIT, END = Hello("loadgen.example"), Quit(), EndOfMessage()
ENVELOPE: tuple[Mail | Rcpt | Data, ...] = (Mail(SENDER), Rcpt(RECIPIENT), Data())
#: Content is handed to the client machine this many octets at a time.
PIECE = 256 * 1024
#: Whole-session bound: a server that stops answering ends the run instead of hanging it.
STALL_TIMEOUT = 60.0


def make_message(size: int) -> bytes:
    """About ``size`` octets of headers and text in 78-octet lines, none starting with a dot."""
    head = b"From: <sender@loadgen.example>\r\nTo: <user@bench.example>\r\nSubject: load\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = (line * (max(0, size - len(head)) // len(line) + 1))[: max(0, size - len(head))]
    body = body[: body.rfind(b"\r\n") + 2] if b"\r\n" in body else b""
    return head + body


@dataclass(frozen=True)
class LoadResult:
    messages: int
    errors: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class _Failed(Exception):
    """The session is over and counts as failed: refused, or broken by the server."""


class _Session:
    """One connection: its client machine, the bytes it has yet to write, where its message is."""

    __slots__ = ("conn", "content", "envelope", "out", "sock", "writing")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.conn = ClientConnection(CONFIG)
        self.out = memoryview(b"")  # written by the machine, not yet by the socket
        self.writing = False  # the selector watches for room to write
        self.envelope: list[Mail | Rcpt | Data] = []  # commands of the message not yet sent
        self.content: memoryview | None = None  # content not yet given to the machine (after the 354)


def _drive(port: int, message: bytes, messages: int, sessions: int, keepalive: bool) -> tuple[int, int, float]:
    """Send ``messages`` messages over ``sessions`` concurrent sessions; (done, errors, monotonic end)."""
    selector = selectors.DefaultSelector()
    claimed = done = errors = 0
    live: set[_Session] = set()

    def claim() -> bool:
        nonlocal claimed
        if claimed >= messages:
            return False
        claimed += 1
        return True

    def connect(s: _Session) -> None:
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        s.sock, s.conn, s.out, s.writing = sock, ClientConnection(CONFIG), memoryview(b""), False
        s.envelope, s.content = [], None
        selector.register(sock, selectors.EVENT_READ, s)
        live.add(s)

    def close(s: _Session) -> None:
        if s.sock is not None:
            selector.unregister(s.sock)
            s.sock.close()
            s.sock = None
        live.discard(s)

    def write(s: _Session) -> None:
        """Write what the machine has made; the content's next piece once the last is out."""
        assert s.sock is not None
        while True:
            if not s.out:
                if s.content is not None:
                    piece, s.content = s.content[:PIECE], s.content[PIECE:]
                    s.conn.send(MessageData(bytes(piece)))
                    if not s.content:
                        s.content = None
                        s.conn.send(END)
                s.out = memoryview(s.conn.data_to_send())
                if not s.out:
                    break
            try:
                s.out = s.out[s.sock.send(s.out) :]
            except (BlockingIOError, InterruptedError):
                break
            if s.out:
                break
        wants = bool(s.out) or s.content is not None
        if wants != s.writing:
            s.writing = wants
            selector.modify(s.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if wants else 0), s)

    def start_message(s: _Session) -> None:
        assert s.conn.capabilities is not None
        # Pipelining is the server's to offer: without it, one command per reply.
        count = len(ENVELOPE) if s.conn.capabilities.has("PIPELINING") else 1
        for command in ENVELOPE[:count]:
            s.conn.send(command)
        s.envelope = list(ENVELOPE[count:])

    def next_step(s: _Session) -> None:
        """Nothing is outstanding: send what comes next."""
        conn = s.conn
        if conn.capabilities is None:  # the greeting is in
            conn.send(HELLO)
        elif s.envelope:  # the rest of a message's envelope, without pipelining
            conn.send(s.envelope.pop(0))
        elif isinstance(conn.last_command, Hello) and (not keepalive or claim()):
            start_message(s)  # a connection per message claimed its message when it connected
        elif isinstance(conn.last_command, EndOfMessage) and keepalive and claim():
            start_message(s)
        else:
            conn.send(QUIT)

    def react(s: _Session) -> bool:
        """Take every event the machine has; False once the session is over."""
        nonlocal done
        conn = s.conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                return True
            if isinstance(event, Reply):
                if event.code >= 400:
                    raise _Failed(f"{event.code} to {conn.last_command!r}")
                if isinstance(conn.last_command, Data):
                    s.content = memoryview(message)
                elif isinstance(conn.last_command, EndOfMessage):
                    done += 1
            elif isinstance(event, ConnectionClosed):
                if not isinstance(conn.last_command, Quit):
                    raise _Failed("closed by the server")
                return False
            else:  # PAUSED: every command has its reply
                if s.content is None:  # after a 354 the content comes first, from write()
                    next_step(s)
                return True

    for _ in range(min(sessions, messages)):
        s = _Session()
        if not keepalive:
            claim()  # a connection per message: the connection is the message's
        connect(s)
    last_progress = time.monotonic()
    while live:
        events = selector.select(1.0)
        now = time.monotonic()
        if not events and now - last_progress > STALL_TIMEOUT:
            errors += len(live)
            for s in list(live):
                close(s)
            break
        for key, mask in events:
            s = key.data
            if s.sock is None:
                continue
            last_progress = now
            try:
                if mask & selectors.EVENT_READ:
                    try:
                        data = s.sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    if data is not None:
                        s.conn.receive_data(data)
                        if not react(s):
                            close(s)
                            if not keepalive and claim():
                                connect(s)
                            continue
                write(s)
            except (_Failed, ProtocolError, OSError):
                errors += 1
                close(s)
    selector.close()
    return done, errors, time.monotonic()


def _worker(job: tuple[int, int, int, int, bool], start: Any, results: Any) -> None:
    port, size, messages, sessions, keepalive = job
    message = make_message(size)
    results.put("ready")
    start.wait(60)
    results.put(_drive(port, message, messages, sessions, keepalive))


def run(
    port: int, size: int, messages: int, *, sessions: int = 20, keepalive: bool = False, processes: int = 2
) -> LoadResult:
    """Send ``messages`` messages of ``size`` octets to 127.0.0.1:``port`` over ``sessions`` concurrent sessions.

    The work is split over ``processes`` worker processes (0: in this process).
    The clock starts when every worker is ready and stops at the last reply.
    """
    if processes <= 0:
        message = make_message(size)
        start = time.monotonic()
        done, errors, end = _drive(port, message, messages, sessions, keepalive)
        return LoadResult(done, errors, end - start)
    processes = max(1, min(processes, sessions, messages))
    # Spawned, not forked: the caller may have threads (a test's server, a benchmark's
    # timers), and a fork copies their locks in whatever state they are in (3.12 warns).
    # The workers start before the clock does, so their start-up is not measured.
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results = context.Queue()
    workers = []
    for i in range(processes):
        share = messages // processes + (1 if i < messages % processes else 0)
        sess = sessions // processes + (1 if i < sessions % processes else 0)
        worker = context.Process(target=_worker, args=((port, size, share, sess, keepalive), go, results), daemon=True)
        worker.start()
        workers.append(worker)
    done = errors = 0
    try:
        for _ in workers:  # each has built its message: start the clock
            results.get(timeout=60)
        start = end = time.monotonic()
        go.set()
        for _ in workers:
            d, e, t = results.get(timeout=STALL_TIMEOUT + 30)
            done, errors, end = done + d, errors + e, max(end, t)
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return LoadResult(done, errors, end - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SMTP load generator (smtpcore's client machine, multi-process)")
    parser.add_argument("port", type=int)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--keepalive", action="store_true")
    args = parser.parse_args(argv)
    result = run(
        args.port, args.size, args.messages, sessions=args.sessions, keepalive=args.keepalive, processes=args.processes
    )
    print(f"{result.messages} messages, {result.errors} errors, {result.seconds:.3f} s, {result.rate:,.0f} msg/s")


if __name__ == "__main__":
    main()
