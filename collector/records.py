"""Rows the engine emits for each report (or tick), and the store writes as they are.

Every field is a plain value so a batch turns into Arrow columns without conversion code
per table. Times are integer nanoseconds since the epoch, UTC. Rows are named tuples: made
positionally they cost a tenth of a frozen dataclass, and a batch of them transposes into
columns in one step.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from collector.model import AgentReport, PullEvent, SourceEvent


class Sample(NamedTuple):
    """One layer in one report, with the rate computed at that moment."""

    ts: int  # when the report was taken
    updated_at: int  # when the layer last changed (containerd's updated_at), <= ts
    node: str
    pull_id: str
    image_ref: str
    digest: str
    media_type: str
    status: str
    downloaded_bytes: int
    total_bytes: int
    fetched_bytes: int  # bytes gained since this layer's previous sample (never negative)
    bytes_per_sec: float | None


class Progress(NamedTuple):
    """One pull at one moment: the numbers a progress bar shows."""

    ts: int
    node: str
    pull_id: str
    image_ref: str
    status: str
    downloaded_bytes: int
    total_bytes: int
    cached_bytes: int
    bytes_per_sec: float | None
    eta_seconds: float | None
    percent: float | None
    layers_done: int
    layer_count: int


class PullRow(NamedTuple):
    """The latest state of a pull (upserted by id)."""

    id: str
    node: str
    image_ref: str
    image_digest: str | None  # identifies the pull when set (see PullState.digest)
    status: str
    started_at: int
    completed_at: int | None
    first_seen: int
    last_seen: int
    total_bytes: int
    downloaded_bytes: int
    cached_bytes: int
    fetched_bytes: int
    peak_bytes_per_sec: float | None
    layer_count: int
    layers_done: int
    error: str | None


class LayerRow(NamedTuple):
    """The latest state of a layer of a pull (upserted by pull_id, digest)."""

    pull_id: str
    digest: str
    node: str
    image_ref: str
    media_type: str
    status: str
    total_bytes: int
    downloaded_bytes: int
    fetched_bytes: int
    started_at: int | None
    first_seen: int
    first_byte_at: int | None
    completed_at: int | None
    last_seen: int
    restarts: int


class EventRow(NamedTuple):
    """A lifecycle event (progress events go to the live stream only)."""

    ts: int
    type: str
    node: str
    pull_id: str
    image_ref: str
    digest: str | None
    status: str
    error: str | None


@dataclass(slots=True)
class Output:
    """Everything one call into the engine produced, in order."""

    accepted: bool = True
    drop_reason: str | None = None
    report: AgentReport | None = None
    samples: list[Sample] = field(default_factory=list)
    progress: list[Progress] = field(default_factory=list)
    events: list[PullEvent] = field(default_factory=list)
    pulls: list[PullRow] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)
    source_events: list[SourceEvent] = field(default_factory=list)

    def event_rows(self) -> list[EventRow]:
        rows = [EventRow(ts=ev.timestamp, type=ev.type.value, node=ev.node_name, pull_id="",
                         image_ref="", digest=None, status=ev.source, error=ev.message)
                for ev in self.source_events]
        for ev in self.events:
            # EventType is a str: endswith runs on the member itself (``.value`` is slow).
            if ev.type.endswith(".progress"):
                continue
            pull = ev.pull
            rows.append(EventRow(ev.timestamp, ev.type._value_, ev.node_name, pull.id,
                                 pull.image_ref, ev.digest, pull.status._value_, pull.error))
        return rows

    def extend(self, other: Output) -> None:
        self.samples.extend(other.samples)
        self.progress.extend(other.progress)
        self.events.extend(other.events)
        self.pulls.extend(other.pulls)
        self.layers.extend(other.layers)


@dataclass
class Batch:
    """A run of engine outputs as the store records it: rows appended as they come, the
    latest row of each pull and of each layer, and the reports that were accepted."""

    reports: list[AgentReport] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    progress: list[Progress] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    pulls: list[PullRow] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)

    @classmethod
    def of(cls, outputs: Iterable[Output], lines: list[str] | None = None) -> Batch:
        """``lines``: the accepted reports already as lines of JSON (the journal's), so
        they are not encoded again."""
        batch = cls()
        if lines is not None:
            batch.__dict__["report_lines"] = lines  # the cached property's own slot
        pulls: dict[str, PullRow] = {}
        layers: dict[tuple[str, str], LayerRow] = {}
        for out in outputs:
            if out.report is not None and out.accepted:
                batch.reports.append(out.report)
            batch.samples += out.samples
            batch.progress += out.progress
            batch.events += out.event_rows()
            pulls.update((p.id, p) for p in out.pulls)
            layers.update(((r.pull_id, r.digest), r) for r in out.layers)
        batch.pulls, batch.layers = list(pulls.values()), list(layers.values())
        return batch

    @functools.cached_property
    def report_lines(self) -> list[str]:
        """Each accepted report as one line of JSON (for the store and a recording alike)."""
        return [r.dumps() for r in self.reports]


Column = tuple[Any, ...]  # one field's values, a row each


@dataclass(frozen=True)
class Columns:
    """A batch transposed, a list of columns per table: what the store turns into Arrow
    tables, and what crosses to a writer process (columns of plain values pickle in a fifth
    of the time rows take)."""

    reports: list[Column]  # ts, node, body
    samples: list[Column]
    progress: list[Column]
    events: list[Column]
    pulls: list[Column]
    layers: list[Column]

    @classmethod
    def of(cls, batch: Batch) -> Columns:
        return cls(cls.report_columns(batch), _transpose(batch.samples),
                   _transpose(batch.progress), _transpose(batch.events),
                   _transpose(batch.pulls), _transpose(batch.layers))

    @staticmethod
    def report_columns(batch: Batch) -> list[Column]:
        """The reports table's columns of ``batch``: each report's time, node and line."""
        if not batch.reports:
            return []
        return [tuple(r.timestamp for r in batch.reports),
                tuple(r.node_name for r in batch.reports), tuple(batch.report_lines)]

    def tables(self) -> tuple[list[Column], ...]:
        """Every table's columns, in the order of the fields (and of the constructor)."""
        return (self.reports, self.samples, self.progress, self.events, self.pulls,
                self.layers)

    @property
    def report_count(self) -> int:
        return len(self.reports[0]) if self.reports else 0


def _transpose(rows: list[Any]) -> list[Column]:
    return list(zip(*rows, strict=True))


__all__ = ["Batch", "Column", "Columns", "EventRow", "LayerRow", "Output", "Progress",
           "PullRow", "Sample"]
