"""Group commit under concurrent posters: every 200 is a committed report."""

from __future__ import annotations

import threading

import httpx

from collector.store import Store
from tests.collector.reports import digest, layer, pull, report
from tests.collector.server import RunningCollector, SteppingClock

NODES, REPORTS = 8, 15


def test_every_acknowledged_report_is_written_when_many_post_at_once(tmp_path):
    db = tmp_path / "many.duckdb"
    acknowledged: list[int] = []
    lock = threading.Lock()

    def poster(url: str, n: int) -> None:
        node = f"c{n}"
        with httpx.Client(timeout=30) as client:
            for i in range(REPORTS):
                rep = report(node, i, pull(f"img/{node}", 0, layer(digest(n), i * 1000, 10**6)))
                if client.post(url, content=rep.dumps()).status_code == 200:
                    with lock:
                        acknowledged.append(1)

    with RunningCollector(db, gate_clock=SteppingClock()) as live:
        threads = [threading.Thread(target=poster, args=(live.url + "/api/v1/report", n))
                   for n in range(NODES)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(acknowledged) == NODES * REPORTS
    with Store(db) as store:
        assert store.count("reports") == NODES * REPORTS
        assert store.count("samples") == NODES * REPORTS
        # per node: 14 steps of 1000 B after the baseline
        assert store.one("SELECT sum(fetched_bytes) FROM samples") == (NODES * 14_000,)
