"""The fallback load generator (benchmarks/loadgen.py) is a correct client: it is built on our
client machine, so it pipelines only when the server offers PIPELINING, sends the content
exactly, and counts a refused message as an error rather than a message sent."""

from __future__ import annotations

import pytest

from adapters.pytest_plugin import SMTPServerFactory
from benchmarks import loadgen
from smtpcore import ServerConfig

# Over two of the pieces the content is handed to the client machine in, and not a multiple of one.
LARGE = 2 * loadgen.PIECE + 1000


@pytest.mark.parametrize("keepalive", [True, False], ids=["kept alive", "a connection per message"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no pipelining"])
def test_every_message_arrives_whole_and_only_offered_pipelining_is_used(
    smtp_server_factory: SMTPServerFactory, keepalive: bool, pipelining: bool
) -> None:
    # A server that closes on a pipelined burst it did not offer PIPELINING for (RFC 2920 §3.1).
    config = ServerConfig(pipelining=pipelining, reject_improper_pipelining=True)
    server = smtp_server_factory("blocking", config=config)
    result = loadgen.run(server.port, 1024, 7, sessions=3, keepalive=keepalive, processes=0)
    assert (result.messages, result.errors) == (7, 0)
    received = server.wait_for(7)
    assert len(received) == 7
    assert all(m.raw == loadgen.make_message(1024) for m in received)
    assert all(m.mail_from == loadgen.SENDER and m.recipients == [loadgen.RECIPIENT] for m in received)


def test_a_message_larger_than_a_piece_goes_in_pieces_and_arrives_whole(
    smtp_server_factory: SMTPServerFactory,
) -> None:
    server = smtp_server_factory("asyncio")
    result = loadgen.run(server.port, LARGE, 2, sessions=1, keepalive=True, processes=0)
    assert (result.messages, result.errors) == (2, 0)
    assert [m.raw for m in server.wait_for(2)] == [loadgen.make_message(LARGE)] * 2


def test_two_worker_processes_share_the_messages(smtp_server_factory: SMTPServerFactory) -> None:
    server = smtp_server_factory("asyncio")
    result = loadgen.run(server.port, 1024, 9, sessions=4, keepalive=False, processes=2)
    assert (result.messages, result.errors) == (9, 0)
    assert len(server.wait_for(9)) == 9


def test_a_refused_message_is_an_error_not_a_message_sent(smtp_server_factory: SMTPServerFactory) -> None:
    server = smtp_server_factory("blocking")
    server.reject_recipient(loadgen.RECIPIENT)
    result = loadgen.run(server.port, 1024, 5, sessions=2, keepalive=True, processes=0)
    # Each session fails at its first message and is closed, not retried.
    assert (result.messages, result.errors) == (0, 2)
    assert server.messages == []


def test_the_message_is_dot_safe_text_of_about_the_size_asked() -> None:
    for size in (0, 100, 1024, 100 * 1024):
        message = loadgen.make_message(size)
        assert size - 80 <= len(message) <= max(size, len(message.split(b"\r\n\r\n")[0]) + 4)
        assert message.endswith(b"\r\n") and b"\n." not in message
