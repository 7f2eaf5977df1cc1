"""Hypothesis over the client's input: any split, any bytes."""

from __future__ import annotations

import itertools

from client_helpers import read_replies, run_client_transcript
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore import (
    NEED_DATA,
    ClientConfig,
    ClientConnection,
    ClientDriver,
    Envelope,
    Noop,
    RemoteProtocolError,
    Reply,
    TlsPolicy,
)

REPLY_LINES = st.lists(
    st.tuples(
        st.sampled_from([b"220", b"250", b"354", b"421", b"451", b"550", b"2500", b"099", b"25"]),
        st.sampled_from([b" ", b"-", b""]),
        st.binary(max_size=30),
    ),
    max_size=12,
).map(lambda lines: b"".join(code + sep + text + b"\r\n" for code, sep, text in lines))


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted({cut for cut in cuts if 0 < cut < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(REPLY_LINES, st.lists(st.integers(0, 400), max_size=20))
def test_any_split_of_the_reply_stream_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    whole = read_replies(data, 6)
    assert read_replies(splits(data, cuts), 6) == whole


SMALL = ClientConfig(max_reply_line=512, max_reply_size=2048, max_reply_lines=8)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=700) | REPLY_LINES, max_size=10))
def test_arbitrary_bytes_only_raise_remote_errors_and_stay_bounded(chunks: list[bytes]) -> None:
    conn = ClientConnection(SMALL)
    conn._outstanding.extend(conn._outstanding[0].__class__(Noop()) for _ in range(20))
    for chunk in chunks:
        conn.receive_data(chunk)
        try:
            while isinstance(event := conn.next_event(), Reply):
                assert 200 <= event.code <= 559
                assert len(event.text) <= SMALL.max_reply_lines
        except RemoteProtocolError:
            return
        assert event is NEED_DATA or conn.closed
        # Bounded: an incomplete line never exceeds its limit, nor a reply its size.
        assert len(conn._buffer) < SMALL.max_reply_line + 700
        assert conn._reader._size <= SMALL.max_reply_size
        assert len(conn._reader._lines) <= SMALL.max_reply_lines


SESSION = """
S: 220 mx ESMTP
C: EHLO client.example
S: 250-mx
S: 250-PIPELINING
S: 250-ENHANCEDSTATUSCODES
S: 250 8BITMIME
C: MAIL FROM:<a@x.org>
C: RCPT TO:<b@y.org>
C: RCPT TO:<c@y.org>
C: DATA
S: 250 2.1.0 ok
S: 550-5.1.1 no
S: 550 5.1.1 such user
S: 250 2.1.5 ok
S: 354 go
C: x
C: .
C: QUIT
S: 250 2.0.0 ok
S: 221 2.0.0 bye
"""


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 200), max_size=8))
def test_driver_outcome_does_not_depend_on_how_replies_arrive(cuts: list[int]) -> None:
    def make() -> ClientDriver:
        return ClientDriver(
            ClientConfig(local_hostname="client.example", starttls=TlsPolicy.OFF),
            [(Envelope("a@x.org", ["b@y.org", "c@y.org"]), b"x")],
        )

    whole = run_client_transcript(SESSION, make())
    split = run_client_transcript(SESSION, make(), split=lambda data: splits(data, cuts))
    assert repr(split.result) == repr(whole.result)
    refusal = whole.result.messages[0].refused["b@y.org"]
    assert refusal.reply is not None
    assert refusal.reply.text == ("no", "such user")
