"""Keeping a threaded server's workers on one CPU, where the GIL makes that faster.

With a GIL only one thread runs Python at a time, yet the kernel spreads a
server's worker threads over every CPU it has.  Each hand-off of the GIL -- a
worker gives it up at every ``recv`` and ``send`` -- then wakes a thread on
another CPU: a cross-CPU wake-up, a cold cache, and often a thread that wakes
only to find the GIL taken again (David Beazley, "Understanding the Python
GIL", 2010).  Kept on one CPU, the workers pass the GIL among themselves
without any of that, while other processes (the clients, the kernel's network
work) run on the other CPUs.  Measured here with Postfix's smtp-source, 20
sessions of 1 KiB messages: the blocking server went from 1.24x to 2.57x
aiosmtpd with a connection per message and from 1.70x to 3.56x kept alive, at
less than half the CPU time a message; 100 KiB messages from 4.05x to 6.33x.

What it costs: work the workers do outside the GIL (a C extension that releases
it, TLS's cryptography) no longer runs on two CPUs at once.  Nothing is
done where it cannot help or cannot be done: a free-threaded interpreter,
a process allowed only one CPU, a platform without ``os.sched_setaffinity``
(it is Linux's).
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["cpu_for_workers", "keep_on"]


def _has_gil() -> bool:
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)  # Python 3.13 and later
    return True if is_gil_enabled is None else bool(is_gil_enabled())


def cpu_for_workers() -> int | None:
    """The CPU to keep a server's workers on, or None to leave them where the kernel puts them.

    One of the CPUs the calling thread may run on, chosen by the process id:
    the processes of a pre-forked pool have consecutive ids, so they land on
    different CPUs rather than all on the first.
    """
    if not hasattr(os, "sched_setaffinity") or not _has_gil():
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    return allowed[os.getpid() % len(allowed)]


def keep_on(cpu: int | None) -> None:
    """Keep the calling thread, and the threads it starts from now on, on ``cpu`` (None: do nothing).

    Only the calling thread: on Linux, ``sched_setaffinity`` with pid 0 is the
    thread, not the process, so the application's other threads are left alone.
    """
    if cpu is None:
        return
    # The CPU went offline or a cgroup took it away: run anywhere, as before.
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cpu})
