"""Dot-stuffing and line endings for DATA: correct at every chunk boundary."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore import BareNewlinePolicy, LocalProtocolError
from smtpcore._data import DataReader
from smtpcore._dotstuff import DotStuffer, LineEndings
from smtpcore._dotstuff import stuff as stuff_whole


def stuff(chunks: Iterable[bytes], policy: BareNewlinePolicy = BareNewlinePolicy.NORMALISE) -> bytes:
    stuffer = DotStuffer(policy)
    return b"".join(stuffer.feed(chunk) for chunk in chunks) + stuffer.finish()


def unstuff(wire: bytes) -> bytes:
    """What a receiver gets back: the shared server-side DATA reader."""
    reader = DataReader(10**9)
    buffer = bytearray(wire)
    content, done = reader.feed_from(buffer)
    assert done
    assert buffer == b""  # the terminator is the very end: nothing after it was sent
    return bytes(content)


def normalised(data: bytes) -> bytes:
    out = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return out + b"\r\n" if out and not out.endswith(b"\r\n") else out


@pytest.mark.parametrize(
    ("chunks", "wire"),
    [
        ([], b".\r\n"),
        ([b""], b".\r\n"),
        ([b"."], b"..\r\n.\r\n"),
        ([b".\r\n"], b"..\r\n.\r\n"),
        ([b"a\r\n.b\r\n"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r\n", b".b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r", b"\n.b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r", b".b"], b"a\r\n..b\r\n.\r\n"),  # bare CR becomes a line end
        ([b"a\n.b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r"], b"a\r\n.\r\n"),
        ([b"a\r", b"", b"\n"], b"a\r\n.\r\n"),
        ([b"\r\n.\r\n"], b"\r\n..\r\n.\r\n"),  # the smuggling sequence is stuffed
        ([b"\n.\n"], b"\r\n..\r\n.\r\n"),
        ([b"\r.\r"], b"\r\n..\r\n.\r\n"),
    ],
)
def test_cases(chunks: list[bytes], wire: bytes) -> None:
    assert stuff(chunks) == wire


@given(st.lists(st.binary(max_size=20) | st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"\r\n."]), max_size=20))
def test_any_chunking_round_trips_and_never_emits_a_bare_newline(chunks: list[bytes]) -> None:
    wire = stuff(chunks)
    assert stuff([b"".join(chunks)]) == wire  # chunk boundaries change nothing
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")  # no bare CR or LF
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    assert unstuff(wire) == normalised(b"".join(chunks))


@given(st.lists(st.binary(max_size=20), max_size=10))
def test_line_endings_alone(chunks: list[bytes]) -> None:
    endings = LineEndings()
    out = b"".join(endings.feed(chunk) for chunk in chunks) + endings.finish()
    expected = b"".join(chunks).replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    assert out == expected


@pytest.mark.parametrize("chunks", [[b"a\nb"], [b"a\rb"], [b"a\r", b"b"], [b"a\r"], [b"\n"]])
def test_reject_policy(chunks: list[bytes]) -> None:
    with pytest.raises(LocalProtocolError):
        stuff(chunks, BareNewlinePolicy.REJECT)


def test_reject_policy_passes_crlf_split_across_chunks() -> None:
    assert stuff([b"a\r", b"\nb"], BareNewlinePolicy.REJECT) == b"a\r\nb\r\n.\r\n"


def test_accept_is_not_a_client_policy() -> None:
    with pytest.raises(LocalProtocolError):
        DotStuffer(BareNewlinePolicy.ACCEPT)


def test_bytes_like_input() -> None:
    stuffer = DotStuffer()
    assert stuffer.feed(memoryview(b".x")) == b"..x"
    assert stuffer.feed(bytearray(b"\r\n.")) == b"\r\n.."


# --- the driver's fast paths agree with the streaming reference ------------------------------------

PIECES = st.lists(
    st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"x", b"\x00", b"y" * 500]), max_size=30
)


@given(PIECES)
def test_whole_content_normalises_like_line_endings(pieces: list[bytes]) -> None:
    from smtpcore import _transaction as transaction
    from smtpcore._transaction import _MAX_TEXT_LINE, _whole_content

    data = b"".join(pieces)
    endings = LineEndings(BareNewlinePolicy.NORMALISE)
    reference = endings.feed(data) + endings.finish()
    if reference and not reference.endswith(b"\r\n"):
        reference += b"\r\n"
    longest = max(map(len, reference.split(b"\r\n")), default=0)
    # Large content is counted, not split, when its line endings are all CRLF: both ways.
    for split_at_most in (transaction._SPLIT_AT_MOST, 0):
        with mock.patch.object(transaction, "_SPLIT_AT_MOST", split_at_most):
            content = _whole_content(data, BareNewlinePolicy.NORMALISE, exact=False)
        assert content.data == reference
        assert content.binary == (b"\x00" in reference or longest > _MAX_TEXT_LINE)


@given(
    st.lists(st.integers(0, 1100) | st.sampled_from([997, 998, 999, 1000]), max_size=12),
    st.booleans(),
)
def test_the_first_long_line_is_found_by_hops_as_by_splitting(lengths: list[int], final_crlf: bool) -> None:
    # The driver finds a line over 998 octets by hopping from line end to line end;
    # splitting into lines (what it did before) is the reference.
    from smtpcore._transaction import _MAX_TEXT_LINE, _first_long_line

    data = b"\r\n".join(b"x" * n for n in lengths) + (b"\r\n" if final_crlf and lengths else b"")
    lines = data.split(b"\r\n")
    expected = next(((i, len(line)) for i, line in enumerate(lines, 1) if len(line) > _MAX_TEXT_LINE), None)
    assert _first_long_line(data) == expected


@given(PIECES, st.lists(st.integers(0, 20), max_size=5))
def test_stuff_then_feed_stuffed_is_feed(pieces: list[bytes], cuts: list[int]) -> None:
    # The driver's whole messages: normalised, ending with CRLF, stuffed at once,
    # then sent in pieces cut anywhere; the wire form must be the streaming one.
    endings = LineEndings(BareNewlinePolicy.NORMALISE)
    clean = endings.feed(b"".join(pieces)) + endings.finish()
    if clean and not clean.endswith(b"\r\n"):
        clean += b"\r\n"
    stuffed = stuff_whole(clean)
    bounds = sorted({min(cut, len(stuffed)) for cut in cuts} | {0, len(stuffed)})
    fast = DotStuffer()
    wire = b"".join(fast.feed_stuffed(memoryview(stuffed)[a:b]) for a, b in itertools.pairwise(bounds))
    slow = DotStuffer()
    assert wire + fast.finish() == slow.feed(clean) + slow.finish()
