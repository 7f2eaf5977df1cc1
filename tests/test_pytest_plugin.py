"""The pytest plugin, seen from a user's test suite: pytester runs test files that use the fixtures.

Nothing here imports the plugin: the fixtures must arrive through the ``pytest11``
entry point, as they do for anyone who installs smtpcore.  One run is a real
subprocess (the installed entry point, nothing inherited from this process); the
others run in-process for speed, and afterwards no server thread may be left.
"""

from __future__ import annotations

import threading
import time

import pytest

pytest_plugins = ["pytester"]

THREAD_PREFIXES = ("smtp-", "fake-smtp-")


def leftover_threads() -> list[str]:
    deadline = time.monotonic() + 2.0
    while True:
        names = [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIXES) and t.is_alive()]
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def run(pytester: pytest.Pytester, source: str, **outcomes: int) -> pytest.RunResult:
    pytester.makepyfile(source)
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-W",
        "error::pytest.PytestUnraisableExceptionWarning",
        "-W",
        "error::pytest.PytestUnhandledThreadExceptionWarning",
    )
    result.assert_outcomes(**outcomes)
    assert leftover_threads() == []
    return result


# --- the entry point -----------------------------------------------------------------------------

PLAIN = """
import smtplib


def test_plain_smtplib(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.sendmail("alice@example.org", ["bob@example.com"], b"Subject: Hello\\r\\n\\r\\nHi Bob!\\r\\n")
    (message,) = smtp_server.wait_for(1)
    assert message["Subject"] == "Hello"
    assert message.message.get_content() == "Hi Bob!\\r\\n"  # parsed from the wire bytes: CRLF stays
    assert message.mail_from == "alice@example.org"
    assert message.recipients == ["bob@example.com"]
    assert message.raw == b"Subject: Hello\\r\\n\\r\\nHi Bob!\\r\\n"
    assert message.peer[0] == "127.0.0.1" and not message.tls and message.authenticated is None
    assert smtp_server.address == ("127.0.0.1", smtp_server.port) and smtp_server.port > 0
"""


def test_the_installed_entry_point_provides_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PLAIN)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=1)
    fixtures = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    fixtures.stdout.fnmatch_lines(
        ["smtp_ca * -- *pytest_plugin.py*", "smtp_server -- *pytest_plugin.py*", "fake_smtp_server -- *"]
    )
    markers = pytester.runpytest_subprocess("--markers", "-p", "no:cacheprovider")
    markers.stdout.fnmatch_lines(["@pytest.mark.smtp_server(adapter='blocking', *"])
    # Listed again as well, as suites moving from other plugins do: no harm, no start-up error.
    again = pytester.runpytest_subprocess("-p", "adapters.pytest_plugin", "-p", "no:cacheprovider")
    again.assert_outcomes(passed=1)
    pytester.makeconftest('pytest_plugins = ["adapters.pytest_plugin"]')
    listed = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    listed.assert_outcomes(passed=1)


# --- smtp_server ---------------------------------------------------------------------------------

REAL = """
import smtplib
import ssl

import pytest

from smtpcore import Reply, ServerConfig

MESSAGE = b"From: a@example.org\\r\\nTo: b@example.com\\r\\nSubject: Test\\r\\n\\r\\nbody\\r\\n.leading dot\\r\\n"


@pytest.mark.parametrize("smtp_server", ["blocking", "asyncio", "trio", "gevent"], indirect=True)
def test_every_adapter(smtp_server):
    assert smtp_server.adapter in ("blocking", "asyncio", "trio", "gevent")
    with smtp_server.client() as client:
        client.sendmail("a@example.org", ["b@example.com", "c@example.com"], MESSAGE)
        client.sendmail("<>", ["d@example.com"], MESSAGE)
    first, second = smtp_server.wait_for(2)
    assert first.raw.endswith(b"body\\r\\n.leading dot\\r\\n")
    assert first.recipients == ["b@example.com", "c@example.com"]
    assert second.mail_from == "" and second.hello


@pytest.mark.smtp_server(tls="starttls", auth={"alice": "s3cret"})
@pytest.mark.parametrize("smtp_server", ["blocking", "asyncio", "trio", "gevent"], indirect=True)
def test_starttls_and_auth(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # never offered in plaintext by default
        client.starttls(context=smtp_server.client_context())
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("alice", "wrong")
        assert refused.value.smtp_code == 535
        client.login("alice", "s3cret")
        client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
    (message,) = smtp_server.wait_for()
    assert message.tls and message.tls_version.startswith("TLSv1.")
    assert message.authenticated == "alice"


@pytest.mark.smtp_server(tls="starttls")
def test_the_ca_for_other_clients(smtp_server, smtp_ca):
    assert smtp_server.ca is smtp_ca.ca
    context = ssl.create_default_context(cafile=smtp_server.ca_file)
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.starttls(context=context)
        client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
    untrusting = ssl.create_default_context()
    untrusting.load_verify_locations(cadata=_other_ca())
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=untrusting)
    assert len(smtp_server.messages) == 1


def _other_ca():
    import trustme

    return trustme.CA().cert_pem.bytes().decode()


@pytest.mark.smtp_server("asyncio", tls="implicit", auth={"bob": "pw"})
def test_implicit_tls(smtp_server):
    with smtp_server.client() as client:
        assert isinstance(client, smtplib.SMTP_SSL)
        client.login("bob", "pw")
        client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
    assert smtp_server.wait_for()[0].authenticated == "bob"


@pytest.mark.smtp_server(tls="starttls", auth={"alice": "pw"}, tokens={"carol": "ya29.tok"})
def test_oauth_tokens(smtp_server):
    from adapters.blocking_client import send_message
    from smtpcore import ClientConfig, Credentials, SMTPAuthenticationError

    config = ClientConfig(auth_mechanisms=("OAUTHBEARER",))
    context = smtp_server.client_context()
    with pytest.raises(SMTPAuthenticationError, match='said: {"status":"invalid_token"'):
        send_message(smtp_server.host, smtp_server.port, "c@example.org", ["b@example.com"], MESSAGE,
                     config=config, tls_context=context, credentials=Credentials("carol", token="old"))
    send_message(smtp_server.host, smtp_server.port, "c@example.org", ["b@example.com"], MESSAGE,
                 config=config, tls_context=context, credentials=Credentials("carol", token="ya29.tok"))
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.starttls(context=context)
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"]
        challenges = []
        def xoauth2(challenge=None):
            challenges.append(challenge)
            return "user=carol\x01auth=Bearer ya29.tok\x01\x01" if challenge is None else ""
        client.auth("XOAUTH2", xoauth2)
        client.sendmail("c@example.org", ["b@example.com"], MESSAGE)
    assert [m.authenticated for m in smtp_server.wait_for(2)] == ["carol", "carol"]


@pytest.mark.smtp_server(tls="required")
def test_tls_required(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
        assert refused.value.smtp_code == 530


@pytest.mark.smtp_server(auth={"alice": "pw"}, allow_insecure_auth=True, auth_required=True)
def test_insecure_auth_opt_in(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
        client.login("alice", "pw")
        client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
    assert smtp_server.messages[0].authenticated == "alice"


@pytest.mark.smtp_server(lmtp=True)
@pytest.mark.parametrize("smtp_server", ["blocking", "trio"], indirect=True)
def test_lmtp(smtp_server):
    smtp_server.reject_delivery("full@example.com", Reply(452, "Mailbox full", "4.2.2"))
    with smtp_server.client() as client:
        assert isinstance(client, smtplib.LMTP)
        client.ehlo()  # smtplib.LMTP sends LHLO
        client.mail("a@example.org")
        client.rcpt("ok@example.com")
        client.rcpt("full@example.com")
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(MESSAGE + b".\\r\\n")
        assert client.getreply() == (250, b"2.0.0 Delivered")
        assert client.getreply() == (452, b"4.2.2 Mailbox full")
    (message,) = smtp_server.wait_for()
    assert message.recipients == ["ok@example.com"]


def test_refusals(smtp_server):
    smtp_server.reject_recipient("Nobody@Example.com")
    smtp_server.reject_recipient("later@example.com", Reply(450, "Try again later", "4.2.1"))
    smtp_server.reject_sender("spammer@example.net")
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        recipients = ["b@example.com", "nobody@example.com", "later@example.com"]
        refused = client.sendmail("a@example.org", recipients, MESSAGE)
        assert refused == {
            "nobody@example.com": (550, b"5.1.1 No such user"),
            "later@example.com": (450, b"4.2.1 Try again later"),
        }
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("spammer@example.net", ["b@example.com"], MESSAGE)
        smtp_server.reject_messages(Reply(554, "Content refused", "5.7.1"))
        with pytest.raises(smtplib.SMTPDataError) as refused_data:
            client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
        assert refused_data.value.smtp_code == 554
        smtp_server.reset_rules()
        client.sendmail("a@example.org", ["nobody@example.com"], MESSAGE)
    assert [m.recipients for m in smtp_server.messages] == [["b@example.com"], ["nobody@example.com"]]
    smtp_server.clear()
    assert smtp_server.messages == []


@pytest.mark.smtp_server(config=ServerConfig(hostname="mx.example.test", max_message_size=65536))
def test_any_server_config(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        code, banner = client.ehlo()
        assert b"mx.example.test" in banner and client.esmtp_features["size"] == "65536"
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("a@example.org", ["b@example.com"], b"x" * 70000)


def test_wait_for_says_what_arrived(smtp_server):
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
    with pytest.raises(TimeoutError, match=r"expected 2 message\\(s\\) within 0.2 s .*1 arrived .*<a@example.org>"):
        smtp_server.wait_for(2, timeout=0.2)


def test_factory_and_parameters(smtp_server_factory):
    plain = smtp_server_factory()
    trio_tls = smtp_server_factory("trio", tls=True)
    assert plain.port != trio_tls.port
    with pytest.raises(AttributeError, match="does not speak TLS"):
        plain.client_context()
    with smtplib.SMTP(*trio_tls.address) as client:
        client.starttls(context=trio_tls.client_context())
        client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
    assert trio_tls.wait_for()[0].tls
    with pytest.raises(ValueError, match="adapter must be one of"):
        smtp_server_factory("twisted")
    with pytest.raises(ValueError, match="tls must be one of"):
        smtp_server_factory(tls="sometimes")


@pytest.mark.smtp_server(adapter="gevent", colour="blue")
def test_unknown_option(smtp_server):
    pass


@pytest.mark.parametrize("smtp_server", [{"adapter": "asyncio", "lmtp": True}], indirect=True)
def test_parameter_as_options(smtp_server):
    assert smtp_server.adapter == "asyncio" and smtp_server.config.lmtp
"""


def test_smtp_server_fixture(pytester: pytest.Pytester) -> None:
    result = run(pytester, REAL, passed=20, errors=1)
    result.stdout.fnmatch_lines(["*TypeError: unknown smtp_server option(s) colour; known: adapter, *"])


def test_default_adapter_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsmtp_server_adapter = trio\n")
    run(pytester, "def test_adapter(smtp_server):\n    assert smtp_server.adapter == 'trio'\n", passed=1)


# --- fake_smtp_server ----------------------------------------------------------------------------

FAKE = """
import smtplib
import socket
import time

import pytest

from smtpcore import Reply

MESSAGE = b"Subject: Test\\r\\n\\r\\nbody\\r\\n.dot\\r\\n"


def send(fake, recipients=("b@example.com",), **options):
    with smtplib.SMTP(fake.host, fake.port, timeout=5, **options) as client:
        return client.sendmail("a@example.org", list(recipients), MESSAGE)


def test_accepts_and_records(fake_smtp_server):
    assert send(fake_smtp_server) == {}
    (message,) = fake_smtp_server.wait_for(1)
    assert message.mail_from == "a@example.org" and message.recipients == ["b@example.com"]
    assert message.data == b"Subject: Test\\r\\n\\r\\nbody\\r\\n.dot\\r\\n"  # dot-stuffing removed
    commands = fake_smtp_server.commands
    # As smtplib sent them; its case changed in Python 3.13 ("mail FROM:" then "mail from:").
    assert commands[0].startswith("ehlo ") and [command.lower() for command in commands[1:4]] == [
        "mail from:<a@example.org> size=29",
        "rcpt to:<b@example.com>",
        "data",
    ]
    assert commands[-1] == "QUIT"
    assert "..dot" in fake_smtp_server.transcript  # every line, as sent
    assert "S: 221 2.0.0 Bye" in fake_smtp_server.conversation


def test_refuse_a_recipient(fake_smtp_server):
    fake_smtp_server.refuse_recipient("x@example.com")
    assert send(fake_smtp_server, ["b@example.com", "x@example.com"]) == {
        "x@example.com": (550, b"5.1.1 No such user here")
    }
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(fake_smtp_server, ["x@example.com"])
    assert len(fake_smtp_server.messages) == 1


def test_greylisting_then_retry(fake_smtp_server):
    fake_smtp_server.greylist()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(fake_smtp_server)
    assert refused.value.recipients == {"b@example.com": (451, b"4.7.1 Greylisted, please try again later")}
    assert send(fake_smtp_server) == {}  # the second attempt gets through
    assert fake_smtp_server.connections == 2


def test_4xx_at_any_command(fake_smtp_server):
    fake_smtp_server.on("MAIL", Reply(452, "Insufficient system storage", "4.3.1"), times=1)
    fake_smtp_server.on(".", "451 4.3.0 Queue write failed")
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(fake_smtp_server)
    assert refused.value.smtp_code == 452
    with pytest.raises(smtplib.SMTPDataError) as failed:
        send(fake_smtp_server)
    assert failed.value.smtp_code == 451
    assert fake_smtp_server.messages == []


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA", "."])
def test_421_and_hang_up(fake_smtp_server, command):
    fake_smtp_server.close_at(command)
    with pytest.raises((smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused, smtplib.SMTPServerDisconnected)):
        send(fake_smtp_server)
    assert any("421 4.3.2" in line for line in fake_smtp_server.conversation)


def test_421_greeting(fake_smtp_server):
    fake_smtp_server.close_at("CONNECT", "421 4.7.0 Too busy")
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(fake_smtp_server.host, fake_smtp_server.port, timeout=5)
    assert refused.value.smtp_code == 421


@pytest.mark.parametrize("after", [0, 10, 10_000])
def test_disconnect_mid_data(fake_smtp_server, after):
    fake_smtp_server.disconnect_during_data(after_bytes=after)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        send(fake_smtp_server)
    assert fake_smtp_server.messages == []
    assert fake_smtp_server.commands[-1] == "data"


def test_slow_replies(fake_smtp_server):
    fake_smtp_server.slow("CONNECT", 0.2)
    fake_smtp_server.slow(".", 0.2)
    started = time.monotonic()
    assert send(fake_smtp_server) == {}
    assert time.monotonic() - started >= 0.4
    fake_smtp_server.slow("MAIL", 5.0)  # teardown does not wait for it
    with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
        with smtplib.SMTP(fake_smtp_server.host, fake_smtp_server.port, timeout=0.3) as client:
            client.sendmail("a@example.org", ["b@example.com"], MESSAGE)


def test_greeting_capabilities_and_auth(fake_smtp_server):
    fake_smtp_server.greeting = "220 mx.fake.test Welcome\\nsecond line"
    fake_smtp_server.capabilities = ["AUTH PLAIN LOGIN", "SMTPUTF8"]
    with smtplib.SMTP(fake_smtp_server.host, fake_smtp_server.port, timeout=5) as client:
        assert client.ehlo()[0] == 250
        assert client.has_extn("smtputf8") and not client.has_extn("pipelining")
        client.login("user", "pass")
    assert fake_smtp_server.conversation[:2] == ["S: 220-mx.fake.test Welcome", "S: 220 second line"]
    assert any(line.startswith("AUTH ") for line in fake_smtp_server.commands)
    fake_smtp_server.on("AUTH", "535 5.7.8 Bad credentials")
    with smtplib.SMTP(fake_smtp_server.host, fake_smtp_server.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("user", "wrong")


def test_lmtp_and_bdat(fake_smtp_server):
    fake_smtp_server.on(".", "452 4.2.2 Mailbox full", times=1)
    with smtplib.LMTP(fake_smtp_server.host, fake_smtp_server.port, timeout=5) as client:
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt("b@example.com")
        client.rcpt("c@example.com")
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(MESSAGE.replace(b"\\n.", b"\\n..") + b".\\r\\n")
        assert client.getreply() == client.getreply() == (452, b"4.2.2 Mailbox full")  # one per recipient
        assert client.sendmail("a@example.org", ["b@example.com"], MESSAGE) == {}
    with socket.create_connection(fake_smtp_server.address, timeout=5) as sock:
        sock.sendall(b"EHLO me\\r\\nMAIL FROM:<a@example.org>\\r\\nRCPT TO:<b@example.com>\\r\\nBDAT 5 LAST\\r\\nhello")
        sock.sendall(b"QUIT\\r\\n")
        received = b""
        while not received.endswith(b"221 2.0.0 Bye\\r\\n"):
            received += sock.recv(4096)
    assert b"250 2.0.0 OK: queued" in received
    assert [m.data for m in fake_smtp_server.messages] == [MESSAGE, b"hello"]


def test_bounded_lines(fake_smtp_server_factory):
    fake = fake_smtp_server_factory(max_line=1024)
    with socket.create_connection(fake.address, timeout=5) as sock:
        sock.recv(4096)
        sock.sendall(b"NOOP " + b"x" * 2000 + b"\\r\\n")
        assert sock.recv(4096) == b"500 5.5.2 Line too long\\r\\n"
        assert sock.recv(4096) == b""


def test_bad_scripts_fail_in_the_test(fake_smtp_server):
    with pytest.raises(ValueError, match="three-digit code"):
        fake_smtp_server.on("RCPT", "oops")
    with pytest.raises(ValueError, match="does not apply"):
        fake_smtp_server.on(".", "250 ok", match="x")


@pytest.fixture
def hanging():
    # Set up before fake_smtp_server, so torn down after it: the socket is still open
    # when the server stops, and closed only then.
    sockets = []
    yield sockets
    for sock in sockets:
        sock.close()


def test_a_client_left_hanging(hanging, fake_smtp_server):
    # Teardown must not wait for this client: stop() hangs up on it.
    sock = socket.create_connection(fake_smtp_server.address, timeout=5)
    hanging.append(sock)
    assert sock.recv(100).startswith(b"220 ")
"""


def test_fake_smtp_server_fixture(pytester: pytest.Pytester) -> None:
    started = time.monotonic()
    run(pytester, FAKE, passed=18)
    assert time.monotonic() - started < 15
