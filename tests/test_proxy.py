"""The PROXY protocol header reader: v1 and v2, strict, bounded, split-proof."""

from __future__ import annotations

import contextlib
import logging
import struct
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import Handler, Session, TlsInfo
from adapters._handler import CallHook, Close, Dispatcher, Receive, Send, StartTls
from smtpcore import (
    NEED_DATA,
    ConnectionClosed,
    LocalProtocolError,
    ProxyHeader,
    ServerConfig,
    ServerConnection,
    State,
)
from smtpcore._proxy import (
    MAX_V1_LENGTH,
    MAX_V2_LENGTH,
    MIN_LENGTH,
    V2_SIGNATURE,
    ProxyError,
    ProxyInfo,
    octets_left,
    read_proxy_header,
)


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


V2_TCP4 = v2(1, 0x11, bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack("!HH", 40000, 25))
V2_TCP6 = v2(1, 0x21, bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack("!HH", 1, 2) + b"\x04\x00\x01X")

GOOD = [
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\r\n", ProxyInfo(1, ("192.0.2.1", 40000), ("198.51.100.2", 25))),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", ProxyInfo(1, ("2001:db8::1", 1), ("2001:db8::2", 65535))),
    (b"PROXY UNKNOWN\r\n", ProxyInfo(1, None, None)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyInfo(1, None, None)),
    (V2_TCP4, ProxyInfo(2, ("192.0.2.1", 40000), ("198.51.100.2", 25))),
    (V2_TCP6, ProxyInfo(2, ("::1", 1), ("::2", 2))),  # a TLV after the addresses is skipped
    (v2(0, 0x00, b""), ProxyInfo(2, None, None)),  # LOCAL (a health check)
    (v2(1, 0x31, bytes(216)), ProxyInfo(2, None, None)),  # UNIX socket
    # The edges (found by mutation testing): the longest v1 line; PROXY with UNSPEC, which
    # the spec says to take as LOCAL; the longest v2 header we take.
    (b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n", ProxyInfo(1, None, None)),  # 107 octets: the spec's longest
    (v2(1, 0x00, b""), ProxyInfo(2, None, None)),
    (
        v2(1, 0x11, V2_TCP4[16:] + bytes(MAX_V2_LENGTH - 16 - 12)),
        ProxyInfo(2, ("192.0.2.1", 40000), ("198.51.100.2", 25)),
    ),
]


@pytest.mark.parametrize(("header", "expected"), GOOD)
def test_header_parsed_whole_byte_by_byte_and_with_trailing_bytes(header: bytes, expected: ProxyInfo) -> None:
    buffer = bytearray(header + b"EHLO x\r\n")
    assert read_proxy_header(buffer) == expected
    assert buffer == b"EHLO x\r\n"  # trailing bytes left untouched
    buffer = bytearray()
    for index, byte in enumerate(header):
        buffer.append(byte)
        result = read_proxy_header(buffer)
        if index < len(header) - 1:
            assert result is None
    assert result == expected
    assert buffer == b""


BAD = [
    b"EHLO client\r\n",
    b"PROXY TCP4 192.0.2.1 ::1 1 2\r\n",  # family mismatch
    b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 025 25\r\n",  # leading zero
    b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n",
    b"PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY  TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
    b"PROXY TCP4 999.0.2.1 198.51.100.2 1 2\r\n",
    V2_SIGNATURE + bytes([0x31, 0x11]) + struct.pack("!H", 0),  # version 3
    V2_SIGNATURE + bytes([0x22, 0x11]) + struct.pack("!H", 0),  # command 2
    v2(1, 0x11, b"\x00" * 4),  # too short for IPv4
    V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", MAX_V2_LENGTH),  # too long
    # Each check on its own, the rest of the header valid (found by mutation testing:
    # with an empty address block, "too short" fired first and hid the check aimed at).
    V2_SIGNATURE[:-1] + b"X" + V2_TCP4[12:],  # the signature's last octet wrong
    bytes([0x31]).join([V2_TCP4[:12], V2_TCP4[13:]]),  # version 3, a valid IPv4 block
    bytes([0x22]).join([V2_TCP4[:12], V2_TCP4[13:]]),  # command 2, a valid IPv4 block
    v2(1, 0x11, V2_TCP4[16:24]),  # IPv4 addresses without their ports
    v2(1, 0x21, bytes(20)),  # IPv6: 20 octets of 36
    b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n",  # 108 octets
    b"PROXY UNKNOWN " + b"x" * 284 + b"\r\n",  # far over, CRLF and all in one read
    b"PROXY TCP4 192.0.2.1 198.51.100.2 05 25\r\n",  # a port's leading zero
    b"PROXY UNKNOWN a\rb\r\n",  # a bare CR
]


@pytest.mark.parametrize("header", BAD)
def test_bad_headers_are_refused(header: bytes) -> None:
    with pytest.raises(ProxyError):
        read_proxy_header(bytearray(header + bytes(64)))


@pytest.mark.parametrize("start", [b"PX", b"PROXYX", b"PROXY" + b"\t"])
def test_what_cannot_begin_a_v1_header_is_refused_at_once(start: bytes) -> None:
    # Without waiting for a line end: a client talking SMTP is told at its first octets.
    with pytest.raises(ProxyError, match="did not start with a PROXY header"):
        read_proxy_header(bytearray(start))


def test_v1_of_107_octets_without_crlf_is_refused() -> None:
    assert read_proxy_header(bytearray(b"PROXY UNKNOWN " + b"x" * 92)) is None  # 106: may still end
    with pytest.raises(ProxyError, match="107"):
        read_proxy_header(bytearray(b"PROXY UNKNOWN " + b"x" * 93))


def test_v1_without_crlf_is_refused_at_the_bound() -> None:
    buffer = bytearray(b"PROXY UNKNOWN " + b"x" * (MAX_V1_LENGTH - 20))
    assert read_proxy_header(buffer) is None
    buffer += b"x" * 10
    with pytest.raises(ProxyError, match="107"):
        read_proxy_header(buffer)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    buffer = bytearray(data)
    with contextlib.suppress(ProxyError):
        read_proxy_header(buffer)
    assert len(buffer) <= len(data)


# --- reading no further than the header (implicit TLS behind a proxy) ------------------------------
#
# The octets after the header are then the client's TLS handshake, which only the
# TLS layer may read: a reader that reads at most octets_left() each time must
# end exactly at the header's end, however the header arrives.


def read_bounded(stream: bytes, arrivals: list[int]) -> tuple[ProxyInfo | None, int]:
    """Read a header from ``stream`` as an adapter does: each read takes what has arrived,
    ``octets_left`` octets at most; ``arrivals`` are the sizes of the segments the network
    delivers, one more whenever nothing is left to read.  What was parsed, and how many
    octets of ``stream`` were read."""
    buffer, read, arrived = bytearray(), 0, 0
    segments = iter(arrivals)
    while True:
        bound = octets_left(buffer)
        assert bound >= 1, "asked for no octets with the header still incomplete"
        if arrived == read:
            arrived = min(len(stream), arrived + next(segments, len(stream)))
            if arrived == read:  # the stream ended before the header did
                return None, read
        chunk = stream[read : read + min(bound, arrived - read)]
        read += len(chunk)
        buffer += chunk
        info = read_proxy_header(buffer)
        if info is not None:
            assert buffer == b""  # nothing after the header was read
            return info, read


def _v1_tcp(family: str, source: str, destination: str, ports: tuple[int, int]) -> bytes:
    return f"PROXY {family} {source} {destination} {ports[0]} {ports[1]}\r\n".encode()


_ports = st.tuples(st.integers(0, 65535), st.integers(0, 65535))
_tlvs = st.binary(max_size=300)


def _tcp_headers(version: Literal[1, 2], ip: Literal[4, 6]) -> st.SearchStrategy[tuple[bytes, ProxyInfo]]:
    """PROXY v1 or v2 headers for TCP over IPv4 or IPv6 (``ip``), each with what it says."""

    def header(src: Any, dst: Any, ports: tuple[int, int], tlvs: bytes) -> tuple[bytes, ProxyInfo]:
        if version == 1:
            data = _v1_tcp(f"TCP{ip}", str(src), str(dst), ports)
        else:
            data = v2(1, 0x11 if ip == 4 else 0x21, src.packed + dst.packed + struct.pack("!HH", *ports) + tlvs)
        return data, ProxyInfo(version, (str(src), ports[0]), (str(dst), ports[1]))

    after = _tlvs if version == 2 else st.just(b"")  # (v1 has no TLVs)
    return st.builds(header, st.ip_addresses(v=ip), st.ip_addresses(v=ip), _ports, after)


#: Valid headers of every kind, each with what it says.
HEADERS = st.one_of(
    st.sampled_from(GOOD),
    _tcp_headers(1, 4),
    _tcp_headers(1, 6),
    st.builds(
        lambda text: (
            b"PROXY UNKNOWN" + (b" " + text if text is not None else b"") + b"\r\n",
            ProxyInfo(1, None, None),
        ),
        st.none() | st.binary(max_size=MAX_V1_LENGTH - 16).filter(lambda text: b"\r" not in text and b"\n" not in text),
    ),
    _tcp_headers(2, 4),
    _tcp_headers(2, 6),
    st.builds(lambda body: (v2(0, 0x11, body), ProxyInfo(2, None, None)), _tlvs),  # LOCAL, anything after it
)


@given(HEADERS, st.binary(min_size=1, max_size=64), st.lists(st.integers(1, 200), max_size=40))
def test_reads_bounded_by_octets_left_end_exactly_at_the_header_however_it_arrives(
    header_and_info: tuple[bytes, ProxyInfo], after: bytes, arrivals: list[int]
) -> None:
    header, expected = header_and_info
    # The octets after it (a ClientHello) may come in the same segment as the header's end.
    assert read_bounded(header + after, arrivals) == (expected, len(header))


@given(HEADERS)
def test_octets_left_never_passes_the_end_of_any_prefix_and_is_zero_at_it(
    header_and_info: tuple[bytes, ProxyInfo],
) -> None:
    header, _ = header_and_info
    for size in range(len(header)):
        assert 1 <= octets_left(header[:size]) <= len(header) - size
    assert octets_left(header) == 0
    assert octets_left(header + b"\x16\x03\x01") == -3  # past the end: by how much


def test_octets_left_reads_the_shortest_header_first_then_v1_to_its_crlf() -> None:
    assert octets_left(b"") == MIN_LENGTH == len(b"PROXY UNKNOWN\r\n")  # and v2's fixed part is 16
    assert read_bounded(b"PROXY UNKNOWN\r\n\x16\x03", []) == (ProxyInfo(1, None, None), MIN_LENGTH)
    assert octets_left(b"PROXY TCP4 192.0.2.1") == 2  # "\r\n" may come next
    assert octets_left(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r") == 1
    assert octets_left(V2_TCP4[:15]) == 1
    assert octets_left(V2_TCP4[:16]) == 12  # exactly the length the fixed part declares


# --- the core: ServerConnection.max_read ------------------------------------------------------------

BEHIND_PROXY_ON_465 = ServerConfig(proxy_protocol=True, implicit_tls=True, tls_handshake_timeout=7.0)
HEADER = b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 465\r\n"
#: The first octets of a ClientHello: a TLS handshake record.
HELLO = b"\x16\x03\x01\x02\x00\x01"


def test_max_read_bounds_the_reads_of_the_header_on_an_implicit_tls_port_only() -> None:
    assert ServerConnection(ServerConfig(proxy_protocol=True)).max_read is None  # after it comes SMTP
    assert ServerConnection(ServerConfig(implicit_tls=True)).max_read is None
    conn = ServerConnection(BEHIND_PROXY_ON_465)
    assert conn.max_read == MIN_LENGTH
    conn.receive_data(HEADER[:15])
    assert conn.next_event() is NEED_DATA
    assert conn.max_read == 2
    conn.receive_data(HEADER[15:-1])
    assert conn.next_event() is NEED_DATA
    assert conn.max_read == 1  # "\r" in, "\n" may be next
    conn.receive_data(HEADER[-1:])
    assert conn.max_read == 0  # whole: next_event() has it
    assert conn.next_event() == ProxyHeader(("192.0.2.1", 40000), ("198.51.100.2", 465), 1)
    assert conn.max_read is None  # inside TLS, reads are as large as ever
    assert conn.tls_active  # the handshake comes before the greeting
    conn.accept()
    assert conn.data_to_send().startswith(b"220 ")


@pytest.mark.parametrize("after", [HELLO, b"EHLO x\r\n"])
def test_octets_read_past_the_header_on_an_implicit_tls_port_fail_the_connection(after: bytes) -> None:
    # They are the TLS handshake's: never read as SMTP, never dropped without a word.
    conn = ServerConnection(BEHIND_PROXY_ON_465)
    conn.receive_data(HEADER + after)
    with pytest.raises(LocalProtocolError, match=f"{len(after)} octets were read past the PROXY header"):
        conn.next_event()
    assert conn.state is State.CLOSED
    assert conn.data_to_send() == b""  # not a word: the client expects a TLS handshake
    assert not conn.reply_due
    assert isinstance(conn.next_event(), ConnectionClosed)


# --- the dispatcher: the header, then the handshake, then the greeting ------------------------------


class Hooks(Handler):
    def __init__(self) -> None:
        self.opened_with: tuple[Any, TlsInfo | None, bool] | None = None
        self.closed_with: tuple[TlsInfo | None, bool] | None = None

    def connection_opened(self, session: Session) -> None:
        self.opened_with = (session.peer, session.tls_info, session.tls)

    def connection_closed(self, session: Session) -> None:
        self.closed_with = (session.tls_info, session.tls)


TLS_INFO = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384")


def drive(
    config: ServerConfig,
    stream: bytes,
    inside_tls: list[bytes],
    *,
    handshake: TlsInfo | None = TLS_INFO,
    honour_limits: bool = True,
) -> tuple[list[tuple[Any, ...]], Hooks]:
    """Drive a Dispatcher as an adapter would: reads take from ``stream`` (``limit`` octets at
    most, unless told not to honour it) until a StartTls, then come from ``inside_tls``.
    What it asked for, in order, and the handler."""
    hooks = Hooks()
    actions = Dispatcher(config, Session(peer=("203.0.113.9", 5555))).actions()
    done: list[tuple[Any, ...]] = []
    result: Any = None
    tls = False
    with contextlib.suppress(StopIteration):
        while True:
            action = actions.send(result)
            result = None
            if isinstance(action, Receive):
                done.append(("read", action.limit, action.send))
                if tls:
                    result = inside_tls.pop(0) if inside_tls else b""
                else:
                    size = len(stream) if action.limit is None or not honour_limits else action.limit
                    result, stream = stream[:size], stream[size:]
            elif isinstance(action, StartTls):
                done.append(("handshake", action.timeout, stream))
                tls, result = True, handshake
            elif isinstance(action, CallHook):
                done.append(("hook", action.name))
                result = getattr(hooks, action.name)(*action.args)
            elif isinstance(action, Send):
                done.append(("write", action.data))
            else:
                assert isinstance(action, Close)
                done.append(("close",))
    return done, hooks


def test_the_dispatcher_reads_the_header_within_bounds_then_asks_for_the_handshake_then_greets() -> None:
    done, hooks = drive(BEHIND_PROXY_ON_465, HEADER + HELLO, [b"QUIT\r\n"])
    reads = [step for step in done if step[0] == "read"]
    assert reads[0] == ("read", MIN_LENGTH, b"")
    handshake = done.index(("handshake", 7.0, HELLO))  # the ClientHello left whole for the TLS layer
    assert all(step[0] == "read" and step[1] is not None for step in done[:handshake])
    assert handshake > 2  # 15 octets, then two at a time
    after = done[handshake + 1 :]
    assert after[0] == ("hook", "connection_opened")  # after the handshake, as on port 465 without a proxy
    assert after[1][0] == "read" and after[1][1] is None and after[1][2].startswith(b"220 ")  # greeted inside TLS
    assert ("hook", "tls_established") not in done  # that hook is STARTTLS's, as on port 465
    assert done[-2:] == [("close",), ("hook", "connection_closed")]
    assert hooks.opened_with == (("192.0.2.1", 40000), TLS_INFO, True)


def test_without_tls_the_header_is_read_as_before() -> None:
    # SMTP follows it: read as it comes (and a command in the same read is early talk).
    done, _ = drive(ServerConfig(proxy_protocol=True), HEADER + b"QUIT\r\n", [])
    assert done[0] == ("read", None, b"")
    assert not [step for step in done if step[0] == "handshake"]


@pytest.mark.parametrize(
    "stream",
    [HEADER + HELLO, V2_TCP4 + HELLO, v2(0, 0x00, b"") + HELLO, b"PROXY UNKNOWN\r\n" + HELLO],
    ids=["v1", "v2", "v2-local", "v1-unknown"],
)
def test_a_failed_handshake_after_the_header_ends_the_connection_without_a_word(stream: bytes) -> None:
    done, hooks = drive(BEHIND_PROXY_ON_465, stream, [], handshake=None)
    assert done[-3:] == [("handshake", 7.0, HELLO), ("close",), ("hook", "connection_closed")]
    assert not [step for step in done if step[0] == "write" or (step[0] == "read" and step[2])]
    assert hooks.opened_with is None
    assert hooks.closed_with == (None, False)  # never encrypted


def test_an_adapter_that_reads_past_the_header_fails_the_connection_without_a_word(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A bug in an adapter: the ClientHello is in the core, where it must not be read as SMTP.
    done, hooks = drive(BEHIND_PROXY_ON_465, HEADER + HELLO, [], honour_limits=False)
    assert done == [("read", MIN_LENGTH, b""), ("close",), ("hook", "connection_closed")]
    assert hooks.opened_with is None
    (error,) = [record for record in caplog.records if record.levelno >= logging.ERROR]  # said, as a bug
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], LocalProtocolError)
    assert "read past the PROXY header" in str(error.exc_info[1])
