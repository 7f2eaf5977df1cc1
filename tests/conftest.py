"""Shared pytest setup.

The server-test driver's asserts get pytest's rewriting (readable diffs).  And no test
may leave asyncio complaining: asyncio logs, rather than raises, what goes wrong in a
protocol callback or a task nobody awaits, so without this check such a failure in an
adapter passes every test that does not look at the log.
"""

import logging
from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("helpers")


@pytest.fixture(autouse=True)
def _no_event_loop_complaints(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="asyncio")
    yield
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]  # the last: teardown's
    assert [r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.WARNING] == []
