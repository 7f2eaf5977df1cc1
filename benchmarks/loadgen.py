"""A multi-process SMTP load generator on raw sockets, for the end-to-end benchmarks.

Used when Postfix's ``smtp-source`` is not installed (and for the peak-memory
figure, which needs one message of a chosen size).  It is built to cost the
server under test as little CPU as possible:

* each worker is a separate process (the server has its own), so no two share a GIL;
* a worker drives all its sessions from one ``selectors`` loop on non-blocking
  sockets, with no framework between the loop and the socket;
* every byte it sends is precomputed: one ``MAIL``/``RCPT``/``DATA`` burst
  (pipelined, as RFC 2920 allows once EHLO has offered PIPELINING), then the
  dot-safe message and its terminator sent from a ``memoryview``;
* replies are only counted -- a reply ends at a line whose fourth octet is a
  space -- and their first digit checked.

A session waits for the greeting, sends EHLO and waits for its reply, then per
message: the envelope burst (three replies, the last one 354), the content (one
reply).  Kept-alive sessions send their next message on the same connection;
otherwise each message has a connection of its own, ended with QUIT.

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

__all__ = ["LoadResult", "make_message", "run"]

HOST = "127.0.0.1"
EHLO = b"EHLO loadgen.example\r\n"
ENVELOPE = b"MAIL FROM:<sender@loadgen.example>\r\nRCPT TO:<user@bench.example>\r\nDATA\r\n"
QUIT = b"QUIT\r\n"
#: Whole-session bound: a server that stops answering ends the run instead of hanging it.
STALL_TIMEOUT = 60.0


def make_message(size: int) -> bytes:
    """About ``size`` octets of headers and text in 78-octet lines, no line starting with a dot, then ".\\r\\n"."""
    head = b"From: <sender@loadgen.example>\r\nTo: <user@bench.example>\r\nSubject: load\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = (line * (max(0, size - len(head)) // len(line) + 1))[: max(0, size - len(head))]
    body = body[: body.rfind(b"\r\n") + 2] if b"\r\n" in body else b""
    return head + body + b".\r\n"


@dataclass(frozen=True)
class LoadResult:
    messages: int
    errors: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class _Session:
    """One connection's state: what it waits for and what it still has to send."""

    __slots__ = ("inbuf", "need", "out", "phase", "sent", "sock")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.inbuf = b""
        self.need = 0  # replies still awaited in this phase
        self.phase = ""
        self.out = memoryview(b"")
        self.sent = 0


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

    def send(s: _Session, data: bytes | memoryview, phase: str, need: int) -> None:
        s.out, s.sent, s.phase, s.need = memoryview(data), 0, phase, need
        assert s.sock is not None
        selector.modify(s.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, s)

    def connect(s: _Session) -> None:
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        s.sock, s.inbuf, s.phase, s.need = sock, b"", "greeting", 1
        selector.register(sock, selectors.EVENT_READ, s)
        live.add(s)

    def close(s: _Session) -> None:
        if s.sock is not None:
            selector.unregister(s.sock)
            s.sock.close()
            s.sock = None
        live.discard(s)

    def advance(s: _Session) -> None:
        """All replies of this phase are in: on to the next."""
        nonlocal done
        if s.phase == "greeting":
            send(s, EHLO, "ehlo", 1)
        elif s.phase == "ehlo":
            # A connection per message claimed its message when it connected.
            if not keepalive or claim():
                send(s, ENVELOPE, "envelope", 3)
            else:
                send(s, QUIT, "quit", 1)
        elif s.phase == "envelope":
            send(s, message, "body", 1)
        elif s.phase == "body":
            done += 1
            if keepalive and claim():
                send(s, ENVELOPE, "envelope", 3)
            else:
                send(s, QUIT, "quit", 1)
        elif s.phase == "quit":
            close(s)
            if not keepalive and claim():
                connect(s)

    def replies(s: _Session, data: bytes) -> int:
        """Count the replies completed in ``data``; -1 if one was not a success."""
        s.inbuf += data
        count = 0
        while True:
            end = s.inbuf.find(b"\r\n")
            if end < 0:
                return count
            line, s.inbuf = s.inbuf[:end], s.inbuf[end + 2 :]
            if len(line) == 3 or line[3:4] == b" ":
                if line[:1] not in (b"2", b"3"):
                    return -1
                count += 1

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
                if mask & selectors.EVENT_WRITE and s.sent < len(s.out):
                    s.sent += s.sock.send(s.out[s.sent :])
                    if s.sent >= len(s.out):
                        selector.modify(s.sock, selectors.EVENT_READ, s)
                if mask & selectors.EVENT_READ:
                    data = s.sock.recv(65536)
                    if not data:
                        raise ConnectionError("closed by the server")
                    got = replies(s, data)
                    if got < 0:
                        raise ConnectionError("refused")
                    s.need -= got
                    if s.need <= 0 and s.sent >= len(s.out):
                        advance(s)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
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
    context = multiprocessing.get_context("fork")
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
    parser = argparse.ArgumentParser(description="SMTP load generator (raw sockets, pipelined, multi-process)")
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
