"""Writes that fail for real: a file size limit (RLIMIT_FSIZE) makes DuckDB's writes fail with
EFBIG, as a full disk fails them with ENOSPC, and lifting it is space coming back."""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from collector.engine import Engine
from collector.errors import StoreError
from collector.records import Output
from collector.service import Recorder
from collector.store import TABLES, Store
from tests.collector.reports import digest, layer, pull, report


@contextlib.contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """Files of this process cannot grow past ``nbytes`` (Python ignores SIGXFSZ, so the
    write fails with EFBIG instead)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def outputs(engine: Engine, first: int, count: int) -> list[Output]:
    """Reports at seconds first..first+count-1 of two nodes, each with a pull of 4 layers
    gaining 1000 B a second."""
    return [engine.ingest(report(node, t, pull(f"img/{node}", 0, *(
        layer(digest(10 * n + i), t * 1000, 10**6) for i in range(4)))))
        for t in range(first, first + count) for n, node in enumerate(("a", "b"))]


def counts(store: Store) -> dict[str, int]:
    return {table: store.count(table) for table in TABLES}


def test_a_write_failing_for_space_leaves_nothing_and_the_same_batch_lands_once_later(tmp_path):
    db = tmp_path / "full.duckdb"
    engine = Engine()
    with Store(db) as store:
        store.write(outputs(engine, 0, 3))
        before = counts(store)
        assert before["reports"] == 6
        assert before["samples"] == 24
        second = outputs(engine, 3, 2)
        wal = Path(f"{db}.wal")
        with file_size_limit(wal.stat().st_size):
            for _ in range(2):
                with pytest.raises(StoreError) as failed:
                    store.write(second)
                assert counts(store) == before  # nothing of the batch
            assert str(failed.value).startswith(f"could not write to {db}: the disk is full "
                                                "or a file size limit is reached")
            assert "File too large" in str(failed.value)
            assert str(failed.value).endswith("free space there")
        store.write(second)
        assert store.count("reports") == 10
        assert store.count("samples") == 40
    with Store(db) as store:
        assert store.one("SELECT list(seq ORDER BY seq) FROM reports") == (list(range(1, 11)),)
        # 4 layers of 2 nodes gaining 1000 B in each of 4 seconds after the baseline
        assert store.one("SELECT sum(fetched_bytes) FROM samples") == (32_000,)


def checkpoint_cannot_grow_the_file(store: Store, db: Path) -> int:
    """Every commit checkpoints, and the database file cannot grow: DuckDB makes the commit
    durable in the WAL, then fails the checkpoint and invalidates the connection."""
    store.con.execute("CHECKPOINT")
    store.con.execute("SET checkpoint_threshold = '1KB'")
    return db.stat().st_size


def test_a_commit_that_landed_before_duckdb_failed_is_not_written_again(tmp_path, caplog):
    db = tmp_path / "invalidated.duckdb"
    engine = Engine()
    caplog.set_level(logging.INFO, "pulltrace.store")
    with Store(db) as store:
        store.write(outputs(engine, 0, 2))
        size = checkpoint_cannot_grow_the_file(store, db)
        generation = store.generation
        with file_size_limit(size):
            store.write(outputs(engine, 2, 2))  # landed: no error to the caller
        assert store.generation == generation + 1  # a fresh connection
        assert "the batch is written, but DuckDB then failed" in caplog.text
        assert "Transaction COMMIT succeeded and is durable" in caplog.text
        assert store.count("reports") == 8
        store.write(outputs(engine, 4, 1))
        assert store.count("reports") == 10
        assert store.count("samples") == 40
    with Store(db) as store:
        assert store.count("reports") == 10
        assert store.one("SELECT count(DISTINCT seq) FROM reports") == (10,)


def test_an_invalidated_connection_is_replaced_once_the_file_opens_again(tmp_path, caplog):
    db = tmp_path / "held.duckdb"
    engine = Engine()
    caplog.set_level(logging.INFO, "pulltrace.store")
    with Store(db) as store:
        store.write(outputs(engine, 0, 2))
        size = checkpoint_cannot_grow_the_file(store, db)
        # Another connection of this process keeps DuckDB's invalidated instance alive, so
        # the file cannot be opened afresh until it closes.
        other = duckdb.connect(str(db))
        second = outputs(engine, 2, 2)
        with file_size_limit(size), pytest.raises(StoreError) as failed:
            store.write(second)
        assert "File too large" in str(failed.value)  # the cause, not its aftermath
        with pytest.raises(StoreError, match=f"the database {db} cannot be opened again yet: "
                                             "DuckDB invalidated it"):
            store.write(second)  # the same instance again: still unusable
        other.close()
        # The retry of the same batch finds it in the file: it had landed before the error.
        store.write(second)
        assert "opened " + str(db) + " again" in caplog.text
        assert store.count("reports") == 8
        assert store.count("samples") == 32
        store.write(outputs(engine, 4, 1))
    with Store(db) as store:
        assert store.one("SELECT list(seq ORDER BY seq) FROM reports") == (list(range(1, 11)),)


def test_a_recording_append_that_fails_leaves_no_half_line(tmp_path):
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(path)
    try:
        recorder.write(['{"a":1}'])
        with file_size_limit(path.stat().st_size + 5), pytest.raises(
                StoreError, match=f"could not append to the recording {path}: File too large"):
            recorder.write(['{"b":2222222222}', '{"c":3}'])
        assert path.read_text() == '{"a":1}\n'
        recorder.write(['{"b":2222222222}', '{"c":3}'])
    finally:
        recorder.close()
    assert path.read_text() == '{"a":1}\n{"b":2222222222}\n{"c":3}\n'
