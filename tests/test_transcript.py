"""AUTH secrets never reach a transcript."""

from __future__ import annotations

import pytest

from adapters._handler import AsyncHandler, Handler, redact_auth, wants_transcript


@pytest.mark.parametrize(
    ("data", "in_auth", "expected"),
    [
        (b"AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n", False, b"AUTH PLAIN <redacted>\r\n"),
        (b"auth login YWxpY2U=\r\nNOOP\r\n", False, b"auth login <redacted>\r\nNOOP\r\n"),
        (b"AUTH LOGIN\r\n", False, b"AUTH LOGIN\r\n"),  # nothing secret on it
        (b"czNjcmV0\r\n", True, b"<redacted>\r\n"),  # a response inside the exchange
        (b"czNj", True, b"<redacted>"),  # even half a line
        (b"MAIL FROM:<a@b.example>\r\n", False, b"MAIL FROM:<a@b.example>\r\n"),
    ],
)
def test_redact_auth(data: bytes, in_auth: bool, expected: bytes) -> None:
    assert redact_auth(data, in_auth) == expected


def test_transcript_hook_only_when_overridden_and_enabled() -> None:
    class Plain(Handler):
        pass

    class Recording(AsyncHandler):
        async def transcript(self, session: object, direction: str, data: bytes) -> None:
            return None

    recording = Recording()
    assert not wants_transcript(Plain())
    assert wants_transcript(recording)
    recording.transcript_enabled = False  # type: ignore[attr-defined]
    assert not wants_transcript(recording)


def test_proxy_header_gives_the_session_the_real_client_address() -> None:
    import socket
    import threading

    from adapters.blocking_server import serve_socket
    from smtpcore import ServerConfig

    seen: list[object] = []

    class Recorder(Handler):
        def hello(self, session: object, hello: object) -> None:
            seen.append(session.peer)  # type: ignore[attr-defined]

    server_sock, client_sock = socket.socketpair()
    thread = threading.Thread(
        target=serve_socket, args=(server_sock, Recorder(), ServerConfig(proxy_protocol=True), None), daemon=True
    )
    thread.start()
    client_sock.sendall(b"PROXY TCP6 2001:db8::7 2001:db8::1 50000 25\r\n")
    assert client_sock.recv(1024).startswith(b"220 ")
    client_sock.sendall(b"EHLO c.example\r\nQUIT\r\n")
    reply = b""
    while b"221" not in reply:
        reply += client_sock.recv(1024)
    thread.join(5)
    client_sock.close()
    assert seen == [("2001:db8::7", 50000)]
