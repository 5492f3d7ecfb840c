"""Pure functions of a :class:`Recording`, each returning a polars DataFrame.

Times are naive UTC ``Datetime("ns")``; sizes in bytes; speeds in bytes per second;
durations in seconds (float). A layer here is one layer of one pull (``pull_id, digest``).
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta

import polars as pl

from collector.timefmt import NS
from pulltrace_analysis.recording import Recording
from pulltrace_analysis.replay import duration_ns

UNKNOWN = "unknown"  # media type label when the reporter sent none
_GROUPS = {"pull": ["pull_id"], "node": ["node"], "total": []}
_KINDS = (("manifest.list", "index"), ("image.index", "index"), ("manifest", "manifest"),
          ("config", "config"), ("container.image", "config"), ("layer", "layer"),
          ("rootfs", "layer"))


def _seconds(end: pl.Expr, start: pl.Expr) -> pl.Expr:
    return (end - start).dt.total_nanoseconds() / NS


def short_digest(expr: pl.Expr) -> pl.Expr:
    """``sha256:0123456789abcdef...`` -> ``0123456789ab``."""
    return expr.str.replace(r"^[a-z0-9]+:", "").str.slice(0, 12)


REGISTRY_HOST = r"^(?:[^/]*[.:][^/]*|localhost)/"  # a first path part with "." or ":"
PINNED_DIGEST = r"@([a-z0-9]+):([0-9a-f]{12})[0-9a-f]*$"


def short_image(expr: pl.Expr) -> pl.Expr:
    """An image reference without its registry host, a digest cut to 12 digits:
    ``127.0.0.1:5000/demo/web:1.0`` -> ``demo/web:1.0``, ``r.io/db@sha256:c182...`` ->
    ``db@c1823f25916c``."""
    return expr.str.replace(REGISTRY_HOST, "").str.replace(PINNED_DIGEST, "@$2")


def short_image_name(image: str) -> str:
    """:func:`short_image` of one string."""
    return re.sub(PINNED_DIGEST, r"@\2", re.sub(REGISTRY_HOST, "", image))


def media_kind(expr: pl.Expr) -> pl.Expr:
    """manifest, index, config, layer, other — or unknown when no media type was sent."""
    out = pl.lit("other")
    for needle, kind in reversed(_KINDS):
        out = pl.when(expr.str.contains(needle, literal=True)).then(pl.lit(kind)).otherwise(out)
    return pl.when(expr == "").then(pl.lit(UNKNOWN)).otherwise(out)


# --- throughput -----------------------------------------------------------------------


def throughput(rec: Recording, every: str | float | timedelta = "1s",
               by: str = "pull") -> pl.DataFrame:
    """Fetched bytes per second in buckets of ``every``.

    A sample's ``fetched_bytes`` landed between its layer's previous ``updated_at`` and its
    own; they are spread evenly over that interval, then summed per bucket, so the rows
    integrate back to the bytes fetched (cached layers count nothing). Buckets between a
    group's first and last are all present (0 when nothing landed).

    Columns: ``time`` (bucket start), then ``pull_id, node, image_ref`` (by="pull"),
    ``node`` (by="node") or nothing (by="total"), then ``bytes`` (landed in the bucket) and
    ``bytes_per_sec``.
    """
    if by not in _GROUPS:
        raise ValueError(f"by: expected one of {', '.join(_GROUPS)}, got {by!r}")
    keys = _GROUPS[by]
    width = duration_ns(every)
    layer = ["pull_id", "digest"]
    spans = (
        rec.samples.lazy()
        .select(*dict.fromkeys([*keys, *layer]), "fetched_bytes",
                end=pl.col("updated_at").dt.epoch("ns"))
        .with_columns(start=pl.col("end").cum_max().shift(1).over(layer))
        .filter(pl.col("fetched_bytes") > 0)
        .with_columns(start=pl.min_horizontal(pl.col("start").fill_null(pl.col("end")),
                                              pl.col("end")))
        .with_columns(
            first=pl.col("start") // width,
            last=pl.when(pl.col("end") > pl.col("start"))
            .then((pl.col("end") - 1) // width).otherwise(pl.col("end") // width))
    )
    # One row per (sample, bucket it overlaps); most intervals fall in one or two buckets.
    pieces = (
        spans.with_columns(bucket=pl.int_ranges(pl.col("first"), pl.col("last") + 1))
        .explode("bucket")
        .with_columns(overlap=pl.min_horizontal(pl.col("end"), (pl.col("bucket") + 1) * width)
                      - pl.max_horizontal(pl.col("start"), pl.col("bucket") * width))
        .with_columns(bytes=pl.when(pl.col("end") > pl.col("start"))
                      .then(pl.col("fetched_bytes") * pl.col("overlap")
                            / (pl.col("end") - pl.col("start")))
                      .otherwise(pl.col("fetched_bytes").cast(pl.Float64)))
    )
    sums = pieces.group_by([*keys, "bucket"]).agg(pl.col("bytes").sum())
    bounds = {"lo": pl.col("bucket").min(), "hi": pl.col("bucket").max()}
    grid = (sums.group_by(keys).agg(**bounds) if keys else
            sums.select(**bounds).filter(pl.col("lo").is_not_null()))
    grid = (grid.with_columns(bucket=pl.int_ranges(pl.col("lo"), pl.col("hi") + 1))
            .explode("bucket").drop("lo", "hi"))
    out = (
        grid.join(sums, on=[*keys, "bucket"], how="left")
        .with_columns(pl.col("bytes").fill_null(0.0))
        .with_columns(time=pl.from_epoch(pl.col("bucket") * width, time_unit="ns"),
                      bytes_per_sec=pl.col("bytes") * (NS / width))
        .sort([*keys, "bucket"])
        .select("time", *keys, "bytes", "bytes_per_sec")
        .collect()
    )
    if by == "pull":
        names = rec.pulls.select(pull_id="id", node="node", image_ref="image_ref")
        out = out.join(names, on="pull_id", how="left").select(
            "time", "pull_id", "node", "image_ref", "bytes", "bytes_per_sec")
    return out


# --- layers -----------------------------------------------------------------------------


def _start() -> pl.Expr:
    """When a layer started: containerd's start, else when first seen — but never after it
    ended (a blob already committed when the collector first saw it ended earlier)."""
    return pl.min_horizontal(pl.coalesce("started_at", "first_seen"),
                             pl.coalesce("completed_at", "last_seen"))


def layer_timeline(rec: Recording) -> pl.DataFrame:
    """One row per layer of a pull.

    Columns: ``pull_id, node, image_ref, digest, short_digest, media_type, kind, status``
    (completed, failed, cached, stalled, downloading), ``stalled`` (a stall was seen at any
    time), ``start`` (containerd's start, else first seen; at most ``end``), ``first_byte``,
    ``end`` (completion, else last seen), ``finished``, ``bytes`` (fetched), ``total_bytes``,
    ``seconds`` (end - start), ``wait_seconds`` (first_byte - start),
    ``mean_bytes_per_sec`` (bytes / seconds; null for cached layers and zero spans).
    """
    stalled = (rec.events.filter(pl.col("type") == "layer.stalled")
               .select("pull_id", "digest").unique().with_columns(stalled=pl.lit(True)))
    seconds = _seconds(pl.col("end"), pl.col("start"))
    return (
        rec.layers
        .join(stalled, on=["pull_id", "digest"], how="left")
        .select(
            "pull_id", "node", "image_ref", "digest",
            short_digest=short_digest(pl.col("digest")),
            media_type=pl.when(pl.col("media_type") == "").then(pl.lit(UNKNOWN))
            .otherwise(pl.col("media_type")),
            kind=media_kind(pl.col("media_type")),
            status="status",
            stalled=pl.col("stalled").fill_null(False),
            start=_start(),
            first_byte="first_byte_at",
            end=pl.coalesce("completed_at", "last_seen"),
            finished=pl.col("completed_at").is_not_null(),
            bytes="fetched_bytes",
            total_bytes="total_bytes",
        )
        .with_columns(seconds=seconds,
                      wait_seconds=_seconds(pl.col("first_byte"), pl.col("start")))
        .with_columns(mean_bytes_per_sec=pl.when(
            (pl.col("seconds") > 0) & (pl.col("status") != "cached"))
            .then(pl.col("bytes") / pl.col("seconds")))
        .sort(["start", "pull_id", "digest"])
    )


def _layer_spans(rec: Recording) -> pl.DataFrame:
    """The few columns the breakdowns need, without the rest of the timeline's work."""
    return rec.layers.select(
        media_type=pl.when(pl.col("media_type") == "").then(pl.lit(UNKNOWN))
        .otherwise(pl.col("media_type")),
        status="status", bytes="fetched_bytes", total_bytes="total_bytes",
        seconds=_seconds(pl.coalesce("completed_at", "last_seen"), _start()))


def _group_layers(spans: pl.DataFrame, key: str) -> pl.DataFrame:
    fetched = pl.col("status") != "cached"
    return (
        spans.group_by(key)
        .agg(bytes=pl.col("bytes").sum(),
             layers=pl.len(),
             cached_layers=(~fetched).sum(),
             cached_bytes=pl.col("total_bytes").filter(~fetched).sum(),
             seconds=pl.col("seconds").filter(fetched).sum())
        .with_columns(mean_bytes_per_sec=pl.when(pl.col("seconds") > 0)
                      .then(pl.col("bytes") / pl.col("seconds")),
                      share=pl.col("bytes") / pl.col("bytes").sum())
        .with_columns(pl.col("layers", "cached_layers").cast(pl.Int64),
                      pl.col("bytes", "cached_bytes").cast(pl.Int64))
    )


def media_type_breakdown(rec: Recording) -> pl.DataFrame:
    """Where the bytes and the time go, one row per media type, most bytes first.

    Columns: ``media_type`` ("unknown" when none was sent), ``kind``, ``bytes`` (fetched),
    ``layers`` (layers of pulls, cached ones included), ``cached_layers``,
    ``cached_bytes``, ``seconds`` (summed download time of the fetched layers),
    ``mean_bytes_per_sec`` (bytes / seconds), ``share`` (of all fetched bytes).
    """
    out = _group_layers(_layer_spans(rec), "media_type").with_columns(
        kind=media_kind(pl.when(pl.col("media_type") == UNKNOWN).then(pl.lit(""))
                        .otherwise(pl.col("media_type"))))
    return out.select("media_type", "kind", "bytes", "layers", "cached_layers", "cached_bytes",
                      "seconds", "mean_bytes_per_sec", "share"
                      ).sort(["bytes", "media_type"], descending=[True, False])


SIZE_EDGES = (1_000_000, 10_000_000, 100_000_000)


def size_breakdown(rec: Recording, edges: tuple[int, ...] = SIZE_EDGES) -> pl.DataFrame:
    """The same figures as :func:`media_type_breakdown`, by layer size class.

    Columns: ``size_class`` (e.g. "1-10 MB", by ``total_bytes``), ``min_bytes``, then as in
    media_type_breakdown; smallest class first.
    """
    bounds = [0, *edges]
    labels = [f"< {edges[0] / 1e6:g} MB"] + [
        f"{lo / 1e6:g}-{hi / 1e6:g} MB" for lo, hi in itertools.pairwise(edges)
    ] + [f">= {edges[-1] / 1e6:g} MB"]
    cls = pl.lit(labels[0])
    low = pl.lit(0, dtype=pl.Int64)
    for edge, label in zip(bounds[1:], labels[1:], strict=True):
        cls = pl.when(pl.col("total_bytes") >= edge).then(pl.lit(label)).otherwise(cls)
        low = pl.when(pl.col("total_bytes") >= edge).then(pl.lit(edge)).otherwise(low)
    spans = _layer_spans(rec).with_columns(size_class=cls, min_bytes=low)
    out = _group_layers(spans, "size_class").join(
        spans.group_by("size_class").agg(pl.col("min_bytes").first()), on="size_class")
    return out.select("size_class", "min_bytes", "bytes", "layers", "cached_layers",
                      "cached_bytes", "seconds", "mean_bytes_per_sec", "share"
                      ).sort("min_bytes")


# --- pulls ------------------------------------------------------------------------------


def pull_summary(rec: Recording) -> pl.DataFrame:
    """One row per pull, earliest first.

    Columns: ``pull_id, node, image_ref, status, started_at, completed_at``,
    ``duration_seconds`` (to completion, else to last seen), ``total_bytes``,
    ``fetched_bytes``, ``cached_bytes``, ``layers``, ``layers_done``,
    ``mean_bytes_per_sec`` (fetched bytes / duration), ``peak_bytes_per_sec`` (the highest
    speed the collector showed), ``stalls`` (layer stalls seen), ``error``.
    """
    stalls = (rec.events.filter(pl.col("type") == "layer.stalled")
              .group_by("pull_id").agg(stalls=pl.len()))
    return (
        rec.pulls.rename({"id": "pull_id"})
        .join(stalls, on="pull_id", how="left")
        .with_columns(duration_seconds=_seconds(pl.coalesce("completed_at", "last_seen"),
                                                pl.col("started_at")))
        .select(
            "pull_id", "node", "image_ref", "status", "started_at", "completed_at",
            "duration_seconds", "total_bytes", "fetched_bytes", "cached_bytes",
            layers=pl.col("layer_count").cast(pl.Int64),
            layers_done=pl.col("layers_done").cast(pl.Int64),
            mean_bytes_per_sec=pl.when(pl.col("duration_seconds") > 0)
            .then(pl.col("fetched_bytes") / pl.col("duration_seconds")),
            peak_bytes_per_sec="peak_bytes_per_sec",
            stalls=pl.col("stalls").fill_null(0).cast(pl.Int64),
            error="error",
        )
        .sort(["started_at", "node", "pull_id"])
    )


def eta_accuracy(rec: Recording) -> pl.DataFrame:
    """For each progress row, the ETA the collector showed then and the real time left.

    Columns: ``ts, node, pull_id, image_ref`` (the pull's latest name), ``status`` (of the
    pull then), ``percent``,
    ``elapsed_seconds`` (since the pull started), ``eta_seconds`` (null when unknown),
    ``remaining_seconds`` (until the pull completed; null for pulls that never did),
    ``error_seconds`` (eta - remaining: positive means it was pessimistic).
    """
    done = rec.pulls.filter(pl.col("status") == "completed").select(
        pull_id="id", completed_at="completed_at")
    starts = rec.pulls.select(pull_id="id", started_at="started_at", name="image_ref")
    return (
        rec.progress.join(starts, on="pull_id", how="left")
        .join(done, on="pull_id", how="left")
        .select("ts", "node", "pull_id", pl.col("name").alias("image_ref"), "status", "percent",
                elapsed_seconds=_seconds(pl.col("ts"), pl.col("started_at")),
                eta_seconds="eta_seconds",
                remaining_seconds=_seconds(pl.col("completed_at"), pl.col("ts")))
        .with_columns(error_seconds=pl.col("eta_seconds") - pl.col("remaining_seconds"))
    )


def errors(rec: Recording) -> pl.DataFrame:
    """Failed pulls, as the ``errors`` view: ``ts, node, pull_id, image_ref, error``."""
    return (rec.events.filter(pl.col("type") == "pull.failed")
            .select("ts", "node", "pull_id", "image_ref", "error"))


def stalls(rec: Recording) -> pl.DataFrame:
    """Stalls, as the ``stalls`` view (``ts, node, pull_id, image_ref, digest, type``), with
    ``resumed_at`` (when the next bytes of that layer — of any layer, for a pull stall —
    landed after it; null if none did) and ``seconds`` (resumed_at - ts)."""
    found = (rec.events.filter(pl.col("type").is_in(["layer.stalled", "pull.stalled"]))
             .select("ts", "node", "pull_id", "image_ref", "digest", "type")
             .with_row_index("_row"))
    moved = rec.samples.filter(pl.col("fetched_bytes") > 0).select(
        "pull_id", sample_digest="digest", landed="updated_at")
    resumed = (
        found.join(moved, on="pull_id", how="inner")
        .filter((pl.col("landed") > pl.col("ts"))
                & (pl.col("digest").is_null() | (pl.col("digest") == pl.col("sample_digest"))))
        .group_by("_row").agg(resumed_at=pl.col("landed").min())
    )
    return (found.join(resumed, on="_row", how="left").sort("_row").drop("_row")
            .with_columns(seconds=_seconds(pl.col("resumed_at"), pl.col("ts"))))


def snapshot(rec: Recording, at: datetime) -> pl.DataFrame:
    """Each pull as the collector showed it at ``at``: its last progress row by then.

    Columns: ``pull_id, node, image_ref, status, percent, bytes_per_sec, eta_seconds,
    downloaded_bytes, total_bytes, cached_bytes, layers_done, layer_count, ts``; earliest
    pull first.
    """
    return (
        rec.progress.filter(pl.col("ts") <= at)
        .group_by("pull_id").last()
        .join(rec.pulls.select(pull_id="id", started_at="started_at"), on="pull_id")
        .sort(["started_at", "pull_id"])
        .select("pull_id", "node", "image_ref", "status", "percent", "bytes_per_sec",
                "eta_seconds", "downloaded_bytes", "total_bytes", "cached_bytes",
                "layers_done", "layer_count", "ts")
    )


__all__ = ["errors", "eta_accuracy", "layer_timeline", "media_kind", "media_type_breakdown",
           "pull_summary", "short_digest", "short_image", "short_image_name", "size_breakdown",
           "snapshot",
           "stalls", "throughput"]
