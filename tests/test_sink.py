"""The mail sink's recipient allowlists (``smtpcore serve --accept-domain/--accept-address``), and
whose XCLIENT it believes (``--xclient-from``)."""

from __future__ import annotations

import pytest

from adapters._handler import INSUFFICIENT_AUTHORIZATION, Session
from adapters.sink import RELAY_DENIED, MailSink
from smtpcore import Rcpt, XClient, XForward


def accepts(sink: MailSink, recipient: str) -> bool:
    reply = sink.rcpt_to(Session(peer=("198.51.100.7", 40000), local=("192.0.2.1", 25)), Rcpt(recipient))
    assert reply in (None, RELAY_DENIED)
    return reply is None


@pytest.mark.parametrize(
    "configured", ["bücher.example", "BÜCHER.Example", "xn--bcher-kva.example", "XN--BCHER-KVA.EXAMPLE"]
)
@pytest.mark.parametrize(
    "recipient", ["a@bücher.example", "a@Bücher.EXAMPLE", "a@xn--bcher-kva.example", "a@Xn--Bcher-Kva.Example"]
)
def test_an_idn_is_one_domain_in_its_a_label_and_u_label_forms(configured: str, recipient: str) -> None:
    # RFC 5890: the same domain.  A client without SMTPUTF8 (most) must write the
    # A-label (RFC 6531 §3.2), one with it may write either.
    assert accepts(MailSink(None, "mx.test", accept_domains=[configured]), recipient)
    assert accepts(MailSink(None, "mx.test", accept_addresses=[f"a@{configured}"]), recipient)


def test_idn_matching_takes_nothing_else() -> None:
    sink = MailSink(None, "mx.test", accept_domains=["日本語のドメイン.jp"], accept_addresses=["b@bücher.example"])
    assert accepts(sink, "x@xn--u9jxfoe1dzd2589ao4bc84j.jp")
    assert accepts(sink, "x@日本語のドメイン.jp")
    assert not accepts(sink, "x@xn--u9jxfoe1dzd2589ao4bc84j.jp.evil.example")
    assert not accepts(sink, "x@bucher.example")
    assert accepts(sink, "b@xn--bcher-kva.example")
    assert not accepts(sink, "c@xn--bcher-kva.example")


def test_a_domain_idna_2003_would_map_to_another_is_not_taken_for_it() -> None:
    # The codec writes straße as strasse, another domain; its IDNA 2008 A-label is
    # accepted when it is given too, as docs/cli.md says.
    sink = MailSink(None, "mx.test", accept_domains=["straße.example", "xn--strae-oqa.example"])
    assert accepts(sink, "x@straße.example")
    assert accepts(sink, "x@xn--strae-oqa.example")
    assert not accepts(sink, "x@strasse.example")


def test_a_domain_the_idna_codec_cannot_convert_is_compared_as_given() -> None:
    unconvertible = "ab\ue000.example"  # a private-use character: IDNA has no A-label for it
    sink = MailSink(None, "mx.test", accept_domains=[unconvertible, "a..b.example"])
    assert accepts(sink, "x@AB\ue000.EXAMPLE")
    assert not accepts(sink, "x@ab.example")


@pytest.mark.parametrize(
    ("recipient", "accepted"),
    [
        ("postmaster", True),
        ("PostMaster", True),
        ("postmaster@mx.test", True),  # the name the server gives in its greeting
        ("Postmaster@MX.test", True),
        ('"postmaster"@mx.test', True),  # the quotes are not part of the local part
        ('"post\\master"@mx.test', True),
        ("postmaster@example.com", True),
        ("POSTMASTER@example.com", True),
        ("postmaster@bücher.example", True),
        ("postmaster@xn--bcher-kva.example", True),
        ("postmaster@[192.0.2.1]", True),  # the address literal the client reached
        ("postmaster@elsewhere.example", False),  # not ours: that would be relaying
        ("postmaster@mx.test.elsewhere.example", False),
        ("other@mx.test", False),  # --accept-domain replaces the server's own name
    ],
)
def test_postmaster_at_the_servers_own_name_or_any_accepted_domain_is_accepted(recipient: str, accepted: bool) -> None:
    # RFC 5321 §4.5.1: postmaster@domain must be accepted for every domain the
    # server takes mail for, and the server names itself mx.test everywhere.
    sink = MailSink(None, "mx.test", accept_domains=["example.com", "bücher.example"])
    assert accepts(sink, recipient) is accepted
    assert accepts(MailSink(None, "mx.test", accept_addresses=['"You"@elsewhere.example']), "you@elsewhere.example")


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        (("10.0.0.5", 1), True),
        (("::ffff:10.0.0.5", 1, 0, 0), True),  # an IPv4 proxy seen by a dual-stack socket
        (("2001:db8::5", 1, 0, 0), True),
        (("10.0.1.5", 1), False),
        (None, False),  # an earlier XCLIENT said ADDR=[UNAVAILABLE]
        ("", False),  # a Unix socket
    ],
)
def test_xclient_is_believed_from_the_proxies_named_only(peer: object, trusted: bool) -> None:
    sink = MailSink(None, "mx.test", xclient_from=["10.0.0.0/24", "2001:db8::/64"])
    reply = sink.xclient(Session(peer=peer), XClient(addr="192.0.2.7"))
    assert reply is (None if trusted else INSUFFICIENT_AUTHORIZATION)


@pytest.mark.parametrize("configured", ["::ffff:10.0.0.5", "::ffff:10.0.0.0/120", "10.0.0.5"])
@pytest.mark.parametrize("peer", [("10.0.0.5", 1), ("::ffff:10.0.0.5", 1, 0, 0)])
def test_an_ipv4_proxy_is_the_same_written_mapped_or_not(configured: str, peer: tuple[object, ...]) -> None:
    # The log shows the mapped form a dual-stack socket gives; an operator may copy it into the option.
    sink = MailSink(None, "mx.test", xclient_from=[configured])
    assert sink.xclient(Session(peer=peer), XClient(addr="192.0.2.7")) is None


def test_xforward_is_believed_from_its_own_networks_only() -> None:
    sink = MailSink(None, "mx.test", xclient_from=["10.0.0.0/24"], xforward_from=["127.0.0.1"])
    assert sink.xforward(Session(peer=("127.0.0.1", 1)), XForward(addr="192.0.2.7")) is None
    assert sink.xforward(Session(peer=("10.0.0.5", 1)), XForward(addr="192.0.2.7")) is INSUFFICIENT_AUTHORIZATION
    assert sink.xclient(Session(peer=("127.0.0.1", 1)), XClient(addr="192.0.2.7")) is INSUFFICIENT_AUTHORIZATION
