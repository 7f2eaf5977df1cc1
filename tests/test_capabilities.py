"""EHLO replies become typed, frozen capabilities."""

from __future__ import annotations

import dataclasses

import pytest

from smtpcore import Capabilities, Reply


def caps(*lines: str) -> Capabilities:
    return Capabilities.from_reply(Reply._unchecked(250, ("mx.example.com greets you", *lines), None))


def test_every_modelled_keyword() -> None:
    result = caps(
        "PIPELINING",
        "SIZE 35882577",
        "8BITMIME",
        "AUTH LOGIN plain XOAUTH2 bad/name LOGIN",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "BINARYMIME",
        "SMTPUTF8",
        "DSN",
        "REQUIRETLS",
        "STARTTLS",
        "LIMITS MAILMAX=10 RCPTMAX=50",
        "X-CUSTOM a b",
        "deliverby 60",
        "AUTH=LOGIN PLAIN",
    )
    assert result.server_name == "mx.example.com"
    assert result.size == 35882577
    assert result.max_message_size == 35882577
    assert result.auth_mechanisms == ("LOGIN", "PLAIN", "XOAUTH2")
    for name in (
        "pipelining",
        "chunking",
        "binarymime",
        "eight_bit_mime",
        "smtputf8",
        "dsn",
        "enhanced_status_codes",
        "requiretls",
        "starttls",
    ):
        assert getattr(result, name) is True, name
    assert result.rcpt_max == 50
    assert result.unknown == (("X-CUSTOM", ("a", "b")), ("DELIVERBY", ("60",)))
    assert result.params("deliverby") == ("60",)
    assert result.params("nothing") is None
    assert result.malformed == ("AUTH=LOGIN PLAIN",)
    assert result.has("dsn")
    assert not result.has("AUTH=LOGIN")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.size = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("line", "size", "limit"),
    [("SIZE", 0, None), ("SIZE 0", 0, None), ("SIZE 2_5", None, None), ("SIZE +5", None, None), ("SIZE 100", 100, 100)],
)
def test_size_values(line: str, size: int | None, limit: int | None) -> None:
    result = caps(line)
    assert result.size == size
    assert result.max_message_size == limit
    assert result.has("SIZE")


def test_nothing_advertised_and_bad_limits() -> None:
    empty = caps()
    assert empty.keywords == frozenset()
    assert not empty.pipelining
    assert empty.size is None
    assert caps("LIMITS RCPTMAX=x").rcpt_max is None
    assert caps("LIMITS RCPTMAX=0").rcpt_max is None
    assert caps("SIZE ²").malformed == ("SIZE ²",)  # ehlo-param is printable ASCII
    assert not caps("SIZE ²").has("SIZE")
    assert Capabilities() == Capabilities.from_reply(Reply._unchecked(250, ("",), None))


def test_mechanisms_of_the_old_auth_equals_form_only_without_a_proper_auth_line() -> None:
    # Pre-RFC 2554 servers: "AUTH=LOGIN PLAIN".  smtplib reads it; so do we, when it is
    # all there is.  The line stays malformed, and AUTH is not taken for a keyword.
    old = caps("auth=LOGIN plain bad/name", "SIZE")
    assert old.auth_mechanisms == ("LOGIN", "PLAIN")
    assert old.malformed == ("auth=LOGIN plain bad/name",)
    assert not old.has("AUTH")
    assert caps("AUTH=LOGIN", "AUTH CRAM-MD5").auth_mechanisms == ("CRAM-MD5",)
    assert caps("AUTHX=LOGIN").auth_mechanisms == ()
