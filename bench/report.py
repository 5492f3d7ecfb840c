"""Figures as rows of one table: each beside the limit measured in the same run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    part: str
    figure: str
    value: float | None
    unit: str
    limit: float | None = None
    limit_name: str = ""
    target: float | None = None  # the ratio (or, with ``target_max``, the value) to meet
    target_max: bool = False  # the value must stay below ``target`` (e.g. a latency)
    note: str = ""
    scale: float = 1.0  # the value is printed divided by this (ms from seconds, MiB from kB)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.limit:
            return None
        return self.value / self.limit

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        probe = self.value if self.target_max else self.ratio
        if probe is None:
            return "n/a"
        met = probe < self.target if self.target_max else probe >= self.target
        return "ok" if met else "MISSED"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        if self.target_max:
            return f"< {_num(self.target / self.scale)} {self.unit}"
        return f"ratio >= {self.target:g}"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def table(self) -> str:
        header = ("part", "figure", "value", "limit (same run)", "ratio", "target", "")
        lines = [header]
        for r in self.rows:
            value = "-" if r.value is None else f"{_num(r.value / r.scale)} {r.unit}"
            limit = ""
            if r.limit is not None:
                limit = f"{_num(r.limit / r.scale)} {r.unit}"
                if r.limit_name:
                    limit += f" ({r.limit_name})"
            ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
            if r.ratio is not None and r.target_max:  # a time or a size: times the limit
                ratio = f"{r.ratio:,.1f}x"
            lines.append((r.part, r.figure + (f" [{r.note}]" if r.note else ""), value, limit,
                          ratio, r.target_text(), r.verdict))
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        out = []
        for n, line in enumerate(lines):
            cells = [str(c).ljust(w) if i in (0, 1, 5, 6) else str(c).rjust(w)
                     for i, (c, w) in enumerate(zip(line, widths, strict=True))]
            out.append("  ".join(cells).rstrip())
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)

    def dump(self, path: Path) -> None:
        rows = [asdict(r) | {"ratio": r.ratio, "verdict": r.verdict} for r in self.rows]
        path.write_text(json.dumps({"machine": self.machine, "rows": rows,
                                    "details": self.details}, indent=1, default=str))
