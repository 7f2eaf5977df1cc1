"""OAuth bearer tokens over AUTH: XOAUTH2 and RFC 7628's OAUTHBEARER, both roles.

The server core extracts the token (``AuthCredentials.token``) and, when the
application refuses it with ``send_auth_error``, tells the client why in a 334
challenge before the refusal (RFC 7628 §3.2.2).  The client writes both
mechanisms, answers that challenge, and names what the server said in its error.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from client_helpers import pair
from helpers import Driver, check_three_ways, drive, make_server

from smtpcore import (
    AuthCredentials,
    AuthPolicy,
    AuthRefused,
    ClientConfig,
    ClientDriver,
    CommandRejected,
    Credentials,
    Envelope,
    Event,
    LocalProtocolError,
    OAuthError,
    Reply,
    SaslError,
    ServerConfig,
    ServerConnection,
    SMTPAuthenticationError,
    State,
    TlsPolicy,
    choose_mechanism,
)
from smtpcore._sasl_client import OAuthBearer, XOAuth2, usable_mechanisms

CONFIG = ServerConfig(
    auth=AuthPolicy.OPTIONAL,
    allow_insecure_auth=True,
    auth_mechanisms=("OAUTHBEARER", "XOAUTH2", "PLAIN"),
)
GOOD = "ya29.good-token"
ERROR = OAuthError("invalid_token", scope="https://mail.example/")
ERROR_JSON = b'{"status":"invalid_token","schemes":"bearer","scope":"https://mail.example/"}'
# Google's XOAUTH2 says it in HTTP statuses: "400" is the one its clients refresh a token on.
XOAUTH2_ERROR_JSON = b'{"status":"400","schemes":"bearer","scope":"https://mail.example/"}'


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bearer(message: bytes, mechanism: str = "OAUTHBEARER") -> bytes:
    return f"AUTH {mechanism} {b64(message)}\r\n".encode()


def refuse_with_error(conn: ServerConnection, event: Event) -> None:
    """Accept the good token; tell every other its error, then refuse."""
    if isinstance(event, AuthCredentials):
        if event.token == GOOD:
            conn.accept()
        elif event.mechanism == "PLAIN":
            conn.send(Reply(535, "no", "5.7.8"))
        else:
            conn.send_auth_error(ERROR)
    else:
        conn.accept()


def session(lines: bytes, config: ServerConfig = CONFIG) -> tuple[list[Any], bytes]:
    """The events after EHLO and what the server wrote after its EHLO reply."""
    events, out = drive(b"EHLO c\r\n" + lines, config, policy=refuse_with_error)
    return events[1:], out.split(b"250 AUTH OAUTHBEARER XOAUTH2 PLAIN\r\n", 1)[-1]


# --- the server reads OAUTHBEARER -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "username"),
    [
        (
            b"n,a=user@example.com,\x01host=mx.example\x01port=587\x01auth=Bearer " + GOOD.encode() + b"\x01\x01",
            "user@example.com",
        ),
        (b"n,,\x01auth=Bearer " + GOOD.encode() + b"\x01\x01", ""),  # a= may be left out
        (b"y,a=u,\x01auth=bearer  " + GOOD.encode() + b"\x01\x01", "u"),  # "y": no binding; scheme any case
        (b"n,a=a=2Cb=3Dc,\x01auth=Bearer " + GOOD.encode() + b"\x01\x01", "a,b=c"),  # RFC 5801's escapes
        (b"n,a=a=2cb=3dc,\x01auth=Bearer " + GOOD.encode() + b"\x01\x01", "a,b=c"),  # in lower case too
        # What mutt, curl and go-sasl write, "n,a=%s," from the login as it is: a bare "=", an empty name.
        (b"n,a=a=b@x,\x01auth=Bearer " + GOOD.encode() + b"\x01\x01", "a=b@x"),
        (b"n,a=,\x01auth=Bearer " + GOOD.encode() + b" \x01\x01", ""),  # (a trailing blank: not the token's)
        ("n,a=jos\u00e9@example.com,\x01auth=Bearer ".encode() + GOOD.encode() + b"\x01\x01", "jos\u00e9@example.com"),
    ],
)
def test_oauthbearer_credentials_reach_the_application(message: bytes, username: str) -> None:
    events, out = session(bearer(message))
    assert out == b"235 2.7.0 Authentication successful\r\n"
    credentials = events[0]
    assert isinstance(credentials, AuthCredentials)
    assert (credentials.mechanism, credentials.username, credentials.token) == ("OAUTHBEARER", username, GOOD)
    assert GOOD not in repr(credentials)


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"n,a=u,\x01auth=Bearer t\x01", "OAUTHBEARER response must end with two ^A"),
        (b"\x01", "OAUTHBEARER response must end with two ^A"),  # the answer to an error, unasked
        (b"a=u,\x01auth=Bearer t\x01\x01", "OAUTHBEARER response must begin with a GS2 header"),
        (b"n,a=u\x01auth=Bearer t\x01\x01", "OAUTHBEARER response must begin with a GS2 header"),
        (b"p=tls-unique,a=u,\x01auth=Bearer t\x01\x01", "OAUTHBEARER channel binding is not supported"),
        (b"n,a=u,\x01host\x01auth=Bearer t\x01\x01", "OAUTHBEARER response has a malformed or repeated"),
        (b"n,a=u,b,\x01auth=Bearer t\x01\x01", "OAUTHBEARER response must begin with a GS2 header"),
        (b"n,a=u,\x01auth=Bearer t\x01auth=Bearer u\x01\x01", "OAUTHBEARER response has a malformed or repeated"),
        (b"n,a=u,\x01h0st=x\x01auth=Bearer t\x01\x01", "OAUTHBEARER response has a malformed or repeated"),
        (b"n,a=u,\x01host=mx\x01\x01", "OAUTHBEARER response needs auth=Bearer and a token"),
        (b"n,a=u,\x01auth=Basic dTpw\x01\x01", "OAUTHBEARER response needs auth=Bearer and a token"),
        (b"n,a=u,\x01auth=Bearer \x01\x01", "OAUTHBEARER response needs auth=Bearer and a token"),
        (b"n,a=u\x1b[1m,\x01auth=Bearer t\x01\x01", "user name contains a control character"),
        (b"n,a=u,\x01auth=Bearer t\r\n\x01\x01", "token contains a control character"),
    ],
)
def test_a_malformed_oauthbearer_response_gets_501(message: bytes, why: str) -> None:
    events, out = session(bearer(message) + b"NOOP\r\n")
    assert out.startswith(b"501 5.5.2 " + why.encode())
    assert out.endswith(b"\r\n250 2.0.0 OK\r\n")
    assert isinstance(events[0], CommandRejected)
    assert not any(isinstance(event, AuthCredentials) for event in events)


def test_oauthbearer_without_an_initial_response_asks_with_an_empty_challenge() -> None:
    message = b"n,a=u,\x01auth=Bearer " + GOOD.encode() + b"\x01\x01"
    _, out = session(b"AUTH OAUTHBEARER\r\n" + b64(message).encode() + b"\r\n")
    assert out == b"334 \r\n235 2.7.0 Authentication successful\r\n"


# --- the error challenge ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "message", "answer"),
    [
        ("OAUTHBEARER", b"n,a=u,\x01auth=Bearer expired\x01\x01", b"AQ=="),  # RFC 7628 §3.2.3: ^A
        ("XOAUTH2", b"user=u\x01auth=Bearer expired\x01\x01", b""),  # Google's: an empty line
        ("OAUTHBEARER", b"n,a=u,\x01auth=Bearer expired\x01\x01", b"not base64!"),  # any answer will do
        ("OAUTHBEARER", b"n,a=u,\x01auth=Bearer expired\x01\x01", b"QUIT"),  # (base64, and a SASL response here)
        ("OAUTHBEARER", b"n,a=u,\x01auth=Bearer expired\x01\x01", b"x" * 20000),  # too long: read, and over
    ],
)
def test_a_refused_token_is_told_why_then_refused(mechanism: str, message: bytes, answer: bytes) -> None:
    lines = bearer(message, mechanism) + answer + b"\r\nNOOP\r\n"
    events, out = session(lines)
    error = XOAUTH2_ERROR_JSON if mechanism == "XOAUTH2" else ERROR_JSON
    challenge = b"334 " + base64.b64encode(error) + b"\r\n"
    assert out == challenge + b"535 5.7.8 Authentication credentials invalid\r\n250 2.0.0 OK\r\n"
    # The answer to the challenge is no command: AuthCredentials, the end of the exchange, NOOP.
    refusal = Reply(535, "Authentication credentials invalid", "5.7.8")
    assert events[:2] == [AuthCredentials(mechanism, "u", token="expired"), AuthRefused(refusal)]
    assert [type(event).__name__ for event in events[2:]] == ["Noop"]
    # Whole and byte by byte: the same.
    check_three_ways(b"EHLO c\r\n" + lines, CONFIG, policy=refuse_with_error)


def test_a_cancel_in_answer_to_the_challenge_gets_501() -> None:
    # RFC 4954 §4: "*" cancels, and the server MUST answer 501; RFC 7628 §3.2.3 lets the
    # client answer the error that way.  The login still failed.
    conn = make_server(CONFIG)
    driver = Driver(conn, refuse_with_error)
    driver.feed(b"EHLO c\r\n" + bearer(b"n,,\x01auth=Bearer bad\x01\x01") + b"*\r\n")
    assert bytes(driver.output).endswith(b"\r\n501 5.0.0 Authentication cancelled\r\n")
    assert driver.events[-1] == AuthRefused(Reply(501, "Authentication cancelled", "5.0.0"))
    assert conn.error_count == 1 and conn.state is State.READY


def test_the_error_challenge_counts_one_failed_login_when_the_refusal_goes() -> None:
    conn = make_server(CONFIG)
    driver = Driver(conn, refuse_with_error)
    driver.feed(b"EHLO c\r\n" + bearer(b"n,,\x01auth=Bearer bad\x01\x01"))
    assert (conn.state, conn.reply_due, conn.error_count) == (State.AUTH, False, 0)
    assert not conn.idle  # a shutdown lets the client answer
    # The answer is a SASL response: redacted like any other.
    assert conn.redact(b"AQ==\r\n") == b"<redacted>\r\n"
    driver.feed(b"AQ==\r\n")
    assert conn.state is State.READY and conn.error_count == 1 and conn.authenticated is None
    # A second try with the good token gets in.
    driver.feed(bearer(b"n,,\x01auth=Bearer " + GOOD.encode() + b"\x01\x01"))
    assert bytes(driver.output).endswith(b"235 2.7.0 Authentication successful\r\n")
    assert conn.authenticated is not None and conn.authenticated.token == GOOD


def test_the_refusal_after_the_challenge_is_the_applications() -> None:
    def temporary(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, AuthCredentials):
            conn.send_auth_error(OAuthError("temporarily_unavailable", reply=Reply(454, "Try later", "4.7.0")))
        else:
            conn.accept()

    _, out = drive(b"EHLO c\r\n" + bearer(b"user=u\x01auth=Bearer t\x01\x01", "XOAUTH2") + b"\r\n", CONFIG, temporary)
    error = b'{"status":"temporarily_unavailable","schemes":"bearer"}'  # (a status of its own: as it is)
    assert out.endswith(b"334 " + base64.b64encode(error) + b"\r\n454 4.7.0 Try later\r\n")

    def raw_json(conn: ServerConnection, event: Event) -> None:
        if isinstance(event, AuthCredentials):
            conn.send_auth_error(b'{"status":"503"}', Reply(454, "Token service unavailable", "4.7.0"))
        else:
            conn.accept()

    _, out = drive(b"EHLO c\r\n" + bearer(b"n,,\x01auth=Bearer t\x01\x01") + b"\x01\r\n", CONFIG, raw_json)
    assert out.endswith(b"334 eyJzdGF0dXMiOiI1MDMifQ==\r\n454 4.7.0 Token service unavailable\r\n")


def test_the_client_going_away_during_the_challenge_closes_the_session() -> None:
    lines = b"EHLO c\r\n" + bearer(b"n,,\x01auth=Bearer bad\x01\x01")
    events, out = drive(lines, CONFIG, refuse_with_error, close=True)
    assert out.endswith(b"334 " + base64.b64encode(ERROR_JSON) + b"\r\n")
    assert type(events[-1]).__name__ == "ConnectionClosed"


def test_send_auth_error_says_what_it_cannot_do() -> None:
    conn = make_server(CONFIG)
    with pytest.raises(LocalProtocolError, match="no command is waiting for a reply"):
        conn.send_auth_error(b"{}")
    conn.receive_data(b"EHLO c\r\n")
    conn.next_event()
    with pytest.raises(LocalProtocolError, match="answers AuthCredentials, not Hello"):
        conn.send_auth_error(b"{}")
    conn.accept()
    conn.receive_data(b"AUTH PLAIN " + b64(b"\x00alice\x00pw").encode() + b"\r\n")
    assert isinstance(conn.next_event(), AuthCredentials)
    with pytest.raises(LocalProtocolError, match="takes an OAuthError or bytes, not str"):
        conn.send_auth_error("{}")  # type: ignore[arg-type]
    for reply in (Reply(235, "ok"), Reply(421, "bye")):
        with pytest.raises(LocalProtocolError, match="a 4xx or 5xx Reply; a 421 goes with send"):
            conn.send_auth_error(b"{}", reply)
    # PLAIN has no error challenge (its client would take the 334 for a question): the refusal alone.
    conn.send_auth_error(OAuthError(reply=Reply(535, "no", "5.7.8")))
    assert conn.data_to_send().endswith(b"\r\n535 5.7.8 no\r\n")
    assert conn.state is State.READY and conn.error_count == 1


def test_oauth_error_json() -> None:
    assert OAuthError().to_json() == b'{"status":"invalid_token","schemes":"bearer"}'
    full = OAuthError(
        "insufficient_scope", "https://mail.example/", "https://id.example/.well-known/openid-configuration"
    )
    assert json.loads(full.to_json()) == {
        "status": "insufficient_scope",
        "schemes": "bearer",
        "scope": "https://mail.example/",
        "openid-configuration": "https://id.example/.well-known/openid-configuration",
    }
    assert OAuthError("r\u00e9").to_json().isascii()  # JSON escapes: the challenge is base64 of ASCII
    # For XOAUTH2, RFC 6750's codes as Gmail's HTTP statuses; any other status as it is.
    assert [
        json.loads(OAuthError(status).to_json("XOAUTH2"))["status"]
        for status in ("invalid_token", "invalid_request", "insufficient_scope", "401", "whatever")
    ] == ["400", "400", "403", "401", "whatever"]
    assert json.loads(OAuthError().to_json("OAUTHBEARER"))["status"] == "invalid_token"
    for reply in (Reply(250, "ok"), Reply(421, "bye")):
        with pytest.raises(ValueError, match="4xx or 5xx Reply other than 421"):
            OAuthError(reply=reply)
    with pytest.raises(TypeError, match="status must be a str"):
        OAuthError(401)  # type: ignore[arg-type]
    for missing in ("", None):
        with pytest.raises(ValueError, match="status is required"):
            OAuthError(missing)  # type: ignore[arg-type]


# --- the client --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("user@example.com", b"n,a=user@example.com,\x01auth=Bearer tok\x01\x01"),
        ("a,b=c", b"n,a=a=2Cb=3Dc,\x01auth=Bearer tok\x01\x01"),
        ("", b"n,,\x01auth=Bearer tok\x01\x01"),
    ],
)
def test_the_client_writes_oauthbearer(username: str, message: bytes) -> None:
    mechanism = OAuthBearer(Credentials(username, token="tok"))
    assert mechanism.initial_response() == message
    assert mechanism.respond(ERROR_JSON) == b"\x01"  # RFC 7628 §3.2.3
    assert mechanism.server_error == ERROR_JSON
    with pytest.raises(SaslError, match="OAUTHBEARER got a second challenge"):
        mechanism.respond(b"")


def test_the_client_refuses_oauth_credentials_that_would_shift_the_fields() -> None:
    for factory in (OAuthBearer, XOAuth2):
        with pytest.raises(LocalProtocolError, match="may not contain \\^A"):
            factory(Credentials("u", token="t\x01auth=Bearer other"))


def test_a_token_can_use_either_mechanism_and_a_password_neither() -> None:
    allowed = ClientConfig().auth_mechanisms
    assert allowed[:2] == ("XOAUTH2", "OAUTHBEARER")
    token = Credentials("u", token="t")
    assert [name for name, _ in usable_mechanisms(["OAUTHBEARER", "XOAUTH2", "PLAIN"], allowed, token)] == [
        "XOAUTH2",
        "OAUTHBEARER",
    ]
    chosen = choose_mechanism(["OAUTHBEARER", "PLAIN"], allowed, token)
    assert chosen is not None and chosen.name == "OAUTHBEARER"
    password = Credentials("u", password="pw")
    assert [name for name, _ in usable_mechanisms(["OAUTHBEARER", "PLAIN"], allowed, password)] == ["PLAIN"]


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
def test_client_and_server_in_memory(mechanism: str) -> None:
    config = ServerConfig(auth=AuthPolicy.REQUIRED, allow_insecure_auth=True, auth_mechanisms=(mechanism,))
    client = ClientConfig(starttls=TlsPolicy.OFF, allow_insecure_auth=True)
    messages = [(Envelope("a@x.org", ["b@y.org"]), b"hi")]
    driver = ClientDriver(client, messages, credentials=Credentials("u@x.org", token=GOOD))
    good = pair(driver, config, refuse_with_error)
    assert good.driver.result.error is None and len(good.messages) == 1
    assert good.server.authenticated is not None and good.server.authenticated.username == "u@x.org"

    driver = ClientDriver(client, messages, credentials=Credentials("u@x.org", token="expired"))
    bad = pair(driver, config, refuse_with_error)
    error = bad.driver.result.error
    assert error is not None and not bad.messages
    said = (XOAUTH2_ERROR_JSON if mechanism == "XOAUTH2" else ERROR_JSON).decode()
    refusal = "535 5.7.8 Authentication credentials invalid"
    assert str(error) == f"authentication with {mechanism} failed: {refusal} (the server said: {said})"
    # The same, for a program that refreshes its token on the status: no parsing of the message.
    assert isinstance(error, SMTPAuthenticationError) and error.server_error == said.encode()
    answer = b"AQ==" if mechanism == "OAUTHBEARER" else b""
    assert b"\r\n" + answer + b"\r\nQUIT\r\n" in bad.wire_to_server


def test_a_token_refused_by_one_mechanism_is_not_sent_again_by_the_other() -> None:
    # Gmail offers both: after a 535 to XOAUTH2 the same token under OAUTHBEARER is only a
    # second failed login.  (Passwords still go on to the next mechanism: see test_transaction.)
    both = ServerConfig(auth=AuthPolicy.REQUIRED, allow_insecure_auth=True, auth_mechanisms=("OAUTHBEARER", "XOAUTH2"))
    client = ClientConfig(starttls=TlsPolicy.OFF, allow_insecure_auth=True)
    driver = ClientDriver(
        client, [(Envelope("a@x.org", ["b@y.org"]), b"hi")], credentials=Credentials("u", token="old")
    )
    result = pair(driver, both, refuse_with_error)
    assert result.wire_to_server.count(b"AUTH ") == 1 and b"AUTH XOAUTH2 " in result.wire_to_server
    assert result.server.error_count == 1
    error = result.driver.result.error
    assert str(error).startswith("authentication with XOAUTH2 failed: 535")
    assert isinstance(error, SMTPAuthenticationError) and error.server_error == XOAUTH2_ERROR_JSON
