"""``smtpcore send``: exit statuses against local servers, and direct MX delivery with a stub resolver."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters import send_command
from adapters._fakeserver import FakeSMTPServer
from adapters._hostname import default_hostname
from adapters.cli import build_parser, main
from adapters.pytest_plugin import SMTPServerFactory

FakeFactory = Callable[..., FakeSMTPServer]


def send(*args: str) -> int:
    return main(["send", "--from", "alice@example.org", *args])


def test_all_delivered_exits_0_and_prints_a_table(fake_smtp_server: FakeSMTPServer, capsys: Any) -> None:
    server = f"127.0.0.1:{fake_smtp_server.port}"
    assert send("--server", server, "--to", "bob@example.com", "--to", "carol@example.com", "--subject", "Hi") == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["bob@example.com", "delivered"], ["carol@example.com", "delivered"]]
    message = fake_smtp_server.wait_for(1)[0]
    assert message.mail_from == "alice@example.org"
    assert b"Subject: Hi" in message.data


def test_a_permanent_refusal_exits_1(fake_smtp_server: FakeSMTPServer, capsys: Any) -> None:
    fake_smtp_server.refuse_recipient("nobody@example.com")
    server = f"127.0.0.1:{fake_smtp_server.port}"
    assert send("--server", server, "--to", "bob@example.com", "--to", "nobody@example.com", "--body", "x") == 1
    out = capsys.readouterr().out
    assert "nobody@example.com  refused" in out
    assert "550 5.1.1" in out


def test_only_transient_failures_exit_75(fake_smtp_server: FakeSMTPServer, capsys: Any) -> None:
    fake_smtp_server.greylist(times=None)
    assert send("--server", f"127.0.0.1:{fake_smtp_server.port}", "--to", "bob@example.com", "--body", "x") == 75
    assert "deferred" in capsys.readouterr().out
    # A server that is not there at all is transient too.
    closed = FakeSMTPServer().start()
    port = closed.port
    closed.stop()
    assert send("--server", f"127.0.0.1:{port}", "--to", "bob@example.com", "--body", "x") == 75


@pytest.mark.parametrize("adapter", ["blocking", "asyncio", "trio", "gevent"])
def test_message_from_a_file_through_each_adapter(
    fake_smtp_server: FakeSMTPServer, tmp_path: Path, adapter: str
) -> None:
    content = b"Subject: file\r\n\r\n.leading dot\r\nend\r\n"
    (tmp_path / "message.eml").write_bytes(content)
    code = send(
        str(tmp_path / "message.eml"),
        "--server",
        f"127.0.0.1:{fake_smtp_server.port}",
        "--to",
        "bob@example.com",
        "--adapter",
        adapter,
    )
    assert code == 0
    assert fake_smtp_server.wait_for(1)[0].data == content


@pytest.mark.parametrize("ending", ["sent", "usage error"])
def test_the_message_file_is_closed_however_the_command_ends(
    fake_smtp_server: FakeSMTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """main() may run many times in one process (a test suite, a tool of the user's): each run
    closes the file it opened, sent or not, rather than leaving it to the end of the process."""
    (tmp_path / "message.eml").write_bytes(b"Subject: file\r\n\r\nbody\r\n")
    opened: list[Any] = []

    def recording_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(open(*args, **kwargs))  # noqa: SIM115 - the command under test must close it
        return opened[-1]

    monkeypatch.setattr(send_command, "open", recording_open, raising=False)
    if ending == "usage error":  # found after the file is open
        arguments: tuple[str, ...] = ("--helo", "not a name", "--server", "127.0.0.1:1")
    else:
        arguments = ("--server", f"127.0.0.1:{fake_smtp_server.port}")
    code = send(str(tmp_path / "message.eml"), "--to", "bob@example.com", *arguments)
    assert code == (2 if ending == "usage error" else 0)
    assert len(opened) == 1
    assert opened[0].closed


def test_ehlo_names_this_machine_unless_told_otherwise(
    fake_smtp_server: FakeSMTPServer, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    # As smtplib does, not "localhost", which MX hosts that check the EHLO name refuse.
    monkeypatch.setattr("socket.gethostname", lambda: "client.example.net")
    server = f"127.0.0.1:{fake_smtp_server.port}"
    assert send("--server", server, "--to", "bob@example.com", "--body", "x") == 0
    assert send("--server", server, "--to", "bob@example.com", "--body", "x", "--helo", "given.example.org") == 0
    assert [c for c in fake_smtp_server.commands if c.startswith("EHLO")] == [
        "EHLO client.example.net",
        "EHLO given.example.org",
    ]
    first, second = fake_smtp_server.wait_for(2)
    assert b"Message-ID: <" in first.data and b"@client.example.net>" in first.data
    assert b"@given.example.org>" in second.data
    # A name that is not fully qualified ("vm") is refused by Postfix's
    # reject_non_fqdn_helo_hostname: the connection's address literal goes instead.
    fake_smtp_server.clear()
    monkeypatch.setattr("socket.gethostname", lambda: "vm")
    assert send("--server", server, "--to", "bob@example.com", "--body", "x") == 0
    assert [c for c in fake_smtp_server.commands if c.startswith("EHLO")] == ["EHLO [127.0.0.1]"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("mx.example.com", "mx.example.com"), ("host", "host"), ("abc_123", "localhost"), ("", "localhost")],
)
def test_the_default_name_is_the_hosts_when_it_is_a_domain(
    monkeypatch: pytest.MonkeyPatch, name: str, expected: str
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: name)
    assert default_hostname() == expected


def test_usage_errors_exit_2(capsys: Any, tmp_path: Path) -> None:
    assert send("--to", "bob@example.com") == 2
    assert "give a message file" in capsys.readouterr().err
    assert send("missing.eml", "--to", "bob@example.com", "--server", "127.0.0.1:1") == 2
    assert send("--to", "not an address", "--body", "x", "--server", "127.0.0.1:1") == 2
    assert send("--to", "b@example.com", "--body", "x", "--server", "127.0.0.1:port") == 2
    # --port is for direct delivery: with --server it would be ignored.
    assert send("--to", "b@example.com", "--body", "x", "--server", "127.0.0.1", "--port", "2525") == 2
    assert "HOST:PORT" in capsys.readouterr().err
    # getaddrinfo() takes 65536 + 25 as 25: three adapters delivered to port 25, asyncio crashed.
    for port in ("65561", "0", "-1"):
        assert send("--to", "b@[127.0.0.1]", "--body", "x", "--port", port) == 2
        assert "a port is a number from 1 to 65535" in capsys.readouterr().err
    # Octets the locale cannot decode reach sys.argv as lone surrogates ("\udcff" for \xff).
    assert send("--to", "b\udcff@example.com", "--body", "x", "--server", "127.0.0.1:1") == 2
    assert "not valid Unicode" in capsys.readouterr().err
    assert send("--to", "b@example.com", "--body", "\udcff", "--server", "127.0.0.1:1") == 2
    assert "--body is not text in the terminal's encoding" in capsys.readouterr().err
    # A CA file that is missing, or holds no certificate, is the caller's to fix: not a refusal.
    assert send("--to", "b@example.com", "--body", "x", "--server", "127.0.0.1:1", "--ca-file", "absent.pem") == 2
    assert "cannot read --ca-file absent.pem: No such file or directory" in capsys.readouterr().err
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert send("--to", "b@example.com", "--body", "x", "--server", "127.0.0.1:1", "--ca-file", str(junk)) == 2
    assert f"cannot read --ca-file {junk}" in capsys.readouterr().err


def test_direct_delivery_without_dnspython_is_one_clear_error(
    fake_smtp_server: FakeSMTPServer, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr(send_command, "_dns_available", lambda: False)
    assert send("--to", "bob@example.com", "--body", "x") == 2
    assert "pip install dnspython idna" in capsys.readouterr().err
    # An address literal needs no DNS.
    port = str(fake_smtp_server.port)
    assert send("--to", "bob@[127.0.0.1]", "--body", "x", "--port", port, "--starttls", "off") == 0


def test_password_comes_from_the_environment_never_the_command_line(
    fake_smtp_server: FakeSMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_smtp_server.capabilities = [*fake_smtp_server.capabilities, "AUTH PLAIN LOGIN"]
    monkeypatch.setenv("MY_SECRET", "s3cret")
    server = f"127.0.0.1:{fake_smtp_server.port}"
    args = ("--server", server, "--to", "bob@example.com", "--body", "x", "--user", "alice", "--starttls", "off")
    # AUTH over plaintext is refused by the client unless the config allows it: a permanent failure.
    assert send(*args, "--password-env", "MY_SECRET") == 1
    monkeypatch.delenv("MY_SECRET")
    assert send(*args, "--password-env", "MY_SECRET") == 2  # no terminal to ask on


def test_an_oauth_token_comes_from_the_environment(
    smtp_server_factory: SMTPServerFactory, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    server = smtp_server_factory(tls="starttls", tokens={"alice@example.org": "ya29.good"})
    args = ["--server", f"127.0.0.1:{server.port}", "--ca-file", server.ca_file, "--to", "bob@example.com"]
    args += ["--body", "x", "--user", "alice@example.org", "--token-env", "MY_TOKEN"]
    monkeypatch.setenv("MY_TOKEN", "ya29.expired")
    assert send(*args) == 1
    # XOAUTH2, the first the client tries: Gmail's "400", the status to refresh a token on.
    refused = "authentication with XOAUTH2 failed: 535 5.7.8 Authentication credentials invalid"
    assert f'{refused} (the server said: {{"status":"400"' in capsys.readouterr().out
    monkeypatch.setenv("MY_TOKEN", "ya29.good")
    assert send(*args) == 0
    assert server.wait_for(1)[0].authenticated == "alice@example.org"
    monkeypatch.delenv("MY_TOKEN")
    assert send(*args) == 2
    assert "--token-env: MY_TOKEN is unset or empty" in capsys.readouterr().err
    assert send(*[arg for arg in args if arg not in ("--user", "alice@example.org")]) == 2
    assert "--token-env needs --user" in capsys.readouterr().err


@dataclass
class MX:
    preference: int
    exchange: str


class StubResolver:
    def __init__(self, table: dict[str, list[MX]]) -> None:
        self.table = table

    def resolve(self, qname: str, rdtype: str) -> list[MX]:
        return self.table[qname]


def test_direct_delivery_tries_mx_hosts_in_order(
    fake_smtp_server_factory: FakeFactory, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    greylisting = fake_smtp_server_factory()
    greylisting.greylist()
    good = fake_smtp_server_factory()
    other = fake_smtp_server_factory()
    down = FakeSMTPServer().start()
    down_port = down.port
    down.stop()
    # DNS says: mx1 (down), mx2 (greylists), mx3 (accepts) for example.com; one MX for other.org.
    resolver = StubResolver(
        {
            "example.com": [MX(30, "mx3.example.com."), MX(10, "mx1.example.com."), MX(20, "mx2.example.com.")],
            "other.org": [MX(10, "mx.other.org.")],
        }
    )
    # ...and the hosts' A records all point at 127.0.0.1, each on its own port.
    ports = {
        "mx1.example.com": down_port,
        "mx2.example.com": greylisting.port,
        "mx3.example.com": good.port,
        "mx.other.org": other.port,
    }
    real_sender = send_command._sender

    def sender(adapter: str) -> Callable[..., Any]:
        deliver = real_sender(adapter)
        return lambda host, port, *args, **kw: deliver("127.0.0.1", ports[host], *args, **kw)

    monkeypatch.setattr(send_command, "_sender", sender)
    args = ["send", "--from", "a@example.net", "--to", "bob@example.com", "--to", "zed@other.org", "--body", "hi"]
    parsed = build_parser().parse_args(args)
    assert send_command.send_command(parsed, resolver=resolver) == 0
    out = capsys.readouterr().out
    assert "bob@example.com  delivered  mx3.example.com" in out
    assert "zed@other.org    delivered  mx.other.org" in out
    own = default_hostname()
    assert greylisting.commands[0] == f"EHLO {own if '.' in own else '[127.0.0.1]'}"
    assert greylisting.commands[1].startswith("MAIL FROM:<a@example.net>")
    assert greylisting.commands[2] == "RCPT TO:<bob@example.com>"  # greylisted: so mx3 was tried next
    assert len(good.wait_for(1)) == 1
    assert good.messages[0].recipients == ["bob@example.com"]
    assert other.messages[0].recipients == ["zed@other.org"]


@pytest.mark.skipif(shutil.which("smtpcore") is None, reason="console script not installed")
def test_console_script_help_lists_send() -> None:
    result = subprocess.run(["smtpcore", "send", "--help"], capture_output=True, text=True, check=True)
    assert "--password-env" in result.stdout


# What docs/cli.md says of certificates: verified with --server whatever --starttls
# says, verified in direct delivery only when TLS is required (or implicit).


def test_with_server_the_certificate_is_verified_even_when_tls_is_opportunistic(
    smtp_server_factory: SMTPServerFactory, capsys: Any
) -> None:
    server = smtp_server_factory(tls="starttls")  # a certificate from a CA the system does not trust
    relay = f"127.0.0.1:{server.port}"
    assert send("--server", relay, "--to", "bob@example.com", "--body", "x") == 75
    out = capsys.readouterr().out
    assert "bob@example.com  deferred" in out and "CERTIFICATE_VERIFY_FAILED" in out  # never plaintext instead
    assert server.messages == []
    assert send("--server", relay, "--to", "bob@example.com", "--body", "x", "--ca-file", server.ca_file) == 0
    assert send("--server", relay, "--to", "bob@example.com", "--body", "x", "--starttls", "off") == 0
    assert [message.tls for message in server.wait_for(2)] == [True, False]


def test_direct_delivery_verifies_the_certificate_only_when_tls_is_required(
    smtp_server_factory: SMTPServerFactory, capsys: Any
) -> None:
    server = smtp_server_factory(tls="starttls")
    direct = ("--to", "bob@[127.0.0.1]", "--port", str(server.port), "--body", "x")  # a literal: no DNS
    assert send(*direct) == 0  # opportunistic: encrypted, certificate unchecked
    assert send(*direct, "--starttls", "required") == 75
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().out
    assert send(*direct, "--starttls", "required", "--ca-file", server.ca_file) == 0
    assert [message.tls for message in server.wait_for(2)] == [True, True]
