"""The load generator: its HTTP reading, its figures, and real runs against real servers."""

from __future__ import annotations

import math

import duckdb
import pytest

from bench.fleet import FleetShape
from bench.loadgen import HttpError, answer_rate, parse_response, percentile, summary
from bench.procs import Load, _thread_shares, run_load, start_collector, start_null_server

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: x\r\n\r\n"
TOO_MANY = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 5\r\n\r\nslow\n"


def test_parse_response_waits_for_the_whole_response():
    assert parse_response(bytearray(OK[:20])) is None
    assert parse_response(bytearray(TOO_MANY[:-2])) is None
    assert parse_response(bytearray(OK)) == (200, len(OK))
    both = bytearray(TOO_MANY + OK)
    assert parse_response(both) == (429, len(TOO_MANY))


def test_parse_response_refuses_what_it_cannot_read():
    with pytest.raises(HttpError, match="not an HTTP response"):
        parse_response(bytearray(b"SSH-2.0-OpenSSH\r\n\r\n"))
    with pytest.raises(HttpError, match="Content-Length only"):
        parse_response(bytearray(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 50) == 5.0
    assert percentile(values, 90) == 9.0
    assert percentile(values, 99) == 10.0
    assert percentile([], 50) is None
    assert summary([3.0, 1.0, 2.0]) == {"n": 3, "p50": 2.0, "p90": 3.0, "p99": 3.0,
                                        "max": 3.0, "mean": 2.0}


def test_answer_rate_is_every_answer_over_the_whole_run():
    steady = [i / 100 for i in range(1, 1001)]  # 100 answers a second from 0 s to 10 s
    assert answer_rate(steady, 0.0) == pytest.approx(100.0)
    # Whole commits of 2,000 answered at once every 5 s, the first sent at 0 s: 400 a
    # second, wherever a window would have cut.
    bursts = [5.0] * 2000 + [10.0] * 2000 + [15.0] * 2000
    assert answer_rate(bursts, 0.0) == 6000 / 15.0
    assert answer_rate([], 0.0) == 0.0
    assert answer_rate([1.0], None) == 0.0


def due_in(agents: int, interval: float, lo: float, hi: float) -> tuple[int, int]:
    """Slots of the fixed schedule due before ``hi``, and those due in [lo, hi]: each
    agent's phase is its index times the golden ratio's fraction, of an interval."""
    every = in_window = 0
    for i in range(agents):
        phase = (i * 0.6180339887) % 1.0 * interval
        slots = [phase + k * interval for k in range(math.ceil(hi / interval) + 1)]
        every += sum(1 for t in slots if t <= hi)
        in_window += sum(1 for t in slots if lo <= t <= hi)
    return every, in_window


def test_every_due_report_is_sent_once_and_timed_against_the_empty_handler(tmp_path):
    agents, warmup, duration = 12, 1.0, 2.0
    load = Load(agents, FleetShape(nodes=agents), warmup=warmup, duration=duration, drain=5.0)
    server = start_null_server(tmp_path)
    try:
        result = run_load(server, load)
    finally:
        server.stop()
    every, in_window = due_in(agents, 1.0, warmup, warmup + duration)
    assert result["statuses"] == {"200": every}
    assert result["latency"]["n"] == in_window
    assert result["unanswered"] == 0
    assert result["offered_per_s"] == 12.0


def test_the_collector_records_every_report_it_answered(tmp_path):
    agents = 8
    load = Load(agents, FleetShape(nodes=agents), warmup=0.5, duration=1.5, drain=10.0)
    collector = start_collector(tmp_path, "t")
    try:
        result = run_load(collector, load)
    finally:
        collector.stop()
    every, _ = due_in(agents, 1.0, 0.5, 2.0)
    assert result["statuses"] == {"200": every}
    # the window's commits, each holding at least one report, read from the collector
    assert result["commits"]["per_s"] > 0
    assert result["commits"]["mean_reports"] >= 1
    assert set(result["server_threads"]) == {"main", "others"}
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM reports").fetchone() == (every,)
        nodes = con.execute("SELECT count(DISTINCT node) FROM reports").fetchone()
    assert nodes == (agents,)


def test_thread_shares_split_the_main_thread_from_the_others():
    before = {10: (1.0, 0.5), 11: (2.0, 0.0)}
    after = {10: (3.0, 1.5), 11: (2.5, 0.25), 12: (0.5, 0.0)}  # 12 started in the window
    assert _thread_shares(10, before, after, 2.0) == {
        "main": {"cpu": 1.0, "wait": 0.5}, "others": {"cpu": 0.5, "wait": 0.125}}
