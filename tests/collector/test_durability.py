"""kill -9 after a 200: the acknowledged samples are in the file, and a restart rebuilds the
in-flight pull."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from collector.journal import Journal, journal_path
from collector.model import parse_report
from collector.store import Store
from tests.collector.process import CollectProcess
from tests.collector.reports import digest, layer, pull, report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(db, port: int, mport: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "collect", "--db", str(db),
         "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"collector exited: {out}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("collector did not become ready")


def test_acknowledged_samples_survive_kill_9_and_restart_rebuilds_the_pull(tmp_path):
    db = tmp_path / "crash.duckdb"
    port, mport = free_port(), free_port()
    proc = start(db, port, mport)
    total = 10_000_000
    sent: list[tuple[str, int]] = []
    try:
        for i, t in enumerate((0.0, 1.0, 2.0)):
            if i:
                time.sleep(0.55)  # the 500 ms per-node rule
            rep = report("node-a", t, pull("img/app:1", 0, layer(digest(7), 1_000_000 * i * 2,
                                                                  total)))
            resp = httpx.post(f"http://127.0.0.1:{port}/api/v1/report", content=rep.dumps(),
                              timeout=10)
            assert resp.status_code == 200
            sent.append((rep.node_name, rep.timestamp))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    # Answered once in the journal: the three reports are there (numbered 1-3, as the
    # database numbers them), whatever the database had committed when it died.
    journal = [(seq, parse_report(line)) for seq, line in
               Journal(journal_path(db)).lines_after(0)]
    assert [(seq, r.node_name, r.timestamp) for seq, r in journal] == [
        (n + 1, *rep) for n, rep in enumerate(sent)]
    proc = start(db, port, mport)
    try:
        pulls = httpx.get(f"http://127.0.0.1:{port}/api/v1/pulls", timeout=10).json()["pulls"]
        assert len(pulls) == 1
        (rebuilt,) = pulls
        assert (rebuilt["imageRef"], rebuilt["status"]) == ("img/app:1", "active")
        assert rebuilt["downloadedBytes"] == 4_000_000
        assert rebuilt["bytesPerSec"] == pytest.approx(2_000_000)  # 4e6 B over 2 s
        # the node's next report continues the same pull
        rep = report("node-a", 3.0, pull("img/app:1", 0, layer(digest(7), 6_000_000, total)))
        assert httpx.post(f"http://127.0.0.1:{port}/api/v1/report", content=rep.dumps(),
                          timeout=10).status_code == 200
        pulls = httpx.get(f"http://127.0.0.1:{port}/api/v1/pulls", timeout=10).json()["pulls"]
        assert [p["id"] for p in pulls] == [rebuilt["id"]]
        assert pulls[0]["bytesPerSec"] == pytest.approx(2_000_000)  # 6e6 B over 3 s
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    # The restart wrote what only the journal held: every report once, with its samples.
    with Store(db) as store:
        assert store.count("reports") == 4
        assert store.one("SELECT count(DISTINCT seq) FROM reports") == (4,)
        assert store.count("samples") == 4
        fetched = store.con.execute("SELECT sum(fetched_bytes) FROM samples").fetchone()
        assert fetched == (6_000_000,)  # baseline 0, then +2e6 three times


def test_without_the_journal_a_report_is_answered_once_the_database_has_it(tmp_path):
    db = tmp_path / "plain.duckdb"
    with CollectProcess(db, tmp_path / "collector.log", args=("--no-journal",)) as collector:
        collector.start()
        rep = report("node-a", 0.0, pull("img/app:1", 0, layer(digest(7), 1_000_000,
                                                                10_000_000)))
        assert httpx.post(collector.url + "/api/v1/report", content=rep.dumps(),
                          timeout=10).status_code == 200
        # answered after its commit: in the file now, whatever happens next
        os.kill(collector.pid, signal.SIGKILL)
        collector.proc.wait()
    assert not journal_path(db).exists()
    with Store(db) as store:
        assert store.count("reports") == 1
        assert store.one("SELECT node, downloaded_bytes FROM samples") == ("node-a", 1_000_000)
