"""AUTH secrets never reach a transcript."""

from __future__ import annotations

import base64

import pytest

from adapters._handler import AsyncHandler, Handler, wants_transcript

PLAIN = base64.b64encode(b"\0alice\0s3cret-pw")
USER, PASSWORD = base64.b64encode(b"alice"), base64.b64encode(b"s3cret-pw")


@pytest.mark.parametrize(
    "writes",
    [
        # The secret split across the client's writes (and so, likely, across reads) ...
        [b"AUTH PLA", b"IN " + PLAIN[:6], PLAIN[6:] + b"\r\n"],
        # ... and a pipelining client's whole LOGIN exchange before the first 334.
        [b"AUTH LOGIN\r\n" + USER + b"\r\n" + PASSWORD + b"\r\n"],
    ],
)
def test_the_dispatcher_never_hands_a_secret_to_the_transcript(writes: list[bytes]) -> None:
    import socket
    import threading
    import time

    from adapters.blocking_server import serve_socket
    from smtpcore import AuthPolicy, ServerConfig

    wire: list[tuple[str, bytes]] = []

    class Recorder(Handler):
        def auth(self, session: object, credentials: object) -> bool:
            return True

        def transcript(self, session: object, direction: str, data: bytes) -> None:
            wire.append((direction, data))

    server_sock, client_sock = socket.socketpair()
    config = ServerConfig(auth=AuthPolicy.OPTIONAL, allow_insecure_auth=True)
    thread = threading.Thread(target=serve_socket, args=(server_sock, Recorder(), config, None), daemon=True)
    thread.start()
    client_sock.sendall(b"EHLO c.example\r\n")
    for data in writes:
        time.sleep(0.05)  # give the server the chance to read each write on its own
        client_sock.sendall(data)
    reply = b""
    while b"235 " not in reply:
        reply += client_sock.recv(1024)
    client_sock.sendall(b"QUIT\r\n")
    while b"221 " not in reply:
        reply += client_sock.recv(1024)
    thread.join(5)
    client_sock.close()
    from_client = b"".join(data for direction, data in wire if direction == "C")
    assert from_client.startswith(b"EHLO c.example\r\nAUTH ")
    assert from_client.endswith(b"QUIT\r\n")
    assert b"<redacted>" in from_client
    for secret in (PLAIN, USER, PASSWORD, PLAIN[:6], PLAIN[6:]):
        assert secret not in from_client


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
