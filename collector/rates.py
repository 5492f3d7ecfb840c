"""Sliding-window rate of one layer from its own (timestamp, bytes) samples.

Pure arithmetic: the caller says what time it is. Bytes within one segment never go down;
a sample lower than the last one starts a new segment (a resumed or retried download), so a
rate is never negative and never frozen at its pre-restart value.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import NamedTuple

from collector.timefmt import NS


class Step(Enum):
    BASELINE = "baseline"  # first sample of a segment: bytes already there, not fetched now
    PROGRESS = "progress"
    RESTART = "restart"
    IGNORED = "ignored"  # not newer than the last sample


class Added(NamedTuple):
    step: Step
    gained: int  # bytes fetched since the previous sample of this segment


class RateWindow:
    """Bytes gained over the last ``window_ns`` of a layer's own samples.

    The first sample before the window stays as its left edge, so a layer that moves in
    1 MiB steps less often than the window still has a rate.
    """

    def __init__(self, window_ns: int, keep_ns: int | None = None,
                 step_grace: float = 2.0) -> None:
        self.window_ns = window_ns
        self.keep_ns = max(window_ns, keep_ns or 0)
        self.step_grace = step_grace
        self.points: deque[tuple[int, int]] = deque()
        self.last_step = 0  # size of the last increase, to predict when the next one is due
        self._version = 0  # bumped by every change, so a rate asked twice is computed once
        self._cached: tuple[int, int, float | None] = (-1, -1, None)

    def add(self, t: int, nbytes: int) -> Added:
        self._version += 1
        if not self.points:
            self.points.append((t, nbytes))
            return Added(Step.BASELINE, 0)
        last_t, last_b = self.points[-1]
        if nbytes < last_b:
            self.points.clear()
            self.points.append((t, nbytes))
            self.last_step = 0
            return Added(Step.RESTART, 0)
        if t <= last_t:
            if nbytes > last_b:
                # Same timestamp, more bytes: the newer reading of the same instant wins.
                self.points[-1] = (last_t, nbytes)
                self.last_step += nbytes - last_b
                return Added(Step.PROGRESS, nbytes - last_b)
            return Added(Step.IGNORED, 0)
        self.points.append((t, nbytes))
        if nbytes > last_b:
            self.last_step = nbytes - last_b
        self._prune(t)
        return Added(Step.PROGRESS, nbytes - last_b)

    def _prune(self, now: int) -> None:
        edge = now - self.keep_ns
        while len(self.points) > 2 and self.points[1][0] <= edge:
            self.points.popleft()

    def bytes_at(self, t: int) -> int | None:
        """Bytes of the last sample at or before ``t`` (None before the segment began)."""
        found = None
        for pt, pb in self.points:
            if pt > t:
                break
            found = pb
        return found

    def _window_rate(self, anchor: int) -> float | None:
        edge = anchor - self.window_ns
        left: tuple[int, int] | None = None
        right: tuple[int, int] | None = None
        skip = self._opening(anchor)
        for point in self.points:
            if point[0] > anchor:
                break
            if skip:
                skip = False
                continue
            if point[0] <= edge or left is None:
                left = point
            right = point
        if left is None or right is None:
            return None
        span = anchor - left[0]
        if span <= 0:
            return None
        return (right[1] - left[1]) * NS / span

    def _opening(self, anchor: int) -> bool:
        """Whether the first point is a download's opening to leave out of the window.

        A writer that has received nothing yet (0 bytes: containerd's ingest just opened) is
        stamped when it opened, before its request went out; the wait for the first byte is
        not transfer time. Once two increases have landed by ``anchor``, they give the
        transfer's own clock and the opening is no longer the window's left edge.
        """
        points = self.points
        if len(points) < 3 or points[0][1] != 0:
            return False
        landed = 0
        last = 0
        for t, nbytes in points:
            if t > anchor:
                break
            if nbytes > last:
                landed += 1
                last = nbytes
                if landed >= 2:
                    return True
        return False

    def rate(self, now: int) -> float | None:
        """Bytes per second at ``now``; None while only one sample is known."""
        when, version, value = self._cached
        if when == now and version == self._version:
            return value
        value = self._rate(now)
        self._cached = (now, self._version, value)
        return value

    def _rate(self, now: int) -> float | None:
        if len(self.points) < 2:
            return None
        last_t = self.points[-1][0]
        measured = self._window_rate(last_t)
        if measured is None or now <= last_t:
            return measured
        if measured > 0 and self.last_step > 0:
            due = self.last_step / measured * NS
            if now - last_t <= self.step_grace * due:
                return measured
        # Well past the next expected step: let the rate fall with time.
        decayed = self._window_rate(now)
        return measured if decayed is None else min(measured, decayed)

    def stall_onset(self, after: int, now: int, duration_ns: int,
                    floor_bps: float) -> int | None:
        """First time in (after, now] at which the bytes gained over the preceding
        ``duration_ns`` fall below ``floor_bps`` (or are zero); None if none does.

        A segment younger than ``duration_ns`` cannot be stalled yet.
        """
        if not self.points:
            return None
        need = floor_bps * duration_ns / NS
        for pt, _ in self.points:  # in time order, so the first hit is the onset
            c = pt + duration_ns
            if c > now:
                break
            if c > after and self._is_slow(c, duration_ns, need):
                return c
        return None

    def next_onset_candidate(self, after: int, duration_ns: int) -> int | None:
        """The earliest time after ``after`` at which :meth:`stall_onset` could fire."""
        for pt, _ in self.points:
            if pt + duration_ns > after:
                return pt + duration_ns
        return None

    def is_slow(self, now: int, duration_ns: int, floor_bps: float) -> bool:
        return self._is_slow(now, duration_ns, floor_bps * duration_ns / NS)

    def _is_slow(self, t: int, duration_ns: int, need: float) -> bool:
        first = self.points[0][0]
        if t - duration_ns < first:
            return False
        before = self.bytes_at(t - duration_ns)
        after = self.bytes_at(t)
        if before is None or after is None:
            return False
        gained = after - before
        return gained == 0 or gained < need
