"""Small builders for reports in tests: times in seconds from a fixed origin."""

from __future__ import annotations

from collector.model import AgentReport, LayerPhase, LayerState, PullState
from collector.timefmt import NS

T0 = 1_700_000_000 * NS


def at(seconds: float) -> int:
    return T0 + round(seconds * NS)


def layer(digest: str, done: int, total: int, *, media_type: str = "",
          updated: float | None = None, state: LayerPhase | None = None) -> LayerState:
    return LayerState(digest=digest, media_type=media_type, total_bytes=total,
                      downloaded_bytes=done, total_known=total > 0,
                      updated_at=at(updated) if updated is not None else None, state=state)


def pull(image: str, started: float, *layers: LayerState, total_known: bool = True,
         error: str | None = None) -> PullState:
    return PullState(image_ref=image, started_at=at(started), layers=tuple(layers),
                     total_known=total_known, error=error)


def report(node: str, seconds: float, *pulls: PullState) -> AgentReport:
    return AgentReport(node_name=node, timestamp=at(seconds), pulls=tuple(pulls))


def digest(n: int) -> str:
    return "sha256:" + f"{n:x}".rjust(64, "0")
