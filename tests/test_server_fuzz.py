"""Property tests of the server role (hypothesis).

1. Any split of any input stream gives the same events and the same output.
2. Arbitrary bytes, alone or after a valid prefix, raise nothing but RemoteProtocolError.
3. A RuleBasedStateMachine checks every reply code against a small RFC 5321 model.
4. The receive buffer stays within its limit (plus a constant) after every feed.
5. accept() gives the events, output and state that send() gives with the default replies.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from helpers import Driver, drive, make_server, normalise, split_at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from smtpcore import (
    AuthCredentials,
    AuthPolicy,
    Event,
    Rcpt,
    Reply,
    ServerConfig,
    ServerConnection,
    State,
    TlsPolicy,
    XClient,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONFIG = ServerConfig(
    auth=AuthPolicy.OPTIONAL,
    auth_mechanisms=("PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"),
    allow_insecure_auth=True,
    tls=TlsPolicy.OPTIONAL,
    dsn=True,
    xclient=True,
    xforward=True,
    max_message_size=65536,
    max_errors=1000,
)
# Pieces that make interesting streams: commands in and out of order, content,
# SASL lines, framing errors and raw bytes.
VOCAB = [
    b"EHLO c.example\r\n",
    b"HELO c.example\r\n",
    b"LHLO c.example\r\n",
    b"MAIL FROM:<a@example.com>\r\n",
    b"MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\n",
    b"MAIL FROM:<a@example.com> BODY=BINARYMIME\r\n",
    b"RCPT TO:<b@example.com>\r\n",
    b"RCPT TO:<no@example.com> NOTIFY=NEVER\r\n",
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"..x\r\n",
    b"hello world\r\n",
    b"\n.\n",
    b"\r.\r",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n",
    base64.b64encode(b"\0u\0p") + b"\r\n",
    # A token the policy refuses with an error challenge, one it takes, and the answer to the challenge.
    b"AUTH OAUTHBEARER " + base64.b64encode(b"n,a=u,\x01auth=Bearer bad\x01\x01") + b"\r\n",
    b"AUTH XOAUTH2 " + base64.b64encode(b"user=u\x01auth=Bearer good\x01\x01") + b"\r\n",
    b"AQ==\r\n",
    b"*\r\n",
    b"=\r\n",
    b"QUIT\r\n",
    # XCLIENT taken (the session starts over, LOGIN authenticates), refused, and malformed.
    b"XCLIENT ADDR=192.0.2.7 NAME=mail.example.org LOGIN=u+2Bx\r\n",
    b"XCLIENT NAME=refused.example\r\n",
    b"XCLIENT HELO=+0D+0A PORT=99999\r\n",
    # XFORWARD taken (kept until the transaction ends) and malformed.
    b"XFORWARD NAME=spike.example ADDR=192.0.2.7 HELO=my+20laptop IDENT=4FqX\r\n",
    b"XFORWARD SOURCE=ELSEWHERE\r\n",
    b"FOO\r\n",
    b"x" * 600 + b"\r\n",
    b"\r",
    b"\n",
    b"\x00",
    b"\xff",
]
streams = st.lists(st.one_of(st.sampled_from(VOCAB), st.binary(max_size=12)), max_size=30).map(b"".join)


def policy(conn: ServerConnection, event: Event) -> None:
    """Accept, except recipients called "no", the token "bad" (refused after an error
    challenge) and XCLIENT naming "refused.example"."""
    if isinstance(event, Rcpt) and event.recipient.startswith("no@"):
        conn.send(Reply(550, "No such user", "5.1.1"))
    elif isinstance(event, XClient) and event.name == "refused.example":
        conn.send(Reply(550, "Insufficient authorization", "5.7.0"))
    elif isinstance(event, AuthCredentials) and event.token == "bad":
        conn.send_auth_error(b'{"status":"invalid_token"}')
    else:
        conn.accept()


# --- (1) split invariance ---------------------------------------------------------------------------


@SETTINGS
@given(data=streams, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_any_split_gives_the_same_events_and_output(data: bytes, cuts: list[int]) -> None:
    # tls=False: the driver never completes a handshake, so everything after an
    # accepted STARTTLS is discarded whatever the split.
    whole_events, whole_out = drive(data, CONFIG, policy, tls=False, close=True)
    split_events, split_out = drive(split_at(data, cuts), CONFIG, policy, tls=False, close=True)
    assert split_out == whole_out
    assert normalise(split_events) == normalise(whole_events)


# Few errors allowed, and a delay from the third: the error count, the delay owed
# and where the 421 falls must not depend on the reads either.
STRICT = dataclasses.replace(CONFIG, max_errors=5, error_delay=1.0, error_delay_after=2)


@SETTINGS
@given(data=streams, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_any_split_counts_the_same_errors_and_owes_the_same_delay(data: bytes, cuts: list[int]) -> None:
    whole, split = make_server(STRICT), make_server(STRICT)
    whole_events, whole_out = drive(data, policy=policy, conn=whole, tls=False, close=True)
    split_events, split_out = drive(split_at(data, cuts), policy=policy, conn=split, tls=False, close=True)
    assert split_out == whole_out
    assert normalise(split_events) == normalise(whole_events)
    assert split.error_count == whole.error_count <= STRICT.max_errors + 1  # a junk command refused: two
    owed = whole.take_reply_delay()
    assert split.take_reply_delay() == owed
    assert owed <= len(data.split(b"\n"))  # a second at most per line


@settings(max_examples=40, deadline=None)
@given(data=streams)
def test_byte_by_byte_gives_the_same_events_and_output(data: bytes) -> None:
    whole_events, whole_out = drive(data, CONFIG, policy, tls=False)
    drip_events, drip_out = drive([data[i : i + 1] for i in range(len(data))], CONFIG, policy, tls=False)
    assert drip_out == whole_out
    assert normalise(drip_events) == normalise(whole_events)


# --- (2) arbitrary bytes ----------------------------------------------------------------------------

PREFIXES = [
    b"",
    b"EHLO c\r\n",
    b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n",
    b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 40\r\n",
    b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 2\r\nab",
    b"EHLO c\r\nAUTH PLAIN\r\n",
    b"EHLO c\r\nAUTH LOGIN\r\n",
    b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n",
]


@SETTINGS
@given(prefix=st.sampled_from(PREFIXES), junk=st.binary(max_size=300), close=st.booleans())
def test_arbitrary_bytes_only_raise_remote_protocol_error(prefix: bytes, junk: bytes, close: bool) -> None:
    # drive() records RemoteProtocolError as an event; anything else propagates and fails.
    _events, out = drive([prefix, junk], CONFIG, policy, close=close)
    assert out.startswith(b"220 ")
    assert out.endswith(b"\r\n") or out == b""


ARGUMENT_CHARACTERS = st.characters(blacklist_categories=("Cc", "Cs"))


@SETTINGS
@given(
    prefix=st.sampled_from(PREFIXES),
    verb=st.sampled_from(["HELO", "EHLO", "MAIL FROM:", "RCPT TO:", "VRFY", "AUTH", "BDAT", "NOOP"]),
    run=st.tuples(ARGUMENT_CHARACTERS, st.integers(min_value=0, max_value=600)),
    tail=st.text(ARGUMENT_CHARACTERS, max_size=20),
)
def test_any_argument_of_any_length_gets_a_reply(prefix: bytes, verb: str, run: tuple[str, int], tail: str) -> None:
    # Refusals quote the argument: one near the line limit ("HELO " and 505 "!") once made a
    # reply line over 512 octets, and next_event() raised LocalProtocolError instead of a 501.
    character, length = run
    line = f"{verb} {'<' if verb.endswith(':') else ''}{character * length}{tail}\r\n".encode()
    _events, out = drive([prefix, line], CONFIG, policy)
    assert out.endswith(b"\r\n")
    assert all(len(reply) <= 510 for reply in out.split(b"\r\n"))


@SETTINGS
@given(data=streams, junk=st.binary(max_size=100))
def test_vocabulary_then_junk_only_raise_remote_protocol_error(data: bytes, junk: bytes) -> None:
    drive([data, junk], CONFIG, policy, close=True)


# --- (5) accept() is send() with the default replies -----------------------------------------------
# accept() writes the one-reply defaults itself, without send()'s checks: the
# events, the output and the state must be what send() gives with the same replies.


def send_defaults(conn: ServerConnection, event: Event) -> None:
    """``policy``, answering through send() with the replies accept() stands for."""
    refused = isinstance(event, Rcpt) and event.recipient.startswith("no@")
    refused = refused or (isinstance(event, XClient) and event.name == "refused.example")
    if refused or (isinstance(event, AuthCredentials) and event.token == "bad"):
        policy(conn, event)
    else:
        for reply in conn._default_replies():
            conn.send(reply)


ACCEPT_CONFIGS = [
    CONFIG,
    ServerConfig(lmtp=True, xclient=True, max_errors=1000, max_message_size=65536),
    ServerConfig(enhanced_status_codes=False, vrfy_enabled=True, expn_enabled=True, max_errors=1000),
    ServerConfig(tls=TlsPolicy.REQUIRED, auth=AuthPolicy.REQUIRED, allow_insecure_auth=True, max_errors=1000),
]


# Mostly well-formed sessions, so that commands are accepted and transactions
# end, with pieces of the vocabulary in between.
OTHERS = [
    b"XCLIENT ADDR=IPV6:2001:db8::7 LOGIN=u\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN " + base64.b64encode(b"\0u\0p") + b"\r\n",
    b"VRFY x\r\n",
    b"EXPN y\r\n",
]
transactions = st.tuples(
    st.sampled_from([b"MAIL FROM:<a@example.com>\r\n", b"MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\n"]),
    st.lists(st.sampled_from([b"RCPT TO:<b@example.com>\r\n", b"RCPT TO:<no@example.com>\r\n"]), max_size=3),
    st.sampled_from([b"DATA\r\nhello\r\n.\r\n", b"BDAT 3 LAST\r\nabc", b"BDAT 1\r\naBDAT 0 LAST\r\n", b"RSET\r\n"]),
).map(lambda parts: parts[0] + b"".join(parts[1]) + parts[2])
sessions = st.tuples(
    st.sampled_from([b"EHLO c.example\r\n", b"HELO c.example\r\n", b""]),
    st.lists(st.one_of(transactions, st.sampled_from(VOCAB), st.sampled_from(OTHERS)), max_size=10),
).map(lambda parts: parts[0] + b"".join(parts[1]))


@SETTINGS
@given(data=sessions, config=st.sampled_from(ACCEPT_CONFIGS), cuts=st.lists(st.integers(0, 2000), max_size=4))
def test_accept_is_send_with_the_default_replies(data: bytes, config: ServerConfig, cuts: list[int]) -> None:
    data = data.replace(b"EHLO", b"LHLO").replace(b"HELO", b"LHLO") if config.lmtp else data
    accepted, via_send = make_server(config), make_server(config)
    accepted_events, accepted_out = drive(split_at(data, cuts), conn=accepted, policy=policy, close=True)
    send_events, send_out = drive(split_at(data, cuts), conn=via_send, policy=send_defaults, close=True)
    assert accepted_out == send_out
    assert normalise(accepted_events) == normalise(send_events)
    assert (accepted.state, accepted.recipients, accepted.mail) == (via_send.state, via_send.recipients, via_send.mail)


# --- (4) bounded buffers ----------------------------------------------------------------------------


def check_bounds(conn: ServerConnection) -> None:
    config = conn.config
    size = len(conn._buffer)
    state = conn.state
    if conn.reply_due or state in (State.CLOSED, State.TLS):
        return  # paused or finished: the adapter stops reading
    if state is State.DATA:
        assert size <= 5  # at most a possible start of CRLF.CRLF
    elif state is State.CHUNK:
        assert size == 0
    elif state is State.AUTH or bytes(conn._buffer.peek()[:5]).upper() == b"AUTH ":
        assert size < config.max_auth_line + 1  # a SASL response, or AUTH with an initial response
    else:
        # max_command_line, and what the extensions advertised add (700 at most: AUTH, DSN...).
        assert size < config.max_command_line + 700 + 1


def long_runs() -> st.SearchStrategy[bytes]:
    byte = st.sampled_from([b"\r", b"\n", b"\x00", b"x", b"\r\n", b".", b" "])
    return st.tuples(byte, st.integers(min_value=1, max_value=20000)).map(lambda t: t[0] * t[1])


@SETTINGS
@given(
    prefix=st.sampled_from(PREFIXES),
    chunks=st.lists(st.one_of(long_runs(), st.sampled_from(VOCAB), st.binary(max_size=50)), max_size=12),
)
def test_buffer_stays_bounded_after_every_feed(prefix: bytes, chunks: list[bytes]) -> None:
    conn = make_server(CONFIG)
    driver = Driver(conn, policy, tls=False)
    driver.feed(prefix)
    for chunk in chunks:
        driver.feed(chunk)
        check_bounds(conn)
        assert len(conn._out) == 0  # the driver drains it
    # And so is what one next_event() queues by itself (a reply or two: seen up to 93 octets), so
    # a caller that flushes past a bound after each event, as the adapters do, bounds its output
    # whatever the burst.
    assert driver.largest_write <= 1024, driver.largest_write


# --- (3) the state machine against a model of RFC 5321 ----------------------------------------------


def last_code(out: bytes) -> int:
    lines = out.split(b"\r\n")
    assert lines[-1] == b""
    return int(lines[-2][:3])


class ServerModel(RuleBasedStateMachine):
    """Drive a server with commands and check each reply against a model.

    The model knows: greeted, hello, MAIL given, recipients accepted, a RCPT
    attempted, a BDAT transaction in progress, closed.
    """

    @initialize()
    def start(self) -> None:
        self.conn = make_server(ServerConfig(max_errors=10**6, max_message_size=65536, max_recipients=100))
        assert self.conn.data_to_send() == b"220 localhost ESMTP smtpcore\r\n"
        self.driver = Driver(self.conn, policy)
        self.hello = False
        self.mail = False
        self.rcpts = 0
        self.attempted = False
        self.chunking = False
        self.closed = False
        self.esc = False

    def send(self, data: bytes) -> bytes:
        before = len(self.driver.output)
        self.driver.feed(data)
        return bytes(self.driver.output[before:])

    def reset(self) -> None:
        self.mail = False
        self.rcpts = 0
        self.attempted = False
        self.chunking = False

    @precondition(lambda self: not self.closed)
    @rule(verb=st.sampled_from(["EHLO", "HELO", "ehlo"]))
    def hello_(self, verb: str) -> None:
        out = self.send(f"{verb} c.example\r\n".encode())
        assert last_code(out) == 250
        self.hello = True
        self.esc = verb != "HELO"
        self.reset()

    @precondition(lambda self: not self.closed)
    @rule()
    def mail_(self) -> None:
        code = last_code(self.send(b"MAIL FROM:<a@example.com>\r\n"))
        if not self.hello or self.mail:
            assert code == 503
        else:
            assert code == 250
            self.mail = True

    @precondition(lambda self: not self.closed)
    @rule(good=st.booleans())
    def rcpt_(self, good: bool) -> None:
        code = last_code(self.send(b"RCPT TO:<%s@example.com>\r\n" % (b"ok" if good else b"no")))
        if not self.hello or not self.mail or self.chunking:
            assert code == 503
        elif self.rcpts >= 100:
            assert code == 452
        else:
            self.attempted = True
            assert code == (250 if good else 550)
            self.rcpts += good

    def _no_transaction_code(self) -> int | None:
        if not self.hello or not self.mail:
            return 503
        if self.rcpts == 0:
            return 554 if self.attempted else 503
        return None

    @precondition(lambda self: not self.closed)
    @rule(body=st.binary(max_size=200))
    def data_(self, body: bytes) -> None:
        out = self.send(b"DATA\r\n")
        refused = self._no_transaction_code()
        if self.chunking:
            assert last_code(out) == 503
            return
        if refused is not None:
            assert last_code(out) == refused
            return
        assert last_code(out) == 354
        # Make the body end at a CRLF, then dot-stuff it (the end of data must be
        # ours: a body of "." would otherwise end it at once, after DATA's CRLF).
        tail = b"" if body.endswith(b"\r\n") or not body else b"\r\n"
        stuffed = (b"." if body.startswith(b".") else b"") + (body + tail).replace(b"\r\n.", b"\r\n..")
        out = self.send(stuffed + b".\r\n")
        bare = b"\r" in body.replace(b"\r\n", b"") or b"\n" in body.replace(b"\r\n", b"")
        assert last_code(out) == (550 if bare else 250)
        self.reset()

    @precondition(lambda self: not self.closed)
    @rule(size=st.integers(min_value=0, max_value=50), last=st.booleans())
    def bdat_(self, size: int, last: bool) -> None:
        out = self.send(b"BDAT %d%s\r\n" % (size, b" LAST" if last else b"") + b"B" * size)
        refused = self._no_transaction_code()
        if refused is not None:
            assert last_code(out) == refused
            return
        assert last_code(out) == 250
        if last:
            self.reset()
        else:
            self.chunking = True

    @precondition(lambda self: not self.closed)
    @rule(line=st.sampled_from([b"RSET", b"NOOP", b"HELP", b"VRFY x", b"EXPN x", b"FOO", b"MAIL", b"\x00"]))
    def other(self, line: bytes) -> None:
        code = last_code(self.send(line + b"\r\n"))
        expected = {b"RSET": 250, b"NOOP": 250, b"HELP": 214, b"VRFY x": 252, b"EXPN x": 502}
        assert code == expected.get(line, 500 if line != b"MAIL" else 501)
        if line == b"RSET":
            self.reset()

    @precondition(lambda self: not self.closed)
    @rule()
    def quit_(self) -> None:
        out = self.send(b"QUIT\r\n")
        # Enhanced codes only once EHLO advertised them.
        assert out == (b"221 2.0.0 Bye\r\n" if self.esc else b"221 Bye\r\n")
        self.closed = True

    @precondition(lambda self: self.closed)
    @rule(data=st.binary(max_size=20))
    def after_close(self, data: bytes) -> None:
        # Nothing after QUIT is read or answered.
        assert self.send(data) == b""

    @invariant()
    def consistent(self) -> None:
        if not hasattr(self, "conn"):
            return
        conn = self.conn
        if self.closed:
            assert conn.state is State.CLOSED
            return
        assert (conn.mail is not None) == self.mail
        assert len(conn.recipients) == self.rcpts
        expected = State.CONNECTED
        if self.hello:
            expected = State.READY
            if self.chunking:
                expected = State.CHUNKING
            elif self.rcpts:
                expected = State.RCPT
            elif self.mail:
                expected = State.MAIL
        assert conn.state is expected
        check_bounds(conn)


ServerModel.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestServerModel = ServerModel.TestCase


def test_model_helpers() -> None:
    assert last_code(b"250-a\r\n250 b\r\n") == 250
    assert split_at(b"abcdef", [3, 3, 0, 99]) == [b"abc", b"def"]
    _: Any = None
