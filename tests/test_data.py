"""The DATA reader (end only at CRLF.CRLF, dot-unstuffing, line and size checks) and the BDAT reader.

Every result is compared with a few-line reference model written straight from
RFC 5321 §4.1.1.4 and §4.5.2, and checked three ways (whole, byte by byte, with
trailing bytes that must be left untouched) as h11 checks its readers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import SupportsIndex, overload

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore import _data
from smtpcore._data import ChunkReader, DataReader, _has_bare_newline

END = b"\r\n.\r\n"


@dataclass
class Result:
    content: bytes
    done: bool
    rest: bytes
    bare_newline: bool
    long_line: bool
    size: int


def reference(stream: bytes, max_line_length: int = 1000) -> Result:
    """What the reader must give for ``stream`` (everything after the DATA command's CRLF).

    The end is the first CRLF "." CRLF, where the first CRLF may be the DATA
    command's own; a line-start "." is removed; lines are counted between CRLFs
    after unstuffing (RFC 5321 §4.5.3.1.6 does not count the transparency dot).
    """
    framed = b"\r\n" + stream
    end = framed.find(END)
    if end < 0:
        raise ValueError("no end of data in the stream")
    raw = framed[: end + 2]
    content = raw.replace(b"\r\n.", b"\r\n")[2:]
    crlf = content.count(b"\r\n")
    bare = content.count(b"\r") != crlf or content.count(b"\n") != crlf
    long_line = any(len(line) > max_line_length - 2 for line in content.split(b"\r\n"))
    return Result(content, True, framed[end + 5 :], bare, long_line, len(content))


def run(
    chunks: list[bytes],
    max_line_length: int = 1000,
    tail_bound: bool = True,
    check_newlines: bool = True,
    check_lines: bool = True,
) -> Result:
    """Feed ``chunks`` to a DataReader through one bytearray, as the server does."""
    reader = DataReader(max_line_length, check_newlines, check_lines)
    buffer = bytearray()
    out = bytearray()
    done = False
    for chunk in chunks:
        buffer += chunk
        if done:
            continue
        piece, done = reader.feed_from(buffer)
        out += piece
        if not done:
            # The server asks again until it gets nothing: one call took all there was.
            before = bytes(buffer)
            assert reader.feed_from(buffer) == (b"", False)
            assert bytes(buffer) == before
        if not done and tail_bound:
            # Everything is handed out except a tail that could begin CRLF.CRLF.
            assert len(buffer) <= 4, bytes(buffer)
        # Once done, further calls hand out nothing and leave the bytes alone.
        if done:
            before = bytes(buffer)
            assert reader.feed_from(buffer) == (b"", True)
            assert bytes(buffer) == before
    assert reader.done is done
    return Result(bytes(out), done, bytes(buffer), reader.bare_newline, reader.long_line, reader.size)


def three_ways(stream: bytes, trailing: bytes = b"MAIL FROM:<a@b>\r\n", max_line_length: int = 1000) -> Result:
    """Whole, byte by byte, and with trailing bytes: all three agree with the reference."""
    expected = reference(stream, max_line_length)
    whole = run([stream], max_line_length)
    drip = run([stream[i : i + 1] for i in range(len(stream))], max_line_length)
    with_trailing = run([stream + trailing], max_line_length)
    assert whole == expected
    assert drip == expected
    assert with_trailing.rest == expected.rest + trailing
    with_trailing.rest = expected.rest
    assert with_trailing == expected
    return expected


def not_ended(stream: bytes) -> Result:
    """Feed ``stream`` whole and byte by byte: it must not end the message."""
    whole = run([stream])
    drip = run([stream[i : i + 1] for i in range(len(stream))])
    assert not whole.done
    assert not drip.done
    assert whole.content == drip.content
    assert whole.bare_newline == drip.bare_newline
    assert len(whole.rest) <= 4
    return whole


# --- the end of data ------------------------------------------------------------------------------


def test_empty_message_right_after_data() -> None:
    result = three_ways(b".\r\n")
    assert result.content == b""
    assert result.size == 0
    assert not result.bare_newline


def test_simple_message() -> None:
    result = three_ways(b"Subject: hi\r\n\r\nHello\r\n.\r\n")
    assert result.content == b"Subject: hi\r\n\r\nHello\r\n"
    assert result.size == len(result.content)
    assert not result.bare_newline
    assert not result.long_line


def test_one_empty_line() -> None:
    assert three_ways(b"\r\n.\r\n").content == b"\r\n"
    assert three_ways(b"\r\n\r\n.\r\n").content == b"\r\n\r\n"


def test_end_is_the_first_crlf_dot_crlf() -> None:
    result = three_ways(b"a\r\n.\r\nb\r\n.\r\n")
    assert result.content == b"a\r\n"
    assert result.rest == b"b\r\n.\r\n"


def test_pipelined_command_after_end_untouched() -> None:
    result = three_ways(b"x\r\n.\r\nQUIT\r\n", trailing=b"")
    assert result.rest == b"QUIT\r\n"


# Sequences that must never end a message, inside content: each must leave the
# reader waiting, and (once the real end comes) be in the content byte for byte.
SMUGGLING = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\r.\n",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n.\r\x00\n",
    b"\r\x00\n.\r\n",
    b"\x00\r\n.\x00\r\n",
    b"\r\n. \r\n",
    b"\r\n .\r\n",
    b"\r\n.\t\r\n",
    b"\r\n..\r\n",
    b"\r\n.\r\r\n",
    b"\r\n.\n\r\n",
    b"\n\n.\n\n",
    b"\r\r.\r\r",
    b"\r\n\r.\r\n",
    b"\n\r.\r\n",
    b"\r\n.\r\n"[::-1],  # b"\n\r.\n\r"
    b"\r\n\xe3\x80\x82\r\n",  # an ideographic full stop is not "."
    b"\r\n\xc2\x85.\r\n",
]

HAS_BARE = {
    variant: variant.count(b"\r") != variant.count(b"\r\n") or variant.count(b"\n") != variant.count(b"\r\n")
    for variant in SMUGGLING
}


@pytest.mark.parametrize("variant", SMUGGLING, ids=repr)
def test_smuggling_variant_does_not_end(variant: bytes) -> None:
    assert END not in variant
    prefix = b"Subject: x\r\n\r\nbody"
    injected = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nforged"
    stream = prefix + variant + injected
    assert END not in stream
    pending = not_ended(stream)
    assert pending.bare_newline == HAS_BARE[variant]
    # The real end: everything before it is content, unstuffed only at CRLF ".".
    result = three_ways(stream + END)
    assert result.content == stream.replace(b"\r\n.", b"\r\n") + b"\r\n"
    assert b"MAIL FROM:<evil@example.com>" in result.content
    assert result.bare_newline == HAS_BARE[variant]


@pytest.mark.parametrize("variant", SMUGGLING, ids=repr)
def test_smuggling_variant_right_after_data(variant: bytes) -> None:
    # The DATA command's CRLF counts as the first CRLF only for CRLF "." CRLF.
    stream = variant + b"MAIL FROM:<evil@example.com>"
    if END in b"\r\n" + stream:
        pytest.skip("this one is a real end when it follows the DATA command")
    not_ended(stream)
    result = three_ways(stream + END)
    assert b"MAIL FROM:<evil@example.com>" in result.content


@pytest.mark.parametrize(
    "start",
    [b"\n.\r\n", b".\n", b".\r", b". \r\n", b"\x00.\r\n", b".\x00\r\n", b"\r.\r\n", b"..\r\n", b".\r\r\n", b" .\r\n"],
    ids=repr,
)
def test_almost_an_empty_message(start: bytes) -> None:
    pending = not_ended(start + b"x")
    assert pending.done is False
    result = three_ways(start + b"x" + END)
    assert result.content.endswith(b"x\r\n")


@pytest.mark.parametrize("variant", SMUGGLING, ids=repr)
def test_smuggling_with_accept_style_reader_still_byte_exact(variant: bytes) -> None:
    # No policy changes the search: the reader has none, and never rewrites CR, LF or NUL.
    stream = b"a" + variant + b"b" + END
    result = three_ways(stream)
    assert result.content == (b"a" + variant + b"b").replace(b"\r\n.", b"\r\n") + b"\r\n"


# --- bare newlines --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "bare"),
    [
        (b"a\r\nb\r\n.\r\n", False),
        (b"a\nb\r\n.\r\n", True),
        (b"a\rb\r\n.\r\n", True),
        (b"\n\r\n.\r\n", True),
        (b"\r\r\n.\r\n", True),
        (b"a\r\n\r\n\r\n.\r\n", False),
        (b"a\x00b\r\n.\r\n", False),
        (b"\r\n\n\r\n.\r\n", True),
    ],
)
def test_bare_newline_flag(stream: bytes, bare: bool) -> None:
    assert three_ways(stream).bare_newline is bare


# --- dot-unstuffing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "content"),
    [
        (b"..\r\n.\r\n", b".\r\n"),  # the first line too
        (b"...\r\n.\r\n", b"..\r\n"),
        (b".a\r\n.\r\n", b"a\r\n"),
        (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"a.\r\n.b.\r\n.\r\n", b"a.\r\nb.\r\n"),
        (b"a\r\n..\r\n..\r\n.\r\n", b"a\r\n.\r\n.\r\n"),
        (b"a\n.b\r\n.\r\n", b"a\n.b\r\n"),  # not at a line start: kept
        (b"a\r.b\r\n.\r\n", b"a\r.b\r\n"),
        (b" .a\r\n.\r\n", b" .a\r\n"),
    ],
)
def test_unstuffing(stream: bytes, content: bytes) -> None:
    result = three_ways(stream)
    assert result.content == content
    assert result.size == len(content)


# --- long lines -----------------------------------------------------------------------------------


def lines_with(line: bytes, where: str) -> bytes:
    if where == "first":
        return line + b"\r\nafter\r\n.\r\n"
    if where == "middle":
        return b"before\r\n" + line + b"\r\nafter\r\n.\r\n"
    return b"before\r\n" + line + b"\r\n.\r\n"


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize(
    ("line", "long"),
    [
        (b"a" * 998, False),
        (b"a" * 999, True),
        (b"a" * 5000, True),
        # Dot-stuffed: the transparency dot is not counted (RFC 5321 §4.5.3.1.6).
        (b".." + b"a" * 997, False),  # 998 text octets, 999 on the wire
        (b".." + b"a" * 998, True),
        (b"." + b"a" * 998, False),  # a single leading dot is removed: 998 text octets
        (b"." + b"a" * 999, True),
        # Bare CR and LF do not end a line: they are octets of it.
        (b"a" * 500 + b"\n" + b"a" * 497, False),
        (b"a" * 500 + b"\n" + b"a" * 498, True),
        (b"a" * 500 + b"\r" + b"a" * 498, True),
    ],
    ids=lambda value: f"{value[:2]!r}x{len(value)}" if isinstance(value, bytes) else str(value),
)
def test_long_line_boundary(line: bytes, long: bool, where: str) -> None:
    stream = lines_with(line, where)
    assert three_ways(stream).long_line is long
    # Across every piece boundary near the end of the line.
    start = stream.index(line)
    for cut in range(start + len(line) - 6, start + len(line) + 4):
        assert run([stream[:cut], stream[cut:]]).long_line is long, cut
    # And with the line split at its dot.
    assert run([stream[: start + 1], stream[start + 1 :]]).long_line is long


@pytest.mark.parametrize("max_line_length", [1000, 1001, 2000])
def test_long_line_follows_configuration(max_line_length: int) -> None:
    text = max_line_length - 2
    assert not three_ways(b"a" * text + END, max_line_length=max_line_length).long_line
    assert three_ways(b"a" * (text + 1) + END, max_line_length=max_line_length).long_line


def test_long_line_in_many_pieces() -> None:
    line = b"a" * 999
    stream = b"x\r\n" + line + END
    assert run([stream[i : i + 7] for i in range(0, len(stream), 7)]).long_line
    assert not run([(b"x\r\n" + b"a" * 998 + END)[i : i + 7] for i in range(0, 1008, 7)]).long_line


def test_many_short_lines_are_not_long() -> None:
    # Their total is far over the limit; none of them is.
    stream = b"abcdefghij\r\n" * 1000 + END
    assert not run([stream]).long_line
    assert not run([stream[i : i + 100] for i in range(0, len(stream), 100)]).long_line


# --- size -----------------------------------------------------------------------------------------


def test_size_counts_unstuffed_content() -> None:
    result = three_ways(b"..a\r\n..\r\nb\r\n.\r\n")
    assert result.content == b".a\r\n.\r\nb\r\n"
    assert result.size == 10


def test_size_while_streaming() -> None:
    reader = DataReader(1000)
    buffer = bytearray(b"hello")
    piece, done = reader.feed_from(buffer)
    assert (piece, done) == (b"hello", False)
    assert reader.size == 5
    buffer += b" world\r\n"
    piece, done = reader.feed_from(buffer)
    assert (piece, done) == (b" world", False)  # the CRLF waits: it may start the end
    assert bytes(buffer) == b"\r\n"
    assert reader.size == 11
    buffer += b".\r\n"
    assert reader.feed_from(buffer) == (b"\r\n", True)
    assert reader.size == 13


# --- properties -----------------------------------------------------------------------------------

TOKENS = [b"\r", b"\n", b".", b"\x00", b"a", b" ", b"\r\n", b"\r\n.", b"..", b"\r\n.\r", b"\n.\n"]
streams = st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join)


@given(streams, st.lists(st.integers(0, 200), max_size=8), st.sampled_from([b"", END, END + b"NOOP\r\n"]))
def test_any_split_gives_the_same_result(stream: bytes, cuts: list[int], tail: bytes) -> None:
    # A small line limit makes long lines common.
    full = stream + tail
    points = sorted({0, len(full), *(cut for cut in cuts if 0 < cut < len(full))})
    chunks = [full[a:b] for a, b in itertools.pairwise(points)]
    whole = run([full], max_line_length=10)
    split = run(chunks, max_line_length=10)
    drip = run([full[i : i + 1] for i in range(len(full))], max_line_length=10)
    assert split == whole
    assert drip == whole
    if END in b"\r\n" + full:
        assert whole == reference(full, max_line_length=10)
    else:
        assert not whole.done
        # Nothing handed out can be undone by what follows: the content so far
        # is a prefix of the content once the end arrives.
        assert run([full + b"\r\n.\r\n"]).content.startswith(whole.content)


@given(st.binary(max_size=300), st.integers(1, 50))
def test_arbitrary_bytes_memory_bound(data: bytes, step: int) -> None:
    # run() asserts the buffer holds at most four bytes after every feed.
    run([data[i : i + step] for i in range(0, len(data), step)])


def test_long_runs_keep_the_buffer_small() -> None:
    for filler in (b"\r", b"\n", b"\x00", b".", b"\r\n", b"\r\n."):
        run([filler] * 5000)
        run([filler * 1000] * 5)


# --- the fast paths: one search for CRLF ".", the bare CR/LF compare, the line hop -----------------
#
# The reader skips the end search and the unstuffing when a piece has no CRLF ".",
# finds bare CR/LF from the CRs and LFs alone plus a scan for CR (or, in content
# of very short lines, by comparing translated copies), and checks line lengths by
# hopping from CRLF to CRLF.  Each is checked here against the plain definitions,
# with the checks on and off, at piece boundaries and at the hop's window edges.


def content_flags(content: bytes, max_line_length: int) -> tuple[bool, bool]:
    """(bare CR or LF, a line over the limit) of unstuffed content, by their definitions."""
    crlf = content.count(b"\r\n")
    bare = content.count(b"\r") != crlf or content.count(b"\n") != crlf
    long_line = any(len(line) > max_line_length - 2 for line in content.split(b"\r\n"))
    return bare, long_line


def expected(stream: bytes, max_line_length: int, check_newlines: bool, check_lines: bool) -> Result:
    """The reference, with a flag the reader does not look for left False."""
    result = reference(stream, max_line_length)
    result.bare_newline = result.bare_newline and check_newlines
    result.long_line = result.long_line and check_lines
    return result


CHECKS = [(True, True), (True, False), (False, True), (False, False)]


def all_two_piece_splits(stream: bytes) -> list[list[bytes]]:
    return [[stream[:cut], stream[cut:]] for cut in range(1, len(stream))]


# _FEW_CRS picks the way by how many CRs a piece has: 0 sends every piece the
# scan-for-CR way, a huge value every piece the translate-and-compare way.
@pytest.mark.parametrize("few_crs", [0, 10**9], ids=["scan", "compare"])
def test_bare_newline_compare_exhaustive(few_crs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every string of CR, LF, "x" and "." up to 7 octets: both ways agree with
    # counting CR, LF and CRLF.
    monkeypatch.setattr(_data, "_FEW_CRS", few_crs)
    for length in range(1, 8):
        for octets in itertools.product(b"\r\nx.", repeat=length):
            piece = bytes(octets)
            crlf = piece.count(b"\r\n")
            bare = piece.count(b"\r") != crlf or piece.count(b"\n") != crlf
            if piece.endswith(b"\r"):
                continue  # never handed out: a final CR waits for what follows
            assert _has_bare_newline(piece) is bare, piece


@pytest.mark.parametrize("few_crs", [0, 10**9], ids=["scan", "compare"])
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda text: text.replace(b"\r", b"").replace(b"\n", b"")), max_size=30),
    stray=st.lists(
        st.tuples(st.integers(min_value=0), st.sampled_from([b"\r", b"\n", b"\n\r", b"\r\r\n"])), max_size=2
    ),
)
def test_bare_newline_in_longer_pieces(few_crs: int, lines: list[bytes], stray: list[tuple[int, bytes]]) -> None:
    # Lines of any octets but CR and LF, with a stray CR or LF put in here and
    # there: both ways agree with the counts, wherever the stray octets fall.
    piece = b"".join(line + b"\r\n" for line in lines)
    for at, octets in stray:
        at %= len(piece) + 1
        piece = piece[:at] + octets + piece[at:]
    if piece.endswith(b"\r"):
        piece += b"x"  # never handed out: a final CR waits for what follows
    crlf = piece.count(b"\r\n")
    bare = piece.count(b"\r") != crlf or piece.count(b"\n") != crlf
    saved = _data._FEW_CRS
    _data._FEW_CRS = few_crs  # not monkeypatch: hypothesis runs many examples in one test call
    try:
        assert _has_bare_newline(piece) is bare, piece
    finally:
        _data._FEW_CRS = saved


@pytest.mark.parametrize(("check_newlines", "check_lines"), CHECKS)
@pytest.mark.parametrize(
    ("stream", "bare"),
    [
        (b"x\nyz\r\n.\r\n", True),  # a bare LF that starts the second piece when cut after "x"
        (b"x\r\nyz\r\n.\r\n", False),  # CR at the end of a piece, LF at the start of the next
        (b"x\rz\r\n.\r\n", True),  # a bare CR at the end of a piece
        (b"\nx\r\n.\r\n", True),  # the very first octet
        (b"\rx\r\n.\r\n", True),
        (b"x\r\r\n.\r\n", True),  # just before the last line's CRLF
        (b"x\n\r\n.\r\n", True),
        (b"..\n\r\n.\r\n", True),  # after a transparency dot
        (b"x\r\n.\ny\r\n.\r\n", True),  # an LF right after a removed dot
        (b"x\r\n..\r\n\r\n.\r\n", False),
    ],
)
def test_bare_newline_at_piece_boundaries(stream: bytes, bare: bool, check_newlines: bool, check_lines: bool) -> None:
    want = expected(stream, 1000, check_newlines, check_lines)
    assert want.bare_newline is (bare and check_newlines)
    for chunks in [[stream], [stream[i : i + 1] for i in range(len(stream))], *all_two_piece_splits(stream)]:
        assert run(chunks, check_newlines=check_newlines, check_lines=check_lines) == want, chunks


def short_id(value: object) -> str:
    return f"{value!r:.12}..{len(value)}" if isinstance(value, bytes) else str(value)


def long_line_streams(text: int) -> list[tuple[bytes, bool]]:
    """Streams with one line of ``text`` or ``text + 1`` octets of text (the limit is ``text``).

    On the wire the line is plain, or starts with ".." (a "." of text after the
    transparency dot), or with a "." that is only the transparency dot.
    """
    cases = []
    for size, long in ((text, False), (text + 1, True)):
        for line in (b"a" * size, b".." + b"a" * (size - 1), b"." + b"a" * size):
            cases.append((line + b"\r\n.\r\n", long))  # the first line: read at the start of content
            cases.append((b"x\r\n" + line + b"\r\ny\r\n.\r\n", long))
            cases.append((b"x\r\n" * 40 + line + b"\r\n.\r\n", long))
    return cases


@pytest.mark.parametrize(("check_newlines", "check_lines"), CHECKS)
@pytest.mark.parametrize(("stream", "long"), long_line_streams(998), ids=short_id)
def test_long_line_998_999_any_two_pieces(stream: bytes, long: bool, check_newlines: bool, check_lines: bool) -> None:
    want = expected(stream, 1000, check_newlines, check_lines)
    assert want.long_line is (long and check_lines)
    assert run([stream], check_newlines=check_newlines, check_lines=check_lines) == want
    for chunks in all_two_piece_splits(stream)[::7] + all_two_piece_splits(stream)[-12:]:
        assert run(chunks, check_newlines=check_newlines, check_lines=check_lines) == want, len(chunks[0])


@pytest.mark.parametrize("dot", [b"", b"."])
@pytest.mark.parametrize("offset", [-1000, -999, -998, -600, -2, -1, 0, 1])
@pytest.mark.parametrize("size", [998, 999])
def test_long_line_across_a_64k_piece_boundary(size: int, offset: int, dot: bytes) -> None:
    # Ordinary lines up to where the long one starts; the 64 KiB cut falls
    # ``offset`` octets from the end of the long line (-size: near its start).
    # With ``dot`` the line's text starts "." and goes on the wire as "..".
    line = b"." + dot + b"b" * (size - 1) if dot else b"b" * size
    start = 65536 + offset - len(line)
    filler = (b"f" * 70 + b"\r\n") * ((start - 2) // 72)
    filler += b"g" * (start - len(filler) - 2) + b"\r\n"
    stream = filler + line + b"\r\n" + b"after\r\n" * 3 + END
    assert len(filler) == start
    pieces = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    for check_newlines, check_lines in CHECKS:
        want = expected(stream, 1000, check_newlines, check_lines)
        assert want.long_line is (size == 999 and check_lines)
        assert run(pieces, check_newlines=check_newlines, check_lines=check_lines) == want


@pytest.mark.parametrize("max_line_length", [10, 1000])
def test_long_lines_at_the_hop_window_edges(max_line_length: int) -> None:
    # The hop looks for the next CRLF at most ``text + 2`` octets on: lines of
    # exactly ``text`` octets put every CRLF on the window's last position, and
    # one ``text + 1`` line just past it.  Shifting by short lines in front moves
    # where the hops land.
    text = max_line_length - 2
    for shift in range(7):
        head = b"s\r\n" * shift + b"x" * shift + b"\r\n"
        for count in (1, 2, 5):
            exact = head + (b"e" * text + b"\r\n") * count
            assert not run([exact + END], max_line_length).long_line
            for where in range(count + 1):
                lines = [b"e" * text] * count
                lines.insert(where, b"L" * (text + 1))
                stream = head + b"\r\n".join(lines) + b"\r\n" + END
                assert run([stream], max_line_length).long_line, (shift, count, where)
                off = expected(stream, max_line_length, check_newlines=True, check_lines=False)
                assert run([stream], max_line_length, check_lines=False) == off


def test_long_lines_exhaustive_small_limit() -> None:
    # Every sequence of up to three lines with 0, 3, 8 or 9 text octets (the limit
    # is 8), each with or without a transparency dot: the reader agrees with the
    # reference whole, byte by byte and cut in two anywhere.
    shapes = [dot + b"z" * size for size in (0, 3, 8, 9) for dot in (b"", b".")]
    for count in range(1, 4):
        for lines in itertools.product(shapes, repeat=count):
            # A line of text starting "." goes on the wire with its transparency dot.
            stream = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + END
            want = reference(stream, 10)
            assert run([stream], 10) == want, stream
            assert run([stream[i : i + 1] for i in range(len(stream))], 10) == want, stream
            for chunks in all_two_piece_splits(stream)[::3]:
                assert run(chunks, 10) == want, chunks


@pytest.mark.parametrize(("check_newlines", "check_lines"), CHECKS)
@pytest.mark.parametrize(
    "stream",
    [
        b"line one\r\n..dotted\r\nlast\r\n" + END,
        b"x" * 100 + b"\r\n.y\r\n" + END,  # the first dot is a line-start one
        b"a.b.c\r\n" * 3 + b".\r\n",  # dots, but none at a line start before the end
        b"QUJD" * 19 + b"\r\n" + b"QUJD" * 19 + b"\r\n" + END,  # base64: no dot at all
        b".x\r\n" + END,  # a dot first of all: the first line's transparency dot
        b"\r\n" + END,
        b"\r\n.\r\n",
        b"x\r\n.\r\n",
        b".\r\n",
    ],
    ids=repr,
)
def test_end_marker_and_dots_split_everywhere(stream: bytes, check_newlines: bool, check_lines: bool) -> None:
    want = expected(stream, 1000, check_newlines, check_lines)
    trailing = b"QUIT\r\n"
    for chunks in [[stream], [stream[i : i + 1] for i in range(len(stream))], *all_two_piece_splits(stream)]:
        assert run(chunks, check_newlines=check_newlines, check_lines=check_lines) == want, chunks
        with_more = run([*chunks[:-1], chunks[-1] + trailing], check_newlines=check_newlines, check_lines=check_lines)
        assert with_more.rest == want.rest + trailing
    # And split at every pair of points around the end marker and the dots.
    for a, b in itertools.combinations(range(1, len(stream)), 2):
        chunks = [stream[:a], stream[a:b], stream[b:]]
        assert run(chunks, check_newlines=check_newlines, check_lines=check_lines).content == want.content


def test_nothing_new_hands_out_nothing() -> None:
    reader = DataReader(1000)
    buffer = bytearray()
    assert reader.feed_from(buffer) == (b"", False)  # nothing yet at all
    buffer += b"."
    assert reader.feed_from(buffer) == (b"", False)  # could be the end of an empty message
    assert reader.feed_from(buffer) == (b"", False)
    buffer += b".a\r\n"
    assert reader.feed_from(buffer) == (b".a", False)
    assert bytes(buffer) == b"\r\n"
    buffer += b""
    assert reader.feed_from(buffer) == (b"", False)
    buffer += b"."
    assert reader.feed_from(buffer) == (b"", False)
    assert bytes(buffer) == b"\r\n."
    buffer += b"\r"
    assert reader.feed_from(buffer) == (b"", False)
    buffer += b"\n"
    assert reader.feed_from(buffer) == (b"\r\n", True)


TEXT_TOKENS = [b"\r", b"\n", b".", b"x", b"\r\n", b"\r\n.", b"..", b"\r\n..", b"\r\n.\r", b"\x00"]


@st.composite
def streams_near_a_limit(draw: st.DrawFn) -> tuple[bytes, int]:
    """Content of CR, LF, dots and runs of text near the line limit, and that limit."""
    max_line_length = draw(st.sampled_from([10, 40, 1000]))
    text = max_line_length - 2
    run_of_text = st.integers(max(text - 3, 0), text + 2).map(lambda n: b"y" * n)
    parts = draw(st.lists(st.one_of(st.sampled_from(TEXT_TOKENS), run_of_text), max_size=25))
    return b"".join(parts), max_line_length


@given(
    streams_near_a_limit(),
    st.lists(st.integers(0, 30_000), max_size=6),
    st.booleans(),
    st.booleans(),
    st.sampled_from([b"", END, END + b"NOOP\r\n"]),
)
def test_fast_paths_match_the_definitions(
    shaped: tuple[bytes, int], cuts: list[int], check_newlines: bool, check_lines: bool, tail: bytes
) -> None:
    stream, max_line_length = shaped
    full = stream + tail
    points = sorted({0, len(full), *(cut for cut in cuts if 0 < cut < len(full))})
    chunks = [full[a:b] for a, b in itertools.pairwise(points)]
    options = {"check_newlines": check_newlines, "check_lines": check_lines}
    split = run(chunks, max_line_length, **options)
    assert run([full], max_line_length, **options) == split
    if END in b"\r\n" + full:
        assert split == expected(full, max_line_length, check_newlines, check_lines)
    else:
        # Not ended: the flags are those of what was handed out so far.
        assert not split.done
        bare, long_line = content_flags(split.content, max_line_length)
        assert split.bare_newline is (bare and check_newlines)
        assert split.long_line is (long_line and check_lines)
        assert split.size == len(split.content)


# --- linear time, by counting work ----------------------------------------------------------------


class CountingBuffer(bytearray):
    """A bytearray that counts the octets its searches and copies touch."""

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


def data_work(total: int, monkeypatch: pytest.MonkeyPatch, line: bytes) -> int:
    """Feed ``total`` octets one at a time; count octets searched, copied and scanned."""
    scanned = 0
    original = DataReader._content

    def counting_content(self: DataReader, raw: bytes) -> bytes:
        nonlocal scanned
        scanned += len(raw)  # count, replace, find and split are each one pass over raw
        return original(self, raw)

    monkeypatch.setattr(DataReader, "_content", counting_content)
    reader = DataReader(1000)
    buffer = CountingBuffer()
    stream = (line * (total // len(line) + 1))[:total]
    for index in range(total):
        buffer += stream[index : index + 1]
        reader.feed_from(buffer)
    assert not reader.done
    monkeypatch.setattr(DataReader, "_content", original)
    return buffer.work + scanned


@pytest.mark.parametrize("line", [b"x" * 70 + b"\r\n", b"..stuffed\r\n", b"no line end at all "])
def test_data_reader_is_linear_byte_by_byte(monkeypatch: pytest.MonkeyPatch, line: bytes) -> None:
    small = data_work(100_000, monkeypatch, line)
    large = data_work(1_000_000, monkeypatch, line)
    # Linear: ten times the input is about ten times the work (quadratic would be ~100).
    assert 8 <= large / small <= 12, (small, large)
    # And a small constant per octet.
    assert large <= 20 * 1_000_000


# --- BDAT -----------------------------------------------------------------------------------------


def test_chunk_reader_exact() -> None:
    reader = ChunkReader(5)
    buffer = bytearray(b"abcdefg")
    assert reader.feed_from(buffer) == (b"abcde", True)
    assert bytes(buffer) == b"fg"
    assert reader.remaining == 0


def test_chunk_reader_in_pieces_and_opaque() -> None:
    payload = b"\r\n.\r\nMAIL FROM:<x@y>\r\n\x00\r\n"
    reader = ChunkReader(len(payload))
    buffer = bytearray()
    out = bytearray()
    for index, octet in enumerate(payload + b"NEXT"):
        buffer.append(octet)
        piece, done = reader.feed_from(buffer)
        out += piece
        assert done is (index >= len(payload) - 1)
        assert reader.remaining == max(len(payload) - index - 1, 0)
    assert bytes(out) == payload  # no dot logic, no end marker
    assert bytes(buffer) == b"NEXT"


def test_chunk_reader_zero() -> None:
    reader = ChunkReader(0)
    buffer = bytearray(b"NOOP\r\n")
    assert reader.feed_from(buffer) == (b"", True)
    assert bytes(buffer) == b"NOOP\r\n"


def test_chunk_reader_empty_buffer() -> None:
    reader = ChunkReader(3)
    buffer = bytearray()
    assert reader.feed_from(buffer) == (b"", False)
    assert reader.remaining == 3


@given(st.binary(max_size=200), st.integers(0, 200), st.lists(st.integers(1, 30), min_size=1, max_size=20))
def test_chunk_reader_any_split(data: bytes, size: int, steps: list[int]) -> None:
    reader = ChunkReader(size)
    buffer = bytearray()
    out = bytearray()
    position = 0
    done = size == 0
    index = 0
    while position < len(data) and not done:
        step = steps[index % len(steps)]
        index += 1
        buffer += data[position : position + step]
        position += step
        piece, done = reader.feed_from(buffer)
        out += piece
    assert bytes(out) == data[: min(size, len(data))]
    assert done is (len(data) >= size)
    assert bytes(buffer) + data[position:] == data[len(out) :]
