"""`Recording`: the frames of one recorded run, whatever it was read from.

Frames (polars), with the columns of the collector's tables of the same name:

- ``samples`` (table ``samples``): one layer in one report — ``ts``, ``updated_at`` (when
  its bytes landed), ``node``, ``pull_id``, ``image_ref``, ``digest``, ``media_type``,
  ``status``, ``downloaded_bytes``, ``total_bytes``, ``fetched_bytes`` (bytes gained since
  the layer's previous sample), ``bytes_per_sec`` (the layer's speed then);
- ``progress`` (table ``pull_progress``): one pull at one moment — speed, ETA, percent;
- ``pulls`` and ``layers``: the latest state of each pull and each layer of a pull;
- ``events``: lifecycle events (``pull.started``, ``layer.stalled``, ``pull.failed``...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import polars as pl

from collector.records import Batch, Output
from pulltrace_analysis.schema import FRAMES, rows_to_arrow, to_frame

FRAME_NAMES = tuple(FRAMES)


@dataclass(frozen=True)
class PandasRecording:
    """The same frames as pandas DataFrames (see :meth:`Recording.to_pandas`)."""

    samples: pd.DataFrame
    progress: pd.DataFrame
    pulls: pd.DataFrame
    layers: pd.DataFrame
    events: pd.DataFrame


@dataclass(frozen=True)
class Recording:
    samples: pl.DataFrame
    progress: pl.DataFrame
    pulls: pl.DataFrame
    layers: pl.DataFrame
    events: pl.DataFrame
    source: str = ""

    @classmethod
    def from_frames(cls, frames: Mapping[str, pl.DataFrame], source: str = "") -> Recording:
        return cls(samples=frames["samples"], progress=frames["progress"],
                   pulls=frames["pulls"], layers=frames["layers"], events=frames["events"],
                   source=source)

    def frames(self) -> dict[str, pl.DataFrame]:
        return {name: getattr(self, name) for name in FRAME_NAMES}

    def to_pandas(self) -> PandasRecording:
        return PandasRecording(**{name: frame.to_pandas()
                                  for name, frame in self.frames().items()})

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={frame.height}" for name, frame in self.frames().items())
        return f"Recording({self.source!r}: {counts})"

    # --- what is in it -----------------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        return sorted(self.pulls["node"].unique().to_list())

    @property
    def images(self) -> list[str]:
        return sorted(self.pulls["image_ref"].unique().to_list())

    @property
    def media_types(self) -> list[str]:
        return sorted(self.layers["media_type"].unique().to_list())

    def time_range(self) -> tuple[datetime, datetime] | None:
        """First and last report time of the samples and progress rows (None when empty)."""
        times = pl.concat([self.samples.select("ts"), self.progress.select("ts")])
        if times.height == 0:
            return None
        first, last = times["ts"].min(), times["ts"].max()
        assert isinstance(first, datetime)
        assert isinstance(last, datetime)
        return first, last

    # --- subsets -----------------------------------------------------------------------

    def filter(self, *, node: str | None = None, image: str | None = None,
               media_type: str | None = None, until: datetime | None = None) -> Recording:
        """The part of the recording about one node / image / media type, up to a time.

        ``image`` is a pull's latest name (``pulls.image_ref``). With ``media_type``, the
        pull-level frames (progress, pulls, events) keep the pulls that have such a layer,
        and samples and layers only the layers of that type. ``until`` keeps the rows
        written at or before that time (the latest-state frames ``pulls`` and ``layers``
        are kept as they are).
        """
        pulls = self.pulls
        if node is not None:
            pulls = pulls.filter(pl.col("node") == node)
        if image is not None:
            pulls = pulls.filter(pl.col("image_ref") == image)
        layers = self.layers.filter(pl.col("pull_id").is_in(pulls["id"].implode()))
        of_layers = pl.col("pull_id").is_in(pulls["id"].implode())
        if media_type is not None:
            layers = layers.filter(pl.col("media_type") == media_type)
            pulls = pulls.filter(pl.col("id").is_in(layers["pull_id"].implode()))
            of_layers = (pl.col("pull_id").is_in(layers["pull_id"].implode())
                         & pl.col("digest").is_in(layers["digest"].implode()))
        in_pulls = pl.col("pull_id").is_in(pulls["id"].implode())
        by_time = pl.lit(True) if until is None else pl.col("ts") <= until
        return dataclasses.replace(
            self,
            samples=self.samples.filter(of_layers & by_time),
            progress=self.progress.filter(in_pulls & by_time),
            pulls=pulls,
            layers=layers,
            events=self.events.filter(in_pulls & by_time),
        )


def from_outputs(outputs: Iterable[Output], source: str = "") -> Recording:
    """The frames of everything the engine produced, as the store would have recorded it."""
    batch = Batch.of(outputs)
    rows: dict[str, list[object]] = {
        "samples": list(batch.samples), "progress": list(batch.progress),
        "pulls": list(batch.pulls), "layers": list(batch.layers),
        "events": list(batch.events)}
    return Recording.from_frames(
        {name: to_frame(name, rows_to_arrow(name, rows[name])) for name in FRAME_NAMES},
        source)
