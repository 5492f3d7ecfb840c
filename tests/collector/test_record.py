"""One engine for live and replay: what a live collector recorded replays into the same rows."""

from __future__ import annotations

import httpx

from collector.cli import main
from collector.model import LayerPhase
from collector.sources.recording import read_recording
from tests.collector.reports import digest, layer, pull, report
from tests.collector.server import ManualClock, RunningCollector
from tests.collector.test_replay import dump

A, B = digest(1), digest(2)


def test_live_collection_recorded_and_replayed_gives_the_same_rows(tmp_path):
    rec, live_db = tmp_path / "live.jsonl", tmp_path / "live.duckdb"
    reports = [
        report("n1", 0, pull("img:1", 0, layer(A, 0, 3_000_000), layer(B, 0, 800,
                                                                      state=LayerPhase.CACHED))),
        report("n2", 0.2, pull("img:9", 0, layer(digest(9), 0, 5_000))),
        report("n1", 1, pull("img:1", 0, layer(A, 1_048_576, 3_000_000),
                             layer(B, 0, 800, state=LayerPhase.CACHED))),
        report("n1", 1, pull("img:1", 0, layer(A, 2_097_152, 3_000_000))),  # a repeat: dropped
        report("n2", 1.2, pull("img:9", 0, layer(digest(9), 0, 5_000), error="EOF")),
        report("n1", 2),  # img:1 committed
    ]
    clock = ManualClock()
    with RunningCollector(live_db, gate_clock=clock, record=rec) as live:
        for rep in reports:
            resp = httpx.post(live.url + "/api/v1/report", content=rep.dumps(), timeout=10)
            assert resp.status_code == 200
            clock.advance(1)
    recorded = list(read_recording(rec))
    assert len(recorded) == 5  # the repeat was not accepted, so not recorded
    assert main(["replay", str(rec), "--db", str(tmp_path / "replayed.duckdb")]) == 0
    assert dump(live_db) == dump(tmp_path / "replayed.duckdb")
