"""The receive buffer: lines out (CRLF or a lone LF), overlong lines skipped and reported once, bounded and linear."""

from __future__ import annotations

import itertools
from typing import SupportsIndex, overload

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore._receivebuffer import OVERLONG, ReceiveBuffer

LIMIT = 512


def drain(buffer: ReceiveBuffer, limit: int) -> list[object]:
    out: list[object] = []
    while (line := buffer.next_line(limit)) is not None:
        out.append(line)
    return out


def run(chunks: list[bytes], limit: int = LIMIT) -> tuple[list[object], ReceiveBuffer]:
    """Feed each chunk and take every line it completes; the buffer stays bounded."""
    buffer = ReceiveBuffer()
    out: list[object] = []
    for chunk in chunks:
        buffer.feed(chunk)
        out += drain(buffer, limit)
        assert len(buffer) <= limit, len(buffer)
    return out, buffer


def reference(stream: bytes, limit: int = LIMIT) -> list[object]:
    """Complete lines of ``stream``: an LF ends a line, with the CR before it if any; ``limit`` counts a CRLF."""
    complete = [line[:-1] if line.endswith(b"\r") else line for line in stream.split(b"\n")[:-1]]
    return [OVERLONG if len(line) + 2 > limit else line for line in complete]


def three_ways(stream: bytes, trailing: bytes = b"NOOP", limit: int = LIMIT) -> list[object]:
    """Whole, byte by byte, and with trailing bytes that must stay in the buffer untouched."""
    assert stream.endswith(b"\r\n")
    expected = reference(stream, limit)
    whole, _ = run([stream], limit)
    drip, _ = run([stream[i : i + 1] for i in range(len(stream))], limit)
    with_trailing, buffer = run([stream + trailing], limit)
    assert whole == expected
    assert drip == expected
    assert with_trailing == expected
    assert bytes(buffer.peek()) == trailing
    return expected


def test_lines() -> None:
    lines = three_ways(b"EHLO example.com\r\nMAIL FROM:<a@b>\r\n\r\nQUIT\r\n")
    assert lines == [b"EHLO example.com", b"MAIL FROM:<a@b>", b"", b"QUIT"]


def test_crlf_or_a_lone_lf_ends_a_line_and_a_lone_cr_does_not() -> None:
    lines = three_ways(b"bare\nlf\r\nbare\rcr\r\n\n\r\r\n\r\r\r\n")
    assert lines == [b"bare", b"lf", b"bare\rcr", b"", b"\r", b"\r\r"]


def test_a_line_ended_by_a_lone_lf_is_measured_as_with_crlf() -> None:
    assert three_ways(b"a" * (LIMIT - 2) + b"\n\r\n") == [b"a" * (LIMIT - 2), b""]
    assert three_ways(b"a" * (LIMIT - 1) + b"\n\r\n") == [OVERLONG, b""]


def test_incomplete_line_waits() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"NOOP\r")
    assert buffer.next_line(LIMIT) is None
    assert buffer.next_line(LIMIT) is None
    buffer.feed(b"\n")
    assert buffer.next_line(LIMIT) == b"NOOP"
    assert buffer.next_line(LIMIT) is None
    assert len(buffer) == 0
    assert not buffer


def test_limit_counts_the_crlf() -> None:
    assert three_ways(b"a" * (LIMIT - 2) + b"\r\n") == [b"a" * (LIMIT - 2)]
    assert three_ways(b"a" * (LIMIT - 1) + b"\r\n") == [OVERLONG]
    assert three_ways(b"a" * LIMIT + b"\r\n") == [OVERLONG]


@pytest.mark.parametrize("size", [LIMIT - 1, LIMIT, LIMIT + 1, 2 * LIMIT, 10 * LIMIT + 3, 100_000])
def test_overlong_reported_once_then_next_line_works(size: int) -> None:
    stream = b"x" * size + b"\r\nNOOP\r\n"
    assert three_ways(stream) == [OVERLONG, b"NOOP"]
    # In pieces that cut the CRLF.
    at = stream.index(b"\r\n")
    for cut in (at - 1, at, at + 1, at + 2):
        assert run([stream[:cut], stream[cut:]])[0] == [OVERLONG, b"NOOP"]


def test_overlong_of_crs_and_nuls() -> None:
    for filler in (b"\r", b"\x00", b"\r\x00"):
        stream = filler * (3 * LIMIT) + b"\r\nNOOP\r\n"
        assert three_ways(stream) == [OVERLONG, b"NOOP"], filler


def test_overlong_line_whose_cr_and_lf_come_apart() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"x" * (LIMIT - 1) + b"\r")
    assert buffer.next_line(LIMIT) is None
    assert len(buffer) <= 1
    buffer.feed(b"\nQUIT\r\n")
    assert buffer.next_line(LIMIT) is OVERLONG
    assert buffer.next_line(LIMIT) == b"QUIT"


def test_two_overlong_lines_two_reports() -> None:
    stream = b"a" * 600 + b"\r\n" + b"b" * 600 + b"\r\nok\r\n"
    assert three_ways(stream) == [OVERLONG, OVERLONG, b"ok"]


def test_different_limits_per_call() -> None:
    # The AUTH response limit is larger than the command limit.
    buffer = ReceiveBuffer()
    buffer.feed(b"a" * 1000 + b"\r\nb" * 1 + b"\r\n")
    assert buffer.next_line(12288) == b"a" * 1000
    assert buffer.next_line(LIMIT) == b"b"


def test_an_auth_line_may_be_as_long_as_its_own_limit() -> None:
    # Only a line that starts with "AUTH " (any case) gets the larger limit, fed whole or
    # in pieces; past that limit it is skipped like any other.
    for stream, expected in (
        (b"auth PLAIN " + b"a" * 1000 + b"\r\nok\r\n", [b"auth PLAIN " + b"a" * 1000, b"ok"]),
        (b"MAIL " + b"a" * 1000 + b"\r\nok\r\n", [OVERLONG, b"ok"]),
        (b"AUTH " + b"a" * 3000 + b"\r\nok\r\n", [OVERLONG, b"ok"]),
    ):
        for pieces in ([stream], [stream[i : i + 7] for i in range(0, len(stream), 7)]):
            buffer, lines = ReceiveBuffer(), []
            for piece in pieces:
                buffer.feed(piece)
                while (line := buffer.next_line(LIMIT, 2048)) is not None:
                    lines.append(line)
                assert len(buffer) <= 2048
            assert lines == expected, stream[:12]


def test_clear_forgets_what_was_buffered() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"partial line")
    buffer.clear()
    assert len(buffer) == 0
    buffer.feed(b"\r\n")
    # Nothing from before clear() may join the next line.
    assert buffer.next_line(LIMIT) == b""


def test_clear_forgets_skipping() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"x" * (2 * LIMIT))
    assert buffer.next_line(LIMIT) is None
    buffer.clear()
    buffer.feed(b"EHLO a\r\n")
    assert buffer.next_line(LIMIT) == b"EHLO a"


def test_clear_forgets_how_far_the_search_got() -> None:
    # A search past the end of what is left would miss the LF of a shorter line.
    buffer = ReceiveBuffer()
    buffer.feed(b"partial line")
    assert buffer.next_line(LIMIT) is None
    buffer.clear()
    buffer.feed(b"EHLO\r\n")
    assert buffer.next_line(LIMIT) == b"EHLO"


def test_search_restarts_after_the_bytes_change() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"abc\r")
    assert buffer.next_line(LIMIT) is None
    # A content reader consumes in place, then rewinds.
    del buffer.peek()[:4]
    buffer.rewind()
    buffer.feed(b"x\r\n")
    assert buffer.next_line(LIMIT) == b"x"
    buffer.feed(b"abc")
    assert buffer.next_line(LIMIT) is None
    del buffer.peek()[:1]
    buffer.rewind()
    buffer.feed(b"\r\n")
    assert buffer.next_line(LIMIT) == b"bc"
    # From the very start: what a reader leaves may begin with the LF of a CRLF
    # whose CR it took (a BDAT chunk one octet too long).
    buffer.feed(b"ab")
    assert buffer.next_line(LIMIT) is None
    del buffer.peek()[:2]
    buffer.rewind()
    buffer.feed(b"\nQUIT\r\n")
    assert buffer.next_line(LIMIT) == b""
    assert buffer.next_line(LIMIT) == b"QUIT"


# --- properties -----------------------------------------------------------------------------------

PIECES = [b"\r", b"\n", b"\x00", b"a", b"\r\n", b"\r" * 700, b"\n" * 700, b"\x00" * 700, b"x" * 300]


@given(
    st.lists(st.sampled_from(PIECES), max_size=30).map(b"".join),
    st.lists(st.integers(1, 800), min_size=1, max_size=10),
    st.sampled_from([LIMIT, 600, 1000]),
)
def test_bounded_and_split_proof(stream: bytes, steps: list[int], limit: int) -> None:
    chunks = []
    position = 0
    for step in itertools.cycle(steps):
        if position >= len(stream):
            break
        chunks.append(stream[position : position + step])
        position += step
    # run() checks the buffer never holds more than the limit after each feed.
    got, _ = run(chunks, limit)
    assert got == reference(stream, limit)
    drip, _ = run([stream[i : i + 1] for i in range(len(stream))], limit)
    assert drip == got


@given(st.binary(max_size=2000), st.integers(1, 100))
def test_arbitrary_bytes(data: bytes, step: int) -> None:
    got, buffer = run([data[i : i + step] for i in range(0, len(data), step)])
    assert got == reference(data)
    assert len(buffer) <= LIMIT


def test_huge_feeds_stay_bounded() -> None:
    for filler in (b"\r", b"\x00", b"A"):
        buffer = ReceiveBuffer()
        for _ in range(50):
            buffer.feed(filler * 10_000)
            assert drain(buffer, LIMIT) == []
            assert len(buffer) <= 1
        buffer.feed(b"\r\nQUIT\r\n")
        assert drain(buffer, LIMIT) == [OVERLONG, b"QUIT"]


# --- linear time, by counting work ----------------------------------------------------------------


class CountingBuffer(bytearray):
    """A bytearray that counts the octets its CRLF searches and slices cover."""

    def __init__(self) -> None:
        super().__init__()
        self.work = 0

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:  # type: ignore[override]  # narrower than bytearray.find: bytes and int offsets only
        stop = len(self) if end is None else end
        self.work += max(stop - start, 0)
        return super().find(sub, start, stop)

    @overload
    def __getitem__(self, index: SupportsIndex, /) -> int: ...
    @overload
    def __getitem__(self, index: slice, /) -> bytearray: ...
    def __getitem__(self, index: SupportsIndex | slice, /) -> int | bytearray:
        result = super().__getitem__(index)
        if isinstance(index, slice):
            assert isinstance(result, bytearray)
            self.work += len(result)
        return result


def receive_work(total: int, pattern: bytes, limit: int) -> int:
    buffer = ReceiveBuffer()
    counting = CountingBuffer()
    buffer._data = counting  # instrument the private store
    stream = (pattern * (total // len(pattern) + 1))[:total]
    for index in range(total):
        buffer.feed(stream[index : index + 1])
        while buffer.next_line(limit) is not None:
            pass
    assert buffer._data is counting
    return counting.work


@pytest.mark.parametrize(
    ("pattern", "limit"),
    [
        # One line of a megabyte under a larger limit: without the remembered
        # search position every byte would rescan the whole line (quadratic).
        (b"x", 2_000_000),
        # Runs of CR, each possibly the start of a CRLF.
        (b"\r", 2_000_000),
        # Ordinary command lines, and overlong lines being skipped.
        (b"MAIL FROM:<user@example.com>\r\n", LIMIT),
        (b"x", LIMIT),
    ],
    ids=["one-long-line", "cr-run", "commands", "skipping"],
)
def test_linear_byte_by_byte(pattern: bytes, limit: int) -> None:
    small = receive_work(100_000, pattern, limit)
    large = receive_work(1_000_000, pattern, limit)
    # Ten times the input, about ten times the work; quadratic would be ~100.
    assert 8 <= large / small <= 12, (small, large)
    assert large <= 10 * 1_000_000
