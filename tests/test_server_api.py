"""ServerConnection calls for adapters: end_session() and receiving_content."""

from __future__ import annotations

import pytest

from smtpcore import (
    NEED_DATA,
    ConnectionClosed,
    LocalProtocolError,
    MessageData,
    Reply,
    ServerConfig,
    ServerConnection,
)

SHUTDOWN = Reply(421, "Server shutting down", "4.3.2")


def greeted(config: ServerConfig | None = None) -> ServerConnection:
    conn = ServerConnection(config or ServerConfig())
    conn.accept()
    conn.data_to_send()
    return conn


def answer_all(conn: ServerConnection) -> list[object]:
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
        if conn.reply_due:
            conn.accept()
    return events


def test_end_session_without_enhanced_codes_before_ehlo() -> None:
    conn = greeted()
    conn.end_session(SHUTDOWN)
    assert conn.data_to_send() == b"421 Server shutting down\r\n"
    assert conn.next_event() == ConnectionClosed(by_peer=False)
    conn.end_session(SHUTDOWN)  # already closed: nothing more
    assert conn.data_to_send() == b""


def test_end_session_mid_message_keeps_earlier_replies_and_drops_the_message() -> None:
    conn = greeted()
    conn.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\npart")
    events = answer_all(conn)
    assert isinstance(events[-1], MessageData)
    assert conn.receiving_content
    conn.end_session(SHUTDOWN)
    out = conn.data_to_send()
    assert out.startswith(b"250-")
    assert out.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n421 4.3.2 Server shutting down\r\n")
    assert not conn.receiving_content
    conn.receive_data(b"more\r\n.\r\n")
    assert conn.next_event() == ConnectionClosed(by_peer=False)


def test_end_session_while_a_reply_is_due() -> None:
    conn = greeted()
    conn.receive_data(b"EHLO c.example\r\n")
    conn.next_event()
    assert conn.reply_due
    conn.end_session(SHUTDOWN)
    assert not conn.reply_due
    assert conn.data_to_send() == b"421 Server shutting down\r\n"


@pytest.mark.parametrize("reply", [Reply(221, "Bye"), Reply(554, "No"), "421 text"])
def test_end_session_takes_only_a_421(reply: object) -> None:
    with pytest.raises(LocalProtocolError, match="421"):
        greeted().end_session(reply)  # type: ignore[arg-type]


def test_receiving_content_covers_data_and_bdat_chunks_only() -> None:
    conn = greeted()
    conn.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    answer_all(conn)
    assert not conn.receiving_content
    conn.receive_data(b"BDAT 10\r\n12345")
    answer_all(conn)
    assert conn.receiving_content
    conn.receive_data(b"67890")
    answer_all(conn)
    assert not conn.receiving_content  # between chunks: a command is awaited
    conn.receive_data(b"BDAT 0 LAST\r\n")
    answer_all(conn)
    assert not conn.receiving_content
