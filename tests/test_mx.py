"""Direct delivery planning: MX order, implicit MX, null MX, and moving between hosts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver
import pytest

from adapters.mx import MxLookupError, deliver_direct, group_by_domain, lookup_mail_hosts
from smtpcore import Reply
from smtpcore._outcomes import (
    MessageOutcome,
    RecipientOutcome,
    SMTPNotSupportedError,
    SMTPPermanentError,
    SMTPTransientError,
)


@dataclass
class MX:
    preference: int
    exchange: str


class StubResolver:
    """Answers MX queries from a table; a table value that is an exception class is raised."""

    def __init__(self, table: dict[str, object]) -> None:
        self.table = table
        self.queries: list[str] = []

    def resolve(self, qname: str, rdtype: str) -> list[MX]:
        assert rdtype == "MX"
        self.queries.append(qname)
        answer = self.table[qname]
        if isinstance(answer, type) and issubclass(answer, Exception):
            raise answer()
        assert isinstance(answer, list)
        return answer


def test_an_internationalised_domain_is_looked_up_and_reached_as_one_a_label() -> None:
    # The MX query and the connection to an implicit MX must name the same domain:
    # dnspython encodes with IDNA 2008, the socket layer with the stdlib's IDNA 2003,
    # which would have taken straße.example to strasse.example, another domain.
    resolver = StubResolver(
        {
            "xn--strae-oqa.example": dns.resolver.NoAnswer,
            "xn--bcher-kva.example": [MX(10, "mx.xn--bcher-kva.example.")],
        }
    )
    assert lookup_mail_hosts("straße.example", resolver) == ["xn--strae-oqa.example"]
    assert lookup_mail_hosts("Bücher.example", resolver) == ["mx.xn--bcher-kva.example"]
    assert resolver.queries == ["xn--strae-oqa.example", "xn--bcher-kva.example"]
    with pytest.raises(MxLookupError) as info:
        lookup_mail_hosts("a\ue000b.example", resolver)  # a private-use character: no A-label
    assert not info.value.transient and resolver.queries[2:] == []


def test_without_idna_2008_a_domain_idna_2003_would_rename_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # dnspython without the idna package falls back to IDNA 2003: straße would become
    # strasse, so the domain is refused for good rather than mail sent elsewhere.
    monkeypatch.setattr(dns.name, "have_idna_2008", False)
    resolver = StubResolver({"xn--bcher-kva.example": dns.resolver.NoAnswer})
    with pytest.raises(MxLookupError, match="another name") as info:
        lookup_mail_hosts("straße.example", resolver)
    assert not info.value.transient and resolver.queries == []
    assert lookup_mail_hosts("bücher.example", resolver) == ["xn--bcher-kva.example"]  # the same in both


def test_hosts_by_preference_with_equal_preferences_shuffled() -> None:
    resolver = StubResolver({"example.com": [MX(20, "b.mx."), MX(10, "a1.mx."), MX(10, "a2.mx."), MX(30, "c.mx.")]})
    orders = {tuple(lookup_mail_hosts("example.com", resolver, random.Random(seed))) for seed in range(20)}
    assert orders == {("a1.mx", "a2.mx", "b.mx", "c.mx"), ("a2.mx", "a1.mx", "b.mx", "c.mx")}


def test_no_mx_means_the_domain_itself_and_literals_need_no_dns() -> None:
    resolver = StubResolver({"plain.example": dns.resolver.NoAnswer})
    assert lookup_mail_hosts("plain.example", resolver) == ["plain.example"]
    assert lookup_mail_hosts("[192.0.2.7]", resolver) == ["192.0.2.7"]
    assert lookup_mail_hosts("[IPv6:2001:db8::1]", resolver) == ["2001:db8::1"]
    assert resolver.queries == ["plain.example"]


@pytest.mark.parametrize(
    ("answer", "transient", "message"),
    [
        (dns.resolver.NXDOMAIN, False, "does not exist"),
        ([MX(0, ".")], False, "null MX"),
        (dns.exception.Timeout, True, "DNS lookup"),
        (dns.resolver.NoNameservers, True, "DNS lookup"),
    ],
)
def test_lookup_failures(answer: object, transient: bool, message: str) -> None:
    with pytest.raises(MxLookupError, match=message) as info:
        lookup_mail_hosts("x.example", StubResolver({"x.example": answer}))
    assert info.value.transient is transient


def test_group_by_domain_ignores_case_and_keeps_order() -> None:
    assert group_by_domain(["a@X.example", "b@y.example", "c@x.EXAMPLE"]) == {
        "x.example": ["a@X.example", "c@x.EXAMPLE"],
        "y.example": ["b@y.example"],
    }


def test_group_by_domain_takes_both_forms_of_an_idn_as_one_domain() -> None:
    # One transaction to its hosts, not two; a domain with no A-label keys as written.
    assert group_by_domain(["a@Bücher.example", "b@xn--bcher-kva.example", "c@a\ue000b.example"]) == {
        "xn--bcher-kva.example": ["a@Bücher.example", "b@xn--bcher-kva.example"],
        "a\ue000b.example": ["c@a\ue000b.example"],
    }


def outcome(recipients: Sequence[str], codes: dict[str, int]) -> MessageOutcome:
    items = []
    for recipient in recipients:
        code = codes.get(recipient, 250)
        if code < 400:
            items.append(RecipientOutcome(recipient, data_reply=Reply(250, "OK")))
        else:
            error_class = SMTPTransientError if code < 500 else SMTPPermanentError
            items.append(RecipientOutcome(recipient, rcpt_reply=Reply(code, "no"), error=error_class("no")))
    return MessageOutcome(tuple(items))


def test_next_host_after_connection_failure_and_4xx_but_not_after_5xx() -> None:
    resolver = StubResolver(
        {
            "example.com": [MX(10, "down.mx"), MX(20, "grey.mx"), MX(30, "good.mx"), MX(40, "never.mx")],
            "other.org": [MX(5, "other.mx")],
        }
    )
    calls: list[tuple[str, tuple[str, ...]]] = []

    def attempt(host: str, recipients: Sequence[str]) -> MessageOutcome:
        calls.append((host, tuple(recipients)))
        if host == "down.mx":
            raise ConnectionRefusedError("refused")
        if host == "grey.mx":  # greylists one recipient, refuses another for good
            return outcome(recipients, {"a@example.com": 450, "b@example.com": 550})
        return outcome(recipients, {})

    result = deliver_direct(["a@example.com", "b@example.com", "c@example.com", "z@other.org"], attempt, resolver)
    assert calls == [
        ("down.mx", ("a@example.com", "b@example.com", "c@example.com")),
        ("grey.mx", ("a@example.com", "b@example.com", "c@example.com")),
        ("good.mx", ("a@example.com",)),  # only the greylisted one moves on
        ("other.mx", ("z@other.org",)),
    ]
    assert result.outcomes["a@example.com"].delivered
    assert result.hosts["a@example.com"] == "good.mx"
    assert isinstance(result.outcomes["b@example.com"].error, SMTPPermanentError)
    assert result.hosts["b@example.com"] == "grey.mx"
    assert result.outcomes["c@example.com"].delivered
    assert result.hosts["c@example.com"] == "grey.mx"
    assert result.outcomes["z@other.org"].delivered
    assert list(result.outcomes) == ["a@example.com", "b@example.com", "c@example.com", "z@other.org"]


def test_a_host_that_lacks_what_the_message_needs_is_passed_over() -> None:
    # STARTTLS required but not offered (our own refusal, no reply): the next MX may
    # offer it, as Postfix tries the next host; a 5xx reply still stops at once.
    resolver = StubResolver({"example.com": [MX(10, "plain.mx"), MX(20, "tls.mx")]})
    calls: list[str] = []

    def attempt(host: str, recipients: Sequence[str]) -> MessageOutcome:
        calls.append(host)
        if host == "plain.mx":
            error = SMTPNotSupportedError("the server does not offer STARTTLS and TLS is required")
            return MessageOutcome(tuple(RecipientOutcome(r, error=error) for r in recipients), error)
        return outcome(recipients, {})

    result = deliver_direct(["a@example.com"], attempt, resolver)
    assert calls == ["plain.mx", "tls.mx"]
    assert result.outcomes["a@example.com"].delivered and result.hosts["a@example.com"] == "tls.mx"


def test_a_host_that_greets_with_5xx_is_passed_over_and_the_last_one_defers() -> None:
    # RFC 5321 §3.1: a 554 greeting is "not this host"; Postfix's smtp_skip_5xx_greeting
    # (yes by default) goes on to the next MX, and a 5xx to a command stays final.
    resolver = StubResolver({"example.com": [MX(10, "busy.mx"), MX(20, "good.mx")], "b.example": [MX(10, "busy.mx")]})
    calls: list[str] = []
    greeting = Reply(554, "no service here")

    def attempt(host: str, recipients: Sequence[str]) -> MessageOutcome:
        calls.append(host)
        if host == "busy.mx":
            error = SMTPPermanentError(f"the server refused the session: {greeting}", greeting)
            return MessageOutcome(tuple(RecipientOutcome(r, error=error) for r in recipients), error)
        return outcome(recipients, {})

    result = deliver_direct(["a@example.com", "b@b.example"], attempt, resolver)
    assert calls == ["busy.mx", "good.mx", "busy.mx"]
    assert result.outcomes["a@example.com"].delivered and result.hosts["a@example.com"] == "good.mx"
    error = result.outcomes["b@b.example"].error
    assert isinstance(error, SMTPTransientError) and error.reply == greeting  # deferred, not bounced
    assert str(error).startswith("busy.mx refused to talk: the server refused the session: 554")
    assert result.hosts["b@b.example"] is None


def test_every_host_down_or_greylisting_is_transient() -> None:
    resolver = StubResolver({"example.com": [MX(10, "a.mx"), MX(20, "b.mx")], "gone.example": dns.resolver.NXDOMAIN})

    def attempt(host: str, recipients: Sequence[str]) -> MessageOutcome:
        if host == "a.mx":
            raise TimeoutError("timed out")
        return outcome(recipients, {"x@example.com": 451})

    result = deliver_direct(["x@example.com", "y@gone.example"], attempt, resolver)
    error = result.outcomes["x@example.com"].error
    assert isinstance(error, SMTPTransientError)
    assert result.outcomes["x@example.com"].rcpt_reply == Reply(451, "no")
    assert isinstance(result.outcomes["y@gone.example"].error, SMTPPermanentError)
    assert result.hosts == {"x@example.com": None, "y@gone.example": None}
