"""The frames of the small recording (tests/analysis/small.py), worked out by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from pulltrace_analysis import frames
from tests.analysis.small import (
    APP,
    CONFIG_MT,
    DB,
    ERROR,
    LAYER_MT,
    SLOW,
    T0,
    A,
    B,
    C,
    K,
    S,
)

START = datetime(1970, 1, 1) + timedelta(microseconds=T0 // 1000)


def t(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def by_node(data: pl.DataFrame, node: str) -> list[tuple[datetime, float]]:
    rows = data.filter(pl.col("node") == node)
    return list(zip(rows["time"].to_list(), rows["bytes_per_sec"].to_list(), strict=True))


def test_throughput_per_second_by_node(rec):
    data = frames.throughput(rec, every="1s", by="node")
    assert data.columns == ["time", "node", "bytes", "bytes_per_sec"]
    # n1: A's 1,000,000 land in [0, 1) with C's 1,000 (in [0, 0.5)); A's 1,500,000 in
    # [1, 1.5); its 900,000 over [1.5, 2.5) split 450,000 / 450,000; the 600,000 committed
    # at 4 spread over [2.5, 4): 200,000 in second 2, 400,000 in second 3.
    assert by_node(data, "n1") == [(t(0), 1_001_000.0), (t(1), 1_950_000.0),
                                   (t(2), 650_000.0), (t(3), 400_000.0)]
    # n2: 1,000,000 over [0.5, 1.5); nothing after (it failed).
    assert by_node(data, "n2") == [(t(0), 500_000.0), (t(1), 500_000.0)]
    # n3: 1,000,000 in [0, 1); 3,200,000 over the 32 s [1, 33) (100,000/s, the stall
    # included); the 800,000 committed at 34 over [33, 34).
    assert by_node(data, "n3") == ([(t(0), 1_000_000.0)]
                                   + [(t(s), 100_000.0) for s in range(1, 33)]
                                   + [(t(33), 800_000.0)])


def test_throughput_integrates_back_to_the_bytes_fetched(rec):
    fetched = 4_001_000 + 1_000_000 + 5_000_000  # cached K counts nothing
    for by in ("pull", "node", "total"):
        for every in ("1s", "250ms", "7s"):
            data = frames.throughput(rec, every=every, by=by)
            seconds = frames.duration_ns(every) / 1e9
            assert data["bytes"].sum() == pytest.approx(fetched)
            assert (data["bytes_per_sec"] * seconds).sum() == pytest.approx(fetched)


def test_throughput_total_and_per_pull(rec):
    total = frames.throughput(rec, by="total")
    assert total.columns == ["time", "bytes", "bytes_per_sec"]
    assert total["bytes_per_sec"].to_list()[:5] == [2_501_000.0, 2_550_000.0, 750_000.0,
                                                    500_000.0, 100_000.0]
    assert total.height == 34
    assert total["bytes_per_sec"][-1] == 800_000.0
    per_pull = frames.throughput(rec, by="pull")
    assert per_pull.columns == ["time", "pull_id", "node", "image_ref", "bytes",
                                "bytes_per_sec"]
    app = per_pull.filter(pl.col("image_ref") == APP)
    assert app["bytes_per_sec"].to_list() == [1_001_000.0, 1_950_000.0, 650_000.0, 400_000.0]
    # Two-second buckets: n1 fetched 2,951,000 in [0, 2) and 1,050,000 in [2, 4).
    two = frames.throughput(rec, every="2s", by="node").filter(pl.col("node") == "n1")
    assert two["bytes_per_sec"].to_list() == [1_475_500.0, 525_000.0]
    with pytest.raises(ValueError, match="by: expected one of pull, node, total"):
        frames.throughput(rec, by="image")


def test_media_type_breakdown(rec):
    data = frames.media_type_breakdown(rec)
    rows = {r["media_type"]: r for r in data.iter_rows(named=True)}
    assert list(rows) == [LAYER_MT, CONFIG_MT]  # most bytes first
    layer = rows[LAYER_MT]
    # A 4,000,000 in 4 s, B 1,000,000 in 2 s (failed), S 5,000,000 in 34 s; K cached.
    assert (layer["kind"], layer["bytes"], layer["layers"], layer["cached_layers"],
            layer["cached_bytes"], layer["seconds"], layer["mean_bytes_per_sec"]) == (
        "layer", 10_000_000, 4, 1, 2_000_000, 40.0, 250_000.0)
    config = rows[CONFIG_MT]
    assert (config["kind"], config["bytes"], config["layers"], config["seconds"],
            config["mean_bytes_per_sec"]) == ("config", 1_000, 1, 0.5, 2_000.0)
    assert layer["share"] == 10_000_000 / 10_001_000
    assert config["share"] == 1_000 / 10_001_000


def test_size_breakdown(rec):
    data = frames.size_breakdown(rec)
    assert data["size_class"].to_list() == ["< 1 MB", "1-10 MB"]
    small, mid = data.iter_rows(named=True)
    assert (small["layers"], small["bytes"], small["seconds"]) == (1, 1_000, 0.5)
    assert (mid["layers"], mid["cached_layers"], mid["bytes"], mid["seconds"]) == (
        4, 1, 10_000_000, 40.0)


def test_layer_timeline(rec):
    data = frames.layer_timeline(rec)
    rows = {r["digest"]: r for r in data.iter_rows(named=True)}
    assert set(rows) == {A, B, C, K, S}
    cols = ("status", "stalled", "start", "first_byte", "end", "bytes", "seconds",
            "wait_seconds", "mean_bytes_per_sec")

    def pick(d):
        return tuple(rows[d][c] for c in cols)

    assert pick(A) == ("completed", False, t(0), t(1), t(4), 4_000_000, 4.0, 1.0, 1_000_000.0)
    assert pick(C) == ("completed", False, t(0), t(0.5), t(0.5), 1_000, 0.5, 0.5, 2_000.0)
    assert pick(K) == ("cached", False, t(0), None, t(0), 0, 0.0, None, None)
    assert pick(B) == ("failed", False, t(0.5), t(1.5), t(2.5), 1_000_000, 2.0, 1.0,
                       500_000.0)
    assert pick(S) == ("completed", True, t(0), t(1), t(34), 5_000_000, 34.0, 1.0,
                       5_000_000 / 34)
    assert rows[A]["short_digest"] == A[7:19]
    assert rows[C]["kind"] == "config"
    assert (rows[B]["node"], rows[B]["image_ref"]) == ("n2", DB)


def test_pull_summary(rec):
    data = frames.pull_summary(rec)
    rows = {r["image_ref"]: r for r in data.iter_rows(named=True)}
    cols = ("node", "status", "started_at", "completed_at", "duration_seconds", "total_bytes",
            "fetched_bytes", "cached_bytes", "layers", "layers_done", "mean_bytes_per_sec",
            "stalls", "error")

    def pick(image):
        return tuple(rows[image][c] for c in cols)

    assert pick(APP) == ("n1", "completed", t(0), t(4), 4.0, 6_001_000, 4_001_000, 2_000_000,
                         3, 3, 1_000_250.0, 0, None)
    assert pick(DB) == ("n2", "failed", t(0.5), t(2.5), 2.0, 3_000_000, 1_000_000, 0, 1, 0,
                        500_000.0, 0, ERROR)
    assert pick(SLOW) == ("n3", "completed", t(0), t(34), 34.0, 5_000_000, 5_000_000, 0, 1, 1,
                          5_000_000 / 34, 1, None)
    # The top speed the collector showed: app at 2 s, A's 1,500,000 in the 0.5 s since its
    # previous step (the opening at 0 B is no longer the window's edge once two steps
    # landed); db and slow at their first step, 1,000,000 in 1 s.
    assert [rows[i]["peak_bytes_per_sec"] for i in (APP, DB, SLOW)] == [3e6, 1e6, 1e6]


def test_eta_accuracy(rec):
    data = frames.eta_accuracy(rec).filter(pl.col("image_ref") == APP)
    assert data["ts"].to_list() == [t(0), t(1), t(2), t(3), t(4)]
    assert data["remaining_seconds"].to_list() == [4.0, 3.0, 2.0, 1.0, 0.0]
    # At 1: 3,000,000 left at 1,000,000/s -> 3 s, exact. At 2: 1,500,000 left at 3,000,000/s
    # -> 0.5 s, 1.5 s too soon. At 3: 600,000 left at (3,400,000 - 1,000,000) / 1.5 s ->
    # 0.375 s, 0.625 s too soon. Done at 4: 0.
    assert data["eta_seconds"].to_list() == [None, 3.0, 0.5, 0.375, 0.0]
    assert data["error_seconds"].to_list() == [None, 0.0, -1.5, -0.625, 0.0]
    assert data["elapsed_seconds"].to_list() == [0.0, 1.0, 2.0, 3.0, 4.0]
    failed = frames.eta_accuracy(rec).filter(pl.col("image_ref") == DB)
    assert failed["remaining_seconds"].null_count() == failed.height  # it never completed


def test_errors_and_stalls(rec):
    errors = frames.errors(rec)
    assert errors.columns == ["ts", "node", "pull_id", "image_ref", "error"]
    assert errors.select("ts", "node", "image_ref", "error").rows() == [
        (t(2.5), "n2", DB, ERROR)]
    stalls = frames.stalls(rec)
    # 30 s without progress after the step at 1; bytes landed again at 33.
    assert stalls.select("ts", "node", "image_ref", "digest", "type", "resumed_at",
                         "seconds").rows() == [
        (t(31), "n3", SLOW, S, "layer.stalled", t(33), 2.0),
        (t(31), "n3", SLOW, None, "pull.stalled", t(33), 2.0)]


def test_snapshot_shows_each_pull_as_it_stood(rec):
    at_two = {r["image_ref"]: r for r in frames.snapshot(rec, t(2)).iter_rows(named=True)}
    assert set(at_two) == {APP, DB, SLOW}
    assert (at_two[APP]["status"], at_two[APP]["bytes_per_sec"], at_two[APP]["ts"]) == (
        "active", 3e6, t(2))
    assert (at_two[DB]["downloaded_bytes"], at_two[DB]["ts"]) == (1_000_000, t(1.5))
    later = {r["image_ref"]: r["status"] for r in frames.snapshot(rec, t(32)).iter_rows(
        named=True)}
    assert later == {APP: "completed", DB: "failed", SLOW: "stalled"}
    assert frames.snapshot(rec, t(-1)).height == 0


def test_media_kind_and_short_digest():
    data = pl.DataFrame({"m": ["", LAYER_MT, CONFIG_MT,
                               "application/vnd.oci.image.index.v1+json",
                               "application/vnd.docker.distribution.manifest.list.v2+json",
                               "application/vnd.oci.image.manifest.v1+json", "text/plain"]})
    assert data.select(frames.media_kind(pl.col("m")).alias("k"))["k"].to_list() == [
        "unknown", "layer", "config", "index", "index", "manifest", "other"]
    images = pl.DataFrame({"i": ["127.0.0.1:5000/demo/web:1.0", "docker.io/library/nginx:1",
                                 "localhost/x:1", "reg/app:1", "r.io/db@sha256:" + "c1" * 32]})
    assert images.select(frames.short_image(pl.col("i")).alias("s"))["s"].to_list() == [
        "demo/web:1.0", "library/nginx:1", "x:1", "reg/app:1", "db@" + "c1" * 6]
    digests = pl.DataFrame({"d": ["sha256:" + "ab" * 32, "plain"]})
    assert digests.select(frames.short_digest(pl.col("d")).alias("s"))["s"].to_list() == [
        "ab" * 6, "plain"]
