"""A scripted fake SMTP server for testing clients: it plays the replies a test asks for.

Why it is built this way
------------------------
Testing a *client* needs a server that misbehaves on cue: refuses one
recipient, greylists, answers 421 in the middle of a session, hangs up during
the content, takes its time.  A real server with a handler can do some of that;
a fake that simply answers line by line can do all of it, and its code is short
enough to trust.  So this is not smtpcore's state machine: it reads one line,
looks for the first matching rule (``on(...)``), and otherwise answers what a
plain, well-behaved server would.  It keeps just enough state to be realistic
(DATA with no accepted recipient gets 554; LMTP gets one reply per recipient).

Every read is bounded (``max_line`` per line, ``max_message`` per message), every
socket waits in short slices so a stop is noticed within :data:`TICK` seconds,
and :meth:`FakeSMTPServer.stop` joins every thread it started.  It listens on
``127.0.0.1`` with an ephemeral port, nothing else.  No TLS: STARTTLS is refused
with 454 unless a rule says otherwise.

A line is recorded in ``transcript``, and an accepted message in ``messages``,
*before* it is answered, so whatever a client saw a reply to is already there
when the client returns.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from smtpcore import Reply

__all__ = ["FakeMessage", "FakeSMTPServer", "ReplySpec"]

#: A reply as a test writes it: ``"550 5.1.1 No such user"`` (``\n`` separates the lines of a
#: multi-line reply; the code is written once, at the start) or a ``smtpcore.Reply``.
ReplySpec = str | Reply

HOST = "127.0.0.1"
#: How often a waiting thread looks at the stop flag.
TICK = 0.1

_REPLY_RE = re.compile(r"([2-5][0-9][0-9])(?:[ -](.*))?\Z", re.S)
_PATH_RE = re.compile(r"(?i)(?:FROM|TO):\s*<([^>]*)>")
_PSEUDO = ("CONNECT", ".")


def format_reply(spec: ReplySpec) -> tuple[int, bytes]:
    """The code and the wire bytes of a reply."""
    if isinstance(spec, Reply):
        prefix = f"{spec.enhanced} " if spec.enhanced else ""
        code, lines = spec.code, [prefix + line for line in spec.text]
    else:
        match = _REPLY_RE.match(spec)
        if match is None:
            raise ValueError(f"a reply starts with a three-digit code from 200 to 599, not {spec!r}")
        code, lines = int(match.group(1)), (match.group(2) or "").split("\n")
    if any(c in line for line in lines for c in "\r\0"):
        raise ValueError(f"reply text may not contain CR or NUL: {spec!r}")
    out = [f"{code}-{line}" for line in lines[:-1]] + [f"{code} {lines[-1]}"]
    return code, "".join(line + "\r\n" for line in out).encode("utf-8")


@dataclass
class _Rule:
    command: str
    reply: ReplySpec | None
    match: str | None
    times: int | None
    delay: float
    disconnect: bool
    cut_after: int | None = None


@dataclass
class FakeMessage:
    """A message the fake accepted (its end of data got a 2xx reply)."""

    mail_from: str
    recipients: list[str]
    #: The content as the client sent it, dot-stuffing removed, line ends untouched.
    data: bytes


@dataclass
class _Transaction:
    mail_from: str | None = None
    recipients: list[str] = field(default_factory=list)
    chunks: bytearray = field(default_factory=bytearray)


class _Closed(Exception):
    """The client left, a bound was exceeded, a rule hung up, or the server is stopping."""


class _Connection:
    """One client socket with a bounded line reader."""

    def __init__(self, server: FakeSMTPServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.buffer = bytearray()
        sock.settimeout(TICK)

    def _fill(self) -> None:
        deadline = time.monotonic() + self.server.idle_timeout
        while not self.server._stopping.is_set():
            if time.monotonic() > deadline:
                raise _Closed("idle timeout")
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise _Closed(str(exc)) from None
            if not data:
                raise _Closed("the client closed the connection")
            self.buffer += data
            return
        raise _Closed("stopping")

    def readline(self) -> bytes:
        """One line with its line end (CRLF or a bare LF); at most ``max_line`` octets."""
        limit = self.server.max_line
        start = 0
        while True:
            end = self.buffer.find(b"\n", start)
            if end >= 0 and end < limit:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) >= limit:
                self.send(b"500 5.5.2 Line too long\r\n")
                raise _Closed("line too long")
            start = len(self.buffer)
            self._fill()

    def read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def read_content_prefix(self, count: int) -> None:
        """Wait for ``count`` octets of content, or for all of it if the message is shorter."""
        while len(self.buffer) < count and b"\r\n.\r\n" not in self.buffer and not self.buffer.startswith(b".\r\n"):
            self._fill()

    def send(self, data: bytes) -> None:
        self.server._note("S", data)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise _Closed(str(exc)) from None


class FakeSMTPServer:
    """A scripted SMTP/LMTP server on ``127.0.0.1`` for testing clients (see docs/testing.md).

    Script it with :meth:`on` and the shortcuts (:meth:`refuse_recipient`,
    :meth:`greylist`, :meth:`close_at`, :meth:`disconnect_during_data`,
    :meth:`slow`); read back ``transcript``, ``commands`` and ``messages``.
    """

    __test__ = False

    def __init__(
        self,
        hostname: str = "localhost",
        *,
        max_line: int = 65536,
        max_message: int = 32 * 1024 * 1024,
        idle_timeout: float = 30.0,
    ) -> None:
        self.hostname = hostname
        #: The 220 greeting (a rule on ``"CONNECT"`` overrides it).
        self.greeting: ReplySpec = f"220 {hostname} ESMTP fake server ready"
        #: The EHLO/LHLO keywords, one per line after the host name.
        self.capabilities: list[str] = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", f"SIZE {max_message}"]
        self.max_line = max_line
        self.max_message = max_message
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._rules: list[_Rule] = []
        self._transcript: list[str] = []
        self._commands: list[str] = []
        self._conversation: list[str] = []
        self._messages: list[FakeMessage] = []
        self._connections = 0
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()

    # --- the script ----------------------------------------------------------------------------

    def on(
        self,
        command: str,
        reply: ReplySpec | None = None,
        *,
        match: str | None = None,
        times: int | None = None,
        delay: float = 0.0,
        disconnect: bool = False,
    ) -> None:
        """Answer ``command`` with ``reply`` instead of the usual one.

        ``command`` is a verb (``"EHLO"``, ``"MAIL"``, ``"RCPT"``, ``"DATA"``,
        ``"AUTH"``, ...), ``"."`` for the end of the content, or ``"CONNECT"`` for
        the greeting.  ``match``: only lines containing this text (case
        insensitive).  ``times``: only the first n matching lines.  ``delay``:
        wait this many seconds before answering.  ``disconnect``: close the
        connection after the reply, or instead of any reply if ``reply`` is
        None.  The first rule that matches wins; otherwise the usual reply.
        """
        command = command.upper()
        if reply is not None:
            format_reply(reply)  # fail now, in the test, not in the server thread
        if match is not None and command in _PSEUDO:
            raise ValueError(f"match= does not apply to {command!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._rules.append(_Rule(command, reply, match, times, delay, disconnect))

    def refuse_recipient(self, address: str, reply: ReplySpec = "550 5.1.1 No such user here") -> None:
        """Refuse RCPT TO:<address> (every time)."""
        self.on("RCPT", reply, match=f"<{address}>")

    def greylist(
        self,
        address: str | None = None,
        reply: ReplySpec = "451 4.7.1 Greylisted, please try again later",
        times: int | None = 1,
    ) -> None:
        """Answer RCPT (for ``address``, or any) with a 4xx the first ``times`` times (None: always)."""
        self.on("RCPT", reply, match=f"<{address}>" if address is not None else None, times=times)

    def close_at(
        self,
        command: str,
        reply: ReplySpec | None = "421 4.3.2 Service not available, closing transmission channel",
    ) -> None:
        """Answer ``command`` with ``reply`` (421 by default; None: no reply at all), then hang up."""
        self.on(command, reply, disconnect=True)

    def disconnect_during_data(self, after_bytes: int = 0) -> None:
        """Answer DATA with 354, read ``after_bytes`` octets of content, then hang up without a reply."""
        self.on("DATA", "354 End data with <CR><LF>.<CR><LF>")
        with self._lock:
            self._rules[-1].cut_after = after_bytes

    def slow(self, command: str, seconds: float, reply: ReplySpec | None = None) -> None:
        """Wait ``seconds`` before answering ``command`` (with the usual reply unless ``reply`` is given)."""
        self.on(command, reply, delay=seconds)

    def reset(self) -> None:
        """Drop every rule (the greeting and capabilities stay)."""
        with self._lock:
            self._rules.clear()

    # --- what the clients sent -------------------------------------------------------------------

    @property
    def transcript(self) -> list[str]:
        """Every line the clients sent, in order, without its line end (commands, content, AUTH)."""
        with self._lock:
            return list(self._transcript)

    @property
    def commands(self) -> list[str]:
        """The command lines only (no message content, no AUTH continuation lines)."""
        with self._lock:
            return list(self._commands)

    @property
    def conversation(self) -> list[str]:
        """Both directions, ``"C: ..."`` and ``"S: ..."``: print it when a client test fails."""
        with self._lock:
            return list(self._conversation)

    @property
    def messages(self) -> list[FakeMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """How many connections were accepted so far."""
        with self._lock:
            return self._connections

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[FakeMessage]:
        """Block until ``count`` messages were accepted; ``TimeoutError`` (with the conversation) if not."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                tail = "\n".join(self._conversation[-20:])
                raise TimeoutError(
                    f"expected {count} message(s) within {timeout:g} s; {len(self._messages)} accepted. "
                    f"Last lines:\n{tail}"
                )
            return list(self._messages)

    def clear(self) -> None:
        """Forget the transcript and the messages (the rules stay)."""
        with self._lock:
            self._transcript.clear()
            self._commands.clear()
            self._conversation.clear()
            self._messages.clear()

    def _note(self, who: str, data: bytes, *, command: bool = False) -> None:
        text = data.decode("utf-8", "replace")
        with self._lock:
            if who == "C":
                line = text.removesuffix("\n").removesuffix("\r")
                self._transcript.append(line)
                if command:
                    self._commands.append(line)
                self._conversation.append(f"C: {line}")
            else:
                self._conversation.extend(f"S: {line}" for line in text.splitlines())

    # --- running -------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def address(self) -> tuple[str, int]:
        assert self._listener is not None, "the fake server is not running"
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> FakeSMTPServer:
        assert self._listener is None, "already started"
        self._listener = socket.create_server((HOST, 0))
        self._listener.settimeout(TICK)
        self._spawn(self._accept_loop, "fake-smtp-accept")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, hang up on every client, and join every thread."""
        self._stopping.set()
        with self._lock:
            sockets = list(self._sockets)
        if self._listener is not None:
            sockets.append(self._listener)  # on Linux this wakes accept() too
        for sock in sockets:  # wake a thread blocked in recv at once
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        if alive:
            raise RuntimeError(f"fake SMTP server threads did not stop: {alive}")

    def __enter__(self) -> FakeSMTPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connections += 1
                self._sockets.add(sock)
            self._spawn(self._session, "fake-smtp-session", sock)

    def _session(self, sock: socket.socket) -> None:
        conn = _Connection(self, sock)
        try:
            self._converse(conn)
        except _Closed:
            pass
        finally:
            with self._lock:
                self._sockets.discard(sock)
            sock.close()

    # --- the conversation --------------------------------------------------------------------------

    def _rule(self, command: str, line: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.command != command or (rule.match is not None and rule.match.lower() not in line.lower()):
                    continue
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self._rules.remove(rule)
                return rule
        return None

    def _answer(self, conn: _Connection, command: str, line: str, usual: ReplySpec) -> int:
        """Send the rule's reply or the usual one; return its code.  A rule may hang up (``_Closed``)."""
        rule = self._rule(command, line)
        if rule is not None and rule.delay and self._stopping.wait(rule.delay):
            raise _Closed("stopping")
        if rule is not None and rule.reply is None and rule.disconnect:
            raise _Closed(f"a rule hung up at {command}")
        code, data = format_reply(rule.reply if rule is not None and rule.reply is not None else usual)
        conn.send(data)
        if rule is not None and rule.disconnect:
            raise _Closed(f"a rule hung up at {command}")
        if rule is not None and rule.cut_after is not None:
            conn.read_content_prefix(rule.cut_after)
            raise _Closed("a rule hung up during the content")
        return code

    def _ehlo(self) -> str:
        return "\n".join([f"250 {self.hostname}", *self.capabilities])

    def _converse(self, conn: _Connection) -> None:
        self._answer(conn, "CONNECT", "", self.greeting)
        txn = _Transaction()
        lmtp = False
        while True:
            raw = conn.readline()
            self._note("C", raw, command=True)
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb, _, argument = line.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "LHLO"):
                lmtp = verb == "LHLO"
                if 200 <= self._answer(conn, verb, line, self._ehlo()) < 300:
                    txn = _Transaction()
            elif verb == "HELO":
                if 200 <= self._answer(conn, verb, line, f"250 {self.hostname}") < 300:
                    txn = _Transaction()
            elif verb == "MAIL":
                if 200 <= self._answer(conn, verb, line, "250 2.1.0 Sender OK") < 300:
                    txn = _Transaction(mail_from=_path(argument))
            elif verb == "RCPT":
                usual = "250 2.1.5 Recipient OK" if txn.mail_from is not None else "503 5.5.1 Need MAIL first"
                if 200 <= self._answer(conn, verb, line, usual) < 300:
                    txn.recipients.append(_path(argument))
            elif verb == "DATA":
                usual = "354 End data with <CR><LF>.<CR><LF>" if txn.recipients else "554 5.5.1 No valid recipients"
                if self._answer(conn, verb, line, usual) == 354:
                    self._end_of_message(conn, txn, self._content(conn), lmtp)
                    txn = _Transaction()
            elif verb == "BDAT":
                txn = self._bdat(conn, txn, line, lmtp)
            elif verb == "AUTH":
                self._auth(conn, line)
            elif verb == "RSET":
                self._answer(conn, verb, line, "250 2.0.0 OK")
                txn = _Transaction()
            elif verb == "QUIT":
                self._answer(conn, verb, line, "221 2.0.0 Bye")
                return
            else:
                usual = {
                    "NOOP": "250 2.0.0 OK",
                    "VRFY": "252 2.5.2 Cannot VRFY user, but will accept message",
                    "STARTTLS": "454 4.7.0 TLS not available",
                    "HELP": "214 2.0.0 This is a fake server",
                }.get(verb, "500 5.5.2 Command not recognized")
                self._answer(conn, verb, line, usual)

    def _content(self, conn: _Connection) -> bytes:
        content = bytearray()
        while True:
            raw = conn.readline()
            self._note("C", raw)
            if raw in (b".\r\n", b".\n"):
                return bytes(content)
            content += raw[1:] if raw.startswith(b".") else raw
            if len(content) > self.max_message:
                conn.send(b"552 5.3.4 Message too big for the fake server\r\n")
                raise _Closed("message too big")

    def _end_of_message(self, conn: _Connection, txn: _Transaction, content: bytes, lmtp: bool) -> None:
        rule = self._rule(".", "")
        if rule is not None and rule.delay and self._stopping.wait(rule.delay):
            raise _Closed("stopping")
        if rule is not None and rule.reply is None and rule.disconnect:
            raise _Closed("a rule hung up at the end of the content")
        code, data = format_reply(rule.reply if rule is not None and rule.reply is not None else "250 2.0.0 OK: queued")
        if 200 <= code < 300:  # recorded before the client hears 250, so it is there when the client returns
            with self._changed:
                self._messages.append(FakeMessage(txn.mail_from or "", list(txn.recipients), content))
                self._changed.notify_all()
        conn.send(data * (len(txn.recipients) if lmtp else 1))
        if rule is not None and rule.disconnect:
            raise _Closed("a rule hung up after the content")

    def _bdat(self, conn: _Connection, txn: _Transaction, line: str, lmtp: bool) -> _Transaction:
        words = line.split()
        if len(words) not in (2, 3) or not words[1].isdigit() or (len(words) == 3 and words[2].upper() != "LAST"):
            self._answer(conn, "BDAT", line, "501 5.5.4 Syntax: BDAT size [LAST]")
            return txn
        size, last = int(words[1]), len(words) == 3
        if len(txn.chunks) + size > self.max_message:
            conn.send(b"552 5.3.4 Message too big for the fake server\r\n")
            raise _Closed("message too big")
        chunk = conn.read_exactly(size)
        self._note("C", chunk)
        txn.chunks += chunk
        if not last:
            self._answer(conn, "BDAT", line, f"250 2.0.0 {size} octets received")
            return txn
        if not txn.recipients:
            self._answer(conn, "BDAT", line, "554 5.5.1 No valid recipients")
        else:
            self._end_of_message(conn, txn, bytes(txn.chunks), lmtp)
        return _Transaction()

    def _auth(self, conn: _Connection, line: str) -> None:
        words = line.split()
        mechanism = words[1].upper() if len(words) > 1 else ""
        prompts = {"PLAIN": ["334 "], "LOGIN": ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"]}.get(mechanism)
        if prompts is None:
            self._answer(conn, "AUTH", line, "504 5.5.4 Unrecognized authentication type")
            return
        for prompt in prompts[len(words) - 2 :]:  # an initial response answers the first prompt
            conn.send(format_reply(prompt)[1])
            response = conn.readline()
            self._note("C", response)
            if response.strip() == b"*":
                conn.send(b"501 5.7.0 Authentication cancelled\r\n")
                return
        self._answer(conn, "AUTH", line, "235 2.7.0 Authentication successful")


def _path(argument: str) -> str:
    match = _PATH_RE.search(argument)
    return match.group(1) if match else argument.strip()
