"""The ``smtpcore`` command: ``serve`` (a mail sink on Maildir), ``send``, ``hash-password``.

``smtpcore serve`` with no options listens on 127.0.0.1:8025 and stores every
accepted message in ``./maildir``.  Every option can also come from a TOML file
given with ``--config`` (same names, dashes or underscores); options on the
command line win over the file.  Configuration mistakes (an unreadable
certificate, a port in use, an unknown key) end the program with one line
naming the problem and exit status 1 (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import math
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from smtpcore import AuthPolicy, BareNewlinePolicy, LongLinePolicy, ServerConfig, TlsPolicy

from . import send_command
from ._hostname import default_hostname
from .maildir import MaildirStore
from .passwords import hash_password, load_auth_file
from .sink import MailSink, sink_handler

__all__ = ["main"]

log = logging.getLogger("smtpcore.serve")

ADAPTERS = ("asyncio", "trio", "gevent", "blocking")


class ConfigError(Exception):
    """A problem with the configuration, said in one line."""


# --- option parsing ---------------------------------------------------------------------------------

# name -> (default, converter used for values from the TOML file)
SERVE_DEFAULTS: dict[str, Any] = {
    "listen": ["127.0.0.1:8025"],
    "adapter": "asyncio",
    "maildir": "maildir",
    "maildir_per_recipient": False,
    "hostname": None,
    "accept_domain": [],
    "accept_address": [],
    "max_message_size": 10 * 1024 * 1024,
    "max_recipients": 1000,
    "command_timeout": 300.0,
    "max_connections": 100,
    "max_connections_per_client": 0,
    "tls_cert": None,
    "tls_key": None,
    "tls": None,
    "implicit_tls": False,
    "self_signed": False,
    "auth": "off",
    "auth_file": None,
    "allow_insecure_auth": False,
    "auth_failure_delay": 2.0,
    "error_delay": 1.0,
    "greet_delay": 0.0,
    "lmtp": False,
    "proxy_protocol": False,
    "xclient_from": [],
    "xforward_from": [],
    "reject_improper_pipelining": False,
    "long_lines": "reject",
    "bare_newlines": "reject",
    "discard": False,
    "log_level": "info",
    "transcript": None,
    "shutdown_timeout": 30.0,
}

# name -> the values an option with a fixed set of them takes: argparse checks the
# command line, _read_config_file the TOML file, so that neither gets further.
SERVE_CHOICES: dict[str, tuple[str, ...]] = {
    "adapter": ADAPTERS,
    "tls": ("optional", "required", "off"),
    "auth": ("optional", "required", "off"),
    "log_level": ("debug", "info", "warning", "error"),
    # (a server never rewrites content: BareNewlinePolicy.NORMALISE is the client's)
    "long_lines": ("reject", "accept"),
    "bare_newlines": ("reject", "accept"),
}


def _serve_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run a mail sink that stores messages in a Maildir")
    arg = p.add_argument
    arg("--config", metavar="FILE", help="a TOML file with any of these options (command-line options win)")
    arg("--listen", action="append", metavar="HOST:PORT", help="where to listen (repeatable; [::1]:25 for IPv6)")
    arg("--adapter", choices=SERVE_CHOICES["adapter"], help="the concurrency adapter (default asyncio)")
    arg("--maildir", metavar="DIR", help="where messages go (default ./maildir)")
    arg("--maildir-per-recipient", action="store_true", default=None, help="one Maildir per recipient")
    arg("--hostname", metavar="NAME", help="the name in the greeting and trace headers (default: this machine's)")
    arg("--accept-domain", action="append", metavar="DOMAIN", help="accept mail for this domain (repeatable)")
    arg("--accept-address", action="append", metavar="ADDRESS", help="accept mail for this address (repeatable)")
    arg(
        "--max-message-size",
        type=int,
        metavar="OCTETS",
        help="advertised as SIZE; larger messages get 552 5.3.4 (default 10485760)",
    )
    arg(
        "--max-recipients",
        type=int,
        metavar="N",
        help="recipients per message; the excess gets 452 4.5.3 (at least 100; default 1000)",
    )
    arg(
        "--command-timeout",
        type=float,
        metavar="SECONDS",
        help="a whole command line must arrive within it (default 300)",
    )
    arg(
        "--max-connections",
        type=int,
        metavar="N",
        help="sessions at once; the excess is greeted with 421 and closed (default 100)",
    )
    arg(
        "--max-connections-per-client",
        type=int,
        metavar="N",
        help="sessions one address may have at once (default 0: any)",
    )
    arg("--tls-cert", metavar="FILE", help="a certificate chain (PEM)")
    arg("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    arg("--tls", choices=SERVE_CHOICES["tls"], help="STARTTLS policy (default optional with a cert)")
    arg("--implicit-tls", action="store_true", default=None, help="TLS from the first byte (port 465 style)")
    arg("--self-signed", action="store_true", default=None, help="generate a throwaway certificate (testing)")
    arg("--auth", choices=SERVE_CHOICES["auth"], help="AUTH policy (default off)")
    arg("--auth-file", metavar="FILE", help="user:hash lines (see smtpcore hash-password)")
    arg("--allow-insecure-auth", action="store_true", default=None, help="offer AUTH before TLS")
    arg(
        "--auth-failure-delay",
        type=float,
        metavar="SECONDS",
        help="wait before answering a wrong password (default 2; 0 for none)",
    )
    arg(
        "--error-delay",
        type=float,
        metavar="SECONDS",
        help="hold back each reply this long once a client has made 10 errors without delivering mail (default 1)",
    )
    arg(
        "--greet-delay",
        type=float,
        metavar="SECONDS",
        help="wait this long before the greeting and refuse a client that talks first (default 0)",
    )
    arg("--lmtp", action="store_true", default=None, help="speak LMTP (RFC 2033)")
    arg("--proxy-protocol", action="store_true", default=None, help="expect a PROXY v1/v2 header first")
    arg(
        "--xclient-from",
        action="append",
        metavar="NETWORK",
        help="offer XCLIENT and believe it from this address or network, e.g. a mail proxy's (repeatable)",
    )
    arg(
        "--xforward-from",
        action="append",
        metavar="NETWORK",
        help="offer XFORWARD and believe it from this address or network, e.g. Postfix's before a filter (repeatable)",
    )
    arg(
        "--reject-improper-pipelining",
        action="store_true",
        default=None,
        help="554 and close for a client that sends more before a reply it must wait for (RFC 2920)",
    )
    arg(
        "--long-lines",
        choices=SERVE_CHOICES["long_lines"],
        help="a DATA message with a line over 998 octets: refuse it with 550 5.6.0 (default) or store it",
    )
    arg(
        "--bare-newlines",
        choices=SERVE_CHOICES["bare_newlines"],
        help="a DATA message with a CR or LF outside CRLF: refuse it with 550 5.6.11 (default) or store it",
    )
    arg("--discard", action="store_true", default=None, help="accept and drop every message")
    arg("--log-level", choices=SERVE_CHOICES["log_level"], help="how much to log (default info)")
    arg("--transcript", metavar="DIR", help="write each session's wire bytes to a file here (AUTH redacted)")
    arg(
        "--shutdown-timeout", type=float, metavar="SECONDS", help="how long sessions may finish on SIGTERM (default 30)"
    )


def _merge_options(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the TOML file, then the command line."""
    options = dict(SERVE_DEFAULTS)
    if args.config:
        options.update(_read_config_file(args.config))
    for name in SERVE_DEFAULTS:
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    return options


# How a config file's error names the kind of value an option takes.
_TOML_KINDS = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a string or a list of strings",
}


def _read_config_file(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
        except ModuleNotFoundError:
            raise ConfigError("--config on Python 3.10 needs tomli: pip install tomli (the toml extra)") from None
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    options: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in SERVE_DEFAULTS:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
        default = SERVE_DEFAULTS[name]
        if isinstance(default, list) and isinstance(value, str):
            value = [value]
        # An option that is unset by default (a name, a path, a choice) takes a string.
        expected = str if default is None else type(default)
        if (
            (not isinstance(value, expected) and not (expected is float and isinstance(value, int)))
            or (isinstance(value, bool) and expected is not bool)  # (a bool is an int to isinstance)
            or (isinstance(value, list) and not all(isinstance(item, str) for item in value))
        ):
            raise ConfigError(f"config file {path}: {key} must be {_TOML_KINDS[expected]}, not {value!r}")
        choices = SERVE_CHOICES.get(name)
        if choices is not None and value not in choices:
            raise ConfigError(f"config file {path}: {key} must be one of {', '.join(choices)}, not {value!r}")
        options[name] = value
    return options


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT, for example 127.0.0.1:8025 or [::1]:8025")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigError(f"--listen {text!r}: the host is missing")
    return host, int(port)


def _announce_shutdown(timeout: float) -> None:
    log.info("shutting down: 421 to idle sessions now; transactions may finish within %.0fs", timeout)


# --- building the server ----------------------------------------------------------------------------


@dataclass
class ServePlan:
    """Everything ``serve`` decided before it binds a socket."""

    adapter: str
    addresses: list[tuple[str, int]]
    config: ServerConfig
    tls: ssl.SSLContext | None
    sink: MailSink
    max_connections: int
    shutdown_timeout: float


def build_plan(options: dict[str, Any]) -> ServePlan:
    hostname = options["hostname"] or default_hostname()
    tls_context = _tls_context(options, hostname)
    tls_policy = options["tls"] or ("optional" if tls_context is not None else "off")
    if tls_policy != "off" and tls_context is None:
        raise ConfigError(f"--tls {tls_policy} needs --tls-cert/--tls-key or --self-signed")
    if options["implicit_tls"] and tls_context is None:
        raise ConfigError("--implicit-tls needs --tls-cert/--tls-key or --self-signed")
    users = {}
    if options["auth"] != "off":
        if not options["auth_file"]:
            raise ConfigError(f"--auth {options['auth']} needs --auth-file")
        try:
            users = load_auth_file(options["auth_file"])
        except OSError as exc:
            raise ConfigError(f"cannot read --auth-file {options['auth_file']}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    try:
        config = ServerConfig(
            hostname=hostname,
            lmtp=options["lmtp"],
            proxy_protocol=options["proxy_protocol"],
            xclient=bool(options["xclient_from"]),
            xforward=bool(options["xforward_from"]),
            tls=TlsPolicy(tls_policy) if not options["implicit_tls"] else TlsPolicy.OFF,
            implicit_tls=options["implicit_tls"],
            auth=AuthPolicy(options["auth"]),
            # Passwords are checked against salted hashes, so only the mechanisms
            # that reveal the password to the server can work (not CRAM-MD5).
            auth_mechanisms=("PLAIN", "LOGIN"),
            allow_insecure_auth=options["allow_insecure_auth"],
            max_message_size=options["max_message_size"],
            max_recipients=options["max_recipients"],
            command_timeout=options["command_timeout"],
            reject_improper_pipelining=options["reject_improper_pipelining"],
            error_delay=options["error_delay"],
            greet_delay=options["greet_delay"],
            long_lines=LongLinePolicy(options["long_lines"]),
            bare_newlines=BareNewlinePolicy(options["bare_newlines"]),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    store = None
    if not options["discard"]:
        try:
            store = MaildirStore(options["maildir"], per_recipient=options["maildir_per_recipient"])
        except OSError as exc:
            raise ConfigError(f"cannot create Maildir {options['maildir']}: {exc.strerror}") from None
    if not options["auth_failure_delay"] >= 0:
        raise ConfigError(f"--auth-failure-delay {options['auth_failure_delay']}: must be 0 or more seconds")
    if not options["listen"]:
        raise ConfigError("listen: give at least one HOST:PORT to listen on")
    if options["max_connections"] < 1:
        raise ConfigError(f"--max-connections {options['max_connections']}: must be 1 or more")
    if not 0 <= options["shutdown_timeout"] < math.inf:
        raise ConfigError(f"--shutdown-timeout {options['shutdown_timeout']}: must be 0 or more seconds")
    if options["max_connections_per_client"] < 0:
        raise ConfigError(f"--max-connections-per-client {options['max_connections_per_client']}: must be 0 or more")
    try:
        sink = _make_sink(options, store, hostname, users)
    except ValueError as exc:  # an --xclient-from or --xforward-from that is no network
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot create --transcript directory {options['transcript']}: {exc.strerror}") from None
    return ServePlan(
        adapter=options["adapter"],
        addresses=[parse_listen(text) for text in options["listen"]],
        config=config,
        tls=tls_context,
        sink=sink,
        max_connections=options["max_connections"],
        shutdown_timeout=options["shutdown_timeout"],
    )


def _make_sink(options: dict[str, Any], store: MaildirStore | None, hostname: str, users: dict[str, str]) -> MailSink:
    return MailSink(
        store,
        hostname,
        accept_domains=options["accept_domain"],
        accept_addresses=options["accept_address"],
        users=users,
        lmtp=options["lmtp"],
        transcript_dir=options["transcript"],
        auth_failure_delay=options["auth_failure_delay"],
        max_connections_per_client=options["max_connections_per_client"],
        xclient_from=options["xclient_from"],
        xforward_from=options["xforward_from"],
    )


def _tls_context(options: dict[str, Any], hostname: str) -> ssl.SSLContext | None:
    if options["self_signed"]:
        try:
            import trustme
        except ModuleNotFoundError:
            raise ConfigError("--self-signed needs trustme: pip install trustme (the selfsigned extra)") from None
        authority = trustme.CA()
        certificate = authority.issue_cert(hostname, "localhost", "127.0.0.1", "::1")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        certificate.configure_cert(context)
        return context
    if not options["tls_cert"]:
        if options["tls_key"]:
            raise ConfigError("--tls-key needs --tls-cert")
        return None
    for path in (options["tls_cert"], options["tls_key"]):
        # ssl's own error does not say which file it could not open.
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"cannot read TLS certificate or key {path}: no such file or no permission")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(options["tls_cert"], options["tls_key"])
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load TLS certificate {options['tls_cert']}: {exc}") from None
    return context


# --- running it, in each dialect --------------------------------------------------------------------


def _server_options(plan: ServePlan, host: str, port: int) -> dict[str, Any]:
    return {"host": host, "port": port, "tls": plan.tls, "max_connections": plan.max_connections}


def _announce(plan: ServePlan, servers: Sequence[Any]) -> None:
    for server in servers:
        host, port = server.address[:2]
        shown = f"[{host}]" if ":" in host else host
        where = "discarding messages" if plan.sink.store is None else f"storing in {plan.sink.store.root}"
        print(f"smtpcore serve: listening on {shown}:{port} ({plan.adapter}), {where}", flush=True)


def _bind_error(host: str, port: int, exc: OSError) -> ConfigError:
    return ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def run_asyncio(plan: ServePlan, ready: Callable[[], None] | None = None) -> None:
    from .asyncio_server import SMTPServer

    async def main() -> None:
        handler = sink_handler(plan.sink, "asyncio")
        servers: list[SMTPServer] = []
        for host, port in plan.addresses:
            server = SMTPServer(handler, plan.config, **_server_options(plan, host, port))
            try:
                await server.start()
            except OSError as exc:
                for started in servers:
                    await started.shutdown(0)
                raise _bind_error(host, port, exc) from None
            servers.append(server)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        _announce(plan, servers)  # (only now: a supervisor may stop us as soon as it reads this)
        if ready is not None:
            ready()
        await stop.wait()
        _announce_shutdown(plan.shutdown_timeout)
        await asyncio.gather(*(server.shutdown(plan.shutdown_timeout) for server in servers))

    asyncio.run(main())


def run_trio(plan: ServePlan, ready: Callable[[], None] | None = None) -> None:
    import trio

    from .trio_server import SMTPServer

    async def main() -> ConfigError | None:
        handler = sink_handler(plan.sink, "trio")
        async with trio.open_nursery() as nursery:
            servers: list[SMTPServer] = []
            for host, port in plan.addresses:
                try:
                    server = await nursery.start(
                        SMTPServer(handler, plan.config, **_server_options(plan, host, port)).serve
                    )
                except OSError as exc:
                    nursery.cancel_scope.cancel()
                    # Raised outside trio.run, not in the nursery: trio would wrap it in an
                    # ExceptionGroup, and the user would get a traceback, not one line.
                    return _bind_error(host, port, exc)
                servers.append(server)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                _announce(plan, servers)  # (only now: a supervisor may stop us as soon as it reads this)
                if ready is not None:
                    ready()
                async for _ in signals:
                    break
            _announce_shutdown(plan.shutdown_timeout)
            # Every listener at once: one after another, the later ones would take
            # new sessions meanwhile and the whole would last a timeout each.
            async with trio.open_nursery() as stopping:
                for server in servers:
                    stopping.start_soon(server.shutdown, plan.shutdown_timeout)
        return None

    failed = trio.run(main)
    if failed is not None:
        raise failed


def run_threads(plan: ServePlan, ready: Callable[[], None] | None = None) -> None:
    """The blocking adapter; also gevent, whose servers have the same start/shutdown shape."""
    if plan.adapter == "gevent":
        import gevent

        from .gevent_server import SMTPServer as GeventServer

        server_class: Any = GeventServer
    else:
        from .blocking_server import SMTPServer as BlockingServer

        server_class = BlockingServer
    handler = sink_handler(plan.sink, plan.adapter)
    servers: list[Any] = []
    for host, port in plan.addresses:
        server = server_class(handler, plan.config, **_server_options(plan, host, port))
        try:
            server.start()
        except OSError as exc:
            for started in servers:
                started.shutdown(0)
            raise _bind_error(host, port, exc) from None
        servers.append(server)
    if plan.adapter == "gevent":
        stop: Any = gevent.event.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, stop.set)
        _announce(plan, servers)  # (only now: a supervisor may stop us as soon as it reads this)
        if ready is not None:
            ready()
        stop.wait()
    else:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        _announce(plan, servers)  # (only now: a supervisor may stop us as soon as it reads this)
        if ready is not None:
            ready()
        while not stop.wait(0.5):  # a timed wait lets the main thread run signal handlers
            pass
    _announce_shutdown(plan.shutdown_timeout)
    # Every listener at once (see run_trio): a greenlet or a thread for each shutdown.
    if plan.adapter == "gevent":
        gevent.joinall([gevent.spawn(server.shutdown, plan.shutdown_timeout) for server in servers])
    else:
        stopping = [threading.Thread(target=server.shutdown, args=(plan.shutdown_timeout,)) for server in servers]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()


RUNNERS: dict[str, Callable[[ServePlan, Callable[[], None] | None], None]] = {
    "asyncio": run_asyncio,
    "trio": run_trio,
    "gevent": run_threads,
    "blocking": run_threads,
}


def serve(args: argparse.Namespace) -> int:
    options = _merge_options(args)
    logging.basicConfig(
        level=options["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    plan = build_plan(options)
    try:
        RUNNERS[plan.adapter](plan, None)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"--adapter {plan.adapter} needs {exc.name}: pip install {exc.name} (the {plan.adapter} extra)"
        ) from None
    return 0


# --- hash-password -----------------------------------------------------------------------------------


def _hash_password_parser(subparsers: Any) -> None:
    subparsers.add_parser(
        "hash-password", help="read a password on stdin and print its hash, for --auth-file (user:hash)"
    )


def hash_password_command(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ConfigError("no password given on standard input")
    print(hash_password(password))
    return 0


# --- entry point ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smtpcore", description="smtpcore: a sans-IO SMTP engine, on real sockets")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _serve_parser(subparsers)
    _hash_password_parser(subparsers)
    send_command.add_parser(subparsers)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": serve,
    "hash-password": hash_password_command,
    "send": send_command.send_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"smtpcore {args.command}: {exc}", file=sys.stderr)
        return 1
    except send_command.UsageError as exc:
        print(f"smtpcore {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
