"""Feeding input one byte at a time costs linear work, not quadratic.

No clocks: the receive buffer's bytearray is replaced by a subclass that counts
the octets every search, slice and comparison looks at.  Ten times the input
must cost about ten times the work (a quadratic reader would cost a hundred).
"""

from __future__ import annotations

from typing import Any, SupportsIndex

import pytest
from helpers import make_server

from smtpcore import NEED_DATA, ServerConfig, ServerConnection


class CountingBuffer(bytearray):
    """A bytearray that counts the octets its searching and copying methods touch."""

    work = 0

    def find(self, sub: Any, start: SupportsIndex | None = None, *args: Any) -> int:
        CountingBuffer.work += len(self) - (int(start) if start is not None else 0)
        return super().find(sub, start, *args)

    def count(self, sub: Any, *args: Any) -> int:
        CountingBuffer.work += len(self)
        return super().count(sub, *args)

    def endswith(self, suffix: Any, *args: Any) -> bool:
        CountingBuffer.work += 5
        return super().endswith(suffix, *args)

    def startswith(self, prefix: Any, *args: Any) -> bool:
        CountingBuffer.work += 5
        return super().startswith(prefix, *args)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            CountingBuffer.work += len(range(*index.indices(len(self))))
        return super().__getitem__(index)

    def __bytes__(self) -> bytes:
        CountingBuffer.work += len(self)
        return bytes(memoryview(self))


def run(conn: ServerConnection, prefix: bytes, payload: bytes) -> tuple[int, int]:
    """Feed ``prefix`` whole, then ``payload`` one byte at a time; return (work, next_event calls)."""
    conn.receive_data(prefix)
    while conn.next_event() is not NEED_DATA:
        if conn.reply_due:
            conn.accept()
    conn._buffer._data = CountingBuffer(conn._buffer._data)
    conn._received = conn._buffer._data  # the server's own reference to it
    CountingBuffer.work = 0
    calls = 0
    for i in range(len(payload)):
        conn.receive_data(payload[i : i + 1])
        while True:
            calls += 1
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if conn.reply_due:
                conn.accept()
    assert isinstance(conn._buffer._data, CountingBuffer)
    return CountingBuffer.work, calls


SETUP = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"
CONFIG = ServerConfig(max_message_size=0)
# The three the issue names go to 1 MB; the extra shapes to 200 KB, to keep the suite fast.
MB, EXTRA = 100_000, 20_000
AUTH = ServerConfig(auth=CONFIG.auth.OPTIONAL, allow_insecure_auth=True, max_message_size=0)


def ratio(prefix: bytes, make_payload: Any, small: int, config: ServerConfig = CONFIG) -> tuple[float, float]:
    small_work, small_calls = run(make_server(config), prefix, make_payload(small))
    large_work, large_calls = run(make_server(config), prefix, make_payload(small * 10))
    assert small_work > 0
    return large_work / small_work, large_calls / small_calls


@pytest.mark.parametrize(
    ("name", "prefix", "make_payload", "small"),
    [
        # One endless command line: skipped past its limit, never stored.
        ("command line", b"EHLO c\r\n", lambda n: b"NOOP " + b"x" * (n - 7) + b"\r\n", MB),
        # Message content, in ordinary lines.
        ("DATA content", SETUP + b"DATA\r\n", lambda n: (b"y" * 78 + b"\r\n") * (n // 80), MB),
        # One BDAT chunk.
        ("BDAT chunk", SETUP, lambda n: b"BDAT %d LAST\r\n" % n + b"b" * n, MB),
        # A command line of CRs (each could start a CRLF).
        ("run of CR", b"EHLO c\r\n", lambda n: b"\r" * n, EXTRA),
        # Content with no line ending at all, and with stuffed dots at line starts.
        ("DATA one line", SETUP + b"DATA\r\n", lambda n: b"z" * n, EXTRA),
        ("DATA dots", SETUP + b"DATA\r\n", lambda n: b"\r\n.." * (n // 4), EXTRA),
        # A long SASL response (skipped past max_auth_line).
        ("AUTH line", b"EHLO c\r\nAUTH PLAIN\r\n", lambda n: b"x" * n, EXTRA),
    ],
)
def test_linear_work_when_dripped(name: str, prefix: bytes, make_payload: Any, small: int) -> None:
    work_ratio, calls_ratio = ratio(prefix, make_payload, small, AUTH if name == "AUTH line" else CONFIG)
    # Linear: ~10.  Quadratic would be ~100; the slack is for constant costs.
    assert 7 < work_ratio < 14, (name, work_ratio)
    assert 7 < calls_ratio < 14, (name, calls_ratio)


def test_the_counter_would_catch_quadratic_work() -> None:
    # A reader that searched the whole buffer from the start on every byte.
    def quadratic(n: int) -> int:
        CountingBuffer.work = 0
        buffer = CountingBuffer()
        for _ in range(n):
            buffer += b"x"
            buffer.find(b"\r\n")
        return CountingBuffer.work

    assert quadratic(2000) / quadratic(200) > 50
