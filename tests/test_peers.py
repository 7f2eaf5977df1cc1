"""smtpcore against the programs real mail runs on: swaks, Postfix's test tools, and Postfix itself.

The other adapter tests meet smtplib, aiosmtplib and aiosmtpd, all Python.
These meet peers written by other people in other languages, on 127.0.0.1:

* ``test_curl_*``: curl (C, libcurl's SASL) against each server adapter:
  OAUTHBEARER over STARTTLS, a refused token's error challenge answered and
  the 535 after it, then the good token in the AUTH line itself.
* ``test_swaks_*``: swaks (Perl) against each server adapter: PIPELINING,
  dot-stuffed and 8-bit content, STARTTLS with a verified certificate, AUTH
  PLAIN, LOGIN and CRAM-MD5, implicit TLS, and LMTP behind the PROXY protocol
  (versions 1 and 2).
* ``test_smtp_source_*``: Postfix's ``smtp-source`` loading each server adapter
  with parallel sessions, a connection per message and kept alive, SMTP and LMTP.
* ``test_smtp_sink_*``: each client adapter delivering to Postfix's ``smtp-sink``,
  which writes down every envelope and message it receives.
* ``test_nginx_*``: nginx's mail proxy (C) in front of each server adapter,
  with ``xclient on``: it authenticates the client itself (or not) and names
  it to our server with XCLIENT, unencoded, as nginx writes it.
* ``test_postfix_*``: a whole Postfix instance (its own configuration and
  queue, started for this module) between our client and our server: the
  client submits to Postfix's smtpd (STARTTLS required, PIPELINING, BDAT,
  SMTPUTF8, DSN), and Postfix's smtp and lmtp clients relay the mail on to our
  server adapters (STARTTLS, DSN passed through, a 450 retried later, LMTP's
  reply per recipient heeded).  Postfix's master runs as root, so these run
  only as root.

Each group is skipped, saying how to install it, when its program is missing:
``scripts/install-peers.sh`` installs the Debian packages (swaks, postfix, curl,
nginx-light with its mail module).
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import os
import pathlib
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from test_adapters_client import CLIENTS, send, session

from adapters._testserver import CapturedMessage, SMTPTestServer, TestCA
from adapters.pytest_plugin import SMTPServerFactory
from smtpcore import (
    ClientConfig,
    Envelope,
    MailParams,
    MessageOutcome,
    RcptParams,
    Recipient,
    Reply,
    ServerConfig,
    SessionOutcome,
    SMTPTransientError,
    TlsPolicy,
    XClient,
    XForward,
)

SERVERS = ["asyncio", "trio", "gevent", "blocking"]
INSTALL = (
    "scripts/install-peers.sh installs it (Debian: apt-get install swaks postfix curl nginx-light libnginx-mod-mail)"
)


def _program(name: str) -> str | None:
    """``name`` on PATH, or where Debian puts Postfix's programs (sbin is not on every user's PATH)."""
    return shutil.which(name) or next(
        (path for path in (f"/usr/sbin/{name}", f"/usr/lib/postfix/sbin/{name}") if os.access(path, os.X_OK)), None
    )


SWAKS = _program("swaks")
SMTP_SOURCE = _program("smtp-source")
SMTP_SINK = _program("smtp-sink")
POSTFIX = _program("postfix")
POSTQUEUE = _program("postqueue")
CURL = _program("curl")
NGINX = _program("nginx")
#: Debian builds nginx's mail proxy as a module of its own (libnginx-mod-mail).
NGINX_MAIL_MODULE = pathlib.Path("/usr/lib/nginx/modules/ngx_mail_module.so")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

needs_swaks = pytest.mark.skipif(SWAKS is None, reason=f"swaks is not installed: {INSTALL}")
needs_smtp_source = pytest.mark.skipif(SMTP_SOURCE is None, reason=f"smtp-source is not installed: {INSTALL}")
needs_smtp_sink = pytest.mark.skipif(SMTP_SINK is None, reason=f"smtp-sink is not installed: {INSTALL}")
needs_curl = pytest.mark.skipif(CURL is None, reason=f"curl is not installed: {INSTALL}")

# Lines dot-stuffing must survive, a long line, 8-bit text; it must arrive exactly so.
CONTENT = (
    b"From: a@example.com\r\nTo: b@example.org\r\nSubject: peers\r\n"
    b"Message-ID: <peers.1@example.com>\r\nDate: Sat, 05 Dec 2026 12:00:00 +0000\r\n\r\n"
    b".leading dot\r\n.\r\n..two dots\r\n" + b"x" * 900 + b"\r\n" + "Grüße\r\n".encode() + b"last line\r\n"
)


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago (for programs that need a number)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[Any] | None = None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


# --- nginx's mail proxy ---------------------------------------------------------------------------


class NginxMailProxy:
    """nginx's SMTP proxy on an ephemeral port of 127.0.0.1, in front of one of our servers.

    nginx asks an HTTP service (``auth_http``) where each client goes, after the
    client's AUTH or, without one, after its RCPT: this one sends every client
    to ``backend`` and takes the login joe / s3cret.  With ``xclient on`` nginx
    then tells the backend whom it speaks for: EHLO, ``XCLIENT ADDR=... [LOGIN=...]
    NAME=...``, the client's own EHLO, and its MAIL and RCPT, before it joins the two.
    """

    def __init__(self, backend_port: int) -> None:
        assert NGINX is not None
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="smtpcore-nginx-"))
        self.auth = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _auth_service(backend_port))
        threading.Thread(target=self.auth.serve_forever, daemon=True).start()
        self.port = free_port()
        load = f"load_module {NGINX_MAIL_MODULE};" if NGINX_MAIL_MODULE.exists() else ""
        (self.root / "nginx.conf").write_text(
            f"""\
{load}
daemon off;
master_process off;
pid {self.root}/nginx.pid;
error_log {self.root}/error.log info;
events {{ worker_connections 64; }}
mail {{
    server_name proxy.test;
    auth_http 127.0.0.1:{self.auth.server_address[1]}/auth;
    xclient on;
    smtp_auth none plain login;
    server {{
        listen 127.0.0.1:{self.port};
        protocol smtp;
    }}
}}
"""
        )
        log = str(self.root / "error.log")
        command = [NGINX, "-p", str(self.root), "-e", log, "-c", str(self.root / "nginx.conf")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_listening(self.port, self.process)
        except (RuntimeError, TimeoutError) as exc:
            errors = (self.root / "error.log").read_text(errors="replace") if (self.root / "error.log").exists() else ""
            self.stop()
            raise RuntimeError(f"nginx did not start ({exc}); is its mail module installed? {errors}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.communicate(timeout=15)
        self.auth.shutdown()
        self.auth.server_close()
        shutil.rmtree(self.root, ignore_errors=True)


def _auth_service(backend_port: int) -> type[http.server.BaseHTTPRequestHandler]:
    class Auth(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            # nginx's auth_http protocol: the answer is in the headers.
            method, user, password = (self.headers.get(name) for name in ("Auth-Method", "Auth-User", "Auth-Pass"))
            self.send_response(200)
            if method == "none" or (user, password) == ("joe", "s3cret"):
                self.send_header("Auth-Status", "OK")
                self.send_header("Auth-Server", "127.0.0.1")
                self.send_header("Auth-Port", str(backend_port))
            else:
                self.send_header("Auth-Status", "Invalid login or password")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Auth


@pytest.mark.skipif(NGINX is None, reason=f"nginx is not installed: {INSTALL}")
@pytest.mark.parametrize("server", SERVERS)
def test_nginx_mail_proxy_names_its_clients_with_xclient(server: str, smtp_server_factory: SMTPServerFactory) -> None:
    """Behind nginx the hooks see the client nginx serves, not nginx: its address, EHLO name and login."""
    srv = smtp_server_factory(server, config=ServerConfig(xclient=True))
    proxy = NginxMailProxy(srv.port)
    try:
        # From 127.0.0.2, so that the client's address is not nginx's own.
        client = ("127.0.0.1", proxy.port)
        with smtplib.SMTP(*client, local_hostname="client.example.org", source_address=("127.0.0.2", 0)) as smtp:
            smtp.sendmail("a@example.com", ["b@example.org"], b"Subject: as is\r\n\r\nhello\r\n")
        with smtplib.SMTP(*client, local_hostname="laptop.example.org", source_address=("127.0.0.2", 0)) as smtp:
            smtp.login("joe", "s3cret")  # nginx checks it (auth_http), and passes it on as LOGIN=joe
            smtp.sendmail("joe@example.com", ["b@example.org"], b"Subject: logged in\r\n\r\nhello\r\n")
        anonymous, joe = srv.wait_for(2)
    finally:
        proxy.stop()
    # nginx names no port (0 here), and, without a resolver, no host name.
    assert anonymous.peer == ("127.0.0.2", 0) and anonymous.hello == "client.example.org"
    assert anonymous.xclient == XClient(addr="127.0.0.2", name="[UNAVAILABLE]")
    assert anonymous.authenticated is None and anonymous.raw == b"Subject: as is\r\n\r\nhello\r\n"
    assert joe.peer == ("127.0.0.2", 0) and joe.hello == "laptop.example.org" and joe.authenticated == "joe"
    assert joe.mail_from == "joe@example.com" and joe.raw == b"Subject: logged in\r\n\r\nhello\r\n"


# --- swaks ----------------------------------------------------------------------------------------


def swaks(port: int, *options: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run swaks against 127.0.0.1:``port``; its transcript is in ``stdout``."""
    assert SWAKS is not None
    command = [SWAKS, "--server", "127.0.0.1", "--port", str(port), "--from", "a@example.com", *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def proxy_options(version: str, port: int) -> list[str]:
    """swaks's options for a PROXY header (``version`` "1" or "2") from 203.0.113.7:40000 to 198.51.100.1:``port``."""
    family = "TCP4" if version == "1" else "AF_INET"
    source = ["--proxy-source", "203.0.113.7", "--proxy-source-port", "40000"]
    destination = ["--proxy-dest", "198.51.100.1", "--proxy-dest-port", str(port)]
    return ["--proxy-version", version, "--proxy-family", family, *source, *destination]


def data_file(tmp_path: pathlib.Path, content: bytes) -> str:
    """``content`` for ``swaks --data @file``: swaks adds the CRLF that ends the last line."""
    assert content.endswith(b"\r\n")
    path = tmp_path / "message.eml"
    path.write_bytes(content[:-2])
    return f"@{path}"


@needs_swaks
@pytest.mark.parametrize("server", SERVERS)
def test_swaks_pipelined_content(server: str, smtp_server_factory: SMTPServerFactory, tmp_path: pathlib.Path) -> None:
    # swaks pipelines as RFC 2920 allows: a server that refuses improper pipelining takes it.
    srv = smtp_server_factory(server, config=ServerConfig(reject_improper_pipelining=True))
    srv.reject_recipient("nobody@example.org")
    done = swaks(
        srv.port,
        "--pipeline",
        "--to",
        "b@example.org,nobody@example.org,c@example.org",
        "--data",
        data_file(tmp_path, CONTENT),
    )
    # Pipelined: all of MAIL, RCPT and DATA went before the first of their replies came.
    transcript = done.stdout.splitlines()
    assert transcript.index(" -> DATA") < transcript.index("<-  250 2.1.0 Sender OK")
    assert "<** 550 5.1.1 No such user" in transcript
    (message,) = srv.wait_for(1)
    assert message.raw == CONTENT
    assert message.recipients == ["b@example.org", "c@example.org"]
    assert message.mail_from == "a@example.com"


@needs_swaks
@pytest.mark.parametrize("server", SERVERS)
def test_swaks_xclient(server: str, smtp_server_factory: SMTPServerFactory) -> None:
    """swaks speaks for another client (Postfix's XCLIENT), its values xtext-encoded; refused, it stops."""
    srv = smtp_server_factory(server, config=ServerConfig(xclient=True))
    named = ["--xclient-addr", "IPV6:2001:db8::7", "--xclient-port", "4242", "--xclient-name", "mail.example.org"]
    login = ["--xclient-login", "joe+tag@example.org", "--xclient-helo", "client.example.org"]
    done = swaks(srv.port, *named, *login, "--to", "b@example.org", "--pipeline")
    # A "+" in a value travels as "+2B" (in whatever order swaks writes them); the server
    # greets again, and swaks says EHLO again.
    (command,) = [line for line in done.stdout.splitlines() if line.startswith(" -> XCLIENT ")]
    assert sorted(command.split()[2:]) == [
        "ADDR=IPV6:2001:db8::7",
        "HELO=client.example.org",
        "LOGIN=joe+2Btag@example.org",
        "NAME=mail.example.org",
        "PORT=4242",
    ]
    assert done.stdout.count("<-  220 ") == 2 and done.stdout.count(" -> EHLO ") == 2
    (message,) = srv.wait_for(1)
    assert message.peer == ("2001:db8::7", 4242)
    assert message.authenticated == "joe+tag@example.org"
    assert message.xclient is not None
    assert (message.xclient.name, message.xclient.helo) == ("mail.example.org", "client.example.org")
    srv.reject_xclient()
    refused = swaks(srv.port, *named, "--to", "b@example.org", check=False)
    assert "<** 550 5.7.0 Insufficient authorization" in refused.stdout
    assert refused.returncode != 0 and len(srv.messages) == 1


@needs_swaks
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_swaks_starttls_auth(server: str, mechanism: str, smtp_server_factory: SMTPServerFactory) -> None:
    srv = smtp_server_factory(
        server,
        tls="required",
        auth={"alice": "s3cret"},
        auth_required=True,
        config=ServerConfig(auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5")),
    )
    tls = ["--tls", "--tls-verify", "--tls-ca-path", srv.ca_file]
    login = ["--auth", mechanism, "--auth-user", "alice"]
    wrong = swaks(srv.port, *tls, *login, "--auth-password", "wrong", "--to", "b@example.org", check=False)
    assert wrong.returncode != 0
    assert "<~* 535 5.7.8 Authentication credentials invalid" in wrong.stdout.splitlines()
    swaks(srv.port, *tls, *login, "--auth-password", "s3cret", "--to", "b@example.org")
    (message,) = srv.wait_for(1)
    assert message.tls and message.tls_version in ("TLSv1.2", "TLSv1.3")
    assert message.authenticated == "alice"
    assert message.recipients == ["b@example.org"]


def curl(port: int, ca_file: str, token: str, *options: str) -> tuple[int, list[str]]:
    """Submit a short message with curl over STARTTLS (the certificate verified), authenticating
    with an OAuth2 bearer token; curl's exit status, and the SMTP lines of its transcript."""
    assert CURL is not None
    message = "Subject: curl\r\n\r\nbody\r\n"
    command = [CURL, "-sv", f"smtp://127.0.0.1:{port}", "--ssl-reqd", "--cacert", ca_file]
    command += ["--mail-from", "a@example.com", "--mail-rcpt", "b@example.org", "--upload-file", "-"]
    command += ["--user", "alice@example.org:", "--oauth2-bearer", token, *options]
    done = subprocess.run(command, input=message, capture_output=True, text=True, timeout=60)
    return done.returncode, [line for line in done.stderr.splitlines() if line.startswith(("> ", "< "))]


@needs_curl
@pytest.mark.parametrize("server", SERVERS)
def test_curl_oauthbearer_is_told_why_then_gets_in_with_a_good_token(
    server: str, smtp_server_factory: SMTPServerFactory
) -> None:
    srv = smtp_server_factory(server, tls="required", tokens={"alice@example.org": "good-token"})
    status, lines = curl(srv.port, srv.ca_file, "expired-token")
    assert status == 67  # CURLE_LOGIN_DENIED
    assert "< 250 AUTH XOAUTH2 OAUTHBEARER" in lines and "> AUTH OAUTHBEARER" in lines  # curl prefers it
    challenge = lines[lines.index("> AQ==") - 1]  # RFC 7628 §3.2.3: curl answers the error with ^A
    assert json.loads(base64.b64decode(challenge[len("< 334 ") :]))["status"] == "invalid_token"
    assert lines[lines.index("> AQ==") + 1] == "< 535 5.7.8 Authentication credentials invalid"
    status, lines = curl(srv.port, srv.ca_file, "good-token", "--sasl-ir")  # the response on the AUTH line
    assert status == 0, lines
    assert any(line.startswith("> AUTH OAUTHBEARER bixh") for line in lines)  # base64 of "n,a="
    (message,) = srv.wait_for(1)
    assert message.authenticated == "alice@example.org" and message.tls


@needs_swaks
@pytest.mark.parametrize("server", SERVERS)
def test_swaks_implicit_tls(server: str, smtp_server_factory: SMTPServerFactory) -> None:
    srv = smtp_server_factory(server, tls="implicit")
    swaks(srv.port, "--tls-on-connect", "--tls-verify", "--tls-ca-path", srv.ca_file, "--to", "b@example.org")
    (message,) = srv.wait_for(1)
    assert message.tls and message.recipients == ["b@example.org"]


@needs_swaks
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("version", ["1", "2"])
def test_swaks_lmtp_behind_proxy(server: str, version: str, smtp_server_factory: SMTPServerFactory) -> None:
    """LMTP's reply per recipient after the content, through a PROXY header naming the real client."""
    srv = smtp_server_factory(server, lmtp=True, config=ServerConfig(proxy_protocol=True))
    srv.reject_delivery("full@example.org")
    done = swaks(
        srv.port,
        "--protocol",
        "LMTP",
        "--pipeline",
        *proxy_options(version, 24),
        "--to",
        "b@example.org,full@example.org",
        check=False,
    )
    transcript = done.stdout.splitlines()
    assert "<-  250 2.0.0 Delivered" in transcript, done.stdout
    assert "<** 550 5.2.1 Mailbox unavailable" in transcript, done.stdout
    (message,) = srv.wait_for(1)
    assert message.recipients == ["b@example.org"]
    assert message.peer == ("203.0.113.7", 40000)


@needs_swaks
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("version", ["1", "2"])
def test_swaks_implicit_tls_behind_proxy(server: str, version: str, smtp_server_factory: SMTPServerFactory) -> None:
    """HAProxy's send-proxy in front of port 465: the header in plaintext, the ClientHello right
    behind it (swaks writes both at once), then SMTP inside TLS."""
    srv = smtp_server_factory(server, tls="implicit", config=ServerConfig(proxy_protocol=True))
    swaks(
        srv.port,
        "--tls-on-connect",
        "--tls-verify",
        "--tls-ca-path",
        srv.ca_file,
        *proxy_options(version, 465),
        "--to",
        "b@example.org",
    )
    (message,) = srv.wait_for(1)
    assert message.tls and message.recipients == ["b@example.org"]
    assert message.peer == ("203.0.113.7", 40000)


# --- Postfix's smtp-source and smtp-sink ------------------------------------------------------------


@needs_smtp_source
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("keep_alive", [False, True], ids=["connection-each", "kept-alive"])
def test_smtp_source_parallel_sessions(
    server: str, keep_alive: bool, smtp_server_factory: SMTPServerFactory, tmp_path: pathlib.Path
) -> None:
    """Five sessions at once, 30 messages with two recipients each, their content from a file smtp-source stuffs."""
    assert SMTP_SOURCE is not None
    srv = smtp_server_factory(server)
    # smtp-source sends each line of the file with CRLF, a dot doubled where one leads, and
    # then "\r\n.\r\n": an empty line of its own ends every message.
    (tmp_path / "message").write_bytes(CONTENT.replace(b"\r\n", b"\n"))
    command = [SMTP_SOURCE, "-s", "5", "-m", "30", "-r", "2", "-f", "a@example.com", "-t", "b@example.org"]
    command += ["-F", str(tmp_path / "message"), *(["-d"] if keep_alive else []), f"127.0.0.1:{srv.port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    messages = srv.wait_for(30)
    assert len(messages) == 30
    for message in messages:
        assert message.raw == CONTENT + b"\r\n"
        assert message.mail_from == "a@example.com"
        assert message.recipients == ["2b@example.org", "b@example.org"]  # how smtp-source numbers them


@needs_smtp_source
@pytest.mark.parametrize("server", SERVERS)
def test_smtp_source_lmtp(server: str, smtp_server_factory: SMTPServerFactory) -> None:
    assert SMTP_SOURCE is not None
    srv = smtp_server_factory(server, lmtp=True)
    command = [SMTP_SOURCE, "-L", "-s", "2", "-m", "6", "-l", "20000", "-S", "sized", "-t", "b@example.org"]
    done = subprocess.run([*command, f"127.0.0.1:{srv.port}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    messages = srv.wait_for(6)
    assert len(messages) == 6
    for message in messages:
        assert message["Subject"] == "sized"
        body = message.raw.split(b"\r\n\r\n", 1)[1]  # -l counts the body's octets, its line ends too
        assert 20000 <= len(body) < 20100
        assert re.fullmatch(rb"(?:[0-9]?X+\r\n)+", body)  # lines of X's, most with a digit in front


class Sink:
    """Postfix's smtp-sink on an ephemeral port, writing each transaction to a file in ``dumps``.

    Its EHLO reply offers PIPELINING, 8BITMIME, DSN and AUTH, not SIZE or CHUNKING, and
    ends with an empty "250 " line (which a client must survive).
    """

    def __init__(self, *options: str) -> None:
        assert SMTP_SINK is not None
        # As root it must be told whom to run as, and that user must reach the directory: not
        # under pytest's own temporary directories, which only their owner may enter.
        self.dumps = pathlib.Path(tempfile.mkdtemp(prefix="smtpcore-sink-"))
        self.dumps.chmod(0o777)
        user = ["-u", "nobody"] if IS_ROOT else []
        self.port = free_port()
        # "%M." and a random suffix: one file per transaction.
        command = [SMTP_SINK, *user, "-d", f"{self.dumps}/%M.", *options, f"127.0.0.1:{self.port}", "16"]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE)
        wait_listening(self.port, self.process)

    def transactions(self, count: int, timeout: float = 10.0) -> dict[str, tuple[dict[str, list[str]], bytes]]:
        """Each transaction's smtp-sink headers (X-Mail-Args, X-Rcpt-Args...) and content (LF line
        ends), by its sender (the files' names do not keep the transactions' order)."""
        deadline = time.monotonic() + timeout
        while len(files := list(self.dumps.iterdir())) < count:
            assert time.monotonic() < deadline, f"{len(files)} of {count} transactions arrived"
            time.sleep(0.05)
        found = {}
        for path in files:
            dump = path.read_bytes()
            # Its own headers end with a three-line Received header; then the content and one empty line.
            head, _, rest = dump.partition(b"\nReceived: ")
            content = rest.split(b"\n", 3)[3]
            headers: dict[str, list[str]] = {}
            for line in head.decode().splitlines():
                name, _, value = line.partition(": ")
                headers.setdefault(name, []).append(value)
            assert content.endswith(b"\n\n")
            found[headers["X-Mail-Args"][0].split()[0]] = (headers, content[:-1])
        assert len(found) == count, found.keys()
        return found

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        assert self.process.stderr is not None
        self.process.stderr.close()
        shutil.rmtree(self.dumps)


@pytest.fixture
def sink() -> Iterator[Sink]:
    sink = Sink()
    yield sink
    sink.close()


@needs_smtp_sink
@pytest.mark.parametrize("client", CLIENTS)
def test_smtp_sink_envelopes_and_content(client: str, sink: Sink) -> None:
    """Two messages over one pipelined session; smtp-sink writes down exactly what we sent."""
    other = b"Subject: second\r\n\r\n. \r\n.\r\n"
    result = session(
        client,
        "127.0.0.1",
        sink.port,
        [
            (Envelope("a@example.com", ["b@example.org", "c@example.org"]), CONTENT),
            (Envelope("", ["postmaster@example.org"]), other),
        ],
        config=ClientConfig(starttls=TlsPolicy.OFF),
    )
    assert isinstance(result, SessionOutcome)
    assert result.error is None, result.error
    assert result.capabilities is not None and result.capabilities.pipelining
    assert [m.delivered for m in result.messages] == [("b@example.org", "c@example.org"), ("postmaster@example.org",)]
    transactions = sink.transactions(2)
    first_headers, first = transactions["<a@example.com>"]
    second_headers, second = transactions["<>"]
    assert first_headers["X-Mail-Args"] == ["<a@example.com> BODY=8BITMIME"]
    assert first_headers["X-Rcpt-Args"] == ["<b@example.org>", "<c@example.org>"]
    assert first == CONTENT.replace(b"\r\n", b"\n")
    assert second_headers["X-Mail-Args"] == ["<>"]
    assert second == other.replace(b"\r\n", b"\n")


@needs_smtp_sink
@pytest.mark.parametrize("client", CLIENTS)
def test_smtp_sink_lmtp(client: str) -> None:
    sink = Sink("-L")
    try:
        outcome = send(
            client,
            "127.0.0.1",
            sink.port,
            "a@example.com",
            ["b@example.org", "c@example.org"],
            CONTENT,
            config=ClientConfig(lmtp=True),
        )
        assert outcome.delivered == ("b@example.org", "c@example.org")
        assert [r.data_reply for r in outcome.recipients] == [Reply(250, "Ok", "2.2.0")] * 2  # one reply each
        headers, content = sink.transactions(1)["<a@example.com>"]
        assert headers["X-Client-Proto"] == ["LMTP"]
        assert content == CONTENT.replace(b"\r\n", b"\n")
    finally:
        sink.close()


# --- Postfix -------------------------------------------------------------------------------------

#: Each client adapter with a server adapter of another kind.
ACROSS = [("blocking", "asyncio"), ("asyncio", "trio"), ("trio", "gevent"), ("gevent", "blocking")]
#: Where Postfix's own SMTP client and LMTP client take mail for each of our server adapters.
RELAYED = {server: f"{server}.test" for server in SERVERS}
LMTP_RELAYED = {server: f"lmtp-{server}.test" for server in SERVERS}


class Postfix:
    """A Postfix instance of its own (configuration, queue, log) between our clients and our servers.

    Its smtpd listens on an ephemeral port of 127.0.0.1 and requires STARTTLS; its
    transport table sends ``<adapter>.test`` to our server of that adapter over SMTP,
    ``lmtp-<adapter>.test`` to our LMTP server of that adapter, and bounces for
    ``example.com`` to the discard service.  A recipient whose local part is ``nobody``
    is refused at RCPT.
    """

    def __init__(self, ca: TestCA, routes: dict[str, str]) -> None:
        assert POSTFIX is not None
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="smtpcore-postfix-"))
        self.root.chmod(0o755)  # Postfix's daemons run as the user postfix
        conf, spool, data = self.root / "conf", self.root / "spool", self.root / "data"
        for directory in (conf, spool, data):
            directory.mkdir()
        shutil.chown(data, "postfix")
        leaf = ca.ca.issue_cert("localhost", "127.0.0.1")
        leaf.private_key_and_cert_chain_pem.write_to_path(str(conf / "smtpd.pem"))
        self.port = free_port()
        self.log = self.root / "maillog"
        transport = ", ".join([*(f"{domain}={route}" for domain, route in routes.items()), "example.com=discard:"])
        (conf / "main.cf").write_text(
            f"""\
compatibility_level = 3.6
config_directory = {conf}
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.log}
maillog_file_prefixes = {self.root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
disable_dns_lookups = yes
smtp_host_lookup = native
smtpd_peername_lookup = no
# Add no Message-ID, Date or From to what 127.0.0.1 sends: a message arrives as it left, but for Received.
local_header_rewrite_clients =
smtputf8_enable = yes
transport_maps = inline:{{ {transport} }}
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = check_recipient_access inline:{{ {{ nobody@ = 550 5.1.1 No such user here }} }}
# Our clients pipeline only where RFC 2920 allows: Postfix's own checks would refuse them otherwise.
smtpd_forbid_unauth_pipelining = yes
smtpd_data_restrictions = reject_unauth_pipelining
# No wait before the replies to a client past 10 errors (1 s each by default): the tests would only be slower.
smtpd_error_sleep_time = 0
# 100 recipients a transaction (1000 by default), for the client's test of a recipient limit.
smtpd_recipient_limit = 100
smtpd_tls_security_level = encrypt
# Our clients may speak for another client (XCLIENT) from here, as a proxy in front of Postfix would.
smtpd_authorized_xclient_hosts = 127.0.0.0/8
# Tell our servers, which offer XFORWARD, where the mail came from (as to a content filter),
# and hear it from our clients (as from one).
smtp_send_xforward_command = yes
smtpd_authorized_xforward_hosts = 127.0.0.0/8
smtpd_tls_chain_files = {conf}/smtpd.pem
smtp_tls_security_level = may
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""
        )
        # No chroot: the daemons find everything where main.cf says.
        (conf / "master.cf").write_text(
            f"""\
127.0.0.1:{self.port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000 0 flush
smtp unix - - n - - smtp
relay unix - - n - - smtp
lmtp unix - - n - - lmtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
proxymap unix - - n - - proxymap
postlog unix-dgram n - n - 1 postlogd
"""
        )
        self.conf = conf
        started = self._postfix("start")
        if started.returncode != 0:
            raise RuntimeError(f"postfix did not start: {started.stdout}{started.stderr}{self.read_log()}")
        wait_listening(self.port)

    def _postfix(self, command: str) -> subprocess.CompletedProcess[str]:
        assert POSTFIX is not None
        return subprocess.run([POSTFIX, "-c", str(self.conf), command], capture_output=True, text=True, timeout=60)

    def read_log(self, since: int = 0) -> str:
        """Postfix's log from offset ``since`` (a :meth:`log_end` taken earlier) on."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log_end(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def wait_for_log(self, pattern: str, since: int, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.read_log(since))) is None:
            assert time.monotonic() < deadline, f"{pattern!r} not in Postfix's log:\n{self.read_log(since)}"
            time.sleep(0.05)
        return found

    def flush(self) -> None:
        """Try every deferred message now (``postqueue -f``), not at the next retry Postfix planned."""
        assert POSTQUEUE is not None, f"postqueue is not installed beside postfix: {INSTALL}"
        flushed = subprocess.run([POSTQUEUE, "-c", str(self.conf), "-f"], capture_output=True, text=True, timeout=60)
        assert flushed.returncode == 0, f"postqueue -f failed: {flushed.stdout}{flushed.stderr}"

    def stop(self) -> None:
        self._postfix("stop")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Relay:
    """Postfix, and behind it one SMTP server (STARTTLS offered, DSN) and one LMTP server of ours per adapter."""

    postfix: Postfix
    servers: dict[str, SMTPTestServer]
    lmtp: dict[str, SMTPTestServer]
    ca: TestCA  # it signed every certificate here, Postfix's too


@pytest.fixture(scope="module")
def relay(smtp_ca: TestCA) -> Iterator[Relay]:
    if POSTFIX is None:
        pytest.skip(f"Postfix is not installed: {INSTALL}")
    if not IS_ROOT:
        pytest.skip("a Postfix instance of its own needs root (its master process starts as root)")
    # Postfix pipelines only where RFC 2920 allows: our servers would refuse it otherwise.
    config = ServerConfig(tls=TlsPolicy.OPTIONAL, dsn=True, reject_improper_pipelining=True, xforward=True)
    lmtp_config = ServerConfig(lmtp=True, reject_improper_pipelining=True)
    servers = {adapter: SMTPTestServer(adapter, config, ca=smtp_ca).start() for adapter in SERVERS}
    lmtp = {adapter: SMTPTestServer(adapter, lmtp_config).start() for adapter in SERVERS}
    routes = {RELAYED[adapter]: f"smtp:[127.0.0.1]:{server.port}" for adapter, server in servers.items()}
    routes |= {LMTP_RELAYED[adapter]: f"lmtp:inet:127.0.0.1:{server.port}" for adapter, server in lmtp.items()}
    postfix = Postfix(smtp_ca, routes)
    try:
        yield Relay(postfix, servers, lmtp, smtp_ca)
    finally:
        postfix.stop()
        for server in [*servers.values(), *lmtp.values()]:
            server.stop()


#: How our clients submit to Postfix: its smtpd requires STARTTLS.
SUBMIT = ClientConfig(starttls=TlsPolicy.REQUIRED)


def submit(relay: Relay, client: str, sender: str, recipients: list[str], content: bytes) -> MessageOutcome:
    """One message to Postfix from our ``client`` adapter."""
    return send(
        client,
        "127.0.0.1",
        relay.postfix.port,
        sender,
        recipients,
        content,
        config=SUBMIT,
        tls_context=relay.ca.client_context(),
    )


def arrived(relay: Relay, server: SMTPTestServer, sender: str, count: int = 1) -> list[CapturedMessage]:
    """The messages from ``sender`` once ``count`` of them arrived (Postfix delivers when its queue runs)."""
    deadline = time.monotonic() + 20.0
    while len(found := [m for m in server.messages if m.mail_from == sender]) < count:
        if time.monotonic() > deadline:
            pytest.fail(
                f"{len(found)} of {count} from {sender!r} reached {server}; Postfix:\n{relay.postfix.read_log()}"
            )
        time.sleep(0.05)
    return found


@pytest.mark.parametrize(("client", "server"), ACROSS)
def test_postfix_between_our_client_and_server(client: str, server: str, relay: Relay) -> None:
    """Our client submits to Postfix (STARTTLS, PIPELINING, BDAT, DSN, SMTPUTF8); Postfix relays to our server."""
    domain = RELAYED[server]
    sender, utf8_sender = f"{client}@example.com", f"jörg-{client}@exämple.com"
    utf8 = EmailMessage()
    utf8["From"], utf8["To"], utf8["Subject"] = utf8_sender, f"jörg@{domain}", "Grüße"
    utf8["Message-ID"], utf8["Date"] = "<peers.2@example.com>", "Sat, 05 Dec 2026 12:00:00 +0000"
    utf8.set_content("Hallo, Jörg\n")
    notify = RcptParams(notify=("SUCCESS", "FAILURE"), orcpt=("rfc822", f"bob@{domain}"))
    log = relay.postfix.log_end()
    result = session(
        client,
        "127.0.0.1",
        relay.postfix.port,
        [
            (
                Envelope(
                    sender,
                    [Recipient(f"bob@{domain}", notify), f"nobody@{domain}", f"carol@{domain}"],
                    MailParams(ret="HDRS", envid=f"peers-{client}"),
                ),
                CONTENT,
            ),
            (Envelope(utf8_sender, [f"jörg@{domain}"]), utf8),
        ],
        config=SUBMIT,
        tls_context=relay.ca.client_context(),
    )
    assert result.error is None, result.error
    assert result.tls and result.capabilities is not None
    assert result.capabilities.chunking and result.capabilities.pipelining and result.capabilities.smtputf8
    first, second = result.messages
    assert first.delivered == (f"bob@{domain}", f"carol@{domain}")
    (refused,) = [r for r in first.recipients if r.recipient == f"nobody@{domain}"]
    assert refused.rcpt_reply is not None and refused.rcpt_reply.code == 550
    assert second.delivered == (f"jörg@{domain}",)
    # The content went as BDAT chunks, as Postfix's log of the session counts its commands.
    relay.postfix.wait_for_log(r"disconnect from \S+ ehlo=2 starttls=1 mail=2 rcpt=3/4 bdat=2 quit=1", log)

    (relayed,) = arrived(relay, relay.servers[server], sender)
    assert relayed.recipients == [f"bob@{domain}", f"carol@{domain}"]
    assert relayed.raw.startswith(b"Received: from ")
    assert relayed.raw.split(b"\r\n", 3)[3] == CONTENT  # Received is three lines; nothing else changed
    assert relayed.tls and relayed.hello == "postfix.test"
    assert relayed.mail_params.body == "8BITMIME"
    assert (relayed.mail_params.ret, relayed.mail_params.envid) == ("HDRS", f"peers-{client}")
    bob = relayed.rcpt_tos[0]
    assert (bob.params.notify, bob.params.orcpt) == (("SUCCESS", "FAILURE"), ("rfc822", f"bob@{domain}"))
    (international,) = arrived(relay, relay.servers[server], utf8_sender)
    assert international.mail_params.smtputf8 and international.recipients == [f"jörg@{domain}"]
    assert international["Subject"] == "Grüße"
    assert international.message.get_content().splitlines() == ["Hallo, Jörg"]


@pytest.mark.parametrize(("client", "server"), ACROSS)
def test_postfix_large_message(client: str, server: str, relay: Relay) -> None:
    """Three MiB through Postfix both ways, every octet kept."""
    sender = f"large-{client}@example.com"
    content = b"Subject: large\r\n\r\n" + b"".join(b"%07d %s\r\n" % (i, b"." * (i % 90)) for i in range(60000))
    assert len(content) > 3 * 1024 * 1024
    outcome = submit(relay, client, sender, [f"big@{RELAYED[server]}"], content)
    assert outcome.delivered == (f"big@{RELAYED[server]}",)
    (relayed,) = arrived(relay, relay.servers[server], sender)
    assert relayed.raw.split(b"\r\n", 3)[3] == content


@pytest.mark.parametrize("client", CLIENTS)
def test_our_client_speaks_for_another_through_postfix(client: str, relay: Relay) -> None:
    """XCLIENT to Postfix's smtpd after STARTTLS: Postfix takes the named client for the real one."""
    sender = f"xclient-{client}@example.com"
    named = XClient(addr="127.0.0.9", port="2525", name="mail.example.org", helo="client.example.org", proto="ESMTP")
    log = relay.postfix.log_end()
    outcome = send(
        client,
        "127.0.0.1",
        relay.postfix.port,
        sender,
        [f"named@{RELAYED['blocking']}"],
        CONTENT,
        config=dataclasses.replace(SUBMIT, xclient=named),
        tls_context=relay.ca.client_context(),
    )
    assert outcome.delivered == (f"named@{RELAYED['blocking']}",)
    # Postfix logs the session as the named client's, with the EHLO after XCLIENT.  (Postfix
    # 3.7 counts the XCLIENT itself as "0/1", though it greeted again and took the names.)
    relay.postfix.wait_for_log(r"client=mail\.example\.org\[127\.0\.0\.9\]", log)
    relay.postfix.wait_for_log(r"disconnect from mail\.example\.org\[127\.0\.0\.9\] ehlo=3 xclient=\S+ starttls=1", log)
    (relayed,) = arrived(relay, relay.servers["blocking"], sender)
    # Its Received field names the client by the HELO and the name and address XCLIENT gave.
    received = relayed.raw.split(b"\r\n", 1)[0]
    assert received == b"Received: from client.example.org (mail.example.org [127.0.0.9])"


@pytest.mark.parametrize(("client", "server"), ACROSS)
def test_postfix_says_where_the_mail_came_from_with_xforward(client: str, server: str, relay: Relay) -> None:
    """Postfix in front of our server as of a content filter: XFORWARD names the client it got the mail from."""
    sender = f"xforward-{client}@example.com"
    log = relay.postfix.log_end()
    config = dataclasses.replace(SUBMIT, local_hostname="laptop.example.org")
    outcome = send(
        client,
        "127.0.0.1",
        relay.postfix.port,
        sender,
        [f"f@{RELAYED[server]}"],
        CONTENT,
        config=config,
        tls_context=relay.ca.client_context(),
    )
    assert outcome.delivered == (f"f@{RELAYED[server]}",)
    queue_id = relay.postfix.wait_for_log(r"postfix/smtpd\[\d+\]: ([0-9A-F]+): client=", log).group(1)
    (relayed,) = arrived(relay, relay.servers[server], sender)
    assert relayed.hello == "postfix.test"  # the session is Postfix's own...
    forwarded = relayed.xforward  # ...and XFORWARD says whose the mail was, and Postfix's queue ID for it
    assert forwarded is not None
    assert (forwarded.addr, forwarded.helo, forwarded.ident) == ("127.0.0.1", "laptop.example.org", queue_id)
    assert (forwarded.proto, forwarded.source) == ("ESMTP", "REMOTE") and (forwarded.port or "").isdigit()
    # smtpd_peername_lookup = no: Postfix leaves an unknown NAME out, and the first XFORWARD makes it [UNAVAILABLE].
    assert forwarded.name == "[UNAVAILABLE]"


@pytest.mark.parametrize("client", CLIENTS)
def test_our_client_says_where_the_mail_came_from_to_postfix(client: str, relay: Relay) -> None:
    """A content filter handing mail back to Postfix: XFORWARD before MAIL, and Postfix logs the first client."""
    sender = f"filtered-{client}@example.com"
    original = XForward(
        name="spike.example.org", addr="192.0.2.7", helo="laptop.example.org", ident="4FqX", source="REMOTE"
    )
    log = relay.postfix.log_end()
    envelope = Envelope(sender, [f"back@{RELAYED['blocking']}"], xforward=original)
    result = session(
        client,
        "127.0.0.1",
        relay.postfix.port,
        [(envelope, CONTENT)],
        config=SUBMIT,
        tls_context=relay.ca.client_context(),
    )
    assert result.error is None and result.messages[0].delivered == (f"back@{RELAYED['blocking']}",)
    relay.postfix.wait_for_log(r"client=\S+, orig_queue_id=4FqX, orig_client=spike\.example\.org\[192\.0\.2\.7\]", log)
    # And Postfix passes it on to our server in turn, as it got it: the first client, not ours.
    (relayed,) = arrived(relay, relay.servers["blocking"], sender)
    assert relayed.xforward is not None
    assert relayed.xforward.attributes == {
        "NAME": "spike.example.org",
        "ADDR": "192.0.2.7",
        "PORT": "[UNAVAILABLE]",
        "PROTO": "[UNAVAILABLE]",
        "HELO": "laptop.example.org",
        "IDENT": "4FqX",
        "SOURCE": "REMOTE",
    }


@pytest.mark.parametrize("server", SERVERS)
def test_postfix_retries_what_our_server_defers(server: str, relay: Relay) -> None:
    """A 450 at RCPT (greylisting) is a try-again for Postfix: it keeps the mail, and delivers it later."""
    domain = RELAYED[server]
    ours = relay.servers[server]
    ours.reject_recipient(f"grey@{domain}", Reply(450, "Greylisted, try again later", "4.7.1"))
    sender = f"grey-{server}@example.com"
    log = relay.postfix.log_end()
    try:
        outcome = submit(relay, "gevent", sender, [f"grey@{domain}"], CONTENT)
        assert outcome.delivered == (f"grey@{domain}",)
        relay.postfix.wait_for_log(
            rf"to=<grey@{re.escape(domain)}>, .*status=deferred \(host \S+ said: 450 4\.7\.1 ", log
        )
        assert [m for m in ours.messages if m.mail_from == sender] == []
    finally:
        ours.reset_rules()
    # Postfix tries again a second or two later, or sooner when asked: a loaded machine can have
    # taken longer than that to lift the greylisting, and it doubles its wait after each 450.
    relay.postfix.flush()
    relay.postfix.wait_for_log(rf"to=<grey@{re.escape(domain)}>, .*status=sent ", log, timeout=30.0)
    (later,) = arrived(relay, ours, sender)
    assert later.recipients == [f"grey@{domain}"] and later.raw.split(b"\r\n", 3)[3] == CONTENT


def test_a_postfix_421_at_its_error_limit_keeps_the_refusals_before_it(relay: Relay) -> None:
    """Postfix ends a session at its 20th error (smtpd_hard_error_limit) with 421: the 550s
    that came before are final (a relay bounces them), the other recipients wait for a retry."""
    domain = RELAYED["asyncio"]
    guesses = [f"nobody@{domain}"] * 22
    log = relay.postfix.log_end()
    result = session(
        "blocking",
        "127.0.0.1",
        relay.postfix.port,
        [(Envelope("probe@example.com", [f"ann@{domain}", *guesses, f"ben@{domain}"]), CONTENT)],
        config=SUBMIT,
        tls_context=relay.ca.client_context(),
    )
    assert isinstance(result.error, SMTPTransientError)
    assert result.error.reply is not None and result.error.reply.code == 421
    (message,) = result.messages
    ann, *refused, ben = message.recipients
    assert [r.rcpt_reply.code if r.rcpt_reply else None for r in refused] == [550] * 20 + [None] * 2
    assert all(r.error is not None and not r.error.transient for r in refused[:20])
    assert ann.error is ben.error is result.error  # ann was accepted, but no content went out
    assert all(r.error is result.error for r in refused[20:])
    relay.postfix.wait_for_log(r"too many errors after RCPT", log)


def test_our_client_sends_the_recipients_over_postfixs_limit_in_another_transaction(relay: Relay) -> None:
    """Postfix takes 100 recipients a transaction (smtpd_recipient_limit) and answers 452 4.5.3
    past them: the other 50 go in a second transaction of the same session."""
    recipients = [f"r{n}@example.com" for n in range(150)]  # example.com: Postfix discards
    log = relay.postfix.log_end()
    outcome = submit(relay, "asyncio", "many@example.com", recipients, CONTENT)
    assert outcome.delivered == tuple(recipients)
    # Two transactions: 150 RCPTs, then the 50 refused again (Postfix counts a 452 for its limit as no failure).
    relay.postfix.wait_for_log(r"disconnect from \S+ ehlo=2 starttls=1 mail=2 rcpt=200 bdat=2 quit=1", log)


def test_postfix_delivers_what_our_server_took_once_it_closed_at_its_error_limit(relay: Relay) -> None:
    """Our server ends a session at its 20th refusal, as Postfix's does: Postfix bounces the
    refused recipients, tries the others again, and they get the message."""
    domain = RELAYED["asyncio"]
    ours = relay.servers["asyncio"]
    guesses = [f"gone{n}@{domain}" for n in range(22)]
    for address in guesses:
        ours.reject_recipient(address)
    sender = "list@example.com"
    log = relay.postfix.log_end()
    try:
        outcome = submit(relay, "blocking", sender, [f"ann@{domain}", *guesses, f"ben@{domain}"], CONTENT)
        assert len(outcome.delivered) == 24  # Postfix took every one: it learns of the rest later
        (delivered,) = arrived(relay, ours, sender)
        assert delivered.recipients == [f"ann@{domain}", f"ben@{domain}"]
        for address in guesses:
            relay.postfix.wait_for_log(rf"to=<{re.escape(address)}>, .*status=bounced \(host \S+ said: 550 ", log)
        relay.postfix.wait_for_log(r"421 4\.7\.0 Too many errors", log)
    finally:
        ours.reset_rules()


@pytest.mark.parametrize("server", SERVERS)
def test_postfix_lmtp_delivery(server: str, relay: Relay) -> None:
    """Postfix's LMTP client delivers to our LMTP server and heeds its reply for each recipient."""
    domain = LMTP_RELAYED[server]
    relay.lmtp[server].reject_delivery(f"full@{domain}")
    sender = f"lmtp-{server}@example.com"
    log = relay.postfix.log_end()
    outcome = submit(relay, "blocking", sender, [f"ann@{domain}", f"full@{domain}", f"ben@{domain}"], CONTENT)
    assert len(outcome.delivered) == 3  # Postfix took all three: it learns of the full mailbox later
    (delivered,) = arrived(relay, relay.lmtp[server], sender)
    assert delivered.recipients == [f"ann@{domain}", f"ben@{domain}"]
    assert delivered.raw.split(b"\r\n", 3)[3] == CONTENT
    # Postfix heard our reply for each recipient: the full mailbox bounced, the others were delivered.
    where = r", relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status="
    relay.postfix.wait_for_log(rf"to=<full@{re.escape(domain)}>{where}bounced \(host \S+ said: 550 5\.2\.1 ", log)
    relay.postfix.wait_for_log(rf"to=<ann@{re.escape(domain)}>{where}sent", log)
    relay.postfix.wait_for_log(rf"to=<ben@{re.escape(domain)}>{where}sent", log)
