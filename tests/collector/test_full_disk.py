"""A disk that fills while the collector runs, and a replay that runs out of space.

The collector's file size limit (RLIMIT_FSIZE, set and lifted from outside with prlimit) makes
its writes fail with EFBIG as a full disk fails them with ENOSPC; lifting it is space coming
back. No privileges needed, so this runs the same here and in CI.
"""

from __future__ import annotations

import re
import resource
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from collector.journal import Journal, journal_path
from collector.model import AgentReport, parse_report
from collector.sources.recording import write_recording
from tests.collector.process import CollectProcess, run_cli
from tests.collector.reports import at, digest, layer, pull, report

pytestmark = pytest.mark.e2e

TOTAL = 8_000_000


def node_report(node: str, t: float, nbytes: int) -> AgentReport:
    return report(node, t, pull(f"img/{node}:1", 0, layer(digest(ord(node)), nbytes, TOTAL),
                                layer(digest(1000 + ord(node)), nbytes // 2, TOTAL)))


def metric_value(metrics_url: str, name: str) -> float:
    text = httpx.get(metrics_url, timeout=10).text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, text
    return float(found.group(1))


def store_errors(metrics_url: str) -> float:
    return metric_value(metrics_url, "pulltrace_store_errors_total")


def journal_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in Path(f"{db}.journal").iterdir())


def wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_disk_filling_up_keeps_the_collector_serving_and_nothing_half_written(tmp_path):
    db = tmp_path / "fills.duckdb"
    sent: list[AgentReport] = []
    # no stall rule during the outage: its events would be rows of no report
    with CollectProcess(db, tmp_path / "collector.log", args=("--stall-after", "1h")) \
            as collector, \
            httpx.Client(timeout=60) as client:
        collector.start()
        post = collector.url + "/api/v1/report"

        def send(rep: AgentReport, timeout: float = 60) -> httpx.Response:
            sent.append(rep)
            return client.post(post, content=rep.dumps(), timeout=timeout)

        assert send(node_report("a", 0, 1_000_000)).status_code == 200
        time.sleep(0.55)  # one report per node per 500 ms
        assert send(node_report("a", 1, 2_000_000)).status_code == 200

        # No file may grow past the journal's size now: the next report cannot be made
        # durable anywhere.
        collector.limit_file_size(journal_bytes(db))
        answers: dict[str, httpx.Response] = {}
        time.sleep(0.55)
        waiting = threading.Thread(target=lambda: answers.setdefault(
            "a", send(node_report("a", 2, 3_000_000))))
        waiting.start()

        def not_ready() -> bool:
            return client.get(collector.url + "/readyz").status_code == 503

        # The database fails too (what a tick found goes on to it); the journal is what
        # a report waits for, and what /readyz names first.
        wait_for(lambda: "writes to the journal fail" in client.get(
            collector.url + "/readyz").text, "/readyz to name the journal")
        ready = client.get(collector.url + "/readyz").text
        assert ready == (f"not ready: writes to the journal fail (could not write the "
                         f"journal {db}.journal: File too large; free space there); reports "
                         "wait until they succeed\n")
        assert client.get(collector.url + "/healthz").status_code == 200
        assert store_errors(collector.metrics_url) >= 1
        # still answering reads, and another node's report waits too: never a 200
        assert client.get(collector.url + "/api/v1/pulls").status_code == 200
        with pytest.raises(httpx.TimeoutException):
            send(node_report("b", 2, 500_000), timeout=3)

        waiting.join(timeout=90)
        assert answers["a"].status_code == 503  # after its wait for the commit
        assert answers["a"].text.startswith(
            f"not recorded yet: could not write the journal {db}.journal: File too large")
        assert answers["a"].text.rstrip().endswith(
            "the report is kept and will be written, resending it is safe")

        # space returns: what waited is written, and writing goes on
        collector.limit_file_size(resource.RLIM_INFINITY)
        wait_for(lambda: not not_ready(), "/readyz to answer 200")
        # (counted once both the journal and the database write again: each retries on
        # its own timer until then)
        failures = store_errors(collector.metrics_url)
        # the report whose client gave up, sent again: already written, so a 200 and no
        # second copy
        again = node_report("b", 2, 500_000)
        assert client.post(post, content=again.dumps()).status_code == 200
        assert send(node_report("a", 3, 4_000_000)).status_code == 200
        time.sleep(0.55)
        assert send(node_report("b", 3, 1_500_000)).status_code == 200
        assert store_errors(collector.metrics_url) == failures  # no new failure
        assert collector.stop() == 0

    con = duckdb.connect(str(db), read_only=True)
    reports = con.execute("SELECT node, epoch_ns(ts) FROM reports ORDER BY seq").fetchall()
    # every report, the 503 one and the one whose client gave up included, once and in order
    assert sorted(reports) == sorted((r.node_name, r.timestamp) for r in sent)
    assert len(reports) == 6
    samples = con.execute("SELECT node, epoch_ns(ts), digest, downloaded_bytes FROM samples "
                          "ORDER BY node, ts, digest").fetchall()
    expected = sorted((r.node_name, r.timestamp, lay.digest, lay.downloaded_bytes)
                      for r in sent for p in r.pulls for lay in p.layers)
    assert samples == expected
    # no row of anything but a committed report
    for table in ("pull_progress", "events"):
        stray = con.execute(
            f"SELECT count(*) FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM reports r "
            "WHERE r.node = t.node AND r.ts = t.ts)").fetchone()
        assert stray == (0,), table
    # node a: 1e6 baseline, then +1e6 three times; its half-speed layer +0.5e6 three times
    assert con.execute("SELECT fetched_bytes FROM pulls WHERE node = 'a'").fetchone() == (
        4_500_000,)
    assert con.execute("SELECT epoch_ns(max(ts)) FROM reports WHERE node = 'a'").fetchone() == (
        at(3),)
    con.close()


def test_a_database_that_cannot_grow_leaves_reports_answered_from_the_journal(tmp_path):
    db = tmp_path / "dbfull.duckdb"
    sent: list[AgentReport] = []
    with CollectProcess(db, tmp_path / "collector.log", args=("--stall-after", "1h")) \
            as collector, \
            httpx.Client(timeout=60) as client:
        collector.start()
        post = collector.url + "/api/v1/report"

        def send(rep: AgentReport) -> httpx.Response:
            sent.append(rep)
            return client.post(post, content=rep.dumps())

        assert send(node_report("a", 0, 1_000_000)).status_code == 200
        # Only the database writer's files are limited: the journal still takes reports.
        # (its children: the writer, and multiprocessing's resource tracker)
        children = collector.processes()[1:]
        wal = Path(f"{db}.wal")
        wait_for(lambda: metric_value(collector.metrics_url, "pulltrace_reports_unwritten") == 0,
                 "the first commit")
        for child in children:
            resource.prlimit(child, resource.RLIMIT_FSIZE,
                             (wal.stat().st_size, resource.RLIM_INFINITY))
        for t in (1, 2):
            time.sleep(0.55)  # one report per node per 500 ms
            assert send(node_report("a", t, 1_000_000 * (t + 1))).status_code == 200
            assert send(node_report("b", t, 500_000 * t)).status_code == 200
        wait_for(lambda: client.get(collector.url + "/readyz").status_code == 503,
                 "/readyz to answer 503")
        ready = client.get(collector.url + "/readyz").text
        assert ready.startswith(f"not ready: writes to the database fail (could not write to "
                                f"{db}: the disk is full or a file size limit is reached (")
        assert ready.rstrip().endswith(
            "reports are answered from the journal until --max-backlog of them wait")
        # what was answered is in the journal, in order, after the one report committed
        journal = [(n, parse_report(line).timestamp) for n, line in
                   Journal(journal_path(db)).lines_after(1)]
        assert journal == [(n + 2, r.timestamp) for n, r in enumerate(sent[1:])]

        for child in children:
            resource.prlimit(child, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_for(lambda: client.get(collector.url + "/readyz").status_code == 200,
                 "/readyz to answer 200")
        time.sleep(0.55)
        assert send(node_report("a", 3, 4_000_000)).status_code == 200
        assert collector.stop() == 0

    con = duckdb.connect(str(db), read_only=True)
    reports = con.execute("SELECT seq, node, epoch_ns(ts) FROM reports ORDER BY seq").fetchall()
    assert reports == [(n + 1, r.node_name, r.timestamp) for n, r in enumerate(sent)]
    # node a: 1e6 baseline, then +1e6 three times; its half-speed layer +0.5e6 three times
    assert con.execute("SELECT fetched_bytes FROM pulls WHERE node = 'a'").fetchone() == (
        4_500_000,)
    # node b: its baseline at 500e3 (250e3 on the slow layer), then +500e3 and +250e3
    assert con.execute("SELECT fetched_bytes FROM pulls WHERE node = 'b'").fetchone() == (
        750_000,)
    con.close()


def test_a_replay_out_of_space_stops_clearly_and_append_completes_it(tmp_path):
    rec = tmp_path / "big.jsonl"
    # 3,000 reports of 8 nodes with 8 layers each: about 3 MB of log per 1,000-report batch
    write_recording(rec, [
        report(f"node-{n}", t, pull(f"img/{n}", 0, *(
            layer(digest(100 * n + i), min(t * 20_000, 10**7), 10**7) for i in range(8))))
        for t in range(375) for n in range(8)])
    clean, db = tmp_path / "clean.duckdb", tmp_path / "full.duckdb"
    assert run_cli("replay", str(rec), "--db", str(clean)).returncode == 0

    def five_megabytes() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (5_000_000, resource.RLIM_INFINITY))

    failed = run_cli("replay", str(rec), "--db", str(db), preexec_fn=five_megabytes)
    assert failed.returncode == 2
    assert failed.stderr.count("\n") == 1, failed.stderr  # one line, no traceback
    assert failed.stderr.startswith(f"pulltrace replay: could not write to {db}: the disk is "
                                    "full or a file size limit is reached (")
    assert failed.stderr.rstrip().endswith(
        f"free space there. The first 1000 reports of {rec} were replayed into {db}; once "
        "that is fixed, run the same command with --append to add the rest (the reports "
        "already there are skipped)")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*), max(seq) FROM reports").fetchone() == (1000, 1000)

    resumed = run_cli("replay", str(rec), "--db", str(db), "--append")
    assert resumed.returncode == 0, resumed.stderr
    with duckdb.connect(str(clean), read_only=True) as a, \
            duckdb.connect(str(db), read_only=True) as b:
        for query in ("SELECT node, epoch_ns(ts), body FROM reports ORDER BY seq",
                      "SELECT * FROM samples ORDER BY node, ts, digest",
                      "SELECT * FROM pulls ORDER BY id", "SELECT * FROM layers ORDER BY digest"):
            assert a.execute(query).fetchall() == b.execute(query).fetchall(), query


def test_past_the_backlog_cap_a_report_is_refused_at_once_while_the_disk_is_full(tmp_path):
    db = tmp_path / "backlog.duckdb"
    with CollectProcess(db, tmp_path / "collector.log",
                        args=("--stall-after", "1h", "--max-backlog", "2")) as collector, \
            httpx.Client(timeout=60) as client:
        collector.start()
        post = collector.url + "/api/v1/report"

        def metric(name: str) -> float:
            text = client.get(collector.metrics_url).text
            found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
            return float(found.group(1)) if found else 0.0

        assert client.post(post, content=node_report("a", 0, 1_000_000).dumps()) \
            .status_code == 200
        # answered from the journal: wait until the database has it too
        wait_for(lambda: metric("pulltrace_reports_unwritten") == 0, "the first commit")
        collector.limit_file_size(Path(f"{db}.wal").stat().st_size)
        time.sleep(0.55)  # a node's reports at least 500 ms apart
        answers: dict[str, int] = {}
        waiting = [threading.Thread(target=lambda n=n: answers.setdefault(
            n, client.post(post, content=node_report(n, 1, 2_000_000).dumps()).status_code))
            for n in ("a", "b")]
        for thread in waiting:
            thread.start()
        wait_for(lambda: metric("pulltrace_reports_unwritten") == 2, "two reports waiting")
        wait_for(lambda: client.get(collector.url + "/readyz").status_code == 503,
                 "a failed write")

        refused = client.post(post, content=node_report("c", 1, 3_000_000).dumps())
        dropped = metric('pulltrace_reports_dropped_total{reason="backlog"}')
        collector.limit_file_size(resource.RLIM_INFINITY)
        for thread in waiting:
            thread.join(timeout=90)
        # answered from the journal; the database catches up once space returns
        wait_for(lambda: metric("pulltrace_reports_unwritten") == 0, "the backlog written")
        unwritten = metric("pulltrace_reports_unwritten")
        listed = {p["nodeName"] for p in client.get(collector.url + "/api/v1/pulls")
                  .json()["pulls"]}
        assert collector.stop() == 0

    assert refused.status_code == 503
    assert refused.text.startswith(f"2 reports wait to be written (could not write to {db}: "
                                   "the disk is full")
    assert refused.text.rstrip().endswith(
        "the cap of --max-backlog; resend it later: nothing of it was recorded")
    assert dropped == 1
    assert answers == {"a": 200, "b": 200}
    assert unwritten == 0
    assert listed == {"a", "b"}  # c's pull was never started
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT node, epoch_ns(ts) FROM reports ORDER BY node, ts").fetchall()
    assert rows == [("a", at(0)), ("a", at(1)), ("b", at(1))]
