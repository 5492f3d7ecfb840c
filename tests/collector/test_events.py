"""The server-sent event stream: every event type, the client cap, slow clients dropped."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import httpx
import pytest

from collector.limits import Limits
from collector.model import EventType, LayerPhase, PullEvent
from tests.collector.reports import digest, layer, pull, report
from tests.collector.server import RunningCollector, SteppingClock

MAX_SSE_CLIENTS = Limits().max_sse_clients

A = digest(0xA)


def test_stream_carries_all_seven_event_types(server, clock):
    reports = [
        report("n1", 0, pull("img:1", 0, layer(A, 0, 3_000_000))),
        report("n1", 1, pull("img:1", 0, layer(A, 1_000_000, 3_000_000))),
        report("n1", 2, pull("img:1", 0, layer(A, 3_000_000, 3_000_000,
                                                state=LayerPhase.COMPLETED))),
        report("n1", 3, pull("img:2", 3, layer(A, 0, 3_000_000), error="403 Forbidden")),
    ]
    seen: list[dict] = []
    with httpx.stream("GET", server.url + "/api/v1/events", timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.iter_lines()
        assert next(lines) == ": connected"
        for rep in reports:
            assert httpx.post(server.url + "/api/v1/report", content=rep.dumps()).status_code \
                == 200
            clock.advance(1)
        for line in lines:
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
            if seen and seen[-1]["type"] == "pull.failed":
                break
    types = [e["type"] for e in seen]
    assert set(types) >= {"pull.started", "pull.progress", "pull.completed", "pull.failed",
                          "layer.started", "layer.progress", "layer.completed"}
    assert {e["schemaVersion"] for e in seen} == {"v1"}
    progress = next(e for e in seen if e["type"] == "layer.progress")
    assert progress["digest"] == A
    assert progress["nodeName"] == "n1"
    assert progress["pull"]["downloadedBytes"] == 1_000_000
    assert progress["pull"]["bytesPerSec"] == pytest.approx(1_000_000)
    failed = next(e for e in seen if e["type"] == "pull.failed")
    assert failed["pull"]["error"] == "403 Forbidden"
    assert failed["pull"]["status"] == "failed"


def test_at_most_256_clients_and_the_next_gets_503(server):
    async def crowd() -> tuple[list[int], int, float]:
        # no client-side connection cap: the server's cap is what is tested
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            streams = [await session.get(server.url + "/api/v1/events")
                       for _ in range(MAX_SSE_CLIENTS)]
            statuses = [s.status for s in streams]
            extra = await session.get(server.url + "/api/v1/events")
            extra_status = extra.status
            extra.release()
            metrics = await (await session.get(server.metrics_url)).text()
            gauge = next(float(line.split()[1]) for line in metrics.splitlines()
                         if line.startswith("pulltrace_sse_clients_active "))
            for s in streams:
                s.close()
            return statuses, extra_status, gauge

    statuses, extra, gauge = asyncio.run(crowd())
    assert statuses == [200] * MAX_SSE_CLIENTS
    assert extra == 503
    assert gauge == MAX_SSE_CLIENTS


def test_a_client_that_falls_behind_is_dropped_and_ingest_goes_on(server, clock, monkeypatch):
    collector = server.collector
    monkeypatch.setattr("collector.service.SSE_BACKLOG", 10_000)

    async def subscribe_and_flood() -> tuple[int, bool, bool, int]:
        sub = collector.subscribe()
        assert sub is not None
        status = collector.engine.pulls()[0]
        event = PullEvent(0, EventType.PULL_PROGRESS, "n1", status)
        size = len(f"data: {json.dumps(event.to_json(), separators=(',', ':'))}\n\n")
        fits = 10_000 // size  # events that fit in the client's backlog
        collector._publish([event] * fits)  # one commit's chunk: kept whole
        kept = sub.pending == fits * size
        collector._publish([event])  # one more, without the client reading
        dropped = sub.dropped and sub not in collector._subscribers
        # a client that has read everything takes a commit larger than the backlog
        fresh = collector.subscribe()
        assert fresh is not None
        collector._publish([event] * (fits + 1))
        big = not fresh.dropped and fresh.pending == (fits + 1) * size
        collector.unsubscribe(fresh)
        return fits, kept and big, dropped, sub.pending

    rep = report("n1", 0, pull("img:1", 0, layer(A, 0, 1000)))
    assert httpx.post(server.url + "/api/v1/report", content=rep.dumps()).status_code == 200
    fits, kept, dropped, pending = server.call(subscribe_and_flood())
    assert fits >= 1
    assert kept
    assert dropped
    assert pending == 0  # what it had not read is let go
    clock.advance(1)
    rep = report("n1", 1, pull("img:1", 0, layer(A, 500, 1000)))
    assert httpx.post(server.url + "/api/v1/report", content=rep.dumps()).status_code == 200
    metrics = httpx.get(server.metrics_url).text
    assert 'pulltrace_sse_rejected_total{reason="slow"} 1.0' in metrics


def test_a_client_that_never_reads_is_disconnected(tmp_path, monkeypatch):
    monkeypatch.setattr("collector.service.SSE_BACKLOG", 64_000)
    idle = [layer(digest(100 + i), 0, 10**7) for i in range(100)]  # big events: ~20 kB each
    with RunningCollector(tmp_path / "stuck.duckdb", gate_clock=SteppingClock()) as live:
        host, port = live.server.http_addr
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((host, port))
        stuck.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        with httpx.Client(timeout=10) as client:
            for t in range(400):  # far more than socket buffers and the queue hold
                rep = report("n1", t, pull("img:1", 0, layer(A, t * 1000, 10**7), *idle))
                assert client.post(live.url + "/api/v1/report", content=rep.dumps()) \
                    .status_code == 200
            metrics = client.get(live.metrics_url).text
        assert "pulltrace_sse_clients_active 0.0" in metrics
        stuck.settimeout(10)
        received = 0
        while chunk := stuck.recv(65536):  # what was buffered, then the server's close
            received += len(chunk)
        stuck.close()
        assert received > 0
