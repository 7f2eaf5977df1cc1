"""Shared pytest setup: the server-test driver's asserts get pytest's rewriting (readable diffs)."""

import pytest

pytest.register_assert_rewrite("helpers")
