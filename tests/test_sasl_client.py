"""Client SASL mechanisms and the choice between them."""

from __future__ import annotations

import hmac

import pytest

from smtpcore import AuthCredentials, Credentials, LocalProtocolError, SaslError, choose_mechanism
from smtpcore._sasl_client import CramMd5, Login, Plain, XOAuth2, usable_mechanisms
from smtpcore._sasl_server import CramMd5 as ServerCramMd5
from smtpcore._sasl_server import Plain as ServerPlain

CREDS = Credentials("user", "pässword")


def test_plain_matches_the_server_side() -> None:
    mechanism = Plain(Credentials("user", "pw", authorization_id="admin"))
    response = mechanism.initial_response()
    assert response == b"admin\x00user\x00pw"
    credentials = ServerPlain().step(response)
    assert isinstance(credentials, AuthCredentials)
    assert (credentials.username, credentials.authorization_id, credentials.password) == ("user", "admin", "pw")
    with pytest.raises(SaslError):
        mechanism.respond(b"")
    late = Plain(CREDS)
    assert late.respond(b"") == b"\x00user\x00p\xc3\xa4ssword"  # a server that wants no initial response
    with pytest.raises(SaslError):
        late.respond(b"")


@pytest.mark.parametrize("field", ["username", "password", "authorization_id"])
def test_plain_refuses_nul_in_any_field(field: str) -> None:
    values = {"username": "u", "password": "p", "authorization_id": ""}
    values[field] = "a\x00b"
    with pytest.raises(LocalProtocolError):
        Plain(Credentials(**values))


def test_login_sequence() -> None:
    mechanism = Login(CREDS)
    assert mechanism.initial_response() is None
    assert mechanism.respond(b"Username:") == b"user"
    assert mechanism.respond(b"Password:") == "pässword".encode()
    with pytest.raises(SaslError):
        mechanism.respond(b"more?")


def test_cram_md5_matches_the_server_side() -> None:
    server = ServerCramMd5("mx.example", nonce=lambda: "abc")
    challenge = server.step(None)
    assert isinstance(challenge, bytes)
    mechanism = CramMd5(CREDS)
    assert mechanism.initial_response() is None
    response = mechanism.respond(challenge)
    assert response == b"user " + hmac.new("pässword".encode(), challenge, "md5").hexdigest().encode()
    verified = server.step(response)
    assert isinstance(verified, AuthCredentials)
    assert verified.verify("pässword")
    with pytest.raises(SaslError):
        mechanism.respond(challenge)
    with pytest.raises(SaslError):
        CramMd5(CREDS).respond(b"")


def test_xoauth2() -> None:
    mechanism = XOAuth2(Credentials("u@x", token="tok"))
    assert mechanism.initial_response() == b"user=u@x\x01auth=Bearer tok\x01\x01"
    assert mechanism.respond(b'{"status":"401"}') == b""
    with pytest.raises(SaslError):
        mechanism.respond(b"again")
    with pytest.raises(LocalProtocolError):
        XOAuth2(Credentials("u\x01x", token="t"))
    with pytest.raises(LocalProtocolError):
        XOAuth2(Credentials("u"))  # no token


def test_choose_the_strongest_usable() -> None:
    allowed = ("XOAUTH2", "CRAM-MD5", "PLAIN", "LOGIN")
    chosen = choose_mechanism(["LOGIN", "PLAIN", "CRAM-MD5"], allowed, CREDS)
    assert chosen is not None and chosen.name == "CRAM-MD5"
    chosen = choose_mechanism(["LOGIN", "plain"], allowed, CREDS)
    assert chosen is not None and chosen.name == "PLAIN"
    chosen = choose_mechanism(["XOAUTH2", "PLAIN"], allowed, CREDS)
    assert chosen is not None and chosen.name == "PLAIN"  # no token
    chosen = choose_mechanism(["XOAUTH2", "PLAIN"], allowed, Credentials("u", token="t"))
    assert chosen is not None and chosen.name == "XOAUTH2"
    assert choose_mechanism(["GSSAPI"], allowed, CREDS) is None
    assert choose_mechanism(["LOGIN"], ("PLAIN",), CREDS) is None  # never one the caller did not allow

    class Custom:
        name = "X-CUSTOM"

        def __init__(self, credentials: Credentials) -> None:
            pass

    # A stand-in with only a name, not a whole ClientMechanism: choosing reads nothing else.
    chosen = choose_mechanism(["X-CUSTOM"], ("X-CUSTOM",), CREDS, {"X-CUSTOM": Custom})  # type: ignore[dict-item]
    assert chosen is not None and chosen.name == "X-CUSTOM"


def test_usable_mechanisms_in_the_callers_order_each_once() -> None:
    allowed = ("XOAUTH2", "CRAM-MD5", "PLAIN", "LOGIN", "PLAIN")
    usable = usable_mechanisms(["login", "PLAIN", "XOAUTH2", "CRAM-MD5"], allowed, CREDS)
    assert [name for name, _ in usable] == ["CRAM-MD5", "PLAIN", "LOGIN"]  # no token: no XOAUTH2
    assert usable_mechanisms(["GSSAPI"], allowed, CREDS) == []


def test_credentials_repr_hides_secrets() -> None:
    text = repr(Credentials("user", "hunter2", token="tok"))
    assert "hunter2" not in text
    assert "tok" not in text
