"""A real collector on 127.0.0.1 for API tests, with a report gate clock the test moves."""

from __future__ import annotations

import pytest

from tests.collector.server import ManualClock, RunningCollector


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def server(tmp_path, clock):
    with RunningCollector(tmp_path / "api.duckdb", gate_clock=clock) as running:
        yield running
