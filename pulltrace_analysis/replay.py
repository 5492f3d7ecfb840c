"""A recording played through the engine as timed frames, at any speed.

The engine never reads a clock, so feeding it the recorded reports gives the rows the live
collector produced; a frame is the state every ``every`` of report time, as
``GET /api/v1/pulls`` would have shown it then, with the rows produced since the previous
frame. ``speed`` only decides how long the player waits between frames, never what they
hold::

    for frame in replay("data/recording.jsonl", speed=10):
        print(frame.time, [(p.image_ref, p.bytes_per_sec) for p in frame.pulls])
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from collector.engine import Engine, EngineConfig
from collector.model import AgentReport, PullStatus
from collector.records import Output
from collector.sources.recording import read_recording as read_reports
from collector.timefmt import NS, parse_duration

EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Frame:
    index: int
    at: int  # report time shown, nanoseconds since the epoch
    pulls: list[PullStatus]  # active pulls and those finished within the history TTL
    output: Output  # every row the engine produced since the previous frame

    @property
    def time(self) -> datetime:
        """``at`` as a naive UTC datetime, like the time columns of the frames."""
        return EPOCH + timedelta(microseconds=self.at // 1000)


def duration_ns(every: str | int | float | timedelta) -> int:
    """A step as nanoseconds: "1s", "500ms", "1m" (Go durations), seconds, or a timedelta."""
    if isinstance(every, timedelta):
        ns = round(every.total_seconds() * NS)
    elif isinstance(every, int | float):
        ns = round(every * NS)
    else:
        ns = parse_duration(every)
    if ns <= 0:
        raise ValueError(f"a step must be longer than zero, got {every!r}")
    return ns


def frames(source: str | os.PathLike[str] | Iterable[AgentReport], *,
           every: str | float | timedelta = "1s", config: EngineConfig | None = None,
           tick: bool = True) -> Iterator[Frame]:
    """Frames every ``every`` of report time, from the first report to the last.

    ``tick`` lets time pass at each frame as the live collector's ticker does, so stalls
    and silent nodes are noticed between reports.
    """
    reports: Iterable[AgentReport] = (
        read_reports(source) if isinstance(source, str | os.PathLike) else source)
    step = duration_ns(every)
    engine = Engine(config)
    pending = Output()
    boundary: int | None = None
    index = 0
    for report in reports:
        if boundary is None:
            boundary = report.timestamp
        while report.timestamp > boundary:
            yield _frame(engine, index, boundary, pending, tick)
            pending, index, boundary = Output(), index + 1, boundary + step
        pending.extend(engine.ingest(report))
    if boundary is not None:
        yield _frame(engine, index, boundary, pending, tick)


def _frame(engine: Engine, index: int, at: int, pending: Output, tick: bool) -> Frame:
    if tick:
        pending.extend(engine.tick(at))
    return Frame(index=index, at=at, pulls=engine.pulls(), output=pending)


def paced(source: Iterable[Frame], speed: float, *,
          clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[Frame]:
    """Yield each frame when it is due: ``speed`` times real time (``math.inf``: at once)."""
    if not speed > 0:
        raise ValueError(f"speed must be above zero, got {speed!r}")
    first: int | None = None
    started = 0.0
    for frame in source:
        if first is None:
            first, started = frame.at, clock()
        if not math.isinf(speed):
            due = started + (frame.at - first) / NS / speed
            if (wait := due - clock()) > 0:
                sleep(wait)
        yield frame


def replay(source: str | os.PathLike[str] | Iterable[AgentReport], *,
           speed: float = math.inf, every: str | float | timedelta = "1s",
           config: EngineConfig | None = None, tick: bool = True) -> Iterator[Frame]:
    """:func:`frames`, each one when it is due at ``speed`` times real time."""
    return paced(frames(source, every=every, config=config, tick=tick), speed)


__all__ = ["Frame", "duration_ns", "frames", "paced", "replay"]
