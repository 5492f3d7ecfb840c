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


def test_flatness_measures_growth_and_trend_from_the_start_minute():
    # RSS in kB at minutes 0, 15, 30, 45, 60: 1,000 at 15 min, then +10 kB every 15 min.
    series = [(0, 500), (15, 1000), (30, 1010), (45, 1020), (60, 1030)]
    flat = soak.flatness(series, 15)
    assert (flat.start, flat.end, flat.base_kb, flat.growth_kb) == (15, 60, 1000, 30)
    assert flat.ratio == 0.03
    # The readings lie on a line: its rise over 45 minutes is the growth itself.
    assert abs(flat.trend_kb - 30) < 1e-9
    assert flat.peak_kb == 30
    assert flat.flat  # 3% < 5%


def test_flatness_judges_the_line_through_every_reading_not_only_the_last():
    # +30 kB every 15 minutes, then a dip at 60 (DuckDB just checkpointed, say).
    series = [(15, 1000), (30, 1030), (45, 1060), (60, 1000)]
    flat = soak.flatness(series, 15)
    assert flat.growth_kb == 0
    assert flat.peak_kb == 60
    # Least squares through (0, 0), (15, 30), (30, 60), (45, 0) (minutes and kB from the
    # start): slope = sum(dx*dy) / sum(dx*dx) with dx = -22.5, -7.5, 7.5, 22.5 and
    # dy = -22.5, 7.5, 37.5, -22.5: (506.25 - 56.25 + 281.25 - 506.25) / 1125 = 0.2 kB/min,
    # 9 kB over 45 minutes: 0.9%, under 5%: flat by both figures.
    assert abs(flat.trend_kb - 9) < 1e-9
    assert flat.flat
    # The same shape ten times taller grows 9% along the line: not flat.
    tall = soak.flatness([(m, 1000 + 10 * (kb - 1000)) for m, kb in series], 15)
    assert tall.growth_kb == 0
    assert not tall.flat
