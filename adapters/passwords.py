"""Password hashes for ``--auth-file``: scrypt from the stdlib, never a hand-rolled scheme.

A hash is written ``scrypt$<n>$<r>$<p>$<salt-b64>$<key-b64>`` so the cost can be
raised later without breaking old lines.  Comparison is constant-time
(``hmac.compare_digest``).  An auth file holds one ``user:hash`` per line;
blank lines and lines starting with ``#`` are ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

__all__ = ["hash_password", "load_auth_file", "verify_password"]

# scrypt parameters: n=2**14, r=8, p=1 is the interactive-login cost the scrypt
# paper and Python's docs suggest (about 16 MiB of memory per check).
_N, _R, _P = 2**14, 8, 1
_KEY_LENGTH = 32


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=_KEY_LENGTH)
    encode = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${encode(salt).decode()}${encode(key).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def load_auth_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{user: hash}`` from a file of ``user:hash`` lines; ValueError names a bad line."""
    users: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, encoded = line.partition(":")
        if not colon or not user or not encoded.startswith("scrypt$"):
            raise ValueError(f"{path}:{number}: expected user:scrypt$... (make one with smtpcore hash-password)")
        users[user] = encoded
    return users
