"""The in-process parts, small: what they print is computed from what really ran."""

from __future__ import annotations

from bench import pipeline, soak
from bench.report import Results


def test_engine_and_store_parts_write_the_same_rows_as_their_limit():
    results = Results()
    pipeline.run(results, nodes=20, ticks=2, batch_sizes=(10,), small_fleet=5)
    engine = results.details["engine"]
    store = results.details["store_10"]
    assert engine["reports"] == 20 * 2
    assert store["samples"] == engine["samples"]
    # 40 reports in batches of 10.
    assert store["batches"] == 4
    # The limit database got the very rows the store wrote (checked by the part itself).
    assert store["limit_rows"] == store["store_rows"]
    figures = {r.figure: r for r in results.rows}
    assert "ingest + Batch.of + Store.write, 10/commit" in figures
    assert figures["Engine.ingest, 20-node fleet"].limit_name == "same, 5-node fleet"


def test_an_hour_of_two_nodes_reads_memory_every_quarter():
    results = Results()
    soak.run(results, nodes=2, minutes=30, history_ttl_s=120, commit_every=30)
    readings = results.details["soak"]["readings"]
    assert [r["minute"] for r in readings] == [0, 15, 30]
    # Two nodes report every simulated second: 1,800 reports in 15 minutes.
    assert [r["reports"] for r in readings] == [0, 1800, 3600]
    # Finished pulls leave the list after the two-minute TTL; keys of finished pulls stay.
    assert readings[-1]["history"] + readings[-1]["pulls"] < readings[-1]["finished_keys"]
    assert all(r["rss_kb"] > 0 for r in readings)
