"""GET /api/v1/export on a real collector: bounded pages, cursors, formats, clear 400s."""

from __future__ import annotations

import ast
import json
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from collector.export import MAX_LIMIT
from collector.timefmt import format_rfc3339
from tests.analysis.small import APP, reports
from tests.collector.reports import at, digest, layer, pull, report
from tests.collector.server import ManualClock, RunningCollector


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    clock = ManualClock()
    with RunningCollector(tmp_path_factory.mktemp("export") / "x.duckdb",
                          gate_clock=clock) as running:
        running.clock = clock
        for rep in reports():
            clock.advance(1)
            assert httpx.post(running.url + "/api/v1/report", content=rep.dumps(),
                              timeout=10).status_code == 200
        yield running


def get(server, **params):
    return httpx.get(server.url + "/api/v1/export", params=params, timeout=10)


def arrow(resp) -> pa.Table:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/vnd.apache.arrow.stream"
    return pa.ipc.open_stream(resp.content).read_all()


def pages(server, table, limit):
    since, out = "", []
    while True:
        resp = get(server, table=table, since=since, limit=limit)
        page = arrow(resp)
        assert int(resp.headers["X-Rows"]) == page.num_rows <= limit
        out.append((page, resp.headers["X-Has-More"]))
        since = resp.headers["X-Next-Cursor"]
        if resp.headers["X-Has-More"] == "false":
            return out, since


def test_samples_come_in_bounded_pages_in_write_order(server):
    got, _ = pages(server, "samples", 10)
    assert [(p.num_rows, more) for p, more in got] == [(10, "true"), (10, "true"),
                                                        (5, "false")]
    whole = arrow(get(server, table="samples", limit=100))
    assert pa.concat_tables([p for p, _ in got]).equals(whole)
    assert whole.num_rows == 25
    ts = whole.column("ts").cast(pa.int64()).to_pylist()
    assert ts[:4] == [at(0)] * 4
    assert ts[-1] == at(34)


def test_a_cursor_picks_up_exactly_the_rows_committed_since(server):
    _, cursor = pages(server, "events", 100)
    assert arrow(get(server, table="events", since=cursor)).num_rows == 0
    server.clock.advance(1)
    new = report("n9", 100, pull("reg/new:1", 100, layer(digest(99), 0, 10)))
    assert httpx.post(server.url + "/api/v1/report", content=new.dumps()).status_code == 200
    resp = get(server, table="events", since=cursor)
    fresh = arrow(resp)
    assert fresh.column("type").to_pylist() == ["pull.started", "layer.started"]
    assert fresh.column("node").to_pylist() == ["n9", "n9"]
    assert resp.headers["X-Next-Cursor"] != cursor


def test_pulls_and_layers_page_in_key_order(server):
    got, _ = pages(server, "pulls", 2)
    ids = [i for p, _ in got for i in p.column("id").to_pylist()]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids)) >= 3
    got, _ = pages(server, "layers", 2)
    keys = [k for p, _ in got
            for k in zip(p.column("pull_id").to_pylist(), p.column("digest").to_pylist(),
                         strict=True)]
    assert keys == sorted(keys)
    assert len(keys) >= 5


def test_json_lines_with_rfc3339_times(server):
    resp = get(server, table="pulls", format="jsonl", limit=100)
    assert resp.headers["content-type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in resp.text.splitlines()]
    app = next(r for r in rows if r["image_ref"] == APP)
    assert (app["started_at"], app["completed_at"]) == (format_rfc3339(at(0)),
                                                        format_rfc3339(at(4)))
    assert (app["fetched_bytes"], app["status"], app["error"]) == (4_001_000, "completed", None)


def test_limit_above_the_cap_is_capped(server):
    assert get(server, table="samples", limit=MAX_LIMIT * 10).status_code == 200


@pytest.mark.parametrize(("params", "message"), [
    ({}, "table: expected one of samples, pull_progress, events, pulls, layers, got ''"),
    ({"table": "reports"}, "table: expected one of"),
    ({"table": "samples", "limit": "0"}, "limit: expected a whole number of rows from 1"),
    ({"table": "samples", "limit": "ten"}, "limit: expected a whole number"),
    ({"table": "samples", "since": "-3"}, "since: '-3' is not a cursor of table samples"),
    ({"table": "pulls", "since": "12"}, "since: '12' is not a cursor this endpoint gave"),
    ({"table": "samples", "format": "csv"}, "format: expected one of arrow, jsonl"),
    ({"table": "samples", "offset": "5"}, "unknown parameter 'offset'"),
])
def test_bad_parameters_get_a_400_that_says_why(server, params, message):
    resp = get(server, **params)
    assert resp.status_code == 400
    assert message in resp.text


def test_reading_while_the_collector_writes(tmp_path):
    """A reader following the cursor while reports keep coming gets every row exactly once."""
    clock = ManualClock()
    with RunningCollector(tmp_path / "busy.duckdb", gate_clock=clock) as running:
        posted = threading.Event()

        answers: list[int] = []

        def post_all() -> None:
            try:
                with httpx.Client(timeout=10) as client:
                    for i in range(60):
                        clock.advance(1)
                        body = report(f"w{i % 3}", i, pull(
                            f"reg/w{i % 3}:1", 0, layer(digest(i % 3), i * 1000, 10**6)))
                        answers.append(client.post(running.url + "/api/v1/report",
                                                   content=body.dumps()).status_code)
            finally:
                posted.set()

        writer = threading.Thread(target=post_all)
        writer.start()
        seen, since = [], ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = posted.is_set()
            resp = get(running, table="samples", since=since, limit=7)
            page = arrow(resp)
            seen += page.column("ts").cast(pa.int64()).to_pylist()
            since = resp.headers["X-Next-Cursor"]
            if done and resp.headers["X-Has-More"] == "false":
                break
        writer.join()
        assert answers == [200] * 60
        assert seen == [at(i) for i in range(60)]  # one layer per report, in order


def test_the_collector_never_imports_the_notebook_library():
    root = Path(__file__).resolve().parents[2] / "collector"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "pulltrace_analysis" for n in names), path
