"""The strict reply reader: each case whole, byte by byte, and with trailing bytes left alone."""

from __future__ import annotations

import re
from typing import Any

import pytest
from client_helpers import byte_split, read_replies
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpcore import NEED_DATA, PAUSED, ClientConfig, RemoteProtocolError, Reply, _replyreader
from smtpcore._receivebuffer import ReceiveBuffer
from smtpcore._replyreader import ReplyReader


def three_ways(data: bytes, expected: int = 1, config: ClientConfig | None = None) -> list[Any]:
    whole = read_replies(data, expected, config)
    assert read_replies(byte_split(data), expected, config) == whole
    return whole


GOOD = [
    (b"250 OK\r\n", Reply._unchecked(250, ("OK",), None)),
    (b"250\r\n", Reply._unchecked(250, ("",), None)),
    (b"250 \r\n", Reply._unchecked(250, ("",), None)),
    (b"250-a\r\n250-\r\n250 c\r\n", Reply._unchecked(250, ("a", "", "c"), None)),
    (b"550 tab\there\r\n", Reply._unchecked(550, ("tab\there",), None)),
    (b"220 caf\xc3\xa9 \xff\r\n", Reply._unchecked(220, ("café \ufffd",), None)),
    (b"334 \r\n", Reply._unchecked(334, ("",), None)),
]


@pytest.mark.parametrize(("data", "reply"), GOOD)
def test_good_replies(data: bytes, reply: Reply) -> None:
    # PAUSED: the one outstanding command is answered; the client must send next.
    assert three_ways(data) == [reply, PAUSED]
    # A partial reply waits for more.
    assert read_replies(data[:-1], 1) == [NEED_DATA]


BAD = [
    b"2500 x\r\n",  # four digits
    b"250x\r\n",  # no separator
    b"099 x\r\n",  # first digit
    b"260 x\r\n",  # second digit above 5
    b"25 x\r\n",
    b" 250 x\r\n",
    b"\xb2\xb50 x\r\n",
    b"250-a\r\n251 b\r\n",  # codes differ
    b"250 a\rb\r\n",  # bare CR inside a line
    b"250 a\x00\r\n",
    b"250 a\x7f\r\n",
    b"250 a\x1b[31m\r\n",
    b"\r\n",
    b"250_x\r\n",
    b"599 x\r\n",  # 5x9 fine, but 599? second digit 9 > 5
]


@pytest.mark.parametrize("data", BAD)
def test_bad_replies_are_remote_errors(data: bytes) -> None:
    events = three_ways(data)
    assert events[-1][0] == "error"
    assert not any(isinstance(event, Reply) for event in events)


def test_lines_ended_by_a_lone_lf_are_read_as_smtplib_and_go_read_them() -> None:
    # Some servers (devices, ported code) end reply lines with LF alone: read, not waited on to a timeout.
    events = three_ways(b"220 old.example ESMTP\n250-old.example\r\n250 SIZE 1000\n", expected=2)
    assert events[:-1] == [
        Reply._unchecked(220, ("old.example ESMTP",), None),
        Reply._unchecked(250, ("old.example", "SIZE 1000"), None),
    ]
    # A lone CR still ends nothing and is refused inside the text.
    assert three_ways(b"250 a\rb\n")[-1][0] == "error"


def test_trailing_bytes_are_left_in_the_buffer() -> None:
    config = ClientConfig()
    reader = ReplyReader(config)
    buffer = ReceiveBuffer()
    buffer.feed(b"250-a\r\n250 b\r\n354 partial")
    assert reader.next_reply(buffer) == Reply._unchecked(250, ("a", "b"), None)
    assert bytes(buffer.peek()) == b"354 partial"
    assert reader.next_reply(buffer) is None
    assert not reader.in_reply


def test_several_replies_pair_with_outstanding_commands() -> None:
    data = b"220 hi\r\n250 a\r\n550 b\r\n"
    events = three_ways(data, expected=3)
    assert [event.code for event in events[:-1]] == [220, 250, 550]


def test_bounds() -> None:
    config = ClientConfig(max_reply_line=512, max_reply_size=1024, max_reply_lines=3)
    assert three_ways(b"250 " + b"x" * 506 + b"\r\n", config=config)[0].code == 250
    assert three_ways(b"250 " + b"x" * 507 + b"\r\n", config=config)[-1][0] == "error"
    # An overlong line is refused as soon as it passes the bound, before any CRLF.
    assert read_replies(b"250 " + b"x" * 600, 1, config)[-1][0] == "error"
    assert three_ways(b"250-a\r\n250-b\r\n250 c\r\n", config=config)[0].text == ("a", "b", "c")
    assert three_ways(b"250-a\r\n250-b\r\n250-c\r\n250 d\r\n", config=config)[-1][0] == "error"
    line = b"250-" + b"x" * 400 + b"\r\n"
    assert three_ways(line * 2 + b"250 x\r\n", config=config)[0].code == 250
    assert three_ways(line * 2 + b"250-x\r\n250 " + b"y" * 300 + b"\r\n", config=config)[-1][0] == "error"


def test_the_size_bound_is_per_reply() -> None:
    # max_reply_size on its own (the line count bounds nothing here): one reply over
    # it is an error, however many replies under it come one after the other.
    config = ClientConfig(max_reply_line=512, max_reply_size=1024, max_reply_lines=100)
    line = b"250-" + b"x" * 400 + b"\r\n"
    # Every octet counts, the CRLFs too: 2 * 406 + 212 is the most.
    assert three_ways(line * 2 + b"250 " + b"y" * 206 + b"\r\n", config=config)[0].code == 250
    assert three_ways(line * 2 + b"250 " + b"y" * 207 + b"\r\n", config=config)[-1] == ("error", "reply")
    events = three_ways((line * 2 + b"250 x\r\n") * 3, expected=3, config=config)
    assert [event.code for event in events[:-1]] == [250, 250, 250]


def test_enhanced_codes_only_when_advertised_and_matching() -> None:
    reader = ReplyReader(ClientConfig())

    def parse(data: bytes, esc: bool) -> Reply:
        reader.enhanced_status_codes = esc
        buffer = ReceiveBuffer()
        buffer.feed(data)
        reply = reader.next_reply(buffer)
        assert reply is not None
        return reply

    assert parse(b"550 5.1.1 no user\r\n", True) == Reply._unchecked(550, ("no user",), "5.1.1")
    assert parse(b"550 5.1.1 no user\r\n", False) == Reply._unchecked(550, ("5.1.1 no user",), None)
    assert parse(b"550 4.1.1 mismatch\r\n", True).enhanced is None
    assert parse(b"250 2.0.0\r\n", True) == Reply._unchecked(250, ("",), "2.0.0")
    assert parse(b"250 2.0.0x\r\n", True).enhanced is None
    assert parse(b"354 3.0.0 go\r\n", True).enhanced is None  # RFC 3463 has no class 3
    multi = parse(b"550-5.7.1 one\r\n550-5.7.1\r\n550 other\r\n", True)
    assert multi == Reply._unchecked(550, ("one", "", "other"), "5.7.1")


# The one-line fast path (_ONE_LINE_RE) must say exactly what the general path says.
_LINE_PIECES = st.lists(
    st.sampled_from([b"2", b"5", b"0", b"9", b" ", b"-", b"x", b"\t", b"\x00", b"\x7f", b"\r", b"\xc3\xa9", b"."]),
    max_size=12,
)


def _read_one(line: bytes, enhanced: bool) -> object:
    buffer = ReceiveBuffer()
    buffer.feed(line + b"\r\n")
    reader = ReplyReader(ClientConfig())
    reader.enhanced_status_codes = enhanced
    try:
        return reader.next_reply(buffer)
    except RemoteProtocolError as exc:
        return ("error", str(exc))


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    code=st.sampled_from([b"250", b"550", b"221", b"354", b"450", b"2500", b"25", b"099", b"260"]),
    rest=_LINE_PIECES,
    enhanced=st.booleans(),
)
def test_the_one_line_fast_path_agrees_with_the_general_reader(
    code: bytes, rest: list[bytes], enhanced: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = code + b"".join(rest)
    fast = _read_one(line, enhanced)
    with monkeypatch.context() as patched:
        patched.setattr(_replyreader, "_ONE_LINE_RE", re.compile(rb"(?!)"))  # never matches
        general = _read_one(line, enhanced)
    assert fast == general


def test_the_fast_path_takes_only_a_first_line() -> None:
    # "250 c" ends a multi-line reply here: the lines before it make the reply.
    assert three_ways(b"250-a\r\n250 2.0.0 c\r\n") == [Reply._unchecked(250, ("a", "2.0.0 c"), None), PAUSED]
