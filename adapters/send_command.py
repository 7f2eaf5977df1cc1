"""``smtpcore send``: submit one message to a server, or deliver it straight to the recipients' MX hosts.

The message comes from a file, from standard input (``-``), or is built from
``--subject`` and ``--body``.  With ``--server`` it goes to that relay; without,
each recipient domain's mail hosts are looked up (``adapters.mx``) and tried in
order.  The password never appears on the command line: it is read from the
environment variable named by ``--password-env`` or asked for at a prompt; an
OAuth2 bearer token (XOAUTH2, OAUTHBEARER) from the one ``--token-env`` names.

Exit status: 0 when every recipient accepted the message, 75 (EX_TEMPFAIL)
when the only failures were transient (a greylisting server: try again later),
1 when any failure was permanent, 2 for usage errors.

Certificates: with ``--server`` the relay's is always verified, even when STARTTLS
is only opportunistic (a relay is one host you chose, which can have a proper
certificate); in direct delivery an MX host's only when ``--starttls required`` or
``--tls`` is given.  docs/cli.md documents the options, these statuses and rules.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import IO, Any

from smtpcore import (
    ClientConfig,
    Credentials,
    LocalProtocolError,
    Mail,
    MessageOutcome,
    Rcpt,
    RecipientOutcome,
    SMTPAuthenticationError,
    TlsPolicy,
)
from smtpcore._outcomes import SMTPDeliveryError

from ._hostname import default_hostname
from .mx import deliver_direct

__all__ = ["EX_TEMPFAIL", "add_parser", "send_command"]

EX_TEMPFAIL = 75
ADAPTERS = ("blocking", "asyncio", "trio", "gevent")
STARTTLS = {"required": TlsPolicy.REQUIRED, "opportunistic": TlsPolicy.OPTIONAL, "off": TlsPolicy.OFF}


class UsageError(Exception):
    """A mistake on the command line; exit status 2."""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("send", help="send one message to a relay, or straight to the recipients' MX hosts")
    arg = p.add_argument
    arg("message", nargs="?", help="a file with the message (RFC 5322), or - for standard input")
    arg("--from", dest="sender", required=True, metavar="ADDRESS", help="the envelope sender (and From: if built)")
    arg("--to", dest="recipients", action="append", required=True, metavar="ADDRESS", help="a recipient (repeatable)")
    arg("--subject", help="build a message with this subject (instead of a file)")
    arg("--body", help="build a message with this text body")
    arg("--server", metavar="HOST[:PORT]", help="submit to this server (port 25, 465 with --tls); default: direct MX")
    arg("--port", type=int, default=None, help="the port of every MX host in direct delivery (default 25)")
    arg("--starttls", choices=tuple(STARTTLS), default=None, help="default: opportunistic (required with --user)")
    arg("--tls", action="store_true", help="implicit TLS from the first byte (port 465)")
    arg("--ca-file", metavar="FILE", help="trust this CA bundle instead of the system's")
    arg("--user", help="authenticate as this user (password from --password-env or a prompt)")
    arg("--password-env", default="SMTPCORE_PASSWORD", metavar="NAME", help="variable holding the password")
    arg(
        "--token-env",
        metavar="NAME",
        help="variable holding an OAuth2 bearer token: authenticate with XOAUTH2 or OAUTHBEARER, not a password",
    )
    arg(
        "--helo",
        metavar="NAME",
        help="the name to send in EHLO (default: this machine's if fully qualified, else its address as [a.b.c.d])",
    )
    arg("--lmtp", action="store_true", help="speak LMTP")
    arg("--timeout", type=float, metavar="SECONDS", help="overrides every per-command timeout")
    arg("--adapter", choices=ADAPTERS, default="blocking", help="the client adapter (default blocking)")


def _message(
    args: argparse.Namespace, helo: str, stdin: IO[bytes], cleanup: contextlib.ExitStack
) -> bytes | IO[bytes] | EmailMessage:
    if args.message is not None:
        if args.subject is not None or args.body is not None:
            raise UsageError("give a message file or --subject/--body, not both")
        if args.message == "-":
            return stdin
        try:
            return cleanup.enter_context(open(args.message, "rb"))  # streamed by the adapter
        except OSError as exc:
            raise UsageError(f"cannot read {args.message}: {exc.strerror}") from None
    if args.subject is None and args.body is None:
        raise UsageError("give a message file, - for standard input, or --subject/--body")
    for option, text in (("--subject", args.subject), ("--body", args.body)):
        try:
            (text or "").encode("utf-8")
        except UnicodeEncodeError:  # octets the locale could not decode, kept as lone surrogates
            raise UsageError(f"{option} is not text in the terminal's encoding: write it in UTF-8") from None
    message = EmailMessage()
    message["From"] = args.sender
    message["To"] = ", ".join(args.recipients)
    message["Subject"] = args.subject or ""
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=helo)
    message.set_content(args.body or "")
    return message


def _credentials(args: argparse.Namespace) -> Credentials | None:
    if args.token_env is not None:
        if not args.user:
            raise UsageError("--token-env needs --user: the account the token was issued for")
        token = os.environ.get(args.token_env)
        if not token:
            raise UsageError(f"--token-env: {args.token_env} is unset or empty")
        return Credentials(args.user, token=token)
    return Credentials(args.user, _password(args)) if args.user else None


def _password(args: argparse.Namespace) -> str:
    password = os.environ.get(args.password_env)
    if password:
        return password
    if not sys.stdin.isatty():
        raise UsageError(f"--user needs a password: set {args.password_env} (or run on a terminal to be asked)")
    return getpass.getpass(f"Password for {args.user}: ")


def _tls_context(args: argparse.Namespace, verify: bool) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=args.ca_file)
    except (OSError, ssl.SSLError) as exc:  # (ssl.SSLError is an OSError; named for the reader)
        raise UsageError(f"cannot read --ca-file {args.ca_file}: {exc.strerror or exc}") from None
    if not verify:
        # Opportunistic TLS to MX hosts, as Postfix's "may" level: encrypt when
        # offered, without trusting the certificate (most MX certificates would
        # not verify, and the alternative is plaintext).
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


Sender = Callable[..., MessageOutcome]


def _sender(adapter: str) -> Sender:
    """A blocking ``send_message`` for the chosen adapter."""
    if adapter == "blocking":
        from .blocking_client import send_message

        return send_message
    if adapter == "gevent":
        from .gevent_client import send_message as gevent_send

        return gevent_send
    if adapter == "asyncio":
        import asyncio

        from .asyncio_client import send_message as asyncio_send

        return lambda *a, **kw: asyncio.run(asyncio_send(*a, **kw))
    import trio

    from .trio_client import send_message as trio_send

    return lambda *a, **kw: trio.run(lambda: trio_send(*a, **kw))


def _dns_available() -> bool:
    try:
        import dns.resolver  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def _split_server(text: str, implicit_tls: bool) -> tuple[str, int]:
    default = 465 if implicit_tls else 25
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"--server {text!r}: the port must be a number")
    return host, int(port) if port else default


def _outcome_for(send: Sender, host: str, port: int, recipients: Sequence[str], **options: Any) -> MessageOutcome:
    """Per-recipient outcomes even when the whole message failed (send_message raises then)."""
    try:
        return send(host, port, options.pop("sender"), list(recipients), options.pop("message"), **options)
    except SMTPDeliveryError as exc:
        return MessageOutcome(tuple(RecipientOutcome(r, error=exc) for r in recipients), exc)


def send_command(args: argparse.Namespace, stdin: IO[bytes] | None = None, resolver: Any = None) -> int:
    """Run ``smtpcore send``; ``resolver`` replaces DNS (for tests)."""
    # Closes the message file however the command ends: main() may run many times in one process.
    with contextlib.ExitStack() as cleanup:
        return _send(args, stdin or sys.stdin.buffer, resolver, cleanup)


def _send(args: argparse.Namespace, stdin: IO[bytes], resolver: Any, cleanup: contextlib.ExitStack) -> int:
    try:
        # Refuse bad addresses before connecting anywhere, with the core's own checks.
        Mail(args.sender)
        for recipient in args.recipients:
            Rcpt(recipient)
    except LocalProtocolError as exc:
        raise UsageError(str(exc)) from None
    if args.server and args.port is not None:
        raise UsageError("--port is the port of the MX hosts in direct delivery; with --server, write HOST:PORT")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: a port is a number from 1 to 65535")
    needs_dns = any(not recipient.rpartition("@")[2].startswith("[") for recipient in args.recipients)
    if not args.server and resolver is None and needs_dns and not _dns_available():
        # Said once, before anything is sent, rather than as every recipient's refusal.
        raise UsageError("direct delivery needs dnspython (pip install dnspython idna), or --server HOST:PORT")
    # The machine's own name when it is fully qualified, as smtplib sends; else None, and
    # the adapter says the connection's address literal ([192.0.2.7]): "localhost" or a
    # bare "vm" get refused by MX hosts that check the EHLO name (Postfix's
    # reject_non_fqdn_helo_hostname, say).
    own = default_hostname()
    helo = args.helo if args.helo is not None else own if "." in own else None
    try:
        message = _message(args, helo or own, stdin, cleanup)
        starttls = args.starttls or ("required" if args.user else "opportunistic")
        config = ClientConfig(
            local_hostname=helo,
            lmtp=args.lmtp,
            starttls=TlsPolicy.OFF if args.tls else STARTTLS[starttls],
            implicit_tls=args.tls,
        )
        credentials = _credentials(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    send = _sender(args.adapter)
    options: dict[str, Any] = {"config": config, "credentials": credentials, "sender": args.sender}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    hosts: dict[str, str | None]
    if args.server:
        host, port = _split_server(args.server, args.tls)
        options["tls_context"] = _tls_context(args, verify=True)
        outcome = _outcome_for(send, host, port, args.recipients, message=message, **options)
        results = {item.recipient: item for item in outcome.recipients}
        hosts = dict.fromkeys(results, host)
    else:
        if not isinstance(message, (bytes, EmailMessage)):
            message = message.read()  # each MX host may need the message again
        port = args.port or (465 if args.tls else 25)
        options["tls_context"] = _tls_context(args, verify=starttls == "required" or args.tls)

        def attempt(host: str, recipients: Sequence[str]) -> MessageOutcome:
            return _outcome_for(send, host, port, recipients, message=message, **dict(options))

        direct = deliver_direct(args.recipients, attempt, resolver)
        results, hosts = direct.outcomes, direct.hosts
    return _report(results, hosts)


def _report(results: dict[str, RecipientOutcome], hosts: dict[str, str | None]) -> int:
    width = max(len(recipient) for recipient in results)
    transient = permanent = False
    for recipient, item in results.items():
        reply = item.data_reply if item.error is None else (item.error.reply or item.rcpt_reply)
        if item.error is None:
            status = "delivered"
        elif item.error.transient:
            status, transient = "deferred", True
        else:
            status, permanent = "refused", True
        # A refused login is told whole: which mechanism, and what an OAuth server said of the token.
        told_whole = reply is None or isinstance(item.error, SMTPAuthenticationError)
        detail = str(item.error) if told_whole else str(reply)
        print(f"{recipient:<{width}}  {status:<9}  {hosts.get(recipient) or '-':<20}  {detail}")
    if permanent:
        return 1
    return EX_TEMPFAIL if transient else 0
