"""The Maildir store: durable, streamed, byte-exact, never half-visible."""

from __future__ import annotations

import dataclasses
import email
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.maildir import MaildirStore, TraceInfo, trace_headers
from adapters.passwords import hash_password, load_auth_file, verify_password

TRACE = TraceInfo(
    sender="alice@example.org",
    recipients=["bob@example.com"],
    helo="client.example.org",
    peer_host="127.0.0.1",
    hostname="mx.example.com",
    protocol="ESMTPS",
)


def test_message_is_only_in_new_after_commit(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path / "maildir")
    delivery = store.begin(TRACE)
    delivery.write(b"Subject: hi\r\n\r\nline one\r\n")
    delivery.write(b"line two\r\n")
    assert list((tmp_path / "maildir" / "new").iterdir()) == []
    assert len(list((tmp_path / "maildir" / "tmp").iterdir())) == 1
    paths = delivery.commit()
    assert [p.parent.name for p in paths] == ["new"]
    assert list((tmp_path / "maildir" / "tmp").iterdir()) == []
    data = paths[0].read_bytes()
    assert data.endswith(b"Subject: hi\r\n\r\nline one\r\nline two\r\n")
    parsed = email.message_from_bytes(data)
    assert parsed["Return-Path"] == "<alice@example.org>"
    assert "from client.example.org ([127.0.0.1])" in parsed["Received"]
    assert "for <bob@example.com>" in parsed["Received"]
    assert "with ESMTPS" in parsed["Received"]


@pytest.mark.parametrize(
    ("peer_host", "from_clause"),
    [
        ("192.0.2.7", "from client.example.org ([192.0.2.7])"),
        ("2001:db8::1", "from client.example.org ([IPv6:2001:db8::1])"),
        ("::ffff:192.0.2.7", "from client.example.org ([192.0.2.7])"),  # a dual-stack socket's IPv4 client
        ("fe80::1%eth0", "from client.example.org ([IPv6:fe80::1])"),
        ("unix", "from client.example.org\r\n"),  # a Unix socket: no TCP-info
    ],
)
def test_received_names_the_client_by_its_address_literal(peer_host: str, from_clause: str) -> None:
    # RFC 5321 §4.4: TCP-info is an address literal (or a name and one), not a bare address.
    headers = trace_headers(dataclasses.replace(TRACE, peer_host=peer_host)).decode()
    assert f"Received: {from_clause}" in headers


def test_content_is_byte_exact(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path)
    content = bytes(range(256)) * 4 + b"\r\n.\r\n\x00"
    delivery = store.begin(TRACE)
    delivery.write(content)
    path = delivery.commit()[0]
    stored = path.read_bytes()
    assert stored.endswith(content)
    assert stored[: -len(content)].startswith(b"Return-Path: <alice@example.org>\r\n")


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path)
    delivery = store.begin(TRACE)
    delivery.write(b"partial")
    delivery.abort()
    delivery.abort()  # idempotent
    assert [list((tmp_path / sub).iterdir()) for sub in ("tmp", "new", "cur")] == [[], [], []]


def test_per_recipient_maildirs_share_one_copy(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, per_recipient=True)
    trace = TraceInfo(**{**TRACE.__dict__, "recipients": ["Bob@Example.com", "carol@example.com", "bob@example.com"]})
    delivery = store.begin(trace)
    delivery.write(b"Subject: x\r\n\r\nbody\r\n")
    paths = delivery.commit()
    assert sorted(p.parent.parent.name for p in paths) == ["bob@example.com", "carol@example.com"]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert os.stat(paths[0]).st_ino == os.stat(paths[1]).st_ino
    assert "for <" not in paths[0].read_text()  # several recipients: no single "for" clause


def test_unsafe_recipient_names_cannot_escape_the_root(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path / "root", per_recipient=True)
    trace = TraceInfo(**{**TRACE.__dict__, "recipients": ["../../etc/passwd@x"]})
    delivery = store.begin(trace)
    path = delivery.commit()[0]
    assert (tmp_path / "root") in path.parents


def test_distinct_recipients_get_distinct_maildirs(tmp_path: Path) -> None:
    # Local parts may hold "/" or "%": each octet outside the safe alphabet is
    # written %XX, so "a/b" and "a_b" (which once both became "a_b") stay apart.
    store = MaildirStore(tmp_path, per_recipient=True)
    recipients = ['"a/b"@x.example', '"a_b"@x.example', '"a%2Fb"@x.example', "jörg@x.example", "Bob@X.example"]
    trace = TraceInfo(**{**TRACE.__dict__, "recipients": recipients})
    paths = store.begin(trace).commit()
    assert sorted(path.parent.parent.name for path in paths) == sorted(
        [
            "a%2Fb@x.example",
            "a%252fb@x.example",
            "a_b@x.example",  # (it needs no quotes: the next test)
            "j%C3%B6rg@x.example",
            "bob@x.example",
        ]
    )


def test_a_local_part_quoted_without_need_is_one_maildir_with_the_plain_form(tmp_path: Path) -> None:
    # The quotes and quoted pairs are not part of the local part (RFC 5322 §3.2.4):
    # "you" and "y\ou" are you.  One that needs its quotes keeps them.
    store = MaildirStore(tmp_path, per_recipient=True)
    recipients = ['"you"@x.example', '"y\\ou"@x.example', "You@x.example", '"y o u"@x.example', '"y..ou"@x.example']
    paths = store.begin(TraceInfo(**{**TRACE.__dict__, "recipients": recipients})).commit()
    assert sorted(path.parent.parent.name for path in paths) == [
        "%22y%20o%20u%22@x.example",
        "%22y..ou%22@x.example",
        "you@x.example",
    ]


def test_an_internationalised_domain_is_one_maildir_in_either_form(tmp_path: Path) -> None:
    # As the sink's --accept-domain compares them: a client with SMTPUTF8 may write
    # the U-label, one without must write the A-label; one mailbox either way.  A
    # domain IDNA 2003 would map to another name (strasse) keeps a Maildir of its own.
    store = MaildirStore(tmp_path, per_recipient=True)
    recipients = ["u@Bücher.example", "u@xn--bcher-kva.example", "u@straße.example", "u@strasse.example"]
    paths = store.begin(TraceInfo(**{**TRACE.__dict__, "recipients": recipients})).commit()
    assert sorted(path.parent.parent.name for path in paths) == [
        "u@stra%C3%9Fe.example",
        "u@strasse.example",
        "u@xn--bcher-kva.example",
    ]


def test_a_recipient_too_long_for_a_file_name_gets_a_shortened_distinct_one(tmp_path: Path) -> None:
    """254 octets of address, some of it escaped threefold: past NAME_MAX (255), where mkdir would fail."""
    store = MaildirStore(tmp_path, per_recipient=True)
    srs = "srs0=" + "=".join(["ab"] * 60) + "@forwarder.example"  # 202 octets, 60 of them "=" (%3D)
    recipients = [srs, srs.replace("ab@", "ac@"), "jörg" * 40 + "@x.example"]
    paths = store.begin(TraceInfo(**{**TRACE.__dict__, "recipients": recipients})).commit()
    names = [path.parent.parent.name for path in paths]
    assert len(set(names)) == 3
    assert all(len(name.encode()) <= 255 and "~" in name for name in names)
    assert names[0].startswith("srs0%3Dab%3Dab%3D")
    # The same address in another case is the same Maildir, as for short names.
    again = store.begin(TraceInfo(**{**TRACE.__dict__, "recipients": [srs.upper()]})).commit()
    assert again[0].parent.parent.name == names[0]


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most systems run with: others may read what is created
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("per_recipient", [False, True])
def test_mail_is_readable_by_its_owner_only(tmp_path: Path, usual_umask: None, per_recipient: bool) -> None:
    # As Postfix and Dovecot store it; the umask alone would leave it world-readable.
    root = tmp_path / "mail" / "box"
    store = MaildirStore(root, per_recipient=per_recipient)
    delivery = store.begin(TRACE)
    assert mode(next((root / "bob@example.com" if per_recipient else root).glob("tmp/*"))) == 0o600
    paths = delivery.commit()
    assert mode(paths[0]) == 0o600
    maildir = paths[0].parent.parent
    assert {sub: mode(maildir / sub) for sub in ("tmp", "new", "cur")} == dict.fromkeys(("tmp", "new", "cur"), 0o700)
    assert mode(maildir) == mode(root) == 0o700
    assert mode(tmp_path / "mail") == 0o755  # a parent it made is left to the umask


def test_a_maildir_that_exists_keeps_its_mode(tmp_path: Path, usual_umask: None) -> None:
    (tmp_path / "new").mkdir(mode=0o750)
    (tmp_path / "new").chmod(0o750)
    MaildirStore(tmp_path)
    assert mode(tmp_path / "new") == 0o750


def test_trace_fields_with_newlines_are_refused() -> None:
    with pytest.raises(ValueError, match="control"):
        trace_headers(TraceInfo(**{**TRACE.__dict__, "helo": "evil\r\nX-Injected: 1"}))


def test_password_hash_round_trip(tmp_path: Path) -> None:
    encoded = hash_password("correct horse")
    assert encoded.startswith("scrypt$")
    assert "correct horse" not in encoded
    assert verify_password("correct horse", encoded)
    assert not verify_password("wrong", encoded)
    assert not verify_password("correct horse", "scrypt$bad")
    assert not verify_password("correct horse", "md5$1$2$3$4$5")
    assert hash_password("x") != hash_password("x")  # salted
    auth = tmp_path / "users"
    auth.write_text(f"# users\n\nalice:{encoded}\n")
    assert load_auth_file(auth) == {"alice": encoded}
    auth.write_text("alice:plaintext\n")
    with pytest.raises(ValueError, match=":1: expected user:scrypt"):
        load_auth_file(auth)


def _failing_on_call(monkeypatch: pytest.MonkeyPatch, operation: str, call: int) -> None:
    """Make ``os.<operation>`` (or the store's directory fsync) raise OSError on its
    ``call``-th use, counting from 1, as a full disk would."""
    import adapters.maildir

    owner, name = (adapters.maildir, "_fsync_directory") if operation == "fsync_directory" else (os, operation)
    real = getattr(owner, name)
    calls = 0

    def flaky(*args: object) -> object:
        nonlocal calls
        calls += 1
        if calls == call:
            raise OSError(28, "No space left on device (injected)")
        return real(*args)

    monkeypatch.setattr(owner, name, flaky)


def _all_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


# Three recipients: two links (one in each extra Maildir's tmp/), three renames into new/ (the first
# Maildir's, then the others'), then an fsync of each new/ directory.
FAILURES = [("link", 1), ("link", 2), ("rename", 1), ("rename", 2), ("rename", 3), ("fsync_directory", 3)]


@pytest.mark.parametrize(("operation", "call"), FAILURES, ids=[f"{op}-{n}" for op, n in FAILURES])
def test_a_failed_per_recipient_commit_leaves_no_copy_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operation: str, call: int
) -> None:
    # The client is told 451 and will send again: no recipient may have kept a copy
    # (each retry would add one), and no tmp/ file may be left over.
    store = MaildirStore(tmp_path, per_recipient=True)
    trace = dataclasses.replace(TRACE, recipients=["a@example.com", "b@example.com", "c@example.com"])
    delivery = store.begin(trace)
    delivery.write(b"Subject: x\r\n\r\nbody\r\n")
    _failing_on_call(monkeypatch, operation, call)
    with pytest.raises(OSError, match="injected"):
        delivery.commit()
    monkeypatch.undo()
    assert _all_files(tmp_path) == []
    # The retry then delivers exactly one copy to each.
    delivery = store.begin(trace)
    delivery.write(b"Subject: x\r\n\r\nbody\r\n")
    delivery.commit()
    assert [path.relative_to(tmp_path).parts[:2] for path in _all_files(tmp_path)] == [
        ("a@example.com", "new"),
        ("b@example.com", "new"),
        ("c@example.com", "new"),
    ]


@pytest.mark.parametrize("operation", ["fsync", "rename", "fsync_directory"])
def test_a_failed_commit_leaves_nothing_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operation: str) -> None:
    store = MaildirStore(tmp_path)
    delivery = store.begin(TRACE)
    delivery.write(b"Subject: x\r\n\r\nbody\r\n")
    _failing_on_call(monkeypatch, operation, 1)
    with pytest.raises(OSError, match="injected"):
        delivery.commit()
    monkeypatch.undo()
    assert _all_files(tmp_path) == []
    delivery.abort()  # what a caller may still do: harmless


@pytest.mark.parametrize(
    ("when", "removed"),
    [("before begin", ""), ("before begin", "tmp"), ("before begin", "new"), ("before commit", "new")],
)
def test_a_maildir_removed_while_running_is_made_again(tmp_path: Path, when: str, removed: str) -> None:
    # A user cleaning up a test sink's mail must not leave it answering 451 until restarted.
    store = MaildirStore(tmp_path / "maildir")
    if when == "before begin":
        shutil.rmtree(tmp_path / "maildir" / removed)
    delivery = store.begin(TRACE)
    delivery.write(b"Subject: hi\r\n\r\nbody\r\n")
    if when == "before commit":
        shutil.rmtree(tmp_path / "maildir" / removed)
    path = delivery.commit()[0]
    assert path.parent == tmp_path / "maildir" / "new"
    assert sorted(p.name for p in (tmp_path / "maildir").iterdir()) == ["cur", "new", "tmp"]


def test_free_space_is_the_file_systems_for_an_unprivileged_user(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path / "maildir")
    stats = os.statvfs(tmp_path)
    assert store.free_space() == pytest.approx(stats.f_bavail * stats.f_frsize, rel=0.01)
