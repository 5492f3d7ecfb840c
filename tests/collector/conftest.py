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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many malformed inputs the property tests and the HTTP fuzz tried."""
    from tests.collector.malformed import TRIED

    if TRIED:
        parts = ", ".join(f"{name} {n}" for name, n in sorted(TRIED.items()))
        terminalreporter.write_line(f"malformed inputs tried: {sum(TRIED.values())} ({parts})")
