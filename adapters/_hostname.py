"""The name this machine gives itself: in the server's greeting and the client's EHLO."""

from __future__ import annotations

import socket

from smtpcore._address import AddressError, check_domain

__all__ = ["default_hostname"]


def default_hostname() -> str:
    """The host's name when it is a valid domain, else ``localhost``.

    ``gethostname()``, not ``getfqdn()``: the latter asks DNS, and on a machine
    whose resolver is slow or broken that stalls every start (smtplib's well-known
    delay).  A name that is not a domain (a container's "abc_123") would make the
    peer refuse the EHLO, so it falls back to ``localhost``.
    """
    name = socket.gethostname()
    try:
        check_domain(name)
    except AddressError:
        return "localhost"
    return name
