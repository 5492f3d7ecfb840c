"""The DuckDB store: batched writes, recovery of in-flight and finished pulls."""

from __future__ import annotations

import pytest

from collector.engine import Engine
from collector.errors import StoreError
from collector.model import LayerPhase
from collector.store import Store
from tests.collector.reports import digest, layer, pull, report

A, B, C = digest(1), digest(2), digest(3)
MT = "application/vnd.oci.image.layer.v1.tar+gzip"


def feed(store: Store, engine: Engine) -> None:
    outs = [
        engine.ingest(report("n1", 0, pull("done:1", 0, layer(A, 0, 4000, media_type=MT),
                                            layer(B, 0, 900, state=LayerPhase.CACHED)),
                             pull("live:1", 0, layer(C, 0, 10_000)))),
        engine.ingest(report("n1", 1, pull("done:1", 0, layer(A, 2000, 4000, media_type=MT),
                                            layer(B, 0, 900, state=LayerPhase.CACHED)),
                             pull("live:1", 0, layer(C, 1000, 10_000)))),
        engine.ingest(report("n1", 2, pull("live:1", 0, layer(C, 3000, 10_000)))),
    ]
    store.write(outs[:1])
    store.write(outs[1:])


def test_restart_lists_finished_pulls_as_before_and_rebuilds_live_ones(tmp_path):
    db = tmp_path / "s.duckdb"
    before = Engine()
    with Store(db) as store:
        feed(store, before)
    after = Engine()
    with Store(db) as store:
        assert store.recover(after) == 1
        assert store.count("pulls") == 2
    assert [p.to_json() for p in after.pulls()] == [p.to_json() for p in before.pulls()]
    done = next(p for p in after.pulls() if p.image_ref == "done:1")
    assert (done.status.value, done.downloaded_bytes, done.cached_bytes) == (
        "completed", 4000, 900)
    live = next(p for p in after.pulls() if p.image_ref == "live:1")
    # 2000 B in the 1 s since its first increase: the 0-byte opening is not transfer time
    assert live.bytes_per_sec == pytest.approx(2000.0)
    # a repeat of the finished pull changes nothing after the restart either
    again = after.ingest(report("n1", 3, pull("done:1", 0, layer(A, 4000, 4000)),
                                pull("live:1", 0, layer(C, 4000, 10_000))))
    assert {s.image_ref for s in again.samples} == {"live:1"}


def test_an_unwritable_path_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the folder"):
        Store(blocker / "sub" / "x.duckdb")


def test_an_upsert_replaces_a_row_written_long_before_others(tmp_path):
    # The upsert's delete looks only at rows first seen since the batch's oldest; the old row
    # of a long pull is such a row, whatever came after it.
    engine = Engine()
    with Store(tmp_path / "u.duckdb") as store:
        store.write([engine.ingest(report("n1", 0, pull("long:1", 0,
                                                        layer(A, 1000, 10_000))))])
        for t in range(1, 6):  # other nodes' pulls, started later
            store.write([engine.ingest(report(f"m{t}", t, pull(f"other:{t}", t,
                                                                layer(B, 0, 5000))))])
        store.write([engine.ingest(report("n1", 6, pull("long:1", 0,
                                                        layer(A, 7000, 10_000))))])
        rows = store.con.execute(
            "SELECT p.downloaded_bytes, l.downloaded_bytes, l.last_seen = p.last_seen "
            "FROM pulls p JOIN layers l ON l.pull_id = p.id WHERE p.image_ref = 'long:1'"
        ).fetchall()
        assert rows == [(7000, 7000, True)]  # one row each, the latest
        assert store.count("pulls") == 6
        assert store.count("layers") == 6
