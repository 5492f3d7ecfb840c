"""The engine's per-pull and per-layer state, and the figures derived from it.

Kept apart from :mod:`collector.engine` (which decides *when* things change) so that what a
pull *is* at a moment — speed, ETA, percent, rows for the store — reads in one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from collector.model import (
    FINISHED,
    LayerStatus,
    LayerStatusKind,
    PullStatus,
    PullStatusKind,
)
from collector.rates import RateWindow
from collector.records import LayerRow, Progress, PullRow, Sample

PullKey = tuple[str, str, int]  # node, image identity (digest or ref), startedAt
# Rows are made from a tuple of their fields in order, skipping the named tuple's own
# constructor (a Python function): a third of the cost, and this runs per layer per report.
_row: Any = tuple.__new__
_DOWNLOADING, _STALLED = LayerStatusKind.DOWNLOADING, LayerStatusKind.STALLED
_COMPLETED, _CACHED = LayerStatusKind.COMPLETED, LayerStatusKind.CACHED


_Figures = tuple[int, int, int, float | None, float | None, float | None, int, int]


def pull_id(key: PullKey) -> str:
    """Stable across runs, so a replay of the same reports gives the same ids."""
    node, image, started = key
    return hashlib.sha256(f"{node}\x00{image}\x00{started}".encode()).hexdigest()[:16]


@dataclass(slots=True)
class Layer:
    digest: str
    media_type: str
    window: RateWindow
    first_seen: int
    total: int = 0
    downloaded: int = 0
    total_known: bool = False
    status: LayerStatusKind = LayerStatusKind.DOWNLOADING
    started_at: int | None = None
    first_byte_at: int | None = None
    completed_at: int | None = None
    last_seen: int = 0
    fetched: int = 0
    restarts: int = 0
    checked_at: int = 0  # stall rule evaluated up to here
    stalled_since: int | None = None
    # A finished layer's status never changes again (nothing moves a layer out of
    # completed, cached or failed), so its view is built once and shared by every snapshot.
    view: LayerStatus | None = None

    @property
    def active(self) -> bool:
        # Identity, not ``in``: an enum member hashes in Python, and this runs per layer per
        # report several times.
        status = self.status
        return status is _DOWNLOADING or status is _STALLED

    def rate(self, now: int) -> float | None:
        return self.window.rate(now) if self.active else None


@dataclass(slots=True)
class Pull:
    key: PullKey
    id: str
    first_seen: int
    image_ref: str  # what people read; may change from a digest reference to a tag
    merged: bool = False  # the node's pending pull (ingests no image claims yet)
    total_known: bool = False
    layers: dict[str, Layer] = field(default_factory=dict)
    status: PullStatusKind = PullStatusKind.ACTIVE
    error: str | None = None
    completed_at: int | None = None
    last_seen: int = 0
    peak_bps: float | None = None
    fetched: int = 0  # its layers' fetched bytes, summed as they come

    @property
    def node(self) -> str:
        return self.key[0]

    @property
    def image_digest(self) -> str | None:
        return self.key[1] if self.key[1] != self.image_ref else None

    @property
    def started_at(self) -> int:
        return self.key[2]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    # --- views --------------------------------------------------------------------------

    def layer_status(self, layer: Layer, now: int) -> LayerStatus:
        status = layer.status
        active = status is _DOWNLOADING or status is _STALLED
        percent = None
        if status is _COMPLETED or status is _CACHED:
            percent = 100.0
        elif layer.total_known and layer.total > 0:
            percent = min(100.0, layer.downloaded * 100.0 / layer.total)
        return LayerStatus(
            self.id, layer.digest, layer.media_type, layer.total, layer.downloaded,
            layer.window.rate(now) if active else None, percent,
            layer.started_at if layer.started_at is not None else layer.first_seen,
            layer.completed_at, layer.total_known, status)

    def status_at(self, now: int, views: bool = True) -> PullStatus:
        """The pull as the API shows it at ``now`` (this runs for every pull a report
        touches). Without ``views``, its ``layers`` are left empty: all the rows need, for a
        pull whose snapshot no event carries."""
        layers: list[LayerStatus] = []
        return PullStatus(self.id, self.key[0], self.image_ref,
                          *self._figures(now, layers if views else None),
                          self.key[2], self.completed_at, self.error, self.total_known,
                          self.status, layers)

    def _figures(self, now: int, views: list[LayerStatus] | None) -> _Figures:
        """One pass over the layers; each one's view goes to ``views`` unless it is None.
        The figures are in the order of PullStatus's fields."""
        finished = self.finished
        total = downloaded = cached = remaining = done = 0
        speed: float | None = None
        unsized = False  # a layer still coming whose size is unknown
        pid = self.id
        for layer in self.layers.values():
            status = layer.status
            size = layer.total
            total += size
            if status is _CACHED:
                cached += size
            else:
                downloaded += layer.downloaded
            if status is _DOWNLOADING or status is _STALLED:
                if layer.total_known:
                    remaining += max(size - layer.downloaded, 0)
                    percent = (min(100.0, layer.downloaded * 100.0 / size) if size > 0
                               else None)
                else:
                    unsized = True
                    percent = None
                rate = layer.window.rate(now)
                if rate is not None and not finished:
                    speed = rate if speed is None else speed + rate
                if views is not None:
                    views.append(LayerStatus(
                        pid, layer.digest, layer.media_type, size, layer.downloaded, rate,
                        percent,
                        layer.started_at if layer.started_at is not None else layer.first_seen,
                        layer.completed_at, layer.total_known, status))
                continue
            if status is _COMPLETED or status is _CACHED:
                done += 1
            if views is not None:
                view = layer.view
                if view is None:
                    view = layer.view = self.layer_status(layer, now)
                views.append(view)
        # A layer of unknown size makes the share unknown too: its bytes would count against
        # a total that leaves it out.
        percent = 100.0 if self.status is PullStatusKind.COMPLETED else (
            min(100.0, (downloaded + cached) * 100.0 / total) if total > 0 and not unsized
            else None)
        if finished:
            eta = 0.0 if self.status is PullStatusKind.COMPLETED else None
        elif unsized:
            eta = None
        elif remaining == 0:
            eta = 0.0
        else:
            eta = remaining / speed if speed else None
        return total, downloaded, cached, speed, eta, percent, len(self.layers), done

    def progress_row(self, status: PullStatus, now: int) -> Progress:
        """The progress row of ``status`` (this pull's :meth:`status_at` or
        ``now``); keeps the peak speed up to date."""
        speed = status.bytes_per_sec
        if speed is not None and (self.peak_bps is None or speed > self.peak_bps):
            self.peak_bps = speed
        row: Progress = _row(Progress, (
            now, self.key[0], self.id, self.image_ref, status.status._value_,
            status.downloaded_bytes, status.total_bytes, status.cached_bytes, speed,
            status.eta_seconds, status.percent, status.layers_done, status.layer_count))
        return row

    def sample_row(self, layer: Layer, now: int, updated_at: int, gained: int) -> Sample:
        status = layer.status
        row: Sample = _row(Sample, (
            now, updated_at, self.key[0], self.id, self.image_ref, layer.digest,
            layer.media_type, status._value_, layer.downloaded, layer.total, gained,
            layer.window.rate(now) if status is _DOWNLOADING or status is _STALLED else None))
        return row

    def pull_row(self, status: PullStatus) -> PullRow:
        """The stored row of ``status`` (this pull's :meth:`status_at`)."""
        row: PullRow = _row(PullRow, (
            self.id, self.key[0], self.image_ref, self.image_digest, self.status._value_,
            self.key[2], self.completed_at, self.first_seen, self.last_seen,
            status.total_bytes, status.downloaded_bytes, status.cached_bytes, self.fetched,
            self.peak_bps, status.layer_count, status.layers_done, self.error))
        return row

    def layer_rows(self) -> list[LayerRow]:
        """The stored row of each of its layers, in order."""
        pid, node, ref = self.id, self.key[0], self.image_ref
        return [_row(LayerRow, (
            pid, layer.digest, node, ref, layer.media_type, layer.status._value_,
            layer.total, layer.downloaded, layer.fetched, layer.started_at, layer.first_seen,
            layer.first_byte_at, layer.completed_at, layer.last_seen, layer.restarts))
            for layer in self.layers.values()]
