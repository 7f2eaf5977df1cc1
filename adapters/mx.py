"""Direct delivery: find each recipient domain's mail hosts and try them in order.

RFC 5321 §5.1 is the whole algorithm: look up the domain's MX records and try
the hosts by preference (randomising among equal preferences); a domain with no
MX record is its own mail host (its A/AAAA records: the "implicit MX"); a
domain whose only MX is "." accepts no mail at all (RFC 7505, null MX).  Between
hosts we move on after a connection failure, a 4xx, or a refusal of our own to
use that host (it lacks STARTTLS when TLS is required, or SMTPUTF8 the message
needs: another host may have it), and stop at a 5xx, which is final whichever
host says it.

Recipients are grouped by domain, so each domain's hosts see one transaction
with all of that domain's recipients.  DNS goes through dnspython (the ``dns``
extra); the sending itself is a callable, so this module knows nothing of
sockets or adapters and the tests can give it a stub resolver and local servers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from smtpcore._address import exact_a_labels
from smtpcore._outcomes import (
    MessageOutcome,
    RecipientOutcome,
    SMTPDeliveryError,
    SMTPNotSupportedError,
    SMTPPermanentError,
    SMTPTransientError,
)

__all__ = ["MxLookupError", "ascii_name", "deliver_direct", "group_by_domain", "lookup_mail_hosts"]


class MxLookupError(Exception):
    """The domain's mail hosts could not be found; ``transient`` says whether to retry."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class Resolver(Protocol):
    """What we use of ``dns.resolver.Resolver``."""

    def resolve(self, qname: str, rdtype: str) -> Iterable[Any]: ...


def group_by_domain(recipients: Iterable[str]) -> dict[str, list[str]]:
    """``{domain: [recipients]}``, domains compared without case and an internationalised one
    as its A-label (``bücher.example`` and ``xn--bcher-kva.example`` are one domain, with one
    transaction), order kept.  A domain with no exact A-label keys as written, in lower case:
    its lookup says why it fails."""
    groups: dict[str, list[str]] = {}
    for recipient in recipients:
        domain = recipient.rpartition("@")[2].lower()
        if not domain.isascii() and not domain.startswith("["):
            with contextlib.suppress(MxLookupError):
                domain = ascii_name(domain)
        groups.setdefault(domain, []).append(recipient)
    return groups


def _default_resolver() -> Resolver:
    try:
        import dns.resolver
    except ModuleNotFoundError:
        raise MxLookupError("direct delivery needs dnspython: pip install dnspython idna", transient=False) from None
    resolver: Resolver = dns.resolver.Resolver()
    return resolver


def ascii_name(domain: str) -> str:
    """``domain`` as DNS and the socket layer both take it: in A-labels.

    Converted once, here, so that the MX lookup and the connection to an
    implicit MX name the same domain: dnspython encodes with IDNA 2008 (its
    ``idna`` package comes with the ``dns`` extra) and the socket layer with the
    stdlib's IDNA 2003, which maps ``straße`` to ``strasse``, another domain.
    A name whose A-label does not read back as itself (letter case aside) is
    refused for good rather than sent somewhere else.
    """
    if domain.isascii():
        return domain
    try:
        import dns.exception
        import dns.name
    except ModuleNotFoundError:  # (a stub resolver without dnspython): the stdlib's codec, where exact
        exact = exact_a_labels(domain)
        if exact is None:
            raise MxLookupError(
                f"{domain} has no exact A-label without the idna package (pip install dnspython idna: the dns extra)",
                transient=False,
            ) from None
        return exact
    else:
        # IDNA 2008 named, not dnspython's default: that is IDNA 2003 before dnspython 2.9.
        codec = dns.name.IDNA_2008_Practical if dns.name.have_idna_2008 else dns.name.IDNA_2003
        try:
            name = dns.name.from_text(domain, idna_codec=codec)
            labels, back = name.to_text(omit_final_dot=True), name.to_unicode(omit_final_dot=True, idna_codec=codec)
        except (dns.exception.DNSException, UnicodeError, ValueError):  # (IDNAException is a DNSException)
            labels = back = ""
    if not labels:
        raise MxLookupError(f"{domain} is not a valid internationalised domain name (IDNA)", transient=False)
    if back.lower() != domain.lower():
        raise MxLookupError(
            f"{domain} would be looked up as {labels}, which is another name (IDNA 2003); "
            "with the idna package (pip install dnspython idna: the dns extra) IDNA 2008 keeps it",
            transient=False,
        )
    return labels


def lookup_mail_hosts(domain: str, resolver: Resolver | None = None, rng: random.Random | None = None) -> list[str]:
    """The hosts to try for ``domain``, best first (RFC 5321 §5.1); an internationalised
    domain is looked up, and is its own mail host, as its A-label (see :func:`ascii_name`)."""
    if domain.startswith("[") and domain.endswith("]"):
        # An address literal names the host itself: no DNS.
        literal = domain[1:-1]
        return [literal[5:] if literal.lower().startswith("ipv6:") else literal]
    domain = ascii_name(domain)
    resolver = resolver or _default_resolver()
    try:
        import dns.exception
        import dns.resolver
    except ModuleNotFoundError:  # pragma: no cover - a stub resolver without dnspython installed
        answers = list(resolver.resolve(domain, "MX"))
    else:
        try:
            answers = list(resolver.resolve(domain, "MX"))
        except dns.resolver.NXDOMAIN:
            raise MxLookupError(f"domain {domain} does not exist", transient=False) from None
        except dns.resolver.NoAnswer:
            return [domain]  # no MX: the domain is its own mail host (its A/AAAA records)
        except dns.exception.DNSException as exc:
            raise MxLookupError(f"DNS lookup for {domain} failed: {exc}", transient=True) from None
    records = [(int(answer.preference), str(answer.exchange).rstrip(".")) for answer in answers]
    if not records:
        return [domain]
    if len(records) == 1 and records[0][1] == "":
        raise MxLookupError(f"{domain} accepts no mail (null MX, RFC 7505)", transient=False)
    rng = rng or random.Random()
    # Sort by preference; a random key first spreads load among equal preferences.
    decorated = [(preference, rng.random(), host) for preference, host in records if host]
    return [host for _, _, host in sorted(decorated)]


def _refused_to_talk(error: SMTPDeliveryError) -> bool:
    """A 5xx greeting: the one permanent reply that answers no command."""
    return not error.transient and error.command is None and error.reply is not None and error.reply.code >= 500


@dataclass(frozen=True)
class DirectResult:
    """Every recipient's final outcome, and the host that decided it (None: no host did)."""

    outcomes: dict[str, RecipientOutcome]
    hosts: dict[str, str | None]


#: ``attempt(host, recipients)`` delivers to one host: a MessageOutcome, or OSError if unreachable.
Attempt = Callable[[str, Sequence[str]], MessageOutcome]


def deliver_direct(
    recipients: Sequence[str],
    attempt: Attempt,
    resolver: Resolver | None = None,
    rng: random.Random | None = None,
) -> DirectResult:
    """Deliver to every recipient through its domain's mail hosts."""
    outcomes: dict[str, RecipientOutcome] = {}
    hosts_used: dict[str, str | None] = {}
    for domain, group in group_by_domain(recipients).items():
        try:
            hosts = lookup_mail_hosts(domain, resolver, rng)
        except MxLookupError as exc:
            error_class = SMTPTransientError if exc.transient else SMTPPermanentError
            for recipient in group:
                outcomes[recipient] = RecipientOutcome(recipient, error=error_class(str(exc)))
                hosts_used[recipient] = None
            continue
        pending = list(group)
        last_error: dict[str, RecipientOutcome] = {}
        for host in hosts:
            try:
                outcome = attempt(host, pending)
            except OSError as exc:
                for recipient in pending:
                    last_error[recipient] = RecipientOutcome(
                        recipient, error=SMTPTransientError(f"cannot connect to {host}: {exc}")
                    )
                continue
            still_pending = []
            for item in outcome.recipients:
                error = item.error
                if error is not None and _refused_to_talk(error):
                    # A 5xx greeting says "not this host", not "not this mail" (RFC 5321
                    # §3.1): the next host, as Postfix's smtp_skip_5xx_greeting (yes by
                    # default); deferred, not bounced, when it was the last.
                    still_pending.append(item.recipient)
                    text = f"{host} refused to talk: {error}"
                    last_error[item.recipient] = replace(item, error=SMTPTransientError(text, error.reply))
                elif error is not None and (
                    error.transient or (isinstance(error, SMTPNotSupportedError) and error.reply is None)
                ):
                    # A 4xx, or this host lacks what the message needs: the next host may take it.
                    still_pending.append(item.recipient)
                    last_error[item.recipient] = item
                else:
                    outcomes[item.recipient] = item  # delivered, or a 5xx: final
                    hosts_used[item.recipient] = host
            pending = still_pending
            if not pending:
                break
        for recipient in pending:
            outcomes[recipient] = last_error.get(
                recipient, RecipientOutcome(recipient, error=SMTPTransientError(f"no mail host of {domain} answered"))
            )
            hosts_used[recipient] = None
    return DirectResult({r: outcomes[r] for r in recipients}, {r: hosts_used[r] for r in recipients})
