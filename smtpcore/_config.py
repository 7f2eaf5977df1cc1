"""Every limit, switch and policy of a connection, in one frozen object per role.

Defaults follow RFC 5321 and what Postfix does (shared/PROTOCOL-NOTES.md has the
table).  A configuration is checked when it is built, so a machine never runs
with a limit below what the RFC requires: ``ServerConfig(max_recipients=10)``
raises ``ValueError`` at once rather than refusing mail later.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _abnf
from ._address import AddressError, check_domain
from ._errors import LocalProtocolError
from ._events import XClient

if TYPE_CHECKING:
    from ._sasl_server import ServerMechanism

__all__ = [
    "AuthPolicy",
    "BareNewlinePolicy",
    "ClientConfig",
    "LongLinePolicy",
    "ServerConfig",
    "Timeout",
    "TlsPolicy",
]


class TlsPolicy(enum.Enum):
    """Whether STARTTLS is offered (server) or used (client)."""

    #: Never offered / never used.
    OFF = "off"
    #: Server: offered, not required.  Client: used when offered ("opportunistic").
    OPTIONAL = "optional"
    #: Server: everything but EHLO, HELO, STARTTLS, NOOP and QUIT gets 530 before TLS.
    #: Client: a server without STARTTLS, or refusing it, ends the session.
    REQUIRED = "required"


class AuthPolicy(enum.Enum):
    """Whether AUTH is offered, and whether mail is accepted without it."""

    OFF = "off"
    OPTIONAL = "optional"
    #: MAIL, RCPT, DATA and the like get 530 5.7.0 until the client authenticates.
    REQUIRED = "required"


class BareNewlinePolicy(enum.Enum):
    """What to do with a CR or LF that is not part of a CRLF in message content."""

    #: Server: accept the message but answer 550 5.6.11 after the end of data.
    #: Client: refuse to send the message (LocalProtocolError).
    REJECT = "reject"
    #: Server: pass the content through byte-exact.  (End of data is still only CRLF.CRLF.)
    ACCEPT = "accept"
    #: Client only: turn every bare CR and bare LF into CRLF (the default).
    NORMALISE = "normalise"


class LongLinePolicy(enum.Enum):
    """What a server does with a content line longer than ``max_line_length``."""

    REJECT = "reject"
    ACCEPT = "accept"


@dataclass(frozen=True, slots=True)
class Timeout:
    """How long the adapter may wait for the peer in the current state.

    ``name`` says which wait it is (``"command"``, ``"data"``, ``"mail"``...),
    ``rfc`` the RFC 5321 section it comes from.  During message content a
    server also has ``min_rate``: the adapter should end a connection whose
    average rate since the start of the content falls below it (as Postfix's
    minimum data rate does), rather than cutting a slow but steady client.
    """

    name: str
    seconds: float
    rfc: str
    min_rate: float | None = None


def _as_policy(config: object, name: str, kind: type[enum.Enum]) -> None:
    """Make the policy field ``name`` a member of ``kind``; a value of it ("required") becomes one.

    The machines test policies by identity (``is TlsPolicy.REQUIRED``), so a plain
    string that got through would pass every check and fail open: tls="required"
    advertised STARTTLS and never required it.  Configurations read from TOML,
    YAML or the environment give exactly such strings.
    """
    value = getattr(config, name)
    if isinstance(value, kind):
        return
    try:
        member = kind(value.lower() if isinstance(value, str) else value)
    except ValueError:
        known = ", ".join(f"{kind.__name__}.{m.name} ({m.value!r})" for m in kind)
        raise ValueError(f"{name} must be one of {known}, not {value!r}") from None
    object.__setattr__(config, name, member)


def _check_hostname(hostname: str) -> None:
    try:
        check_domain(hostname, utf8=False)
    except AddressError as exc:
        raise ValueError(f"hostname: {exc}") from None


@dataclass(frozen=True)
class ServerConfig:
    """Configuration of a :class:`~smtpcore.ServerConnection`."""

    #: The name in the greeting and the EHLO reply.
    hostname: str = "localhost"
    #: Speak LMTP (RFC 2033): LHLO instead of EHLO/HELO, one reply per recipient.
    lmtp: bool = False

    # Extensions advertised in the EHLO reply.
    pipelining: bool = True
    eight_bit_mime: bool = True
    enhanced_status_codes: bool = True
    smtputf8: bool = True
    chunking: bool = True
    binarymime: bool = True
    dsn: bool = False
    #: REQUIRETLS (RFC 8689) is advertised only over TLS, and only if this is on.
    requiretls: bool = False
    #: More EHLO lines, e.g. ``("MT-PRIORITY", "DELIVERBY 60")``.  Parameters of an
    #: extension named here are parsed by the registry if it knows them.
    extra_extensions: tuple[str, ...] = ()
    #: MAIL/RCPT parameter keywords the application handles itself; they are
    #: accepted and handed over untouched in ``params.extra``.
    extra_parameters: frozenset[str] = frozenset()
    #: The optional ``LIMITS`` line (RFC 9422): advertise ``RCPTMAX``.
    advertise_limits: bool = False

    # TLS and authentication.
    tls: TlsPolicy = TlsPolicy.OFF
    #: The connection is TLS from its first byte (port 465, RFC 8314).
    implicit_tls: bool = False
    auth: AuthPolicy = AuthPolicy.OFF
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    #: Mechanisms of the application's own: name -> factory(hostname) returning a
    #: ``smtpcore.ServerMechanism``.  List the name in ``auth_mechanisms`` too.
    auth_mechanism_factories: Mapping[str, Callable[[str], ServerMechanism]] = field(default_factory=dict, hash=False)
    #: Offer AUTH on a connection that is not TLS (off: RFC 4954 §4 advice).
    allow_insecure_auth: bool = False

    # Limits.
    max_command_line: int = 512
    max_auth_line: int = 12288
    max_line_length: int = 1000
    long_lines: LongLinePolicy = LongLinePolicy.REJECT
    bare_newlines: BareNewlinePolicy = BareNewlinePolicy.REJECT
    #: Octets of content; 0 means no limit.  Advertised as ``SIZE n``.
    max_message_size: int = 10 * 1024 * 1024
    max_recipients: int = 1000
    #: Errors a client may make without delivering mail before 421 and close:
    #: bad commands (unknown, bad syntax, bad sequence), commands the
    #: application refused (a 4xx or 5xx to MAIL, RCPT...: a client probing for
    #: addresses makes many), and failed logins.  The count starts over after
    #: each accepted message (Postfix's smtpd_hard_error_limit), from the failed
    #: logins so far: mail between guesses buys no more guesses.
    max_errors: int = 20
    #: Seconds to hold back the reply to each command once the client has made
    #: ``error_delay_after`` errors without delivering mail (Postfix's
    #: smtpd_error_sleep_time, 1 s there); 0, the default, never waits.  The
    #: core has no clock: the adapter waits, asking ``take_reply_delay()``.
    error_delay: float = 0.0
    #: Errors before each reply waits ``error_delay`` (Postfix's smtpd_soft_error_limit).
    error_delay_after: int = 10
    #: NOOP, RSET, HELP, VRFY, EXPN and repeated EHLOs a client may send before each one more
    #: counts as an error too, so that a client cannot hold a connection for
    #: ever with them; the count starts over after each accepted message
    #: (Postfix's smtpd_junk_command_limit).
    max_junk_commands: int = 100
    #: Connections come through a proxy speaking the PROXY protocol (v1 or v2):
    #: read its header before anything else, and only then greet.  With
    #: ``implicit_tls`` the header comes first in plaintext, as HAProxy sends it,
    #: and the TLS handshake after it (see ``ServerConnection.max_read``).
    proxy_protocol: bool = False
    #: Offer XCLIENT (Postfix): a proxy in front (nginx's mail proxy, a content
    #: filter) names the client it speaks for, and the session starts over as
    #: that client's.  Whom to believe is the application's decision: each
    #: command is an ``XClient`` event, which it accepts (220) or refuses (550 5.7.0).
    xclient: bool = False
    #: Offer XFORWARD (Postfix): an MTA handing mail to this server as a content
    #: filter says where the mail came from, for logging.  Each command is an
    #: ``XForward`` event, accepted (250) or refused (550 5.7.0) by the application;
    #: ``conn.xforward`` holds what was said until the transaction ends.
    xforward: bool = False
    #: Refuse a client that talks before the greeting (554 and close).
    reject_early_talkers: bool = True
    #: Seconds to wait before the greeting, to catch such clients: spam software
    #: talks at once, a real client waits for the 220 (Postfix's postscreen waits
    #: 6 s, postscreen_greet_wait).  0, the default, greets at once, and then only
    #: commands that came in one read with a PROXY header are early (nothing else
    #: is read before the greeting).  The adapter waits (it reads with this timeout).
    greet_delay: float = 0.0
    #: Refuse a client that sends more before a reply it must wait for (554 and
    #: close, as Postfix's smtpd_forbid_unauth_pipelining): anything after EHLO,
    #: HELO, LHLO, DATA, STARTTLS, AUTH, NOOP, VRFY or EXPN, or after any command
    #: when PIPELINING was not offered (RFC 2920 §3.1).  Bulk-mail software and
    #: some broken clients do it; off, it is only noted in
    #: ``ServerConnection.improper_pipelining``.
    reject_improper_pipelining: bool = False
    #: Hand VRFY / EXPN to the application (otherwise 252 / 502 from the core).
    vrfy_enabled: bool = False
    expn_enabled: bool = False

    # Timeouts (RFC 5321 §4.5.3.2), enforced by the adapter.
    command_timeout: float = 300.0
    data_timeout: float = 300.0
    #: Octets per second the content must average (Postfix: 500 B/s); 0 disables.
    min_data_rate: float = 500.0
    tls_handshake_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name, kind in (
            ("tls", TlsPolicy),
            ("auth", AuthPolicy),
            ("long_lines", LongLinePolicy),
            ("bare_newlines", BareNewlinePolicy),
        ):
            _as_policy(self, name, kind)
        _check_hostname(self.hostname)
        if self.max_recipients < 100:
            raise ValueError("max_recipients must be at least 100 (RFC 5321 §4.5.3.1.8)")
        if self.max_command_line < 512:
            raise ValueError("max_command_line must be at least 512 (RFC 5321 §4.5.3.1.4)")
        if self.max_auth_line < self.max_command_line:
            raise ValueError("max_auth_line must be at least max_command_line")
        if self.max_line_length < 1000:
            raise ValueError("max_line_length must be at least 1000 (RFC 5321 §4.5.3.1.6)")
        if self.max_message_size < 0 or (0 < self.max_message_size < 65536):
            raise ValueError("max_message_size must be 0 (no limit) or at least 65536 (RFC 5321 §4.5.3.1.10)")
        if self.max_errors < 1:
            raise ValueError("max_errors must be at least 1")
        if self.max_junk_commands < 1:
            raise ValueError("max_junk_commands must be at least 1")
        if not self.eight_bit_mime and (self.smtputf8 or (self.binarymime and self.chunking)):
            # RFC 6531 §3.1: a server offering SMTPUTF8 offers 8BITMIME too; and BODY=
            # BINARYMIME is a value of 8BITMIME's BODY parameter, which would be refused.
            raise ValueError(
                "eight_bit_mime=False needs smtputf8=False and binarymime=False too "
                "(SMTPUTF8 and BINARYMIME both rest on 8BITMIME: RFC 6531 §3.1, RFC 3030 §3)"
            )
        for name in ("command_timeout", "data_timeout", "tls_handshake_timeout"):
            if not 0 < getattr(self, name) < float("inf"):
                # 0 would end every session at its first read, with 421.
                raise ValueError(f"{name} must be a number of seconds, more than 0")
        if not 0 <= self.error_delay < float("inf"):
            raise ValueError("error_delay must be a number of seconds, 0 or more")
        if not 0 <= self.greet_delay < float("inf"):
            raise ValueError("greet_delay must be a number of seconds, 0 or more")
        if self.error_delay_after < 1:
            raise ValueError("error_delay_after must be at least 1")
        if self.bare_newlines is BareNewlinePolicy.NORMALISE:
            raise ValueError("a server never rewrites content: bare_newlines is REJECT or ACCEPT")
        for line in self.extra_extensions:
            if not isinstance(line, str) or not line or any(ord(c) < 32 or ord(c) > 126 for c in line):
                raise ValueError(f"extra_extensions: {line!r} is not a printable ASCII EHLO line")
        for keyword in self.extra_parameters:
            # The parser upper-cases what the client sends, so a lower-case entry
            # would never match and its parameter would get 555 without a word.
            if (
                not isinstance(keyword, str)
                or not _abnf.ESMTP_KEYWORD_RE.fullmatch(keyword)
                or keyword != keyword.upper()
            ):
                raise ValueError(f"extra_parameters: {keyword!r} is not an upper-case ESMTP keyword")
        if self.auth is not AuthPolicy.OFF and not self.auth_mechanisms:
            raise ValueError("auth_mechanisms must name at least one mechanism when auth is on (RFC 4954 §3)")
        if (
            self.auth is AuthPolicy.REQUIRED
            and self.tls is TlsPolicy.OFF
            and not (self.implicit_tls or self.allow_insecure_auth)
        ):
            # AUTH is offered only over TLS: such a server would refuse every MAIL with 530.
            raise ValueError("auth=REQUIRED needs TLS (tls or implicit_tls) or allow_insecure_auth=True")
        from ._sasl_server import MECHANISMS

        for name in self.auth_mechanisms:
            if name.upper() != name:
                raise ValueError(f"auth_mechanisms: write {name!r} in upper case")
            if name not in MECHANISMS and name not in self.auth_mechanism_factories:
                raise ValueError(f"auth_mechanisms: {name!r} has no built-in or configured implementation")


# The waits a client adapter bounds, by ClientConnection.timeout name, with the
# RFC 5321 §4.5.3.2 values (greeting 5 min, MAIL 5, RCPT 5, DATA initiation 2,
# data block 3, end of data 10).
_CLIENT_TIMEOUTS: Mapping[str, float] = {
    "greeting": 300.0,
    "hello": 300.0,
    "mail": 300.0,
    "rcpt": 300.0,
    "data": 120.0,
    "data_block": 180.0,
    "data_end": 600.0,
    "tls_handshake": 60.0,
    "other": 300.0,
}


@dataclass(frozen=True)
class ClientConfig:
    """Configuration of a :class:`~smtpcore.ClientConnection`."""

    #: The name sent in EHLO/HELO/LHLO.  None: the address literal of the connection's
    #: local address (``[192.0.2.7]``), which the adapter gives the driver once
    #: connected (``ClientDriver.set_local_address``); RFC 5321 §4.1.4 allows it for a
    #: client without a name of its own, and servers that refuse "localhost" (Postfix's
    #: reject_non_fqdn_helo_hostname) take it.  "localhost" when no address was given.
    local_hostname: str | None = None
    lmtp: bool = False
    #: STARTTLS: OFF never, OPTIONAL when offered (opportunistic), REQUIRED or fail.
    starttls: TlsPolicy = TlsPolicy.OPTIONAL
    #: The connection is TLS from its first byte (port 465).
    implicit_tls: bool = False
    #: Send AUTH over a connection that is not TLS (never, unless this is set).
    allow_insecure_auth: bool = False
    #: Mechanisms the client may use, strongest first; the driver picks the first
    #: one the server offers that the credentials can serve.
    auth_mechanisms: tuple[str, ...] = ("XOAUTH2", "OAUTHBEARER", "CRAM-MD5", "PLAIN", "LOGIN")
    #: Pipeline MAIL/RCPT/DATA when the server offers PIPELINING.
    use_pipelining: bool = True
    #: Send content with BDAT when the server offers CHUNKING.
    use_chunking: bool = True
    #: Octets per BDAT chunk (and the most content the driver queues per write).
    chunk_size: int = 128 * 1024
    bare_newlines: BareNewlinePolicy = BareNewlinePolicy.NORMALISE
    #: A message with a line over 998 octets (RFC 5322 §2.1.1) and no NUL, for a server
    #: without BINARYMIME: send it as it is, as smtplib does, rather than fail it.  The
    #: server may take it, refuse it, or cut or fold the line.
    send_long_lines: bool = False

    #: Speak for another client (Postfix's XCLIENT): after STARTTLS and before AUTH,
    #: send these attributes, and say EHLO again once the server greets anew (with
    #: the ``helo`` given, if it is a name EHLO may carry).  For a proxy or a content
    #: filter the server trusts; a server that does not offer XCLIENT, or refuses it,
    #: fails the session.
    xclient: XClient | None = None

    # Reply bounds: larger replies are a RemoteProtocolError, not a memory leak.
    max_reply_line: int = 8192
    max_reply_size: int = 32 * 1024
    max_reply_lines: int = 100

    # Timeouts (RFC 5321 §4.5.3.2), enforced by the adapter.
    #: Give only the ones to change; the others keep these defaults.
    #: (Left out of the hash, as ServerConfig's factories are, so that a config can key a cache.)
    timeouts: dict[str, float] = field(default_factory=lambda: dict(_CLIENT_TIMEOUTS), hash=False)

    def __post_init__(self) -> None:
        _as_policy(self, "starttls", TlsPolicy)
        _as_policy(self, "bare_newlines", BareNewlinePolicy)
        if self.local_hostname is not None:
            _check_hostname(self.local_hostname)
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if self.xclient is not None:
            if not isinstance(self.xclient, XClient):
                raise ValueError(f"xclient must be an XClient event, not {type(self.xclient).__name__}")
            from ._writers import MAX_COMMAND_LINE, attributes_text  # (the writer needs the events, not the config)

            try:
                length = len(attributes_text(self.xclient)) + 2
            except LocalProtocolError as exc:
                raise ValueError(f"xclient: {exc}") from None
            if length > MAX_COMMAND_LINE:
                raise ValueError(
                    f"xclient: its XCLIENT line would be {length} octets, over {MAX_COMMAND_LINE}, and the "
                    "driver sends one XCLIENT: shorten its values (NAME and HELO are 255 at most each)"
                )
        if self.max_reply_line < 512:
            raise ValueError("max_reply_line must be at least 512 (RFC 5321 §4.5.3.1.5)")
        if self.max_reply_size < self.max_reply_line:
            raise ValueError("max_reply_size must be at least max_reply_line")
        if self.max_reply_lines < 1:
            raise ValueError("max_reply_lines must be at least 1")
        if self.bare_newlines is BareNewlinePolicy.ACCEPT:
            raise ValueError("a client never sends a bare CR or LF: bare_newlines is NORMALISE or REJECT")
        unknown = set(self.timeouts) - set(_CLIENT_TIMEOUTS)
        if unknown:
            raise ValueError(f"timeouts: unknown {', '.join(sorted(unknown))}; known: {', '.join(_CLIENT_TIMEOUTS)}")
        object.__setattr__(self, "timeouts", {**_CLIENT_TIMEOUTS, **self.timeouts})
        if any(not isinstance(value, (int, float)) or value <= 0 for value in self.timeouts.values()):
            raise ValueError("timeouts must be positive numbers of seconds")
        for name in self.auth_mechanisms:
            if name.upper() != name:
                raise ValueError(f"auth_mechanisms: write {name!r} in upper case")
