"""HTML the widgets show: headline figures and a table of pulls with progress bars.

Both the live dashboard (PullStatus JSON from a collector) and the replay player (rows of
``frames.snapshot``) turn their pulls into :class:`PullLine` first, so they look the same.
Everything that came from the network (node names, image references) is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pulltrace_analysis.frames import short_image_name

MB = 1_000_000
ACTIVE = ("active", "stalled")
_COLORS = {"active": "#1f77b4", "stalled": "#ff7f0e", "completed": "#2ca02c",
           "failed": "#d62728", "stale": "#8c564b"}


@dataclass(frozen=True)
class PullLine:
    node: str
    image_ref: str
    status: str
    percent: float | None
    bytes_per_sec: float | None
    eta_seconds: float | None
    downloaded_bytes: int
    total_bytes: int

    @classmethod
    def from_status(cls, pull: Mapping[str, Any]) -> PullLine:
        """From the JSON of a PullStatus (``GET /api/v1/pulls``)."""
        return cls(node=str(pull.get("nodeName", "")), image_ref=str(pull.get("imageRef", "")),
                   status=str(pull.get("status", "")), percent=pull.get("percent"),
                   bytes_per_sec=pull.get("bytesPerSec"), eta_seconds=pull.get("etaSeconds"),
                   downloaded_bytes=int(pull.get("downloadedBytes") or 0),
                   total_bytes=int(pull.get("totalBytes") or 0))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PullLine:
        """From a row of ``frames.snapshot``."""
        return cls(node=row["node"], image_ref=row["image_ref"], status=row["status"],
                   percent=row["percent"], bytes_per_sec=row["bytes_per_sec"],
                   eta_seconds=row["eta_seconds"],
                   downloaded_bytes=int(row["downloaded_bytes"] or 0),
                   total_bytes=int(row["total_bytes"] or 0))


@dataclass(frozen=True)
class Headline:
    active: int
    stalled: int
    failed: int
    bytes_per_sec: float  # summed speed now of the active pulls

    @classmethod
    def of(cls, lines: Iterable[PullLine]) -> Headline:
        found = list(lines)
        return cls(
            active=sum(1 for p in found if p.status in ACTIVE),
            stalled=sum(1 for p in found if p.status == "stalled"),
            failed=sum(1 for p in found if p.status == "failed"),
            bytes_per_sec=sum(p.bytes_per_sec or 0.0 for p in found if p.status in ACTIVE))


def _card(label: str, value: str, color: str = "#222") -> str:
    return (f'<div style="display:inline-block;margin:0 1.5em 0.5em 0">'
            f'<div style="font-size:0.8em;color:#666">{html.escape(label)}</div>'
            f'<div style="font-size:1.6em;color:{color}">{html.escape(value)}</div></div>')


def headline_html(head: Headline, extra: Iterable[tuple[str, str]] = ()) -> str:
    cards = [_card("active pulls", str(head.active)),
             _card("total speed", f"{head.bytes_per_sec / MB:.2f} MB/s"),
             _card("stalled", str(head.stalled), "#ff7f0e" if head.stalled else "#222"),
             _card("failed", str(head.failed), "#d62728" if head.failed else "#222")]
    cards += [_card(label, value) for label, value in extra]
    return '<div class="pulltrace-headline">' + "".join(cards) + "</div>"


def _bar(line: PullLine) -> str:
    pct = max(0.0, min(100.0, line.percent or 0.0))
    color = _COLORS.get(line.status, "#1f77b4")
    return (f'<div style="width:12em;background:#eee;height:0.9em;display:inline-block">'
            f'<div style="width:{pct:.1f}%;background:{color};height:100%"></div></div>'
            f' {pct:.0f}%')


def pulls_table_html(lines: Iterable[PullLine], limit: int = 50) -> str:
    """Active pulls first, then the finished ones; at most ``limit`` rows."""
    found = sorted(lines, key=lambda p: (p.status not in ACTIVE, p.node, p.image_ref))
    if not found:
        return '<div class="pulltrace-pulls"><i>no pulls</i></div>'
    head = "".join(f'<th style="text-align:left;padding-right:1em">{h}</th>' for h in (
        "node", "image", "status", "progress", "MB", "MB/s", "ETA (s)"))
    rows = []
    for line in found[:limit]:
        speed = "-" if line.bytes_per_sec is None else f"{line.bytes_per_sec / MB:.2f}"
        eta = "-" if line.eta_seconds is None else f"{line.eta_seconds:.0f}"
        size = f"{line.downloaded_bytes / MB:.1f} / {line.total_bytes / MB:.1f}"
        image = (f'<span title="{html.escape(line.image_ref, quote=True)}">'
                 f"{html.escape(short_image_name(line.image_ref))}</span>")
        cells = [html.escape(line.node), image, html.escape(line.status), _bar(line), size,
                 speed, eta]
        rows.append("<tr>" + "".join(
            f'<td style="padding-right:1em;white-space:nowrap">{c}</td>' for c in cells)
            + "</tr>")
    more = (f"<div><i>and {len(found) - limit} more</i></div>"
            if len(found) > limit else "")
    return (f'<table class="pulltrace-pulls"><tr>{head}</tr>{"".join(rows)}</table>{more}')


__all__ = ["Headline", "PullLine", "headline_html", "pulls_table_html"]
