"""A real collector on 127.0.0.1 (free ports) in a background thread, for tests."""

from __future__ import annotations

from pathlib import Path

from collector.api import ReportGate
from collector.engine import Engine, EngineConfig
from collector.limits import Limits
from collector.metrics import Metrics
from collector.server import BackgroundServer
from collector.service import Collector, Recorder
from collector.store import Store


class ManualClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.ns = 10**12

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += round(seconds * 1e9)


class RunningCollector(BackgroundServer):
    def __init__(self, db: Path | str, *, token: str | None = None,
                 config: EngineConfig | None = None, gate_clock: ManualClock | None = None,
                 tick_interval: float = 3600.0, record: Path | None = None,
                 limits: Limits | None = None) -> None:
        self.gate_clock = gate_clock
        collector = Collector(Engine(config), Store(db), Metrics(),
                              Recorder(record) if record else None,
                              tick_interval=tick_interval, limits=limits or Limits())
        super().__init__(collector, token=token,
                         gate=ReportGate(token, gate_clock) if gate_clock else None)

    def __enter__(self) -> RunningCollector:
        return self


class SteppingClock:
    """Each reading a second after the last: lets a test post faster than 500 ms a node."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        self.ns += 10**9
        return self.ns
