"""``smtpcore serve`` and ``smtpcore hash-password``, run as the installed console script."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters import cli

SMTPCORE = shutil.which("smtpcore")
pytestmark = pytest.mark.skipif(SMTPCORE is None, reason="the smtpcore console script is not installed")

MESSAGE = b"From: alice@example.org\r\nTo: bob@localhost\r\nSubject: hi\r\n\r\nhello\r\n.a dot line\r\n"


@contextmanager
def serving(tmp_path: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start ``smtpcore serve`` on an ephemeral port in ``tmp_path``; yield (process, port)."""
    assert SMTPCORE is not None
    process = subprocess.Popen(
        [SMTPCORE, "serve", "--listen", "127.0.0.1:0", *options],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        line = process.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, f"no listening line: {line!r} {process.stderr.read() if process.poll() is not None else ''}"
        yield process, int(match.group(1))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def maildir_files(path: Path) -> list[Path]:
    return sorted((path / "new").iterdir())


@pytest.mark.parametrize("adapter", ["asyncio", "trio", "gevent", "blocking"])
def test_serve_stores_what_smtplib_sends(tmp_path: Path, adapter: str) -> None:
    with serving(tmp_path, "--adapter", adapter, "--hostname", "mx.test") as (process, port):
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test") as client:
            refused = client.sendmail("alice@example.org", ["bob@localhost", "carol@mx.test"], MESSAGE)
            assert refused == {}
            # A message answered 250 is already durable in new/ at that moment.
            files = maildir_files(tmp_path / "maildir")
            assert len(files) == 1
            assert list((tmp_path / "maildir" / "tmp").iterdir()) == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        stderr = process.stderr.read() if process.stderr else ""
    stored = files[0].read_bytes()
    assert stored.endswith(MESSAGE)  # byte-exact, dot-unstuffed content
    headers = stored[: -len(MESSAGE)].decode()
    assert headers.startswith("Return-Path: <alice@example.org>\r\nReceived: from client.test ([127.0.0.1])")
    assert "by mx.test (smtpcore) with ESMTP" in headers
    assert "result=stored" in stderr and "connection peer=127.0.0.1" in stderr


def greeted(port: int) -> bool:
    """Whether a new connection to ``port`` gets a 220 (not refused, closed or left silent)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(100).startswith(b"220")
    except OSError:
        return False


@pytest.mark.parametrize("adapter", ["asyncio", "trio", "gevent", "blocking"])
def test_sigterm_stops_every_listener_at_once(tmp_path: Path, adapter: str) -> None:
    """With several --listen, none takes a new session after SIGTERM, and the whole lasts one
    --shutdown-timeout (one after another, the later listeners greeted new clients and it took one each)."""
    with serving(tmp_path, "--adapter", adapter, "--listen", "127.0.0.1:0", "--shutdown-timeout", "2") as (
        process,
        first,
    ):
        assert process.stdout is not None
        second = int(re.findall(r"listening on 127\.0\.0\.1:(\d+)", process.stdout.readline())[0])
        with contextlib.ExitStack() as held:  # closed even if an assertion fails: no socket left to a later test
            for port in (first, second):  # an open transaction on each: its shutdown waits for it
                client = smtplib.SMTP("127.0.0.1", port)
                held.callback(client.close)  # (not QUIT: the server is going, and says 421)
                client.ehlo("client.test")
                client.mail("alice@example.org")
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            for port in (first, second):
                assert not greeted(port)
            assert process.wait(timeout=15) == 0
            assert time.monotonic() - started < 3.8  # one timeout (2 s) and some grace, not two


def test_serve_is_not_an_open_relay(tmp_path: Path) -> None:
    with serving(tmp_path, "--accept-domain", "example.com", "--accept-address", "special@other.org") as (_, port):
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.ehlo()
            assert client.mail("a@example.org")[0] == 250
            code, text = client.rcpt("victim@elsewhere.net")
            assert (code, text[:5]) == (550, b"5.7.1")
            assert client.rcpt("bob@EXAMPLE.com")[0] == 250
            assert client.rcpt("special@other.org")[0] == 250
            assert client.rcpt("other@other.org")[0] == 550
            assert client.rcpt("bob@localhost")[0] == 550  # the defaults give way to the allowlist
            assert client.rcpt("bob@[127.0.0.1]")[0] == 250  # the address it was reached at (RFC 1123)
            assert client.rcpt("bob@[127.0.0.2]")[0] == 550
            client.rset()


@pytest.mark.parametrize("adapter", ["asyncio", "gevent"])
def test_serve_believes_xclient_from_the_proxy_it_is_told_of_only(tmp_path: Path, adapter: str) -> None:
    options = ("--adapter", adapter, "--hostname", "mx.test", "--xclient-from", "127.0.0.0/8")
    with serving(tmp_path, *options) as (process, port):
        with smtplib.SMTP("127.0.0.1", port, local_hostname="proxy.test") as client:
            client.ehlo()
            named = "ADDR=192.0.2.7 PORT=4242 NAME=mail.example.org LOGIN=joe"
            assert client.docmd("XCLIENT", named) == (220, b"mx.test ESMTP smtpcore")
            client.ehlo("client.example.org")
            # The named client is no trusted proxy: it may not name another.
            assert client.docmd("XCLIENT", "ADDR=127.0.0.1")[0] == 550
            assert client.sendmail("alice@example.org", ["bob@mx.test"], MESSAGE) == {}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        stderr = process.stderr.read() if process.stderr else ""
    (stored,) = maildir_files(tmp_path / "maildir")
    assert b"Received: from client.example.org ([192.0.2.7])" in stored.read_bytes()
    assert "peer=192.0.2.7 tls=False auth=joe result=stored" in stderr
    assert "xclient refused peer=192.0.2.7" in stderr
    # Without --xclient-from the command is unknown, as it is to any server that does not offer it.
    with serving(tmp_path, "--adapter", adapter) as (_, port), smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo()
        assert not client.has_extn("xclient")
        assert client.docmd("XCLIENT", "ADDR=192.0.2.7")[0] == 500


def test_serve_logs_where_xforward_says_the_mail_came_from(tmp_path: Path) -> None:
    with serving(tmp_path, "--hostname", "mx.test", "--xforward-from", "127.0.0.1") as (process, port):
        with smtplib.SMTP("127.0.0.1", port, local_hostname="postfix.test") as client:
            client.ehlo()
            assert client.docmd("XFORWARD", "ADDR=IPV6:2001:db8::7 NAME=spike.example IDENT=4FqX")[0] == 250
            assert client.sendmail("alice@example.org", ["bob@mx.test"], MESSAGE) == {}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        stderr = process.stderr.read() if process.stderr else ""
    assert "peer=127.0.0.1 forwarded=2001:db8::7 tls=False auth=- result=stored" in stderr


@pytest.mark.parametrize("refuse", [True, False])
def test_improper_pipelining_is_logged_or_refused(tmp_path: Path, refuse: bool) -> None:
    with serving(tmp_path, *(["--reject-improper-pipelining"] if refuse else [])) as (process, port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            replies = sock.makefile("rb")
            assert replies.readline().startswith(b"220 ")
            sock.sendall(b"EHLO me\r\nMAIL FROM:<a@example.org>\r\n")  # before EHLO's reply
            if refuse:
                assert replies.readline().startswith(b"554 ")
                assert replies.readline() == b""  # and closed
            else:
                while not replies.readline().startswith(b"250 2.1.0"):
                    pass
                sock.sendall(b"QUIT\r\n")
                assert replies.readline().startswith(b"221 ")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        stderr = process.stderr.read() if process.stderr else ""
    assert "connection peer=127.0.0.1 helo=" in stderr and " improper_pipelining=EHLO " in stderr


LONG_LINE = b"From: a@example.org\r\nSubject: html\r\n\r\n<p>" + b"x" * 3000 + b"</p>\r\n"
BARE_LF = b"From: a@example.org\r\nSubject: unix\r\n\r\none\ntwo\r\n"


def test_long_lines_and_bare_newlines_are_refused_by_default_and_stored_on_request(tmp_path: Path) -> None:
    with serving(tmp_path) as (_, port), smtplib.SMTP("127.0.0.1", port) as client:
        for message, reply in ((LONG_LINE, b"5.6.0"), (BARE_LF, b"5.6.11")):
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("a@example.org", ["bob@localhost"], message)  # smtplib sends bytes as they are
            assert (refused.value.smtp_code, refused.value.smtp_error[: len(reply)]) == (550, reply)
    assert maildir_files(tmp_path / "maildir") == []
    options = ("--long-lines", "accept", "--bare-newlines", "accept", "--maildir", "accepting")
    with serving(tmp_path, *options) as (_, port), smtplib.SMTP("127.0.0.1", port) as client:
        for message in (LONG_LINE, BARE_LF):
            assert client.sendmail("a@example.org", ["bob@localhost"], message) == {}
    stored = [path.read_bytes() for path in maildir_files(tmp_path / "accepting")]
    assert len(stored) == 2
    assert all(any(content.endswith(message) for content in stored) for message in (LONG_LINE, BARE_LF))  # byte-exact


def test_acknowledged_message_survives_a_kill(tmp_path: Path) -> None:
    with serving(tmp_path) as (process, port):
        client = smtplib.SMTP("127.0.0.1", port)
        client.sendmail("a@example.org", ["bob@localhost"], MESSAGE)
        process.kill()  # no chance to flush anything after the 250
        process.wait()
        client.close()
    files = maildir_files(tmp_path / "maildir")
    assert len(files) == 1 and files[0].read_bytes().endswith(MESSAGE)


def test_discard_and_per_recipient(tmp_path: Path) -> None:
    with serving(tmp_path, "--discard") as (_, port), smtplib.SMTP("127.0.0.1", port) as client:
        assert client.sendmail("a@example.org", ["bob@localhost"], MESSAGE) == {}
    assert not (tmp_path / "maildir").exists()
    with serving(tmp_path, "--maildir-per-recipient", "--maildir", "boxes") as (_, port):
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.sendmail("a@example.org", ["bob@localhost", "carol@localhost"], MESSAGE)
    assert [p.name for p in sorted((tmp_path / "boxes").iterdir())] == ["bob@localhost", "carol@localhost"]
    assert len(maildir_files(tmp_path / "boxes" / "carol@localhost")) == 1


def test_config_file_and_auth(tmp_path: Path) -> None:
    assert SMTPCORE is not None
    hashed = subprocess.run(
        [SMTPCORE, "hash-password"], input="s3cret\n", capture_output=True, text=True, check=True
    ).stdout.strip()
    assert hashed.startswith("scrypt$") and "s3cret" not in hashed
    (tmp_path / "users").write_text(f"alice:{hashed}\n")
    (tmp_path / "smtpcore.toml").write_text(
        'auth = "required"\nauth-file = "users"\nallow_insecure_auth = true\nmax-message-size = 100000\n'
        "auth-failure-delay = 0.5\n"
    )
    with serving(tmp_path, "--config", "smtpcore.toml") as (process, port):
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.ehlo()
            assert client.esmtp_features["size"] == "100000"
            assert client.mail("a@example.org")[0] == 530
            started = time.monotonic()
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("alice", "wrong-pw")  # smtplib tries PLAIN, then LOGIN
            assert 1.0 <= time.monotonic() - started < 3  # twice the file's delay; the default 2 s would be 4
            client.login("alice", "s3cret")
            assert client.sendmail("alice@example.org", ["bob@localhost"], MESSAGE) == {}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        stderr = process.stderr.read() if process.stderr else ""
    assert "Received: from" in maildir_files(tmp_path / "maildir")[0].read_text()
    # One line a failure, with the client's address (for fail2ban), and no secret.
    failures = [line for line in stderr.splitlines() if "auth failed" in line]
    assert [line.partition("auth failed ")[2] for line in failures] == [
        "peer=127.0.0.1 mechanism=PLAIN",
        "peer=127.0.0.1 mechanism=LOGIN",
    ]
    assert "wrong-pw" not in stderr and "s3cret" not in stderr


def test_a_client_probing_for_addresses_is_slowed_then_cut_off(tmp_path: Path) -> None:
    # Each refused recipient is an error: from the eleventh on every reply waits
    # (--error-delay, 1 s by default, as Postfix), and the twentieth ends the session.
    with serving(tmp_path, "--error-delay", "0.3") as (_process, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            replies = sock.makefile("rb")
            assert replies.readline().startswith(b"220 ")
            sock.sendall(b"HELO c.example\r\nMAIL FROM:<a@example.org>\r\n")
            assert replies.readline().startswith(b"250 ")
            assert replies.readline().startswith(b"250 ")
            waits = []
            for n in range(20):
                started = time.monotonic()
                sock.sendall(b"RCPT TO:<guess%d@elsewhere.example>\r\n" % n)
                assert replies.readline().startswith(b"550 ")
                waits.append(time.monotonic() - started)
            assert max(waits[:10]) < 0.3 <= min(waits[10:])
            assert replies.readline().startswith(b"421 ")
            assert replies.readline() == b""


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert SMTPCORE is not None
    return subprocess.run([SMTPCORE, *args], cwd=tmp_path, capture_output=True, text=True, timeout=30)


def test_bad_configuration_is_one_line_and_non_zero(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("colour = 'blue'\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        cases: dict[tuple[str, ...], str] = {
            ("serve", "--tls-cert", "missing.pem"): "cannot read TLS certificate or key missing.pem",
            ("serve", "--config", "bad.toml"): "unknown key 'colour'",
            ("serve", "--config", "absent.toml"): "cannot read config file absent.toml",
            ("serve", "--listen", f"127.0.0.1:{port}"): f"cannot listen on 127.0.0.1:{port}",
            ("serve", "--listen", "nowhere"): "expected HOST:PORT",
            ("serve", "--auth", "required"): "needs --auth-file",
            ("serve", "--tls", "required"): "needs --tls-cert",
            ("serve", "--max-recipients", "5"): "max_recipients must be at least 100",
            ("serve", "--auth-failure-delay", "-1"): "--auth-failure-delay -1.0: must be 0 or more seconds",
            ("serve", "--auth-failure-delay", "nan"): "--auth-failure-delay nan: must be 0 or more seconds",
            ("serve", "--error-delay", "-1"): "error_delay must be a number of seconds, 0 or more",
            ("serve", "--greet-delay", "nan"): "greet_delay must be a number of seconds, 0 or more",
            ("serve", "--max-connections-per-client", "-1"): "--max-connections-per-client -1: must be 0 or more",
            ("serve", "--max-connections", "0"): "--max-connections 0: must be 1 or more",
            ("serve", "--command-timeout", "0"): "command_timeout must be a number of seconds, more than 0",
            ("serve", "--shutdown-timeout", "-1"): "--shutdown-timeout -1.0: must be 0 or more seconds",
            # A port in use is one line whatever the adapter (trio's nursery would wrap it in a group).
            **{
                ("serve", "--adapter", adapter, "--listen", f"127.0.0.1:{port}"): f"cannot listen on 127.0.0.1:{port}"
                for adapter in ("trio", "gevent", "blocking")
            },
        }
        # Values of the wrong type in a config file (a number for a name or a path,
        # a list of numbers), and a list of addresses to listen on that is empty.
        for number, (line, message) in enumerate(
            [
                ("hostname = 5", "hostname must be a string, not 5"),
                ("tls-cert = 5", "tls-cert must be a string"),
                ('auth-file = ["a"]', "auth-file must be a string"),
                ("accept-domain = [1, 2]", "accept-domain must be a string or a list of strings"),
                ("max-connections = true", "max-connections must be a whole number, not True"),
                ("listen = []", "give at least one HOST:PORT"),
            ]
        ):
            (tmp_path / f"typed{number}.toml").write_text(line + "\n")
            cases[("serve", "--config", f"typed{number}.toml")] = message
        for args, message in cases.items():
            result = run_cli(tmp_path, *args)
            assert result.returncode == 1, (args, result.stderr)
            assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
            assert message in result.stderr, (args, result.stderr)
    finally:
        busy.close()
    assert run_cli(tmp_path, "serve", "--adapter", "nonsense").returncode == 2


def test_python_dash_m_runs_the_same_command(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "smtpcore", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "serve" in result.stdout


def test_self_signed_starttls(tmp_path: Path) -> None:
    import ssl

    with serving(tmp_path, "--self-signed", "--tls", "required") as (_, port):
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.ehlo()
            assert client.mail("a@example.org")[0] == 530
            client.starttls(context=ssl._create_unverified_context())  # a throwaway certificate
            client.ehlo()
            assert client.sendmail("a@example.org", ["bob@localhost"], MESSAGE) == {}
    assert "ESMTPS" in maildir_files(tmp_path / "maildir")[0].read_text()


@pytest.mark.parametrize("adapter", ["asyncio", "trio", "gevent", "blocking"])
def test_implicit_tls_behind_a_proxy(tmp_path: Path, adapter: str) -> None:
    # HAProxy's send-proxy in TCP mode in front of port 465: the header in plaintext, then TLS.
    import ssl

    class Proxied(smtplib.SMTP_SSL):
        def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
            sock = socket.create_connection((host, port), timeout)
            sock.sendall(b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 465\r\n")
            return self.context.wrap_socket(sock, server_hostname=host)

    options = ("--adapter", adapter, "--self-signed", "--implicit-tls", "--proxy-protocol")
    with serving(tmp_path, *options) as (_, port):
        # (A throwaway certificate.)
        with Proxied(
            "127.0.0.1", port, context=ssl._create_unverified_context(), local_hostname="client.test"
        ) as client:
            assert client.sendmail("a@example.org", ["bob@localhost"], MESSAGE) == {}
    headers = maildir_files(tmp_path / "maildir")[0].read_text()
    assert "Received: from client.test ([192.0.2.1])" in headers  # the real client, from the header
    assert "with ESMTPS" in headers


def test_transcript_records_the_wire_with_auth_redacted(tmp_path: Path) -> None:
    assert SMTPCORE is not None
    hashed = subprocess.run(
        [SMTPCORE, "hash-password"], input="s3cret\n", capture_output=True, text=True, check=True
    ).stdout.strip()
    (tmp_path / "users").write_text(f"alice:{hashed}\n")
    options = ("--transcript", "wire", "--auth", "optional", "--auth-file", "users", "--allow-insecure-auth")
    with serving(tmp_path, *options) as (_, port), smtplib.SMTP("127.0.0.1", port) as client:
        client.login("alice", "s3cret")  # PLAIN: the secret travels in base64
        client.sendmail("alice@example.org", ["bob@localhost"], MESSAGE)
    [log] = list((tmp_path / "wire").iterdir())
    text = log.read_bytes()
    assert b"C: ehlo [127.0.0.1]\r\n" in text  # smtplib writes its verbs in lower case
    assert b"S: 220 " in text
    assert b"C: AUTH PLAIN <redacted>\r\n" in text
    assert b"S: 235 2.7.0" in text
    assert b"C: Subject: hi\r\n" in text  # content lines too
    assert b"s3cret" not in text
    assert b"czNjcmV0" not in text  # the password's base64 in any alignment of the PLAIN blob
    assert b"AGFsaWNlAHMzY3JldA" not in text
    # Transcripts hold whole messages: only the owner may read them, as the mail itself.
    for private in (log, log.parent, *maildir_files(tmp_path / "maildir")):
        assert private.stat().st_mode & 0o077 == 0, (private, oct(private.stat().st_mode))


def test_smtpcore_send_delivers_to_smtpcore_serve(tmp_path: Path) -> None:
    assert SMTPCORE is not None
    (tmp_path / "message.eml").write_bytes(MESSAGE)
    with serving(tmp_path, "--adapter", "blocking") as (_, port):
        command = [SMTPCORE, "send", "message.eml", "--server", f"127.0.0.1:{port}", "--from", "alice@example.org"]
        result = subprocess.run(
            [*command, "--to", "bob@localhost", "--to", "eve@elsewhere.example"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr  # eve is refused: a permanent failure
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["bob@localhost", "delivered"]
    assert lines[1].split()[:2] == ["eve@elsewhere.example", "refused"]
    assert "550 5.7.1" in lines[1]
    [stored] = maildir_files(tmp_path / "maildir")
    assert stored.read_bytes().endswith(MESSAGE)


def sigterm_caught() -> bool:
    """Whether this process catches SIGTERM, as the kernel sees it (gevent's handler is
    libev's, which ``signal.getsignal`` does not show)."""
    with open("/proc/self/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc")
@pytest.mark.parametrize("adapter", ["asyncio", "trio", "gevent", "blocking"])
def test_the_listening_line_comes_only_once_sigterm_stops_the_server_gracefully(
    monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    """A supervisor may send SIGTERM the moment it reads "listening on": the server must
    then shut down as asked, not die of the signal.  (The line used to come first, and
    the handlers after it: a quick enough SIGTERM killed the process.)"""
    argv = ["serve", "--discard", "--adapter", adapter, "--listen", "127.0.0.1:0", "--shutdown-timeout", "0"]
    plan = cli.build_plan(cli._merge_options(cli.build_parser().parse_args(argv)))
    caught_at_announce: list[bool] = []

    def announce(plan: cli.ServePlan, servers: list[Any]) -> None:
        caught_at_announce.append(sigterm_caught())
        if not caught_at_announce[-1]:
            raise RuntimeError("SIGTERM would kill the server here")  # (raising it would kill pytest)
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(cli, "_announce", announce)
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    assert not sigterm_caught()  # else the check above would prove nothing
    try:
        cli.RUNNERS[adapter](plan, None)  # returns once the SIGTERM has shut it down
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert caught_at_announce == [True]
