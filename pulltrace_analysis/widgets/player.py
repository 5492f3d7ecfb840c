"""`ReplayPlayer`: a recording, moment by moment, with the views of the live dashboard.

Play / pause and a time slider move the moment; the speed says how many seconds of the
recording pass per second of playing. Filters by node, image and media type narrow every
view. The browser's Play widget drives the clock (at most two steps a second), and each
step sends the moment's aggregates only: headline figures, the table of pulls, and a cursor
line on the throughput chart and the layer waterfall.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
import polars as pl

from pulltrace_analysis import figures, frames
from pulltrace_analysis.recording import Recording
from pulltrace_analysis.replay import duration_ns
from pulltrace_analysis.widgets.render import Headline, PullLine, headline_html, pulls_table_html

SPEEDS = (1, 2, 5, 10, 30, 60, 120)
MIN_STEP_MS = 500  # two moves a second at most
ALL = "all"
_CURSOR = {"type": "line", "yref": "paper", "y0": 0, "y1": 1,
           "line": {"color": "#d62728", "width": 2, "dash": "dot"}}


def _choices(values: list[str]) -> list[tuple[str, str | None]]:
    return [(ALL, None), *((v or "(none)", v) for v in values)]


class ReplayPlayer:
    """Replay ``rec`` in the notebook: ``ReplayPlayer(rec)`` shows it; :meth:`seek` moves
    the moment from code."""

    def __init__(self, rec: Recording, *, step: str | float | timedelta = "1s",
                 speed: int = 10) -> None:
        span = rec.time_range()
        if span is None:
            raise ValueError("the recording holds no samples or progress rows to replay")
        self.rec = rec
        self.start, self.end = span
        self.step = timedelta(microseconds=duration_ns(step) // 1000)
        ticks = max(1, math.ceil((self.end - self.start) / self.step))
        self.view = rec
        self._origin = self.start  # waterfall time zero, for the cursor

        self.play = widgets.Play(value=0, min=0, max=ticks, interval=MIN_STEP_MS,
                                 description="play")
        self.slider = widgets.IntSlider(value=0, min=0, max=ticks, readout=False,
                                        description="moment",
                                        layout=widgets.Layout(width="40%"))
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.clock = widgets.Label(layout=widgets.Layout(width="20em"))
        self.clock.add_class("pulltrace-clock")
        self.speed = widgets.Dropdown(options=[(f"{s}x", s) for s in SPEEDS],
                                      value=speed if speed in SPEEDS else 10,
                                      description="speed", layout=widgets.Layout(width="12em"))
        self.node = widgets.Dropdown(options=_choices(rec.nodes), description="node")
        self.image = widgets.Dropdown(options=_choices(rec.images), description="image")
        self.media_type = widgets.Dropdown(options=_choices(rec.media_types),
                                           description="media type",
                                           layout=widgets.Layout(width="28em"))
        self.headline = widgets.HTML()
        self.table = widgets.HTML()
        self.throughput = go.FigureWidget()
        self.waterfall = go.FigureWidget()

        self._apply_speed()
        self.speed.observe(lambda _c: self._apply_speed(), names="value")
        self.slider.observe(lambda _c: self._show_moment(), names="value")
        for control in (self.node, self.image, self.media_type):
            control.observe(lambda _c: self._rebuild(), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.play, self.slider, self.clock, self.speed]),
            widgets.HBox([self.node, self.image, self.media_type]),
            self.headline, self.throughput, self.table, self.waterfall,
        ], layout=widgets.Layout(width="100%"))
        self.widget.add_class("pulltrace-replay")
        self._rebuild()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # --- the moment -------------------------------------------------------------------

    @property
    def moment(self) -> datetime:
        return min(self.start + int(self.slider.value) * self.step, self.end)

    def seek(self, to: datetime | float) -> None:
        """Move to a time, or to seconds after the start of the recording."""
        at = self.start + timedelta(seconds=to) if isinstance(to, int | float) else to
        self.slider.value = max(0, min(self.slider.max, round((at - self.start) / self.step)))

    def _apply_speed(self) -> None:
        # Seconds of recording per second of playing; steps no faster than MIN_STEP_MS.
        per_second = self.speed.value / self.step.total_seconds()
        self.play.step = max(1, round(per_second * MIN_STEP_MS / 1000))
        self.play.interval = max(MIN_STEP_MS, round(1000 * self.play.step / per_second))

    def lines(self) -> list[PullLine]:
        """The pulls as the collector showed them at the moment (filters applied)."""
        return [PullLine.from_row(r)
                for r in frames.snapshot(self.view, self.moment).iter_rows(named=True)]

    def _show_moment(self) -> None:
        at = self.moment
        lines = self.lines()
        head = Headline.of(lines)
        seen = self.view.filter(until=at)
        fetched = int(seen.samples["fetched_bytes"].sum())
        stalls = seen.events.filter(pl.col("type") == "layer.stalled").height
        elapsed = (at - self.start).total_seconds()
        self.clock.value = f"{at:%Y-%m-%d %H:%M:%S} UTC (+{elapsed:.0f} s)"
        self.headline.value = headline_html(head, [
            ("fetched so far", f"{fetched / 1e6:.1f} MB"),
            ("layer stalls so far", str(stalls))])
        self.table.value = pulls_table_html(lines)
        offset = (at - self._origin).total_seconds()
        with self.throughput.batch_update():
            self.throughput.layout.shapes = [dict(_CURSOR, x0=at, x1=at)]
        with self.waterfall.batch_update():
            self.waterfall.layout.shapes = [dict(_CURSOR, x0=offset, x1=offset)]

    # --- filters ----------------------------------------------------------------------

    def _rebuild(self) -> None:
        self.view = self.rec.filter(node=self.node.value, image=self.image.value,
                                    media_type=self.media_type.value)
        timeline = frames.layer_timeline(self.view)
        if timeline.height:
            first = timeline["start"].min()
            assert isinstance(first, datetime)
            self._origin = first
        _replace(self.throughput, figures.throughput(self.view, by="node"), height=320)
        _replace(self.waterfall, figures.waterfall(self.view), height=None)
        self._show_moment()


def _replace(target: go.FigureWidget, source: go.Figure, height: int | None) -> None:
    """Swap a FigureWidget's traces and layout for those of another figure."""
    target.data = ()  # traces are added and removed outside a batch
    target.add_traces(list(source.data))
    layout = source.layout.to_plotly_json()
    if height is not None:
        layout["height"] = height
    with target.batch_update():
        target.layout = layout


__all__ = ["ReplayPlayer"]
