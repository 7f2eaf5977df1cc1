"""A Maildir store that never loses an acknowledged message.

The order of operations is the whole point (it is qmail's Maildir protocol):
write the message to ``tmp/``, ``fsync`` it, ``rename`` it into ``new/``, ``fsync``
the ``new/`` directory so the rename itself is on disk, and only *then* let the
server answer 250.  A process killed at any moment leaves either nothing in
``new/`` (and the client was not told 250, so it will retry) or the whole message.
A commit that fails (a full disk, say) removes what it made before the error
reaches the server, which answers 451: the client's retry must not find a copy
already delivered, and ``tmp/`` must not fill with orphans.

Content is streamed: :meth:`MaildirStore.begin` opens the file and writes the
trace headers (RFC 5321 §4.4: ``Return-Path`` and ``Received``), each chunk is
written as it arrives, and memory stays bounded whatever the message size.  The
content itself is stored byte-exact, CRLF line endings included.

Mail is private: the store makes its directories 0700 and its messages 0600
(less if the umask says so), as Postfix's and Dovecot's Maildir deliveries do,
whatever the umask would allow others to read.  Directories that already exist
keep their mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO, Literal

from smtpcore._abnf import CONTROL_RE, DOT_STRING_UTF8
from smtpcore._address import address_literal, exact_a_labels

__all__ = ["Delivery", "MaildirStore", "TraceInfo"]

_counter = itertools.count()
# A recipient becomes a directory name: kept to a safe alphabet, every other octet
# of its UTF-8 written %XX (so "%" too), so that two recipients never share one.
_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")
_DOT_STRING = re.compile(DOT_STRING_UTF8)
_QUOTED_PAIR = re.compile(r"\\(.)")


#: The longest file name Linux, macOS and Windows file systems allow (NAME_MAX, octets).
NAME_MAX = 255


def domain_key(domain: str) -> str:
    """``domain`` as the allowlists compare it: in lower case, an IDN as its A-label.

    ``bücher.example`` and ``xn--bcher-kva.example`` are one domain (RFC 5890); a
    client without SMTPUTF8, which is most, must write the A-label (RFC 6531 §3.2),
    one with it may write either.  The conversion is the stdlib's IDNA codec, which
    follows IDNA 2003 and maps some names to others (``straße`` to ``strasse``), so
    it is used only when the A-label reads back as the same name, as the client
    converts (``smtpcore._address.exact_a_labels``); any other domain is compared as
    given, in lower case, as are address literals.  ``straße.example`` therefore
    needs its IDNA 2008 A-label, ``xn--strae-oqa.example``, given as well.
    """
    lower = domain.lower()
    if lower.isascii() or lower.startswith("["):  # (the codec leaves ASCII labels as they are)
        return lower
    return exact_a_labels(lower) or lower


def address_key(address: str) -> str:
    """``address`` as the sink's allowlists and per-recipient Maildirs key it: in lower case,
    without quotes its local part does not need, its domain as :func:`domain_key` writes it."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower()  # (<postmaster>, the one address without a domain)
    return f"{_unquoted(local).lower()}@{domain_key(domain)}"


def _unquoted(local: str) -> str:
    """A quoted local part that needs no quotes, without them: ``"you"`` is ``you``.

    The quotes and the backslashes of quoted pairs are not part of the local
    part (RFC 5322 §3.2.4, which RFC 5321 §4.1.2 follows), so ``"postmaster"@host``
    is postmaster and ``"y\\ou"@localhost`` shares ``you@localhost``'s Maildir,
    as Postfix reads them.  One that needs its quotes (``"a b"``) keeps them.
    """
    if len(local) > 1 and local[0] == '"' == local[-1]:
        text = _QUOTED_PAIR.sub(r"\1", local[1:-1])
        if _DOT_STRING.fullmatch(text):
            return text
    return local


def _directory_name(recipient: str) -> str:
    """``recipient`` as a directory name: safe, and one name for one address (as :func:`address_key`
    writes it: ``u@Bücher.example`` and ``u@xn--bcher-kva.example`` share one).

    An address may be up to 254 octets and its escapes triple some, so a name
    past NAME_MAX keeps a readable start and ends with "~" and a digest of the
    whole address: "~" is always escaped, so no shorter name can look the same.
    """
    lower = address_key(recipient)
    name = _UNSAFE.sub(lambda m: "".join(f"%{octet:02X}" for octet in m.group().encode()), lower)
    if len(name) > NAME_MAX:  # (all ASCII now: characters are octets)
        digest = hashlib.sha256(lower.encode()).hexdigest()[:32]
        name = f"{name[: NAME_MAX - len(digest) - 1]}~{digest}"
    return name


@dataclass(frozen=True)
class TraceInfo:
    """What the trace headers say about the message's arrival."""

    sender: str
    recipients: Sequence[str]
    helo: str
    peer_host: str
    hostname: str
    #: "SMTP", "ESMTP", "ESMTPS" (TLS), "ESMTPSA" (TLS and AUTH), "LMTP"... (RFC 3848),
    #: "UTF8SMTPS"... for a transaction that used SMTPUTF8 (RFC 6531 §3.7.3)
    protocol: str


def _maildir(path: Path) -> Path:
    private_directory(path)
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)
    return path


def private_directory(path: Path) -> None:
    """``mkdir -p`` whose last directory only the owner may enter (its parents as the umask says)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)


def open_private(path: Path, mode: Literal["xb", "ab"]) -> BinaryIO:
    """``open(path, mode)`` in binary; a file it creates is readable by its owner only."""
    file: BinaryIO = open(path, mode, opener=lambda name, flags: os.open(name, flags, 0o600))  # noqa: SIM115
    return file


def _unique_name(hostname: str) -> str:
    now = time.time()
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    return f"{seconds}.M{micros}P{os.getpid()}Q{next(_counter)}.{hostname.replace('/', '_').replace(':', '_')}"


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Delivery:
    """One message being written; :meth:`commit` makes it durable, :meth:`abort` drops it."""

    def __init__(self, file: BinaryIO, tmp_path: Path, targets: list[Path], name: str) -> None:
        self._file = file
        self._tmp_path = tmp_path
        self._targets = targets
        self._name = name
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.size += len(data)

    def commit(self) -> list[Path]:
        """fsync, rename into every target's ``new/``, fsync the directories; return the paths.

        All or nothing, as far as the file system allows: if any step fails, every
        name this delivery made in a ``tmp/`` or ``new/`` is removed before the error
        propagates.  The client is then told 4xx and sends the message again, so a
        recipient who kept a copy would get one more on every retry.
        """
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            # Extra recipients' Maildirs get a hard link in their tmp/, so each
            # appears in new/ through an atomic rename, never half-written.  Every
            # link is made before any rename: a failure there shows nobody the message.
            staged = [(self._tmp_path, self._targets[0])]
            for target in self._targets[1:]:
                link = target / "tmp" / self._name
                os.link(self._tmp_path, link)
                staged.append((link, target))
            paths = []
            for source, target in staged:
                final = target / "new" / self._name
                try:
                    os.rename(source, final)
                except FileNotFoundError:
                    _maildir(target)  # new/ was removed while we ran (see MaildirStore.begin)
                    os.rename(source, final)
                paths.append(final)
            for target in self._targets:
                _fsync_directory(target / "new")
        except BaseException:
            self._remove_everywhere()
            raise
        return paths

    def abort(self) -> None:
        try:
            # After a full disk the buffer still holds what could not be written, and
            # close() tries again and raises again: the file is closed all the same, and
            # its name must still leave tmp/.
            with contextlib.suppress(OSError):
                self._file.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp_path)

    def _remove_everywhere(self) -> None:
        """Undo a failed commit: close the file, unlink its name in every target's tmp/ and new/.

        The name is unique to this delivery, so whatever has it is ours.  Best effort:
        the commit's own error is the one to report, not a failure to clean up after it.
        (A mail reader that already moved the message on to cur/ keeps it: that much
        the file system cannot take back.)
        """
        with contextlib.suppress(OSError):
            self._file.close()  # (a close after a failed flush raises the flush's error again)
        for target in self._targets:
            for sub in ("tmp", "new"):
                with contextlib.suppress(OSError):
                    os.unlink(target / sub / self._name)


class MaildirStore:
    """Messages go to ``root`` (one Maildir), or to ``root/<recipient>/`` with ``per_recipient``."""

    def __init__(self, root: str | os.PathLike[str], per_recipient: bool = False) -> None:
        self.root = Path(root)
        self.per_recipient = per_recipient
        if per_recipient:
            private_directory(self.root)
        else:
            _maildir(self.root)

    def _targets(self, recipients: Sequence[str]) -> list[Path]:
        if not self.per_recipient:
            return [self.root]
        names = dict.fromkeys(_directory_name(r) for r in recipients)
        return [_maildir(self.root / name) for name in names]

    def free_space(self) -> int | None:
        """Octets free for an unprivileged user on the Maildir's file system, or None if it cannot say."""
        try:
            stats = os.statvfs(self.root)
        except (OSError, AttributeError):  # (no statvfs on Windows)
            return None
        return stats.f_bavail * stats.f_frsize

    def begin(self, trace: TraceInfo) -> Delivery:
        """Open a new message in ``tmp/`` and write its trace headers."""
        targets = self._targets(trace.recipients)
        name = _unique_name(trace.hostname)
        tmp_path = targets[0] / "tmp" / name
        try:
            file = open_private(tmp_path, "xb")  # closed by Delivery.commit/abort
        except FileNotFoundError:
            # The Maildir was removed while we ran (a user cleaning up a test sink,
            # say).  Make it again, as Postfix's local delivery does, rather than
            # answer 451 to every message until someone restarts us.
            _maildir(targets[0])
            file = open_private(tmp_path, "xb")
        delivery = Delivery(file, tmp_path, targets, name)
        try:
            delivery.write(trace_headers(trace))
        except BaseException:
            # No Delivery reaches the caller, so nothing else would close the file or
            # remove its name from tmp/ (a full disk, or trace fields refused).
            delivery.abort()
            raise
        return delivery


def _address_literal(host: str) -> str:
    """The client's address as RFC 5321 §4.4's TCP-info wants it: ``[192.0.2.1]`` or
    ``[IPv6:2001:db8::1]``; empty for what is no IP address (a Unix socket)."""
    try:
        return address_literal(host)
    except ValueError:
        return ""


def trace_headers(trace: TraceInfo) -> bytes:
    """``Return-Path`` and ``Received`` (RFC 5321 §4.4), with CRLF line endings."""
    fields = [trace.sender, trace.helo, trace.peer_host, trace.hostname, trace.protocol, *trace.recipients]
    if any(CONTROL_RE.search(field) for field in fields):
        # The core never produces such values; a caller that builds TraceInfo by hand might.
        raise ValueError("trace header fields must not contain control characters")
    for_clause = f"\r\n\tfor <{trace.recipients[0]}>" if len(trace.recipients) == 1 else ""
    tcp_info = _address_literal(trace.peer_host)
    received = (
        f"Received: from {trace.helo}{f' ({tcp_info})' if tcp_info else ''}\r\n"
        f"\tby {trace.hostname} (smtpcore) with {trace.protocol}{for_clause};\r\n"
        f"\t{formatdate(localtime=True)}\r\n"
    )
    return f"Return-Path: <{trace.sender}>\r\n{received}".encode()
