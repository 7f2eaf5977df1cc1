"""End to end over 127.0.0.1: our four server adapters and aiosmtpd, in the same run.

Each server runs in a process of its own (``benchmarks._serve``) and discards
what it receives.  The load comes from Postfix's ``smtp-source`` when it is
installed (``apt-get install postfix``; a C program, it leaves more of the machine
to the server under test than a Python generator can) and otherwise from :mod:`benchmarks.loadgen`,
our multi-process generator built on our own client machine.  Figures:

* messages per second for each message size, with a connection per message and
  with kept-alive sessions, all with the same number of concurrent sessions;
* each adapter's figure as a ratio of aiosmtpd's, measured in the same run.
  The cells are interleaved -- run 1 of every server, then run 2 of every
  server -- so a slow moment of the machine falls on all of them alike;
* the server process's CPU time per message over the timed runs, user and
  system (``/proc/<pid>/stat``, Linux only): what the ratio is made of.  Where it
  is close to the wall time per message, the server was the limit; the floors'
  figures are the share no server on that model can avoid (the kernel's part of
  loopback TCP, and the event loop or threads);
* peak RSS of a fresh server process while it receives one large message
  (``VmHWM`` from ``/proc/<pid>/status`` afterwards, minus ``VmRSS`` when idle).

A cell in which a message was not delivered is a failed row (no figure, its
target not met, the suite's exit status 1): a server that refuses or drops
messages must not read as a fast one.  When aiosmtpd fails a cell (or is not
installed), the rows compared with it have no ratio and their targets are not met.

How many messages a run sends is chosen per server from a first (warm-up) run,
so that every run lasts about ``duration`` seconds whatever the server's speed.

Run: ``python -m benchmarks.bench_e2e [--quick] [--load loadgen|smtp-source]``.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import loadgen
from ._report import Figure, failed_figure, from_runs, median_of, print_table
from ._serve import FLOOR_OF, SERVERS

SECTION = "end to end over 127.0.0.1"
KIB, MIB = 1024, 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
PEER = "aiosmtpd"
#: The floors (``_serve.FLOOR_OF``) are references, not ours, so they have no targets; each
#: adapter's figure notes what share of its floor it reaches.
FLOORS = frozenset(FLOOR_OF.values())


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def server_process(name: str, timeout: float = 30.0) -> Iterator[ServerProcess]:
    """Start ``benchmarks._serve NAME``; it ends when we close its standard input (or are killed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._serve", name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise RuntimeError(f"{name} server did not start within {timeout} s")
        line = process.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"{name} server failed to start (exit code {process.poll()})")
        yield ServerProcess(name, process, int(line))
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds a process has used, all its threads; None where /proc has no stat."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            # The fields after the command name, which is in parentheses and may hold spaces.
            fields = file.read().rpartition(")")[2].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick  # utime and stime, fields 14 and 15 of stat


def smtp_source() -> str | None:
    return shutil.which("smtp-source") or next(
        (p for p in ("/usr/sbin/smtp-source", "/usr/lib/postfix/sbin/smtp-source") if os.access(p, os.X_OK)), None
    )


def send_load(
    port: int, size: int, messages: int, *, sessions: int, keepalive: bool, load: str
) -> tuple[float, int, str]:
    """(messages per second, messages failed, error text) for one run."""
    if load == "loadgen":
        result = loadgen.run(port, size, messages, sessions=sessions, keepalive=keepalive, processes=2)
        error = f"{result.errors} session(s) failed" if result.errors else ""
        return result.rate, messages - result.messages, error
    command = [load, "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    command += ["-d"] if keepalive else []
    start = time.perf_counter()
    done = subprocess.run([*command, f"127.0.0.1:{port}"], capture_output=True, timeout=300, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return 0.0, messages, done.stderr.decode(errors="replace").strip()[:200]
    return messages / seconds, 0, ""


@dataclass(frozen=True)
class Cell:
    size: int
    keepalive: bool

    @property
    def label(self) -> str:
        size = f"{self.size // MIB} MiB" if self.size >= MIB else f"{self.size // KIB} KiB"
        return f"{size}, {'kept-alive sessions' if self.keepalive else 'a connection per message'}"


def target_for(server: str, cell: Cell) -> float | None:
    """Issue 6: asyncio >= 4x aiosmtpd at 1 KiB and >= 15x at 10 MiB; every adapter >= 2x."""
    if server == PEER or server in FLOORS:
        return None
    if server == "asyncio" and cell.size <= KIB:
        return 4.0
    if server == "asyncio" and cell.size >= 10 * MIB:
        return 15.0
    return 2.0


def measure_throughput(
    cells: list[Cell],
    servers: tuple[str, ...],
    *,
    sessions: int,
    repeat: int,
    duration: float,
    load: str,
    notes: list[str],
) -> list[Figure]:
    figures: list[Figure] = []
    with _all_servers(servers) as running:
        for cell in cells:
            counts: dict[str, int] = {}
            rates: dict[str, list[float]] = {name: [] for name in servers}
            # Why a server failed this cell (a message not delivered, in the warm-up or a timed run).
            failures: dict[str, str] = {}
            # CPU seconds (user, system) and messages over the timed runs, per server.
            cpu: dict[str, list[float]] = {name: [0.0, 0.0, 0] for name in servers}
            for name in servers:  # warm-up run; sizes the timed runs to about `duration` seconds each
                first = sessions * (1 if cell.size >= MIB else 4)
                rate, failed, error = send_load(
                    running[name].port, cell.size, first, sessions=sessions, keepalive=cell.keepalive, load=load
                )
                if failed:
                    failures.setdefault(name, f"warm-up: {failed} of {first} message(s) failed: {error}")
                    notes.append(f"{name}, {cell.label}: {failures[name]}")
                counts[name] = max(sessions, min(int(rate * duration), 200_000))
            for _ in range(repeat):
                for name in servers:
                    port, pid = running[name].port, running[name].pid
                    before = cpu_seconds(pid)
                    rate, failed, error = send_load(
                        port, cell.size, counts[name], sessions=sessions, keepalive=cell.keepalive, load=load
                    )
                    after = cpu_seconds(pid)
                    if failed:
                        failures.setdefault(name, f"{failed} of {counts[name]} message(s) failed: {error}")
                        notes.append(f"{name}, {cell.label}: {failed} of {counts[name]} message(s) failed: {error}")
                    rates[name].append(rate)
                    if before is not None and after is not None:
                        used = cpu[name]
                        used[0] += after[0] - before[0]
                        used[1] += after[1] - before[1]
                        used[2] += counts[name] - failed
            # The median each row prints: a ratio of any other would not match the table.
            medians = {name: median_of(runs) for name, runs in rates.items() if name not in failures}
            peer = medians.get(PEER)
            for name in servers:
                label, target = f"{name}: {cell.label}", target_for(name, cell)
                if name in failures:
                    figures.append(failed_figure(SECTION, label, "msg/s", failures[name], target=target))
                    continue
                mine = medians[name]
                notes_here = [f"{mine * cell.size / 1e6:,.0f} MB/s"] if cell.size >= 100 * KIB else []
                floor = FLOOR_OF.get(name)
                if floor is not None and medians.get(floor):
                    notes_here.append(f"{100 * mine / medians[floor]:.0f}% of {floor}")
                user, system, messages = cpu[name]
                if messages:
                    notes_here.append(_cpu_note(user / messages, system / messages))
                if not peer and name != PEER:
                    why = "failed" if PEER in failures else "was not run"
                    notes_here.insert(0, f"no ratio: {PEER} {why}" + ("; target not measurable" if target else ""))
                figures.append(
                    from_runs(
                        SECTION, label, "msg/s", rates[name],
                        ratio=mine / peer if peer and name != PEER else None,
                        against=f"of {PEER}" if peer and name != PEER else "",
                        target=target, note=", ".join(notes_here),
                    )
                )  # fmt: skip
    return figures


def _cpu_note(user: float, system: float) -> str:
    """``CPU 148+89 us/msg (user+sys)``: seconds per message, in us up to 10 ms, then in ms."""
    scale, unit = (1e6, "us") if user + system < 0.01 else (1e3, "ms")
    return f"CPU {user * scale:,.0f}+{system * scale:,.0f} {unit}/msg (user+sys)"


@contextmanager
def _all_servers(servers: tuple[str, ...]) -> Iterator[dict[str, ServerProcess]]:
    """Every server at once, idle but for the one under load: their runs can then be interleaved."""
    running: dict[str, ServerProcess] = {}
    stack = []
    try:
        for name in servers:
            manager = server_process(name)
            running[name] = manager.__enter__()
            stack.append(manager)
        yield running
    finally:
        for manager in reversed(stack):
            manager.__exit__(None, None, None)


def measure_peak_rss(servers: tuple[str, ...], size: int, notes: list[str], repeat: int = 1) -> list[Figure]:
    """Peak RSS above idle of a fresh server process receiving one message of ``size`` octets,
    ``repeat`` times (a fresh process each time: the high-water mark only ever rises)."""
    peaks: dict[str, list[float]] = {}
    # A server that did not take the message kept nothing of it: its peak says nothing, and the row fails.
    failures: dict[str, str] = {}
    servers = tuple(name for name in servers if name not in FLOORS)  # they keep nothing
    for _ in range(repeat):
        for name in servers:
            with server_process(name) as server:
                loadgen.run(server.port, KIB, 4, sessions=2, keepalive=True, processes=0)  # warm up
                idle = proc_status_kib(server.pid, "VmRSS")
                result = loadgen.run(server.port, size, 1, sessions=1, keepalive=True, processes=0)
                if result.messages != 1:
                    failures.setdefault(name, f"the {size // MIB} MiB message failed")
                    notes.append(f"peak RSS, {name}: the {size // MIB} MiB message failed")
                peaks.setdefault(name, []).append((proc_status_kib(server.pid, "VmHWM") - idle) / 1024)
    # No ratio here: ours is a fraction of a MiB (often 0.00), and a peer's 400 MiB divided by that
    # is a number that says nothing.  The row names the peer's own figure (its median) instead.
    peer = median_of(peaks[PEER]) if PEER in peaks and PEER not in failures else None
    figures = []
    for name in servers:
        label = f"{name}: peak RSS above idle, one {size // MIB} MiB message"
        # Issue 6: "under 16 MiB" (Figure.met compares strictly for lower_is_better).
        target = {"target": 16.0 if name != PEER else None, "target_on": "median", "lower_is_better": True}
        if name in failures:
            figures.append(failed_figure(SECTION, label, "MiB", failures[name], **target))
            continue
        note = ""
        if name != PEER and PEER in peaks:
            note = f"({PEER}: {peer:,.1f} MiB)" if peer is not None else f"({PEER} failed)"
        figures.append(from_runs(SECTION, label, "MiB", peaks[name], note=note, **target))
    return figures


def collect(
    quick: bool = False,
    *,
    servers: tuple[str, ...] = SERVERS,
    load: str = "auto",
    sessions: int | None = None,
    repeat: int | None = None,
    duration: float | None = None,
    sizes: tuple[int, ...] | None = None,
    rss_size: int | None = None,
) -> tuple[list[Figure], list[str]]:
    notes: list[str] = []
    if load == "auto":
        load = smtp_source() or "loadgen"
    elif load == "smtp-source":
        found = smtp_source()
        if found is None:
            raise SystemExit("smtp-source is not installed (apt-get install postfix)")
        load = found
    notes.append(
        "end-to-end load from "
        + (
            "Postfix's smtp-source (C, one process; no pipelining)"
            if load != "loadgen"
            else "benchmarks/loadgen.py (2 processes, smtpcore's client machine, pipelined where offered)"
        )
    )
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        servers = tuple(s for s in servers if s != PEER)
        notes.append("aiosmtpd is not installed (pip install -e '.[bench]'): no ratios against it")
    try:
        import trio  # noqa: F401
    except ImportError:
        servers = tuple(s for s in servers if s not in ("trio", "bare-trio"))
        notes.append("trio is not installed: its adapter is skipped")
    try:
        import gevent  # noqa: F401
    except ImportError:
        servers = tuple(s for s in servers if s not in ("gevent", "bare-gevent"))
        notes.append("gevent is not installed: its adapter is skipped")

    sessions = sessions or (4 if quick else 20)
    repeat = repeat or 3
    duration = duration or (0.4 if quick else 1.5)
    sizes = sizes or ((KIB, 100 * KIB) if quick else (KIB, 100 * KIB, 10 * MIB))
    rss_size = rss_size or (10 * MIB if quick else 100 * MIB)
    cells = [Cell(size, keepalive) for size in sizes for keepalive in (False, True)]
    figures = measure_throughput(
        cells, servers, sessions=sessions, repeat=repeat, duration=duration, load=load, notes=notes
    )
    # Three fresh processes each in full mode, as every figure is a median of runs; one in --quick.
    figures += measure_peak_rss(servers, rss_size, notes, repeat=1 if quick else repeat)
    return figures, notes


def main(argv: list[str] | None = None) -> list[Figure]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 KiB and 100 KiB, 4 sessions, short runs")
    parser.add_argument("--load", choices=("auto", "loadgen", "smtp-source"), default="auto")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, of: " + ", ".join(SERVERS))
    args = parser.parse_args(argv)
    servers = tuple(s for s in args.servers.split(",") if s)
    figures, notes = collect(args.quick, servers=servers, load=args.load)
    print_table(figures, notes)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
