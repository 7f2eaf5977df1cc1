"""The threaded server's workers on one CPU (``adapters/_cpu.py``).

Which CPU is chosen and when none is; that only the workers are moved, not the
thread that starts the server; and that a refusal from the kernel leaves them
where they were rather than stopping the server.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest

from adapters import _cpu, blocking_server
from adapters._handler import Handler

CAN_CHOOSE = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1 and _cpu._has_gil()


@pytest.fixture
def linux_like(monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform with sched_setaffinity and a GIL, and CPUs 0, 2 and 5 allowed."""
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: None, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5, 0, 2}, raising=False)
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)


@pytest.mark.usefixtures("linux_like")
@pytest.mark.parametrize(("pid", "cpu"), [(3, 0), (4, 2), (5, 5), (6, 0)])
def test_the_cpu_is_one_of_those_allowed_chosen_by_the_process_id(
    pid: int, cpu: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "getpid", lambda: pid)
    assert _cpu.cpu_for_workers() == cpu


@pytest.mark.usefixtures("linux_like")
def test_no_cpu_is_chosen_without_a_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _cpu.cpu_for_workers() is not None
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False)  # a free-threaded build
    assert _cpu.cpu_for_workers() is None


@pytest.mark.usefixtures("linux_like")
def test_no_cpu_is_chosen_for_a_process_on_one_cpu_already(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert _cpu.cpu_for_workers() is None


@pytest.mark.usefixtures("linux_like")
def test_no_cpu_is_chosen_where_a_thread_cannot_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_setaffinity")  # macOS, Windows
    assert _cpu.cpu_for_workers() is None


def test_an_interpreter_before_3_13_has_a_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sys, "_is_gil_enabled", raising=False)
    assert _cpu._has_gil()


def test_keeping_a_thread_on_a_cpu_the_kernel_refuses_leaves_it_where_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def refuse(pid: int, cpus: set[int]) -> None:
        calls.append(cpus)
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "sched_setaffinity", refuse, raising=False)
    _cpu.keep_on(None)
    assert calls == []
    _cpu.keep_on(7)
    assert calls == [{7}]


class AffinityRecorder(Handler):
    """Notes the CPUs the thread that greets each connection may run on."""

    def __init__(self) -> None:
        self.cpus: list[set[int]] = []

    def connection_opened(self, session: object) -> None:
        self.cpus.append(os.sched_getaffinity(0))


def _cpus_of_sessions(server: blocking_server.SMTPServer, recorder: AffinityRecorder, sessions: int) -> list[set[int]]:
    """The CPUs of the workers of ``sessions`` sessions open at once: a worker each."""
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(sessions)]
    for sock in socks:
        assert sock.recv(1024).startswith(b"220")
    for sock in socks:
        sock.sendall(b"QUIT\r\n")
        assert sock.recv(1024).startswith(b"221")
        sock.close()
    return recorder.cpus


@pytest.mark.skipif(not CAN_CHOOSE, reason="needs Linux, a GIL and two CPUs or more")
def test_the_workers_and_only_they_run_on_one_cpu() -> None:
    ours = os.sched_getaffinity(0)
    recorder = AffinityRecorder()
    with blocking_server.SMTPServer(recorder, port=0) as server:
        cpu = _cpu.cpu_for_workers()
        assert _cpus_of_sessions(server, recorder, 3) == [{cpu}] * 3
    assert os.sched_getaffinity(0) == ours  # the thread that started the server is where it was


@pytest.mark.skipif(not CAN_CHOOSE, reason="needs Linux, a GIL and two CPUs or more")
def test_one_cpu_false_leaves_the_workers_where_the_kernel_puts_them() -> None:
    recorder = AffinityRecorder()
    with blocking_server.SMTPServer(recorder, port=0, one_cpu=False) as server:
        assert _cpus_of_sessions(server, recorder, 2) == [os.sched_getaffinity(0)] * 2
