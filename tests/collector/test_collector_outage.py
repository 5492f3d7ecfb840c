"""A collector whose database fails under it, in this process: the export reader follows a
reopened file, and a stop while writes fail ends instead of retrying forever."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import httpx

from collector import intake
from collector.store import Store
from tests.collector.reports import digest, layer, pull, report
from tests.collector.server import RunningCollector, SteppingClock
from tests.collector.test_store_failures import file_size_limit


def samples_exported(url: str) -> list[int]:
    resp = httpx.get(url + "/api/v1/export", params={"table": "samples", "format": "jsonl"},
                     timeout=30)
    assert resp.status_code == 200, resp.text
    return [json.loads(line)["downloaded_bytes"] for line in resp.text.splitlines()]


def post(url: str, t: float, nbytes: int, timeout: float = 30) -> httpx.Response:
    rep = report("n", t, pull("img", 0, layer(digest(1), nbytes, 10**7)))
    return httpx.post(url + "/api/v1/report", content=rep.dumps(), timeout=timeout)


def test_the_export_reads_the_reopened_file_after_duckdb_invalidated_the_connection(
        tmp_path, caplog):
    db = tmp_path / "export.duckdb"
    caplog.set_level(logging.INFO, "pulltrace.store")
    with RunningCollector(db, gate_clock=SteppingClock()) as live:
        assert post(live.url, 0, 1000).status_code == 200
        assert samples_exported(live.url) == [1000]  # the reader connection exists now
        store = live.collector.store
        store.con.execute("CHECKPOINT")
        store.con.execute("SET checkpoint_threshold = '1KB'")
        with file_size_limit(Path(db).stat().st_size):
            # durable in the WAL, then the checkpoint cannot grow the file
            assert post(live.url, 1, 2000).status_code == 200
        assert "opening the file again" in caplog.text
        assert store.generation == 1
        assert samples_exported(live.url) == [1000, 2000]
        assert post(live.url, 2, 3000).status_code == 200
        assert samples_exported(live.url) == [1000, 2000, 3000]


def test_stopping_while_writes_fail_ends_and_acknowledges_nothing(tmp_path, caplog,
                                                                 monkeypatch):
    db = tmp_path / "stop.duckdb"
    monkeypatch.setattr(intake, "COMMIT_WAIT", 1.0)
    live = RunningCollector(db, gate_clock=SteppingClock())
    try:
        assert post(live.url, 0, 1000).status_code == 200
        answers: list[int] = []
        with file_size_limit(Path(f"{db}.wal").stat().st_size):
            assert post(live.url, 1, 2000).status_code == 503  # after the (short) wait
            late = threading.Thread(target=lambda: answers.append(
                post(live.url, 2, 3000).status_code))
            late.start()
            deadline = time.monotonic() + 30
            while len(live.collector._queue) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)  # until the late report waits for its commit too
            live.close()
            late.join(timeout=30)
        assert answers == [503]
    finally:
        live.close()
    assert "stopping with 2 reports not written (none was acknowledged)" in caplog.text
    with Store(db) as store:
        assert store.count("reports") == 1
