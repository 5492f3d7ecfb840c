"""A small recording whose figures are worked out by hand in the tests.

Times are seconds after T0 (a whole second, so 1 s buckets start at T0 + k). Three nodes:

- n1 pulls reg/app:1 (started 0): layer A (4,000,000 B) gains 1,000,000 by 1.0, 2,500,000
  by 1.5, 3,400,000 by 2.5 and vanishes (committed) in the report at 4; config C (1,000 B)
  is complete at 0.5; layer K (2,000,000 B) is cached. The pull completes at 4.
- n2 pulls reg/db:2 (started 0.5): layer B (3,000,000 B) reaches 1,000,000 at 1.5; the
  report at 2.5 carries an error: the pull fails there.
- n3 pulls reg/slow:3 (started 0): layer S (5,000,000 B) reaches 1,000,000 at 1, then
  nothing moves until 33 (4,200,000): stalled from 31 (30 s without progress, noticed in the
  report at 31.5); it vanishes at 34, completing the pull.
"""

from __future__ import annotations

from pathlib import Path

from collector.model import AgentReport, LayerPhase
from collector.sources.recording import write_recording
from tests.collector.reports import T0, at, layer, pull, report

LAYER_MT = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MT = "application/vnd.oci.image.config.v1+json"
# Digests whose short forms (first 12 hex digits) differ, as real ones do.
A, C, K, B, S = ("sha256:" + ch * 64 for ch in "acebf")
APP, DB, SLOW = "reg/app:1", "reg/db:2", "reg/slow:3"
ERROR = "registry answered 503"

__all__ = ["A", "APP", "B", "C", "CONFIG_MT", "DB", "ERROR", "K", "LAYER_MT", "S", "SLOW",
           "T0", "at", "reports", "write"]


def _app(t: float, a: tuple[int, float] | None) -> AgentReport:
    layers = []
    if a is not None:
        layers.append(layer(A, a[0], 4_000_000, media_type=LAYER_MT, updated=a[1]))
    if t == 0:
        layers.append(layer(C, 0, 1_000, media_type=CONFIG_MT, updated=0))
    else:
        layers.append(layer(C, 1_000, 1_000, media_type=CONFIG_MT, updated=0.5,
                            state=LayerPhase.COMPLETED))
    layers.append(layer(K, 0, 2_000_000, media_type=LAYER_MT, state=LayerPhase.CACHED))
    return report("n1", t, pull(APP, 0, *layers))


def _db(t: float, done: int, updated: float, error: str | None = None) -> AgentReport:
    return report("n2", t, pull(DB, 0.5, layer(B, done, 3_000_000, media_type=LAYER_MT,
                                                updated=updated), error=error))


def _slow(t: float, done: int, updated: float) -> AgentReport:
    return report("n3", t, pull(SLOW, 0, layer(S, done, 5_000_000, media_type=LAYER_MT,
                                                updated=updated)))


def reports() -> list[AgentReport]:
    return [
        _app(0, (0, 0)), _slow(0, 0, 0),
        _db(0.5, 0, 0.5),
        _app(1, (1_000_000, 1.0)), _slow(1, 1_000_000, 1),
        _db(1.5, 1_000_000, 1.5),
        _app(2, (2_500_000, 1.5)),
        _db(2.5, 1_000_000, 1.5, error=ERROR),
        _app(3, (3_400_000, 2.5)),
        _app(4, None),
        _slow(10, 1_000_000, 1), _slow(20, 1_000_000, 1), _slow(31.5, 1_000_000, 1),
        _slow(33, 4_200_000, 33),
        report("n3", 34),
    ]


def write(path: Path) -> Path:
    write_recording(path, reports())
    return path
