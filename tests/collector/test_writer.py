"""The database writer in its own process: batches land once, a lost writer is replaced,
exports are read through it, and it never outlives the collector."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest

from collector import writer as writer_module
from collector.engine import Engine
from collector.errors import StoreError
from collector.export import ExportQuery
from collector.records import Batch, Columns
from collector.store import Store
from collector.writer import WriterProcess
from tests.collector.process import CollectProcess
from tests.collector.reports import digest, layer, pull, report


def batches(engine: Engine, node: str, seconds: range) -> list[Batch]:
    """One batch per report: a pull of two layers, 1 MB more of each every second."""
    return [Batch.of([engine.ingest(report(
        node, t, pull("app:1", 0, layer(digest(1), 1_000_000 * (t + 1), 10_000_000),
                      layer(digest(2), 1_000_000 * (t + 1), 10_000_000))))])
            for t in seconds]


def counts(db: Path) -> tuple[int, int, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT (SELECT count(*) FROM reports), "
                          "(SELECT count(*) FROM samples), "
                          "(SELECT value FROM meta WHERE key = 'batch')").fetchall()[0]
    return int(row[0]), int(row[1]), int(row[2])


def wait_gone(pid: int, what: str) -> None:
    """Until ``pid`` has exited (a zombie has: its files, and so its locks, are released)."""
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and not _state(pid).startswith("z"):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (pid {pid}) is still running")
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""  # between states: look again
    return text[text.rindex(")") + 2:].lower()


def test_batches_written_through_the_writer_are_in_the_file_once(tmp_path):
    db = tmp_path / "w.duckdb"
    engine = Engine()
    writer = WriterProcess(Store(db))
    assert writer.recover(engine) == 0
    for batch in batches(engine, "a", range(3)):
        writer.write(batch)
    page = writer.read_page(ExportQuery("samples", None, 100, "arrow"))
    writer.close()
    # 3 reports of 2 layers: 6 samples, 3 batches
    assert counts(db) == (3, 6, 3)
    assert page.table.num_rows == 6
    assert page.table.column("downloaded_bytes").to_pylist() == [
        1_000_000, 1_000_000, 2_000_000, 2_000_000, 3_000_000, 3_000_000]


def test_a_writer_killed_between_batches_is_replaced_and_nothing_is_written_twice(tmp_path):
    db = tmp_path / "k.duckdb"
    engine = Engine()
    writer = WriterProcess(Store(db))
    writer.recover(engine)
    first, second, third = batches(engine, "a", range(3))
    writer.write(first)
    assert writer._proc is not None
    child = writer._proc.pid
    assert child is not None
    os.kill(child, signal.SIGKILL)
    wait_gone(child, "the killed writer")
    with pytest.raises(StoreError, match=r"the database writer for .* stopped \(exit code "
                                         r"-9\); a new one starts with the next write"):
        writer.write(second)
    writer.write(second)  # the collector's retry: a new writer, which checks the file first
    writer.write(third)
    writer.close()
    assert counts(db) == (3, 6, 3)


def test_a_batch_that_may_have_landed_is_not_written_again(tmp_path):
    # What a new writer does when the old one was lost after its COMMIT but before its
    # answer: the file's batch counter says the batch is there.
    db = tmp_path / "u.duckdb"
    engine = Engine()
    first, second = batches(engine, "a", range(2))
    with Store(db) as store:
        store.write(first)
        store.may_have_landed(1)
        store.write(first)  # landed: not written again
        store.may_have_landed(2)
        store.write(second)  # did not land: written
    assert counts(db) == (2, 4, 2)


def test_the_writer_dies_with_the_collector(tmp_path):
    db = tmp_path / "p.duckdb"
    script = textwrap.dedent(f"""
        import sys, time
        from collector.engine import Engine
        from collector.store import Store
        from collector.writer import WriterProcess
        writer = WriterProcess(Store({str(db)!r}))
        writer.recover(Engine())
        print(writer._proc.pid, flush=True)
        time.sleep(600)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                          cwd=Path(__file__).parents[2]) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert Path(f"/proc/{child}").exists()
        finally:
            parent.kill()
            parent.wait()
        # At once, as a restarted collector would: the writer may still be exiting, and the
        # store waits for it to let go of the file rather than call the file in use.
        with Store(db) as store:
            assert store.count("reports") == 0
        wait_gone(child, "the writer of a killed collector")


def test_a_writer_that_cannot_open_the_file_says_why(tmp_path):
    db = tmp_path / "l.duckdb"
    writer = WriterProcess(Store(db))
    writer.recover(Engine())
    writer.close()
    again = WriterProcess(_closed_store(db))
    holder = duckdb.connect(str(db))  # another writer holds it now
    try:
        with pytest.raises(StoreError, match=r"in use by another process .*pid "
                                             rf"{os.getpid()}"):
            again.write(Batch())
    finally:
        holder.close()


def _closed_store(db: Path) -> Store:
    store = Store(db)
    store.close()
    return store


def test_an_export_read_while_the_writer_is_gone_is_refused_then_served_again(tmp_path):
    db = tmp_path / "r.duckdb"
    engine = Engine()
    writer = WriterProcess(Store(db))
    writer.recover(engine)
    first, second = batches(engine, "a", range(2))
    writer.write(first)
    assert writer._proc is not None
    assert writer._proc.pid is not None
    child = writer._proc.pid
    os.kill(child, signal.SIGKILL)
    wait_gone(child, "the killed writer")
    query = ExportQuery("samples", None, 100, "arrow")
    with pytest.raises(StoreError, match="stopped; try again in a moment"):
        writer.read_page(query)
    with pytest.raises(StoreError, match="stopped"):
        writer.write(second)  # finds the writer gone
    writer.write(second)  # a new one
    assert writer.read_page(query).table.num_rows == 4  # two reports of two layers
    writer.close()


def test_a_running_collector_exports_what_its_writer_wrote(tmp_path):
    # GET /api/v1/export on `pulltrace collect`: the page is read by the writer process.
    rep = report("n1", 0, pull("app:1", 0, layer(digest(1), 3_000_000, 8_000_000),
                               layer(digest(2), 5_000_000, 8_000_000)))
    with CollectProcess(tmp_path / "e.duckdb", tmp_path / "e.log") as collector:
        collector.start()
        assert httpx.post(collector.url + "/api/v1/report", content=rep.dumps(),
                          timeout=30).status_code == 200
        resp = httpx.get(collector.url + "/api/v1/export",
                         params={"table": "samples", "format": "arrow"}, timeout=30)
        assert collector.stop() == 0
    assert resp.status_code == 200
    assert resp.headers["X-Rows"] == "2"
    table = pa.ipc.open_stream(resp.content).read_all()
    assert sorted(table.column("downloaded_bytes").to_pylist()) == [3_000_000, 5_000_000]


def test_a_batch_crosses_to_the_writer_in_chunks_and_arrives_whole(monkeypatch):
    monkeypatch.setattr(writer_module, "_CHUNK", 3)  # 7 reports' rows: chunks of 3, 3, 1
    engine = Engine()
    outs = [engine.ingest(report(f"n{n}", t, pull("app:1", 0, layer(digest(n), 1_000 * t,
                                                                     10_000))))
            for t in range(1, 3) for n in range(4)]
    batch = Batch.of(outs[:7])
    assert len(batch.samples) == 7
    assert writer_module._unpack(writer_module._pack(batch)) == Columns.of(batch)
    empty = Batch.of([])
    assert writer_module._unpack(writer_module._pack(empty)) == Columns.of(empty)
    columns = Columns.of(batch)
    assert writer_module._unpack(writer_module._pack(columns)) == columns
