"""The engine's per-pull and per-layer state, and the figures derived from it.

Kept apart from :mod:`collector.engine` (which decides *when* things change) so that what a
pull *is* at a moment — speed, ETA, percent, rows for the store — reads in one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from collector.model import (
    FINISHED,
    LAYER_DONE,
    LayerStatus,
    LayerStatusKind,
    PullStatus,
    PullStatusKind,
)
from collector.rates import RateWindow
from collector.records import LayerRow, Progress, PullRow, Sample

PullKey = tuple[str, str, int]  # node, image identity (digest or ref), startedAt


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

    @property
    def active(self) -> bool:
        return self.status in (LayerStatusKind.DOWNLOADING, LayerStatusKind.STALLED)

    def rate(self, now: int) -> float | None:
        return self.window.rate(now) if self.active else None

    def remaining(self) -> int | None:
        if not self.active:
            return 0
        if not self.total_known:
            return None
        return max(self.total - self.downloaded, 0)


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

    def speed(self, now: int) -> float | None:
        """Sum of the current rates of the layers still downloading: the speed now."""
        rates = [r for layer in self.layers.values() if (r := layer.rate(now)) is not None]
        return sum(rates) if rates else None

    def totals(self) -> tuple[int, int, int]:
        """(total, downloaded excluding cached layers, cached) bytes."""
        total = downloaded = cached = 0
        for layer in self.layers.values():
            total += layer.total
            if layer.status is LayerStatusKind.CACHED:
                cached += layer.total
            else:
                downloaded += layer.downloaded
        return total, downloaded, cached

    def eta(self, speed: float | None) -> float | None:
        if self.finished:
            return 0.0 if self.status is PullStatusKind.COMPLETED else None
        remaining = 0
        for layer in self.layers.values():
            left = layer.remaining()
            if left is None:
                return None
            remaining += left
        if remaining == 0:
            return 0.0
        if not speed:
            return None
        return remaining / speed

    def layers_done(self) -> int:
        return sum(1 for layer in self.layers.values() if layer.status in LAYER_DONE)

    # --- views --------------------------------------------------------------------------

    def layer_status(self, layer: Layer, now: int) -> LayerStatus:
        percent = None
        if layer.status in LAYER_DONE:
            percent = 100.0
        elif layer.total_known and layer.total > 0:
            percent = min(100.0, layer.downloaded * 100.0 / layer.total)
        return LayerStatus(
            pull_id=self.id, digest=layer.digest, media_type=layer.media_type,
            total_bytes=layer.total, downloaded_bytes=layer.downloaded,
            bytes_per_sec=layer.rate(now), percent=percent,
            started_at=layer.started_at if layer.started_at is not None else layer.first_seen,
            completed_at=layer.completed_at, total_known=layer.total_known,
            status=layer.status,
        )

    def status_at(self, now: int) -> PullStatus:
        total, downloaded, cached = self.totals()
        speed = None if self.finished else self.speed(now)
        # A layer still coming whose size is unknown makes the share unknown too: its bytes
        # would count against a total that leaves it out.
        unsized = any(layer.active and not layer.total_known for layer in self.layers.values())
        percent = 100.0 if self.status is PullStatusKind.COMPLETED else (
            min(100.0, (downloaded + cached) * 100.0 / total) if total > 0 and not unsized
            else None)
        return PullStatus(
            id=self.id, node_name=self.node, image_ref=self.image_ref, total_bytes=total,
            downloaded_bytes=downloaded, cached_bytes=cached, bytes_per_sec=speed,
            eta_seconds=self.eta(speed), percent=percent,
            layer_count=len(self.layers), layers_done=self.layers_done(),
            started_at=self.started_at, completed_at=self.completed_at, error=self.error,
            total_known=self.total_known, status=self.status,
            layers=[self.layer_status(layer, now) for layer in self.layers.values()],
        )

    def progress_row(self, status: PullStatus, now: int) -> Progress:
        """The progress row of ``status`` (this pull's :meth:`status_at` ``now``); keeps the
        peak speed up to date."""
        speed = status.bytes_per_sec
        if speed is not None and (self.peak_bps is None or speed > self.peak_bps):
            self.peak_bps = speed
        return Progress(
            ts=now, node=self.node, pull_id=self.id, image_ref=self.image_ref,
            status=status.status.value, downloaded_bytes=status.downloaded_bytes,
            total_bytes=status.total_bytes, cached_bytes=status.cached_bytes,
            bytes_per_sec=speed, eta_seconds=status.eta_seconds, percent=status.percent,
            layers_done=status.layers_done, layer_count=status.layer_count,
        )

    def sample_row(self, layer: Layer, now: int, updated_at: int, gained: int) -> Sample:
        return Sample(
            ts=now, updated_at=updated_at, node=self.node, pull_id=self.id,
            image_ref=self.image_ref, digest=layer.digest, media_type=layer.media_type,
            status=layer.status.value, downloaded_bytes=layer.downloaded,
            total_bytes=layer.total, fetched_bytes=gained, bytes_per_sec=layer.rate(now),
        )

    def pull_row(self, status: PullStatus) -> PullRow:
        """The stored row of ``status`` (this pull's :meth:`status_at`)."""
        return PullRow(
            id=self.id, node=self.node, image_ref=self.image_ref,
            image_digest=self.image_digest, status=self.status.value,
            started_at=self.started_at, completed_at=self.completed_at,
            first_seen=self.first_seen, last_seen=self.last_seen,
            total_bytes=status.total_bytes, downloaded_bytes=status.downloaded_bytes,
            cached_bytes=status.cached_bytes,
            fetched_bytes=sum(layer.fetched for layer in self.layers.values()),
            peak_bytes_per_sec=self.peak_bps, layer_count=status.layer_count,
            layers_done=status.layers_done, error=self.error,
        )

    def layer_row(self, layer: Layer) -> LayerRow:
        return LayerRow(
            pull_id=self.id, digest=layer.digest, node=self.node, image_ref=self.image_ref,
            media_type=layer.media_type, status=layer.status.value, total_bytes=layer.total,
            downloaded_bytes=layer.downloaded, fetched_bytes=layer.fetched,
            started_at=layer.started_at, first_seen=layer.first_seen,
            first_byte_at=layer.first_byte_at, completed_at=layer.completed_at,
            last_seen=layer.last_seen, restarts=layer.restarts,
        )
