"""A report whose commit takes longer than the collector waits: 503, kept, written later;
a repeat of it is answered with it."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from collector import intake
from collector.api import ReportGate
from collector.engine import Engine
from collector.metrics import Metrics
from collector.records import Batch, Output
from collector.server import BackgroundServer
from collector.service import Collector
from collector.store import Store
from tests.collector.reports import digest, layer, pull, report
from tests.collector.server import SteppingClock


class HeldStore(Store):
    """A real store whose writes wait until the test lets them go."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.gate.set()
        self.writing = threading.Event()

    def write(self, outputs: list[Output] | Batch) -> None:
        self.writing.set()
        assert self.gate.wait(30), "the test never let the write go"
        super().write(outputs)


def body(t: float, nbytes: int) -> bytes:
    return report("n", t, pull("img", 0, layer(digest(1), nbytes, 10**7))).dumps().encode()


def post(url: str, content: bytes) -> httpx.Response:
    return httpx.post(url + "/api/v1/report", content=content, timeout=30)


@pytest.fixture
def held(tmp_path):
    store = HeldStore(tmp_path / "held.duckdb")
    live = BackgroundServer(Collector(Engine(), store, Metrics(), tick_interval=3600.0),
                            gate=ReportGate(None, SteppingClock()))
    try:
        yield live, store
    finally:
        store.gate.set()
        live.close()


def duplicates(live: BackgroundServer) -> float:
    found = live.collector.metrics.registry.get_sample_value(
        "pulltrace_reports_dropped_total", {"reason": "duplicate"})
    return found or 0.0


def test_a_report_not_committed_in_time_is_503_and_written_later(held, monkeypatch):
    live, store = held
    assert post(live.url, body(0, 1000)).status_code == 200
    store.gate.clear()
    store.writing.clear()
    monkeypatch.setattr(intake, "COMMIT_WAIT", 0.3)
    late = post(live.url, body(1, 5000))
    assert late.status_code == 503
    assert "the report is kept and will be written, resending it is safe" in late.text
    assert store.writing.is_set()  # its batch was on its way, not lost
    monkeypatch.setattr(intake, "COMMIT_WAIT", 30.0)
    store.gate.set()
    # the next report's answer follows the commit of everything queued before it
    assert post(live.url, body(2, 9000)).status_code == 200
    assert store.count("reports") == 3
    assert store.one("SELECT list(downloaded_bytes ORDER BY ts) FROM samples") == (
        [1000, 5000, 9000],)


def test_a_repeat_waits_for_the_report_it_repeats(held, monkeypatch):
    live, store = held
    monkeypatch.setattr(intake, "COMMIT_WAIT", 0.3)
    store.gate.clear()
    first = body(0, 1000)
    answers: dict[str, int] = {}
    original = threading.Thread(
        target=lambda: answers.__setitem__("original", post(live.url, first).status_code))
    original.start()
    assert store.writing.wait(30)
    # the same report again, while the first is being written: dropped as a duplicate,
    # answered only once the first is committed (here: not in time, so 503)
    assert post(live.url, first).status_code == 503
    store.gate.set()
    original.join(30)
    assert answers == {"original": 503}
    monkeypatch.setattr(intake, "COMMIT_WAIT", 30.0)
    assert post(live.url, first).status_code == 200  # now it is written: at once
    assert store.count("reports") == 1


def test_a_repeat_is_200_once_the_report_it_repeats_commits(held):
    live, store = held
    store.gate.clear()
    first = body(0, 1000)
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(post(live.url, first).status_code))
               for _ in range(2)]
    threads[0].start()
    assert store.writing.wait(30)
    threads[1].start()
    while duplicates(live) < 1:  # the repeat is in, waiting
        threads[1].join(0.01)
    store.gate.set()
    for t in threads:
        t.join(30)
    assert answers == [200, 200]
    assert store.count("reports") == 1
