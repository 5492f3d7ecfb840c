"""Load generator: N agents posting reports to a collector on a fixed schedule.

Runs in a process of its own (``python -m bench.loadgen ...``) and prints one JSON object.

How it stays out of the way and keeps latency honest:

- every request is built before the clock starts (a fleet's report bodies, see
  :mod:`bench.fleet`, with their HTTP headers, as bytes); the client only writes them;
- one keep-alive connection per agent, driven by an ``asyncio.Protocol`` (no HTTP client
  library: a response is a status line, headers and ``Content-Length`` bytes);
- open loop: agent *i*'s report *k* is due at ``start + phase_i + k * interval`` whatever
  happened before. Latency is measured from that due time, not from when the request went
  out, so a server that falls behind shows its backlog in the latency instead of slowing
  the senders down (no coordinated omission). An agent sends one report at a time, like a
  real agent on one connection, and never two within ``min_gap`` (the collector's 500 ms
  rule); a report due while the previous one is unanswered goes out as soon as it is
  answered, and one still unsent when the run ends counts with the time it had waited;
- the client measures itself: its CPU time over the window, and how late it sent the
  reports it was free to send (``send_lag``);
- reports/s is every answer over the run, from the first report sent to the last answer
  (see :func:`answer_rate`); latency covers the reports due in the window after the
  warm-up, including those answered during the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.fleet import Fleet, FleetShape

CONNECT_BATCH = 200  # connections opened at once before the run


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (``q`` in 0..100): the smallest value with
    at least ``q`` percent of the values at or below it."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else None,
        "mean": sum(ordered) / len(ordered) if ordered else None,
    }


class HttpError(Exception):
    """A response the client cannot read (the bench stops with this message)."""


def parse_response(buf: bytearray) -> tuple[int, int] | None:
    """(status, length of the whole response) of the first response in ``buf``, or None
    while it is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP response: {lines[0]!r}")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding":
            raise HttpError(f"the server sent {line!r}; the bench client reads Content-Length only")
    total = end + 4 + length
    if len(buf) < total:
        return None
    return int(parts[1]), total


@dataclass
class Plan:
    start: float  # loop time of slot 0 of agent 0
    interval: float
    warmup: float
    duration: float
    min_gap: float

    @property
    def window(self) -> tuple[float, float]:
        return self.start + self.warmup, self.start + self.warmup + self.duration


@dataclass
class Results:
    latency: list[float] = field(default_factory=list)  # due -> answered, in the window
    service: list[float] = field(default_factory=list)  # sent -> answered, in the window
    send_lag: list[float] = field(default_factory=list)  # late sends by the client itself
    censored: list[float] = field(default_factory=list)  # due in the window, never answered
    statuses: dict[int, int] = field(default_factory=dict)
    answered_in_window: int = 0  # 200s answered within the window
    samples_in_window: int = 0
    # (time, samples) of every 200, warm-up and drain included
    answers: list[tuple[float, int]] = field(default_factory=list)
    first_send: float | None = None
    errors: list[str] = field(default_factory=list)


class Agent(asyncio.Protocol):
    def __init__(self, index: int, phase: float, requests: list[tuple[bytes, int]],
                 plan: Plan, results: Results, done: asyncio.Future[None] | None) -> None:
        self.index = index
        self.phase = phase
        self.requests = requests
        self.plan = plan
        self.results = results
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.slot = 0
        self.sent_at: float | None = None  # of the request in flight
        self.last_send = -1e9
        self.stopped = False
        self.on_idle: asyncio.Future[None] | None = done

    def due(self, slot: int) -> float:
        return self.plan.start + self.phase + slot * self.plan.interval

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def begin(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        if self.stopped or self.slot >= len(self.requests):
            self._idle()
            return
        due = self.due(self.slot)
        if due > self.plan.window[1]:
            self._idle()
            return
        when = max(due, self.last_send + self.plan.min_gap)
        if when <= self.loop.time():
            self._send(None)  # late already: the server kept it waiting, not the client
        else:
            self.loop.call_at(when, self._send, when)

    def _send(self, timer: float | None) -> None:
        if self.stopped or self.transport is None:
            self._idle()
            return
        now = self.loop.time()
        if timer is not None and timer >= self.plan.window[0]:
            self.results.send_lag.append(now - timer)
        self.sent_at = self.last_send = now
        if self.results.first_send is None:
            self.results.first_send = now
        self.transport.write(self.requests[self.slot][0])

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            try:
                parsed = parse_response(self.buf)
            except HttpError as exc:
                self._fail(str(exc))
                return
            if parsed is None:
                return
            status, length = parsed
            del self.buf[:length]
            self._answered(status)

    def _answered(self, status: int) -> None:
        now = self.loop.time()
        res, (lo, hi) = self.results, self.plan.window
        res.statuses[status] = res.statuses.get(status, 0) + 1
        due = self.due(self.slot)
        if lo <= due <= hi:
            res.latency.append(now - due)
            if self.sent_at is not None:
                res.service.append(now - self.sent_at)
        if status == 200:
            res.answers.append((now, self.requests[self.slot][1]))
            if lo <= now <= hi:
                res.answered_in_window += 1
                res.samples_in_window += self.requests[self.slot][1]
        self.sent_at = None
        self.slot += 1
        self._schedule()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopped:
            self._fail(f"agent {self.index}: the server closed the connection ({exc})")

    def _fail(self, message: str) -> None:
        self.results.errors.append(message)
        self.stopped = True
        self._idle()

    def _idle(self) -> None:
        if self.on_idle is not None and not self.on_idle.done():
            self.on_idle.set_result(None)

    def finish(self, now: float) -> None:
        """The run is over: whatever was due in the window and is still unanswered counts
        as waiting until ``now``."""
        lo, hi = self.plan.window
        slot = self.slot
        while slot < len(self.requests) and self.due(slot) <= hi:
            if self.due(slot) >= lo:
                self.results.censored.append(now - self.due(slot))
            slot += 1
        self.stopped = True
        if self.transport is not None:
            self.transport.close()


def answer_rate(answers: list[float], first_send: float | None) -> float:
    """Reports answered per second over the whole run: from the first report sent to the
    last answer.

    A collector that falls behind answers in bursts, a whole group commit at a time,
    seconds apart; the count inside a measuring window would depend on how many bursts
    fell in it. Over the whole run it is every answer over the time it took: while the
    collector keeps up, that is the offered rate; while it cannot, it was busy all along,
    and that is what it managed.
    """
    if not answers or first_send is None:
        return 0.0
    last = max(answers)
    return len(answers) / (last - first_send) if last > first_send else 0.0


def build_requests(url: str, shape: FleetShape, agents: int, interval: float,
                   ticks: int) -> tuple[list[list[tuple[bytes, int]]], list[float]]:
    parts = urlsplit(url)
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/json\r\nUser-Agent: pulltrace-bench\r\n")
    fleet = Fleet(shape, interval)
    requests: list[list[tuple[bytes, int]]] = [[] for _ in range(agents)]
    for tick in range(ticks):
        for i, (body, samples) in enumerate(fleet.tick(tick, agents)):
            data = body.encode()
            requests[i].append(
                (f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data, samples))
    return requests, [node.phase for node in fleet.nodes[:agents]]


async def run(args: argparse.Namespace) -> dict[str, object]:
    shape = FleetShape(**json.loads(args.shape))
    ticks = int((args.warmup + args.duration) / args.interval) + 2
    built = time.perf_counter()
    requests, phases = build_requests(args.url, shape, args.agents, args.interval, ticks)
    built = time.perf_counter() - built
    # A full collection over the prepared requests mid-run would be a pause of the client's
    # making, showing as the server's latency.
    gc.freeze()
    gc.disable()
    parts = urlsplit(args.url)
    loop = asyncio.get_running_loop()
    results = Results()
    plan = Plan(start=0.0, interval=args.interval, warmup=args.warmup,
                duration=args.duration, min_gap=args.min_gap)
    agents: list[Agent] = []
    idle: list[asyncio.Future[None]] = []
    for lo in range(0, args.agents, CONNECT_BATCH):
        batch = []
        for i in range(lo, min(lo + CONNECT_BATCH, args.agents)):
            done = loop.create_future()
            idle.append(done)
            batch.append(loop.create_connection(
                lambda i=i, done=done: Agent(i, phases[i], requests[i], plan, results, done),
                parts.hostname, parts.port))
        for _, protocol in await asyncio.gather(*batch):
            agents.append(protocol)
    # Ready: tell the parent when the clock starts (time.monotonic is the loop's clock and
    # the same in every process), then start.
    plan.start = loop.time() + 0.5
    print(json.dumps({"start": plan.start}), flush=True)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for agent in agents:
        agent.begin()
    lo, hi = plan.window
    await asyncio.sleep(lo - loop.time())
    cpu_lo = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(hi - loop.time())
    cpu_hi = resource.getrusage(resource.RUSAGE_SELF)
    # Drain: answers to reports due in the window still count for latency (not throughput).
    await asyncio.wait(idle, timeout=args.drain)
    end = loop.time()
    for agent in agents:
        agent.finish(end)

    def cpu(r: resource.struct_rusage) -> float:
        return r.ru_utime + r.ru_stime

    sent_per_agent = ticks  # for the record: what the schedule could have sent
    latency = results.latency + results.censored
    rate = answer_rate([t for t, _ in results.answers], results.first_send)
    per_report = (sum(n for _, n in results.answers) / len(results.answers)
                  if results.answers else 0.0)
    return {
        "agents": args.agents,
        "interval": args.interval,
        "duration": args.duration,
        "offered_per_s": args.agents / args.interval,
        "reports_per_s": rate,
        "samples_per_s": rate * per_report,
        "reports_in_window_per_s": results.answered_in_window / args.duration,
        "samples_in_window_per_s": results.samples_in_window / args.duration,
        "latency": summary(latency),
        "service": summary(results.service),
        "send_lag": summary(results.send_lag),
        "unanswered": len(results.censored),
        "statuses": {str(k): v for k, v in sorted(results.statuses.items())},
        "client_cpu": (cpu(cpu_hi) - cpu(cpu_lo)) / args.duration,
        "client_cpu_total_s": cpu(cpu_hi) - cpu(cpu0),
        "build_s": built,
        "request_bytes": sum(len(r[0]) for reqs in requests for r in reqs) / max(
            1, args.agents * sent_per_agent),
        "errors": results.errors[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="http://HOST:PORT/api/v1/report")
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--min-gap", type=float, default=0.52,
                        help="seconds between two reports of one agent, at least")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=10.0)
    parser.add_argument("--shape", default="{}", help="FleetShape fields as JSON")
    args = parser.parse_args()
    out = asyncio.run(run(args))
    print(json.dumps(out), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
