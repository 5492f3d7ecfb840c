"""`pulltrace demo`: a collector on its DuckDB file, drawn in the terminal, then summed up.

What feeds it: live pulls through a private containerd, registry and throttling proxy when
containerd, docker-registry and skopeo are installed (the demo starts and stops its own; a
system containerd is never touched), else the real recording in data/ replayed over HTTP in
real time.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from collector.api import ReportGate
from collector.engine import Engine, EngineConfig
from collector.errors import ConfigError
from collector.metrics import Metrics
from collector.model import AgentReport, PullStatus
from collector.server import Server, parse_addr, start_server
from collector.service import Collector
from collector.sources.recording import read_recording, shift
from collector.store import Store
from collector.testbed import MiB, Testbed, install_message, missing_tools
from collector.timefmt import NS

if TYPE_CHECKING:
    from collector.testbed.scenario import Images

BUNDLED = Path("data/recording.jsonl")
MB = 1_000_000
DEMO_STALL_AFTER_NS = 10 * NS


@dataclass
class Summary:
    pulls: int
    completed: int
    failed: int
    stalled: int
    fetched_bytes: int
    cached_bytes: int
    mean_bps: float
    peak_bps: float
    errors: list[str]


def summarize(store: Store) -> Summary:
    con = store.con
    row = con.execute("""
        SELECT count(*), count(*) FILTER (status = 'completed'),
               count(*) FILTER (status = 'failed'), coalesce(sum(fetched_bytes), 0),
               coalesce(sum(cached_bytes), 0)
        FROM pulls""").fetchone()
    assert row is not None
    stalled = con.execute("SELECT count(DISTINCT pull_id) FROM stalls").fetchone()
    # Throughput of the whole run from fetched bytes per second of report time.
    rate = con.execute("""
        WITH per_second AS (
            SELECT date_trunc('second', updated_at) AS s, sum(fetched_bytes) AS b
            FROM samples GROUP BY 1)
        SELECT coalesce(max(b), 0),
               coalesce(sum(b) / greatest(epoch(max(s)) - epoch(min(s)) + 1, 1), 0)
        FROM per_second""").fetchone()
    errors = [f"{image} on {node}: {error}" for image, node, error in con.execute(
        "SELECT image_ref, node, error FROM errors ORDER BY ts").fetchall()]
    return Summary(pulls=int(row[0]), completed=int(row[1]), failed=int(row[2]),
                   stalled=int(stalled[0]) if stalled else 0, fetched_bytes=int(row[3]),
                   cached_bytes=int(row[4]), mean_bps=float(rate[1]) if rate else 0.0,
                   peak_bps=float(rate[0]) if rate else 0.0, errors=errors)


def _bar(pull: PullStatus, width: int = 24) -> str:
    pct = pull.percent or 0.0
    filled = int(width * pct / 100)
    speed = f"{pull.bytes_per_sec / MB:6.2f} MB/s" if pull.bytes_per_sec is not None \
        else "     - MB/s"
    eta = f"ETA {pull.eta_seconds:5.1f}s" if pull.eta_seconds is not None else "ETA     -"
    image = _short_ref(pull.image_ref)
    return (f"{pull.node_name:<8} {image:<28} [{'#' * filled}{'.' * (width - filled)}] "
            f"{pct:5.1f}% {speed} {eta} {pull.status.value}")


def _short_ref(ref: str, width: int = 28) -> str:
    """The end of a long name; a digest reference as ``repo@sha256:<first hex>``."""
    name, at, digest = ref.partition("@")
    if at:
        ref = f"{name.rsplit('/', 1)[-1]}@{digest[:19]}"
    return ref if len(ref) <= width else "..." + ref[-(width - 3):]


class Screen:
    """Redraws the pull bars in place on a terminal; prints a line now and then elsewhere."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self._lines = 0
        self._last_plain = 0.0

    def draw(self, pulls: list[PullStatus], note: str, *, last: bool = False) -> None:
        lines = [note] + [_bar(p) for p in sorted(pulls, key=lambda p: p.started_at)]
        if self.tty:
            if self._lines:
                sys.stdout.write(f"\x1b[{self._lines}F\x1b[J")
            width = shutil.get_terminal_size().columns
            sys.stdout.write("\n".join(line[:width] for line in lines) + "\n")
            self._lines = len(lines)
        elif last or time.monotonic() - self._last_plain >= 5:
            sys.stdout.write("\n".join(lines) + "\n\n")
            self._last_plain = time.monotonic()
        sys.stdout.flush()


async def _feed(url: str, reports: list[AgentReport], speed: float) -> int:
    """Post the reports at their pace, moved to now so the live clock agrees with them."""
    first = reports[0].timestamp
    delta = time.time_ns() - first
    start = time.monotonic()
    sent = 0
    async with aiohttp.ClientSession() as session:
        for report in reports:
            due = start + (report.timestamp - first) / NS / speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            body = shift(report, delta)
            while True:
                async with session.post(url + "/api/v1/report", data=body.dumps()) as resp:
                    if resp.status == 429:  # this node's previous report was < 500 ms ago
                        await asyncio.sleep(0.1)
                        continue
                    if resp.status != 200:
                        raise ConfigError(f"the collector answered {resp.status}: "
                                          f"{await resp.text()}")
                    sent += 1
                    break
    return sent


async def _listen_or_any(db: Path, listen: str, metrics: str,
                         speed: float = 1.0) -> Server:
    # Replayed faster, a node's reports come faster: the 500 ms rule runs at the same speed.
    gate = ReportGate(None, lambda: round(time.monotonic_ns() * speed))
    try:
        return await start_server(_collector(db), parse_addr(listen, "--listen"),
                                  parse_addr(metrics, "--metrics-listen"), gate=gate)
    except ConfigError as exc:
        # start_server stopped that collector (and closed its store): start a new one.
        print(f"{exc}; using free ports instead")
        return await start_server(_collector(db), ("127.0.0.1", 0), ("127.0.0.1", 0), gate=gate)


def _collector(db: Path) -> Collector:
    # A shorter stall rule than the collector's default (30 s), so the demo's 31 s silence
    # shows as a stall for most of its length.
    return Collector(Engine(EngineConfig(stall_after_ns=DEMO_STALL_AFTER_NS)), Store(db),
                     Metrics())


async def _run(args: argparse.Namespace, db: Path, reports: list[AgentReport],
               source: str) -> None:
    server = await _listen_or_any(db, args.listen, args.metrics_listen, args.speed)
    collector = server.collector
    seconds = (reports[-1].timestamp - reports[0].timestamp) / NS / args.speed
    print(f"pulltrace demo: {source}\n  collector {server.url}, metrics {server.metrics_url}, "
          f"database {db}\n  {len(reports)} reports over {seconds:.0f}s\n")
    feed = asyncio.create_task(_feed(server.url, reports, args.speed))
    await _show(collector, feed, lambda: "")
    await _finish(server, db, feed.result())


async def _run_live(args: argparse.Namespace, db: Path, bed: Testbed, images: Images) -> None:
    from collector.testbed.scenario import watch

    server = await _listen_or_any(db, args.listen, args.metrics_listen)
    collector = server.collector
    print(f"  collector {server.url}, metrics {server.metrics_url}, database {db}\n")
    step = [""]

    def say(message: str) -> None:
        step[0] = message

    story = asyncio.create_task(watch(bed, images, collector, "testbed", say))
    await _show(collector, story, lambda: step[0])
    failed = story.exception()
    await _finish(server, db, 0 if failed is not None else story.result())
    if failed is not None:
        raise failed


async def _show(collector: Collector, work: asyncio.Task[Any], note: Callable[[], str]) -> None:
    """Redraw the pulls every half second until ``work`` is done."""
    screen = Screen()
    started = time.monotonic()
    while not work.done():
        line = f"t+{time.monotonic() - started:4.0f}s  active {collector.engine.active_count()}"
        if text := note():
            line += f"  {text}"
        screen.draw(collector.pulls(), line)
        await asyncio.wait({work}, timeout=0.5)
    screen.draw(collector.pulls(), f"t+{time.monotonic() - started:4.0f}s  done", last=True)


async def _finish(server: Server, db: Path, sent: int) -> None:
    metrics_url = server.metrics_url
    await server.stop()
    with Store(db, read_only=True) as store:
        s = summarize(store)
    print(f"\nSummary ({sent} reports)\n"
          f"  pulls       {s.pulls}: {s.completed} completed, {s.failed} failed, "
          f"{s.pulls - s.completed - s.failed} unfinished\n"
          f"  fetched     {s.fetched_bytes / MB:.1f} MB (+{s.cached_bytes / MB:.1f} MB cached)\n"
          f"  throughput  mean {s.mean_bps / MB:.2f} MB/s, peak {s.peak_bps / MB:.2f} MB/s "
          f"(per second of download)\n"
          f"  stalls      {s.stalled} pull(s) with a stalled layer\n"
          f"  errors      {len(s.errors)}")
    for line in s.errors:
        print(f"    - {line}")
    print(f"  database    {db} (tables samples, pull_progress, pulls, layers, events)\n"
          f"  metrics     {metrics_url} (served while the collector runs)")


def run_demo(args: argparse.Namespace) -> None:
    source = getattr(args, "source", "auto")
    if args.recording:
        source = "recording"
    missing = missing_tools()
    if source == "live" and missing:
        raise ConfigError(f"--source live: {install_message(missing)}")
    db = Path(args.db).resolve()
    for previous in (db, Path(str(db) + ".wal")):  # the demo's own file, made anew each run
        previous.unlink(missing_ok=True)
    if source != "recording" and not missing:
        _live(args, db)
        return
    path = Path(args.recording) if args.recording else BUNDLED
    reports = list(read_recording(path))
    if not reports:
        raise ConfigError(f"the recording {path} holds no reports")
    why = (f" ({install_message(missing)} to watch live pulls instead)"
           if missing and source == "auto" else "")
    pace = "in real time" if args.speed == 1 else f"at {args.speed:g} times real time"
    asyncio.run(_run(args, db, reports, f"replaying the recording {path} {pace}{why}"))


def _live(args: argparse.Namespace, db: Path) -> None:
    from collector.testbed.scenario import prepare

    print("pulltrace demo: live pulls through a private containerd, registry and throttling "
          "proxy (2 MiB/s per connection), started here and stopped at the end")
    started = time.monotonic()
    # The testbed's processes die with the thread that started them: this one, which outlives
    # the demo.
    with Testbed(rate=2 * MiB) as bed:
        print(f"  testbed in {bed.directory}; writing and pushing the demo images...",
              flush=True)
        images = prepare(bed)
        print(f"  ready after {time.monotonic() - started:.0f}s")
        asyncio.run(_run_live(args, db, bed, images))
