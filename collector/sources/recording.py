"""Recordings: JSONL files of AgentReports, one a line."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

from collector.errors import ConfigError, ReportError
from collector.model import AgentReport, LayerState, PullState, parse_report


def read_recording(path: str | os.PathLike[str]) -> Iterator[AgentReport]:
    """Reports in file order; a bad line is an error naming the line and the field."""
    file = Path(path)
    try:
        handle = file.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the recording {file}: {exc.strerror}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield parse_report(line)
            except ReportError as exc:
                raise ReportError(f"{file}:{number}: {exc.field}" if exc.field
                                  else f"{file}:{number}", exc.problem) from exc


def write_recording(path: str | os.PathLike[str], reports: list[AgentReport]) -> None:
    Path(path).write_text("".join(r.dumps() + "\n" for r in reports), encoding="utf-8")


def shift(report: AgentReport, delta_ns: int) -> AgentReport:
    """The same report moved in time by ``delta_ns`` (to replay an old recording as now)."""

    def move(ns: int | None) -> int | None:
        return None if ns is None else ns + delta_ns

    def layer(ls: LayerState) -> LayerState:
        return dataclasses.replace(ls, started_at=move(ls.started_at),
                                   updated_at=move(ls.updated_at))

    def pull(ps: PullState) -> PullState:
        return dataclasses.replace(ps, started_at=move(ps.started_at),
                                   layers=tuple(layer(ls) for ls in ps.layers))

    return AgentReport(node_name=report.node_name, timestamp=report.timestamp + delta_ns,
                       pulls=tuple(pull(p) for p in report.pulls))
