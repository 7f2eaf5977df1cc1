"""The server's view of a client that pipelines where it must wait (RFC 2920 §3.1).

Each chunk below is one read: bytes in separate chunks arrived after the server
had answered what came before, bytes in one chunk arrived together.  A command
that must end a group (EHLO, DATA, STARTTLS, AUTH, NOOP, VRFY, EXPN), or any
command when PIPELINING was not offered, must not have more behind it.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest
from helpers import drive, make_server, normalise, split_at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server_fuzz import CONFIG, policy, streams

from smtpcore import AuthPolicy, ConnectionClosed, Hello, RemoteProtocolError, ServerConfig, TlsPolicy
from smtpcore._replies import IMPROPER_PIPELINING

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<a@example.com>\r\n"
RCPT = b"RCPT TO:<b@example.com>\r\n"
PLAIN = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0s3cret") + b"\r\n"
AUTH = ServerConfig(auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True, auth_mechanisms=("PLAIN", "LOGIN"))

CASES = {
    # What well-behaved clients do: none of it is noted.
    "one command per read": ([EHLO, MAIL, RCPT, b"DATA\r\n", b"hi\r\n.\r\n", b"QUIT\r\n"], None, None),
    "a group after PIPELINING, ending in DATA": ([EHLO, MAIL + RCPT + RCPT + b"DATA\r\n"], None, None),
    "the content, its end and the next group together": (
        [EHLO, MAIL + RCPT + b"DATA\r\n", b"hi\r\n.\r\n" + MAIL + RCPT + b"DATA\r\n"],
        None,
        None,
    ),
    "RSET and HELP inside a group": ([EHLO, b"RSET\r\nHELP\r\n" + MAIL + RCPT], None, None),
    "BDAT chunks and commands in one read": ([EHLO, MAIL + RCPT + b"BDAT 2\r\nhiBDAT 0 LAST\r\nQUIT\r\n"], None, None),
    "anything after QUIT": ([EHLO, b"QUIT\r\nNOOP\r\n"], None, None),
    "anything after QUIT, even before the hello": ([b"QUIT\r\nNOOP\r\n"], None, None),
    "a BDAT's own octets where PIPELINING is not offered": (
        [EHLO, MAIL, RCPT, b"BDAT 2 LAST\r\nhi"],
        None,
        ServerConfig(pipelining=False),
    ),
    "AUTH PLAIN with its response, then MAIL (RFC 4954 §4)": ([EHLO, PLAIN + MAIL + RCPT], None, AUTH),
    # What they must not.
    "MAIL behind EHLO, before its reply offered PIPELINING": ([EHLO + MAIL], "EHLO", None),
    "a HELO session never offers PIPELINING": ([b"HELO client.example\r\n", MAIL + RCPT], "MAIL", None),
    "nor does HELO after EHLO": ([EHLO, b"HELO client.example\r\n", MAIL + RCPT], "MAIL", None),
    "EHLO behind RSET, before any hello": ([b"RSET\r\n" + EHLO], "RSET", None),
    "a server without PIPELINING": ([EHLO, MAIL + RCPT], "MAIL", ServerConfig(pipelining=False)),
    "content behind DATA, before its 354": ([EHLO, MAIL, RCPT, b"DATA\r\nhi\r\n.\r\n"], "DATA", None),
    "NOOP inside a group": ([EHLO, b"NOOP\r\n" + MAIL], "NOOP", None),
    "VRFY inside a group": ([EHLO, b"VRFY bob\r\n" + MAIL], "VRFY", None),
    "before the hello": ([b"NOOP\r\n" + EHLO], "NOOP", None),
    "a LOGIN exchange before its challenges": (
        [EHLO, b"AUTH LOGIN\r\n" + base64.b64encode(b"alice") + b"\r\n" + base64.b64encode(b"s3cret") + b"\r\n"],
        "AUTH",
        AUTH,
    ),
    "LOGIN with an initial response still needs a round trip": (
        [EHLO, b"AUTH LOGIN " + base64.b64encode(b"alice") + b"\r\n" + base64.b64encode(b"s3cret") + b"\r\n"],
        "AUTH",
        AUTH,
    ),
    "MAIL behind LHLO": ([b"LHLO client.example\r\n" + MAIL], "LHLO", ServerConfig(lmtp=True)),
    "the first time is what is kept": ([EHLO + MAIL, RCPT + b"DATA\r\nhi\r\n"], "EHLO", None),
}


@pytest.mark.parametrize(("reads", "improper", "config"), CASES.values(), ids=CASES.keys())
def test_what_is_noted_as_improper_pipelining(
    reads: list[bytes], improper: str | None, config: ServerConfig | None
) -> None:
    conn = make_server(config)
    events, _ = drive(reads, conn=conn)
    assert conn.improper_pipelining == improper
    assert not any(isinstance(event, RemoteProtocolError) for event in events)  # noted, not refused


@pytest.mark.parametrize(("reads", "improper", "config"), CASES.values(), ids=CASES.keys())
def test_refused_with_554_when_configured(
    reads: list[bytes], improper: str | None, config: ServerConfig | None
) -> None:
    conn = make_server(dataclasses.replace(config or ServerConfig(), reject_improper_pipelining=True))
    events, out = drive(reads, conn=conn)
    refused = [event for event in events if isinstance(event, RemoteProtocolError)]
    if improper is None:
        assert refused == []
        return
    assert [str(error) for error in refused] == [f"client sent more after {improper} without waiting for the reply"]
    assert refused[0].reply is not None and refused[0].reply.code == 554
    assert out.endswith(b" Protocol violation: client sent more before the reply it must wait for\r\n")
    # The command it came behind is refused with it: the application never sees it.
    if improper in ("EHLO", "LHLO"):
        assert not any(isinstance(event, Hello) for event in events)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_the_refusal_carries_an_enhanced_code_once_they_were_offered() -> None:
    _, out = drive([EHLO, MAIL, RCPT, b"DATA\r\nhi\r\n"], ServerConfig(reject_improper_pipelining=True))
    refusal = b"554 5.5.0 Protocol violation: client sent more before the reply it must wait for\r\n"
    assert out.endswith(b"250 2.1.5 Recipient OK\r\n" + refusal)


def test_starttls_with_more_behind_it_is_refused_before_the_handshake() -> None:
    # The bytes behind STARTTLS are an injection attempt or a broken client: they
    # are never executed either way (CVE-2011-0411), and refused here without TLS.
    config = ServerConfig(tls=TlsPolicy.OPTIONAL, reject_improper_pipelining=True)
    events, out = drive([EHLO, b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n"], config)
    assert isinstance(events[-1], RemoteProtocolError)
    assert b"220 2.0.0 Ready to start TLS" not in out
    noted = make_server(ServerConfig(tls=TlsPolicy.OPTIONAL))
    drive([EHLO, b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n"], conn=noted)
    assert noted.improper_pipelining == "STARTTLS"


def test_after_tls_pipelining_waits_for_the_new_ehlo() -> None:
    # RFC 3207 §4.2: everything learnt before TLS is forgotten, PIPELINING too.
    conn = make_server(ServerConfig(tls=TlsPolicy.OPTIONAL))
    drive([EHLO, b"STARTTLS\r\n", EHLO + MAIL], conn=conn)
    assert conn.improper_pipelining == "EHLO"
    conn = make_server(ServerConfig(tls=TlsPolicy.OPTIONAL))
    drive([EHLO, b"STARTTLS\r\n", b"RSET\r\n" + EHLO], conn=conn)
    assert conn.improper_pipelining == "RSET"
    conn = make_server(ServerConfig(tls=TlsPolicy.OPTIONAL))
    drive([EHLO, b"STARTTLS\r\n", EHLO, MAIL + RCPT], conn=conn)
    assert conn.improper_pipelining is None


def test_a_session_that_ends_cleanly_is_not_marked() -> None:
    conn = make_server(ServerConfig(reject_improper_pipelining=True))
    events, _ = drive([EHLO, MAIL + RCPT + b"DATA\r\n", b"hi\r\n.\r\nQUIT\r\n"], conn=conn, close=True)
    assert isinstance(events[-1], ConnectionClosed)
    assert conn.improper_pipelining is None


# Refusing only cuts a session short: up to the refusal it is the session the
# server has when it only notes the client's hurry, and it is refused exactly
# when that one notes it.  Any bytes, any reads.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_refusing_cuts_the_noting_session_short_where_it_notes(data: bytes, cuts: list[int]) -> None:
    reads = split_at(data, cuts)
    noting, refusing = make_server(CONFIG), make_server(dataclasses.replace(CONFIG, reject_improper_pipelining=True))
    noted_events, noted_out = drive(reads, conn=noting, policy=policy, tls=False, close=True)
    refused_events, refused_out = drive(reads, conn=refusing, policy=policy, tls=False, close=True)
    if noting.improper_pipelining is None:
        assert normalise(refused_events) == normalise(noted_events)
        assert refused_out == noted_out
        return
    *before, refusal = normalise(refused_events)
    assert refusal == ("RemoteProtocolError", IMPROPER_PIPELINING)
    assert normalise(noted_events)[: len(before)] == before
    last_line = refused_out.rindex(b"\r\n", 0, len(refused_out) - 2) + 2
    assert refused_out[last_line:].endswith(
        b"Protocol violation: client sent more before the reply it must wait for\r\n"
    )
    assert noted_out.startswith(refused_out[:last_line])
    assert refusing.improper_pipelining == noting.improper_pipelining
