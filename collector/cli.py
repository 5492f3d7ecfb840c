"""`pulltrace collect | record | agent | replay | demo`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence

from collector import runtime
from collector.engine import Engine, EngineConfig
from collector.errors import ConfigError, PulltraceError, StoreError
from collector.journal import Journal, journal_path
from collector.limits import Limits
from collector.metrics import Metrics
from collector.records import Output
from collector.redaction import install_secret_filter, url_password
from collector.runtime import LOOPS, SWITCH_INTERVAL
from collector.server import parse_addr, start_server
from collector.service import Collector, Recorder
from collector.sources.containerd import DEFAULT_NAMESPACE, DEFAULT_SOCKET, ContainerdClient
from collector.sources.poller import DEFAULT_INTERVAL, ContainerdPoller, feed_collector
from collector.sources.recording import read_recording
from collector.sources.socket_path import ALLOWED_DIRS_ENV, allowed_dirs, containerd_socket
from collector.store import DEFAULT_MEMORY_LIMIT, Store
from collector.timefmt import NS, parse_duration
from collector.writer import WriterProcess

log = logging.getLogger("pulltrace")

DEFAULT_DB = "data/pulltrace.duckdb"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value or default


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _window(text: str) -> int:
    value = _duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration above 0, got {text!r}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _positive(text: str) -> float:
    value = _finite(text)
    if not value > 0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _floor(text: str) -> float:
    value = _finite(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected bytes per second, 0 or more, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _memory(text: str) -> str:
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", text.strip(),
                        re.IGNORECASE):
        raise argparse.ArgumentTypeError(f"expected a size such as 256MB or 1GiB, got {text!r}")
    return text.strip()


def _db_memory_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db-memory-limit", type=_memory, default=DEFAULT_MEMORY_LIMIT,
                   metavar="SIZE", help="DuckDB's cache for the database (default "
                                        f"{DEFAULT_MEMORY_LIMIT}; it spills to disk beyond)")


def _switch_interval(text: str) -> float:
    value = _finite(text)
    if not 1e-6 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.000001 and 1, got {text!r}")
    return value


def _db_path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file path (or :memory:), got ''")
    return text


def _seconds(text: str) -> float:
    seconds = _duration(text) / NS
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration above 0, got {text!r}")
    return seconds


def default_node_name() -> str:
    """PULLTRACE_NODE_NAME (kubelet's downward API sets it), else this host's name."""
    return _env("PULLTRACE_NODE_NAME") or socket.gethostname()


def _node_flag(p: argparse._ActionsContainer) -> None:
    p.add_argument("--node", default=None, metavar="NAME",
                   help="node name in reports (PULLTRACE_NODE_NAME, default the hostname)")


def _namespace_flag(p: argparse._ActionsContainer) -> None:
    p.add_argument("--namespace", default=DEFAULT_NAMESPACE, metavar="NS",
                   help=f"containerd namespace (default {DEFAULT_NAMESPACE}, kubelet's)")


def _allow_dir_flag(p: argparse._ActionsContainer, effect: str) -> None:
    p.add_argument("--allow-socket-dir", action="append", default=[], metavar="DIR",
                   help=f"allow a containerd socket under DIR besides /run/containerd/ and "
                        f"/var/run/containerd/ (repeatable; {ALLOWED_DIRS_ENV}, colon-separated)"
                        f"{effect}")


def _source_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("containerd on this node")
    g.add_argument("--containerd", metavar="SOCKET", default=None,
                   help=f"also watch the pulls of this containerd (e.g. {DEFAULT_SOCKET})")
    _allow_dir_flag(g, "; once one is given, --containerd must be in one of them")
    _namespace_flag(g)
    _node_flag(g)
    g.add_argument("--poll-interval", type=_seconds, default=DEFAULT_INTERVAL,
                   metavar="DURATION", help="how often to read containerd (default 500ms)")


def _engine_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pull semantics")
    g.add_argument("--rate-window", type=_window, default=10 * NS, metavar="DURATION",
                   help="window of a layer's speed (default 10s)")
    g.add_argument("--stall-after", type=_window, default=30 * NS, metavar="DURATION",
                   help="a layer below the stall floor this long is stalled (default 30s)")
    g.add_argument("--stall-floor", type=_floor, default=1024.0, metavar="BYTES_PER_SEC",
                   help="slower than this is no progress (default 1024)")
    g.add_argument("--stale-after", type=_window, default=600 * NS, metavar="DURATION",
                   help="a node silent this long: its pulls end as stale (default 10m)")
    g.add_argument("--history-ttl", type=_window,
                   default=_env("PULLTRACE_HISTORY_TTL", "1h"), metavar="DURATION",
                   help="how long finished pulls stay in /api/v1/pulls "
                        "(PULLTRACE_HISTORY_TTL, default 1h)")


def _engine(args: argparse.Namespace) -> Engine:
    # argparse has applied the flags' types to string defaults (the environment's) too.
    return Engine(EngineConfig(rate_window_ns=args.rate_window, stall_after_ns=args.stall_after,
                               stall_floor_bps=args.stall_floor,
                               stale_after_ns=args.stale_after,
                               history_ttl_ns=args.history_ttl))


def _serve_flags(p: argparse.ArgumentParser, db_default: str) -> None:
    p.add_argument("--db", default=db_default, type=_db_path,
                   help=f"DuckDB file to record into (default {db_default})")
    _db_memory_flag(p)
    p.add_argument("--no-journal", action="store_true",
                   help="answer a report only once the database has committed it, keeping "
                        "no journal (DB.journal) beside it: slower answers, the same data")
    p.add_argument("--listen", default=_env("PULLTRACE_HTTP_ADDR", "127.0.0.1:8080"),
                   help="HOST:PORT of the API (PULLTRACE_HTTP_ADDR, default 127.0.0.1:8080)")
    p.add_argument("--metrics-listen", default=_env("PULLTRACE_METRICS_ADDR", "127.0.0.1:9090"),
                   help="HOST:PORT of /metrics (PULLTRACE_METRICS_ADDR, default 127.0.0.1:9090)")
    p.add_argument("--token", default=_env("PULLTRACE_AGENT_TOKEN"),
                   help="require 'Authorization: Bearer TOKEN' on reports "
                        "(PULLTRACE_AGENT_TOKEN)")
    _engine_flags(p)
    g = p.add_argument_group("runtime")
    g.add_argument("--loop", choices=LOOPS, default="auto",
                   help="the event loop: uvloop (less CPU per request), asyncio's own, or "
                        "auto: uvloop when installed (default auto)")
    g.add_argument("--switch-interval", type=_switch_interval, default=SWITCH_INTERVAL,
                   metavar="SECONDS",
                   help="how long a thread may hold the GIL while another waits for it "
                        f"(default {SWITCH_INTERVAL:g}; Python's own is 0.005): shorter lets "
                        "the database thread run while requests are served")
    g = p.add_argument_group("caps (past one, the answer is 413, 429 or 503 and "
                             "pulltrace_reports_dropped_total{reason} counts it)")
    g.add_argument("--max-layers", type=_count, default=Limits.max_layers, metavar="N",
                   help=f"layers in one report (default {Limits.max_layers}; 413 past it)")
    g.add_argument("--max-active-pulls", type=_count, default=Limits.max_active_pulls,
                   metavar="N", help="pulls in progress over all nodes (default "
                                     f"{Limits.max_active_pulls}; a report that would start "
                                     "more gets 503 and is not recorded)")
    g.add_argument("--max-sse-clients", type=_count, default=Limits.max_sse_clients,
                   metavar="N", help="clients of /api/v1/events "
                                     f"(default {Limits.max_sse_clients}; 503 past it)")
    g.add_argument("--max-backlog", type=_count, default=Limits.max_backlog, metavar="N",
                   help="reports accepted but not yet written, while the database fails "
                        f"(default {Limits.max_backlog}; 503 past it)")


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(max_layers=args.max_layers, max_active_pulls=args.max_active_pulls,
                  max_sse_clients=args.max_sse_clients, max_backlog=args.max_backlog)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulltrace", description="See container image pulls while they run.")
    parser.add_argument("--log-level", default=_env("PULLTRACE_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warn", "warning", "error"],
                        type=str.lower, help="(PULLTRACE_LOG_LEVEL, default info)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    collect = sub.add_parser("collect", help="run the collector: API, metrics, DuckDB")
    _serve_flags(collect, DEFAULT_DB)
    collect.add_argument("--record", metavar="FILE",
                         help="also append every accepted report to this JSONL recording")
    _source_flags(collect)

    record = sub.add_parser("record", help="run the collector and write a JSONL recording")
    record.add_argument("file", help="JSONL recording to append to")
    _serve_flags(record, ":memory:")
    _source_flags(record)

    agent = sub.add_parser("agent", help="post this node's containerd pulls to a collector")
    agent.add_argument("--containerd", metavar="SOCKET",
                       default=_env("PULLTRACE_CONTAINERD_SOCKET", DEFAULT_SOCKET),
                       help=f"containerd's gRPC socket (PULLTRACE_CONTAINERD_SOCKET, "
                            f"default {DEFAULT_SOCKET})")
    _allow_dir_flag(agent, "; the socket must be in one of them")
    _namespace_flag(agent)
    agent.add_argument("--server", metavar="URL", default=_env("PULLTRACE_SERVER_URL"),
                       help="the collector, e.g. http://pulltrace:8080 (PULLTRACE_SERVER_URL)")
    _node_flag(agent)
    agent.add_argument("--token", default=_env("PULLTRACE_AGENT_TOKEN"),
                       help="sent as 'Authorization: Bearer TOKEN' (PULLTRACE_AGENT_TOKEN)")
    agent.add_argument("--interval", type=_seconds,
                       default=_env("PULLTRACE_REPORT_INTERVAL", "1s"), metavar="DURATION",
                       help="time between reports (PULLTRACE_REPORT_INTERVAL, default 1s; "
                            "a collector takes at most two a second per node)")

    replay = sub.add_parser("replay", help="run a recording through the engine into DuckDB")
    replay.add_argument("file", help="JSONL recording")
    replay.add_argument("--db", required=True, type=_db_path,
                        help="DuckDB file to write (a new one, or --append)")
    _db_memory_flag(replay)
    replay.add_argument("--append", action="store_true",
                        help="add to a database that already holds reports")
    replay.add_argument("--speed", type=_positive, default=None,
                        help="X times real time (default: as fast as possible)")
    _engine_flags(replay)

    demo = sub.add_parser("demo", help="show a pull end to end, then a summary")
    demo.add_argument("--db", default="data/demo.duckdb", help="(default data/demo.duckdb)")
    demo.add_argument("--source", choices=["auto", "live", "recording"], default="auto",
                      help="live: pulls through a private containerd, registry and throttling "
                           "proxy (needs containerd, docker-registry, skopeo); recording: "
                           "replay one; auto (default): live when those are installed")
    demo.add_argument("--recording", default=None,
                      help="recording to replay (default: the bundled one in data/)")
    demo.add_argument("--listen", default="127.0.0.1:8080")
    demo.add_argument("--metrics-listen", default="127.0.0.1:9090")
    demo.add_argument("--speed", type=_positive, default=1.0,
                      help="replay speed (default 1: real time)")
    return parser


async def _collect(args: argparse.Namespace, record: str | None) -> None:
    listen = parse_addr(args.listen, "--listen")
    metrics_listen = parse_addr(args.metrics_listen, "--metrics-listen")
    client = poller = None
    if args.containerd:
        # Before anything listens: a socket that is not there is an error at once.
        allowed = allowed_dirs(args.allow_socket_dir, restrict=False)
        client = ContainerdClient(containerd_socket(args.containerd, allowed), args.namespace)
        poller = ContainerdPoller(client, args.node or default_node_name(),
                                  interval=args.poll_interval,
                                  where=f"containerd at {client.socket_path}")
    try:
        if poller is not None:
            await asyncio.to_thread(poller.check)
        store = Store(args.db, memory_limit=args.db_memory_limit)
        try:
            recorder = Recorder(record) if record else None
            journal = None if args.no_journal or args.db == ":memory:" else Journal(
                journal_path(args.db))
        except PulltraceError:
            store.close()
            raise
        # The writer gets a process of its own: see collector.writer.
        collector = Collector(_engine(args), WriterProcess(store), Metrics(), recorder,
                              journal=journal, limits=_limits(args))
        server = await start_server(collector, listen, metrics_listen, args.token)
        runtime.settle()
        log.info("collecting into %s; API %s; metrics %s", args.db, server.url,
                 server.metrics_url)
        log.info("event loop %s, switch interval %gs", runtime.current_loop_name(),
                 sys.getswitchinterval())
        source = None
        if poller is not None:
            assert client is not None
            log.info("watching containerd at %s (namespace %s) as node %r every %gs",
                     client.socket_path, client.namespace, poller.tracker.node, poller.interval)
            source = asyncio.create_task(feed_collector(collector, poller),
                                         name="pulltrace-containerd")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        if source is not None:
            source.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await source
        await server.stop()
    finally:
        if client is not None:
            client.close()


async def _agent(args: argparse.Namespace) -> None:
    from collector.agent import run_agent

    if not args.server:
        raise ConfigError("pass --server URL (or PULLTRACE_SERVER_URL): the collector to "
                          "post to, e.g. http://pulltrace:8080")
    await run_agent(socket_path=args.containerd, namespace=args.namespace, server=args.server,
                    node=args.node or default_node_name(), token=args.token,
                    interval=args.interval,
                    allowed_dirs=allowed_dirs(args.allow_socket_dir, restrict=True))


def _replay(args: argparse.Namespace) -> None:
    engine = _engine(args)
    with Store(args.db, memory_limit=args.db_memory_limit) as store:
        if (held := store.count("reports")) and not args.append:
            raise ConfigError(f"{args.db} already holds {held} reports; replay into a new "
                              "file, or pass --append to add to it")
        if held:
            store.recover(engine)  # continue from what the file holds
        batch: list[Output] = []
        first_ts = start = None
        count = written = 0

        def flush() -> None:
            nonlocal batch, written
            try:
                store.write(batch)
            except StoreError as exc:
                raise StoreError(
                    f"{exc}. The first {written} reports of {args.file} were replayed into "
                    f"{args.db}; once that is fixed, run the same command with --append to "
                    "add the rest (the reports already there are skipped)") from exc
            written += len(batch)
            batch = []

        for report in read_recording(args.file):
            if args.speed is not None:
                if first_ts is None:
                    first_ts, start = report.timestamp, time.monotonic()
                assert start is not None
                due = start + (report.timestamp - first_ts) / NS / args.speed
                if (wait := due - time.monotonic()) > 0:
                    if batch:
                        flush()
                    time.sleep(wait)
            batch.append(engine.ingest(report))
            count += 1
            if len(batch) >= 1000:
                flush()
        flush()
        print(f"replayed {count} reports into {args.db}: {store.count('pulls')} pulls, "
              f"{store.count('samples')} samples, {store.count('events')} events")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {"warn": "warning"}.get(args.log_level, args.log_level)
    if level not in ("debug", "info", "warning", "error"):
        parser.error(f"--log-level (or PULLTRACE_LOG_LEVEL): {args.log_level!r} is not one of "
                     "debug, info, warn, error")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    install_secret_filter([getattr(args, "token", None),
                           url_password(getattr(args, "server", None) or "")])
    try:
        if args.command in ("collect", "record"):
            record = args.record if args.command == "collect" else args.file
            runtime.run(_collect(args, record), args.loop, args.switch_interval)
        elif args.command == "agent":
            asyncio.run(_agent(args))
        elif args.command == "replay":
            _replay(args)
        elif args.command == "demo":
            from collector.demo import run_demo

            run_demo(args)
    except PulltraceError as exc:
        print(f"pulltrace {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

