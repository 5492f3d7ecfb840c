"""Plotly figures of a :class:`Recording`, drawn from the frames in :mod:`frames`.

Every figure has a title, units on its axes (MB/s, s, MB; 1 MB = 1,000,000 bytes) and hover
text naming the node, the image and, for layers, the short digest.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from pulltrace_analysis import frames
from pulltrace_analysis.recording import Recording
from pulltrace_analysis.replay import duration_ns

MB = 1_000_000
TEMPLATE = "plotly_white"
STATUS_COLORS = {"completed": "#2ca02c", "downloading": "#1f77b4", "stalled": "#ff7f0e",
                 "failed": "#d62728", "cached": "#9e9e9e", "active": "#1f77b4",
                 "stale": "#8c564b"}


def _mb(values: list[Any]) -> list[float | None]:
    return [None if v is None else v / MB for v in values]


def _layout(fig: go.Figure, title: str, x: str, y: str, **extra: Any) -> go.Figure:
    fig.update_layout(title={"text": title}, template=TEMPLATE, xaxis_title=x,
                      yaxis_title=y, hovermode="closest", legend_title_text="", **extra)
    return fig


def _every_label(every: str | float | timedelta) -> str:
    return f"{duration_ns(every) / 1e9:g} s buckets"


def throughput(rec: Recording, by: str = "node",
               every: str | float | timedelta = "1s") -> go.Figure:
    """Fetched MB/s over time, one line per node (by="node"), pull or all together."""
    data = frames.throughput(rec, every=every, by=by)
    fig = go.Figure()
    if by == "total":
        groups: list[tuple[str, pl.DataFrame]] = [("all nodes", data)]
    else:
        key = "node" if by == "node" else "pull_id"
        groups = [(str(k[0]), g) for k, g in data.group_by(key, maintain_order=True)]
    for name, group in groups:
        if by == "pull":
            node, image = group["node"][0], group["image_ref"][0]
            label = f"{frames.short_image_name(image)} on {node}"
            custom = [[node, image] for _ in range(group.height)]
            hover = "node %{customdata[0]}<br>image %{customdata[1]}"
        else:
            label = name
            custom = [[name] for _ in range(group.height)]
            hover = "node %{customdata[0]}"
        fig.add_trace(go.Scatter(
            x=group["time"].to_list(), y=_mb(group["bytes_per_sec"].to_list()),
            name=label, mode="lines", line={"shape": "hv"}, customdata=custom,
            hovertemplate=hover + "<br>%{x}<br>%{y:.2f} MB/s<extra></extra>"))
    what = "all nodes" if by == "total" else f"by {by}"
    return _layout(fig, f"Fetched throughput, {what} ({_every_label(every)})",
                   "time (UTC)", "MB/s")


def media_types(rec: Recording) -> go.Figure:
    """MB fetched and download time by media type, side by side."""
    data = frames.media_type_breakdown(rec)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("MB fetched", "download time"),
                        horizontal_spacing=0.25)
    labels = data["media_type"].to_list()
    custom = [[row["kind"], row["layers"], row["cached_layers"],
               (row["mean_bytes_per_sec"] or 0) / MB] for row in data.iter_rows(named=True)]
    hover = ("%{y}<br>kind %{customdata[0]}, %{customdata[1]} layers "
             "(%{customdata[2]} cached)<br>mean %{customdata[3]:.2f} MB/s")
    fig.add_trace(go.Bar(y=labels, x=_mb(data["bytes"].to_list()), orientation="h",
                         name="MB fetched", customdata=custom,
                         hovertemplate=hover + "<br>%{x:.2f} MB<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(y=labels, x=data["seconds"].to_list(), orientation="h",
                         name="seconds", customdata=custom,
                         hovertemplate=hover + "<br>%{x:.1f} s<extra></extra>"), 1, 2)
    fig.update_xaxes(title_text="MB", row=1, col=1)
    fig.update_xaxes(title_text="s (summed over layers)", row=1, col=2)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(showticklabels=False, row=1, col=2)
    fig.update_layout(title={"text": "Where the bytes and the time go, by media type"},
                      template=TEMPLATE, showlegend=False)
    return fig


def _pick_pull(rec: Recording, pull: str) -> str:
    found = rec.pulls.filter((pl.col("id") == pull) | (pl.col("image_ref") == pull))
    if found.height == 0:
        raise ValueError(f"no pull with id or image {pull!r}; see rec.pulls")
    return str(found.sort("started_at")["id"][0])


def waterfall(rec: Recording, pull: str | None = None) -> go.Figure:
    """A Gantt of layers: waiting for the first byte (pale), then downloading, colored by
    how the layer ended (outlined in orange if it stalled on the way). ``pull``: a pull id
    or image reference; None for every pull."""
    timeline = frames.layer_timeline(rec)
    title = "Layer waterfall, all pulls"
    if pull is not None:
        pid = _pick_pull(rec, pull)
        timeline = timeline.filter(pl.col("pull_id") == pid)
        row = rec.pulls.filter(pl.col("id") == pid).row(0, named=True)
        title = f"Layer waterfall: {row['image_ref']} on {row['node']}"
    fig = go.Figure()
    if timeline.height == 0:
        return _layout(fig, title, "s since the first layer started", "layer")
    origin = timeline["start"].min()
    timeline = timeline.with_columns(
        label=(frames.short_image(pl.col("image_ref")) + " · " + pl.col("short_digest"))
        if pull is None
        else (pl.col("short_digest") + " (" + pl.col("kind") + ")"),
        t0=(pl.col("start") - pl.lit(origin)).dt.total_nanoseconds() / 1e9,
        t1=(pl.col("first_byte").fill_null(pl.col("start")) - pl.lit(origin))
        .dt.total_nanoseconds() / 1e9,
        t2=(pl.col("end") - pl.lit(origin)).dt.total_nanoseconds() / 1e9)
    custom_cols = ["node", "image_ref", "short_digest", "media_type", "status"]
    hover = ("node %{customdata[0]}<br>image %{customdata[1]}<br>layer %{customdata[2]} "
             "(%{customdata[3]})<br>%{customdata[4]}, %{customdata[5]:.2f} MB in "
             "%{customdata[6]:.2f} s (%{customdata[7]:.2f} MB/s)%{customdata[8]}")

    def custom(part: pl.DataFrame) -> list[list[Any]]:
        return [[*(r[c] for c in custom_cols), r["bytes"] / MB, r["seconds"],
                 (r["mean_bytes_per_sec"] or 0) / MB,
                 "<br>stalled on the way" if r["stalled"] and r["status"] != "stalled" else ""]
                for r in part.iter_rows(named=True)]

    waiting = timeline.filter(pl.col("t1") > pl.col("t0"))
    fig.add_trace(go.Bar(
        y=waiting["label"].to_list(), base=waiting["t0"].to_list(),
        x=(waiting["t1"] - waiting["t0"]).to_list(), orientation="h",
        name="waiting for first byte", marker={"color": "#d9d9d9"}, customdata=custom(waiting),
        hovertemplate=hover + "<br>waited %{x:.2f} s<extra></extra>"))
    for status, color in STATUS_COLORS.items():
        part = timeline.filter(pl.col("status") == status)
        if part.height == 0:
            continue
        if status == "cached":  # nothing downloaded: a mark where it was found
            fig.add_trace(go.Scatter(
                y=part["label"].to_list(), x=part["t0"].to_list(), mode="markers",
                name=status, marker={"color": color, "symbol": "diamond", "size": 10},
                customdata=custom(part), hovertemplate=hover + "<extra></extra>"))
            continue
        fig.add_trace(go.Bar(
            y=part["label"].to_list(), base=part["t1"].to_list(),
            x=(part["t2"] - part["t1"]).to_list(), orientation="h", name=status,
            # a layer that stalled and then went on keeps an orange outline
            marker={"color": color, "line": {"width": 2, "color": [
                STATUS_COLORS["stalled"] if was else color for was in part["stalled"]]}},
            customdata=custom(part),
            hovertemplate=hover + "<extra></extra>"))
    fig.update_layout(barmode="overlay", height=max(300, 22 * timeline.height + 120))
    fig.update_yaxes(autorange="reversed", categoryorder="array",
                     categoryarray=timeline["label"].to_list())
    return _layout(fig, title, "s since the first layer started", "layer")


def eta_accuracy(rec: Recording) -> go.Figure:
    """The ETA shown against the real time left, one line per completed pull; points on
    the diagonal were exact, above it pessimistic, below it optimistic."""
    data = frames.eta_accuracy(rec).filter(
        pl.col("eta_seconds").is_not_null() & pl.col("remaining_seconds").is_not_null())
    fig = go.Figure()
    top = 0.0
    for (pid,), group in data.group_by("pull_id", maintain_order=True):
        node, image = group["node"][0], group["image_ref"][0]
        custom = [[node, image, r["percent"], r["error_seconds"]]
                  for r in group.iter_rows(named=True)]
        fig.add_trace(go.Scatter(
            x=group["remaining_seconds"].to_list(), y=group["eta_seconds"].to_list(),
            mode="lines+markers", name=f"{frames.short_image_name(image)} on {node}",
            customdata=custom, meta=str(pid),
            hovertemplate=("node %{customdata[0]}<br>image %{customdata[1]}<br>"
                           "%{customdata[2]:.0f}% done: ETA %{y:.1f} s, really %{x:.1f} s "
                           "(off by %{customdata[3]:+.1f} s)<extra></extra>")))
        top = max(top, *group["remaining_seconds"].to_list(), *group["eta_seconds"].to_list())
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="exact",
                             line={"dash": "dash", "color": "#888"}, hoverinfo="skip"))
    return _layout(fig, "ETA shown vs real time left (completed pulls)",
                   "real time left (s)", "ETA shown (s)")


def node_heatmap(rec: Recording, every: str | float | timedelta = "1s") -> go.Figure:
    """Fetched MB/s per node (rows) and time bucket (columns)."""
    data = frames.throughput(rec, every=every, by="node")
    fig = go.Figure()
    if data.height:
        first, last = data["time"].min(), data["time"].max()
        assert isinstance(first, datetime)
        assert isinstance(last, datetime)
        times = pl.datetime_range(first, last,
                                  timedelta(microseconds=duration_ns(every) // 1000),
                                  time_unit="ns", eager=True).alias("time")
        nodes = sorted(data["node"].unique().to_list())
        grid = (pl.DataFrame({"node": nodes}).join(times.to_frame(), how="cross")
                .join(data, on=["node", "time"], how="left")
                .with_columns(pl.col("bytes_per_sec").fill_null(0.0)).sort("node", "time"))
        z = [_mb(grid.filter(pl.col("node") == n)["bytes_per_sec"].to_list()) for n in nodes]
        fig.add_trace(go.Heatmap(
            x=times.to_list(), y=nodes, z=z, colorscale="Viridis",
            colorbar={"title": {"text": "MB/s"}},
            hovertemplate="node %{y}<br>%{x}<br>%{z:.2f} MB/s<extra></extra>"))
    return _layout(fig, f"Fetched MB/s per node ({_every_label(every)})", "time (UTC)", "node")


def duration_vs_size(rec: Recording, of: str = "pull") -> go.Figure:
    """Duration against size, one point per pull (of="pull") or layer (of="layer"),
    colored by status; points far above their neighbours were slow for their size."""
    if of == "pull":
        data = frames.pull_summary(rec).with_columns(
            size=pl.col("total_bytes"), seconds=pl.col("duration_seconds"),
            short_digest=pl.lit(""))
    elif of == "layer":
        data = frames.layer_timeline(rec).filter(pl.col("status") != "cached").with_columns(
            size=pl.col("total_bytes"))
    else:
        raise ValueError(f"of: expected 'pull' or 'layer', got {of!r}")
    fig = go.Figure()
    for status, color in STATUS_COLORS.items():
        part = data.filter(pl.col("status") == status)
        if part.height == 0:
            continue
        custom = [[r["node"], r["image_ref"], r["short_digest"]]
                  for r in part.iter_rows(named=True)]
        fig.add_trace(go.Scatter(
            x=_mb(part["size"].to_list()), y=part["seconds"].to_list(), mode="markers",
            name=status, marker={"color": color, "size": 10}, customdata=custom,
            hovertemplate=("node %{customdata[0]}<br>image %{customdata[1]}"
                           + ("<br>layer %{customdata[2]}" if of == "layer" else "")
                           + "<br>%{x:.2f} MB in %{y:.2f} s<extra></extra>")))
    return _layout(fig, f"Duration vs size, per {of}", "size (MB)", "duration (s)")


def size_classes(rec: Recording) -> go.Figure:
    """Fetched MB and mean MB/s of layers by size class."""
    data = frames.size_breakdown(rec)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("MB fetched", "mean speed"))
    custom = [[r["layers"], r["seconds"]] for r in data.iter_rows(named=True)]
    fig.add_trace(go.Bar(x=data["size_class"].to_list(), y=_mb(data["bytes"].to_list()),
                         name="MB", customdata=custom,
                         hovertemplate="%{x}: %{customdata[0]} layers<br>%{y:.2f} MB"
                                       "<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=data["size_class"].to_list(),
                         y=_mb(data["mean_bytes_per_sec"].to_list()), name="MB/s",
                         customdata=custom,
                         hovertemplate="%{x}: %{customdata[0]} layers in %{customdata[1]:.1f}"
                                       " s<br>%{y:.2f} MB/s<extra></extra>"), 1, 2)
    fig.update_yaxes(title_text="MB", row=1, col=1)
    fig.update_yaxes(title_text="MB/s", row=1, col=2)
    fig.update_xaxes(title_text="layer size")
    fig.update_layout(title={"text": "Layers by size: bytes and speed"}, template=TEMPLATE,
                      showlegend=False)
    return fig


__all__ = ["duration_vs_size", "eta_accuracy", "media_types", "node_heatmap", "size_classes",
           "throughput", "waterfall"]
