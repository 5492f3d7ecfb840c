"""A real collector on 127.0.0.1 (free ports) in a background thread, for tests."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from collector.api import ReportGate
from collector.engine import Engine, EngineConfig
from collector.metrics import Metrics
from collector.server import Server, start_server
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


class RunningCollector:
    def __init__(self, db: Path | str, *, token: str | None = None,
                 config: EngineConfig | None = None, gate_clock: ManualClock | None = None,
                 tick_interval: float = 3600.0, record: Path | None = None) -> None:
        self.gate_clock = gate_clock
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.collector = Collector(Engine(config), Store(db), Metrics(),
                                   Recorder(record) if record else None,
                                   tick_interval=tick_interval)
        gate = ReportGate(token, gate_clock) if gate_clock else None
        self.server: Server = self.call(start_server(
            self.collector, ("127.0.0.1", 0), ("127.0.0.1", 0), token, gate))
        self.url = self.server.url
        self.metrics_url = self.server.metrics_url

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def close(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def __enter__(self) -> RunningCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SteppingClock:
    """Each reading a second after the last: lets a test post faster than 500 ms a node."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        self.ns += 10**9
        return self.ns
