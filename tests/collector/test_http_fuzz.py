"""Malformed reports against a running collector: a real aiohttp server on 127.0.0.1 over a
real DuckDB file.

Every broken body (the families of :mod:`tests.collector.malformed`, sent whole, chunked,
gzip-compressed or under a wrong Content-Type, plus bodies over 1 MiB, empty bodies and
bodies that do not decompress) is answered 400 or 413 with a message naming the problem;
not one row of the database changes; and the valid report sent next is answered 200 and
stored.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from collector.model import MIN_TIME_NS, AgentReport, parse_report
from collector.store import TABLES, Store
from tests.collector.malformed import FIXED, TRIED, Broken, broken_reports, reports
from tests.collector.server import RunningCollector

MAX_BODY = 1 << 20
CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/xml",
                 "application/json; charset=latin-1", "image/png"]


@dataclass(frozen=True)
class Delivery:
    how: str
    body: bytes
    headers: dict[str, str]
    pieces: int  # > 0: sent chunked, in this many pieces
    status: int
    field: str | None
    words: str


def _from(case: Broken, how: str, **changes: object) -> Delivery:
    base = Delivery(how, case.body, {}, 0, 400, case.field, case.words)
    return dataclasses.replace(base, **changes)


# How each broken body is sent, and how many examples of each.
MODES = {"whole": 25, "chunked": 15, "content type": 15, "gzip": 15, "empty": 4,
         "not gzip": 10, "over 1 MiB": 12}


@st.composite
def deliveries(draw: st.DrawFn, how: str) -> Delivery:
    if how == "empty":
        return Delivery(how, b"", draw(st.sampled_from([{}, {"Content-Type": "application/json"}])),
                        draw(st.sampled_from([0, 1])), 400, None, "the body is empty")
    if how == "not gzip":
        # Two bytes that are not the gzip magic fail at once (one byte is only a start).
        junk = draw(st.binary(min_size=2, max_size=200).filter(lambda b: b[0] != 0x1F))
        return Delivery(how, junk, {"Content-Encoding": "gzip"}, 0, 400, None,
                        "does not decode as its Content-Encoding ('gzip') says")
    case = draw(broken_reports)
    if how == "whole":
        return _from(case, how)
    if how == "chunked":
        return _from(case, how, pieces=draw(st.integers(1, 8)))
    if how == "content type":
        return _from(case, how, headers={"Content-Type": draw(st.sampled_from(CONTENT_TYPES))})
    if how == "gzip":  # aiohttp inflates it; what is inside is judged as if sent plain
        return _from(case, how, body=gzip.compress(case.body),
                     headers={"Content-Encoding": "gzip"})
    # Past the cap, whatever the body would have been: JSON allows leading whitespace.
    padded = b" " * (MAX_BODY + 1 - len(case.body) + draw(st.integers(0, 1000))) + case.body
    return _from(case, how, body=padded, pieces=draw(st.sampled_from([0, 3])), status=413,
                 field=None, words=f"report body over {MAX_BODY} bytes")


def _chunks(body: bytes, pieces: int) -> Iterator[bytes]:
    size = -(-len(body) // pieces) or 1
    for i in range(0, max(len(body), 1), size):
        yield body[i:i + size]


def send(url: str, d: Delivery) -> httpx.Response:
    content: bytes | Iterator[bytes] = _chunks(d.body, d.pieces) if d.pieces else d.body
    return httpx.post(url + "/api/v1/report", content=content, headers=d.headers, timeout=30)


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    # A second connection to the file the collector writes (one database in this process):
    # it sees what is committed.
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def last_stored(con: duckdb.DuckDBPyConnection) -> AgentReport:
    ((body,),) = con.execute("SELECT body FROM reports ORDER BY seq DESC LIMIT 1").fetchall()
    return parse_report(body)


def test_malformed_bodies_are_refused_and_change_nothing(tmp_path):
    db = tmp_path / "fuzz.duckdb"
    now = time.time_ns()
    valid = reports(timestamps=st.integers(MIN_TIME_NS, now))
    nodes = itertools.count()
    answered: Counter[int] = Counter()
    sent_valid = 0
    with RunningCollector(db) as srv:
        con = duckdb.connect(str(db))
        try:

            def check(d: Delivery, good: AgentReport) -> None:
                nonlocal sent_valid
                TRIED[f"http: {d.how}"] += 1
                before = counts(con)
                resp = send(srv.url, d)
                assert resp.status_code == d.status, (d.how, resp.text)
                answered[resp.status_code] += 1
                text = resp.text
                if d.field:
                    assert f"{d.field}: " in text, (d.how, text)
                assert d.words in text, (d.how, text)
                assert counts(con) == before
                # The collector goes on: the next valid report is answered and stored.
                good = dataclasses.replace(good, node_name=f"fuzz-{next(nodes)}")
                ok = httpx.post(srv.url + "/api/v1/report", content=good.dumps(), timeout=30)
                assert (ok.status_code, ok.text) == (200, "")
                sent_valid += 1
                after = counts(con)
                assert after["reports"] == before["reports"] + 1
                assert dataclasses.replace(last_stored(con), received_at=None) == \
                    dataclasses.replace(good, received_at=None)

            for how, examples in MODES.items():
                settings(FIXED, max_examples=examples)(given(deliveries(how), valid)(check))()
        finally:
            con.close()
        assert httpx.get(srv.url + "/healthz").status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(
            httpx.get(srv.metrics_url).text)}
        dropped = {s.labels["reason"]: s.value
                   for s in families["pulltrace_reports_dropped"].samples
                   if s.name.endswith("_total")}
        assert dropped.get("invalid", 0) == answered[400]
        assert dropped.get("too_large", 0) == answered[413]
        assert answered[400] > 0
        assert answered[413] > 0
    # Closed and opened again: the file holds the valid reports, and only them.
    with Store(db, read_only=True) as store:
        assert store.count("reports") == sent_valid
        nodes_stored = {r.node_name for r in store.reports()}
        assert nodes_stored == {f"fuzz-{i}" for i in range(sent_valid)}


@pytest.mark.parametrize(("encoding", "body"), [
    ("gzip", b"this is not gzip"),
    ("deflate", b"\x00\x01 nor deflate"),
])
def test_a_body_that_does_not_decompress_is_400(server, encoding, body):
    resp = httpx.post(server.url + "/api/v1/report", content=body,
                      headers={"Content-Encoding": encoding}, timeout=10)
    assert (resp.status_code, resp.text) == (
        400, f"invalid report: the body does not decode as its Content-Encoding "
             f"('{encoding}') says; send it uncompressed, or compressed that way\n")
    assert httpx.get(server.url + "/api/v1/pulls").json()["pulls"] == []


def test_a_gzip_compressed_report_is_read(server):
    doc = {"nodeName": "n", "timestamp": "2026-01-01T00:00:00Z",
           "pulls": [{"imageRef": "img:1", "layers": [{"digest": "sha256:1"}]}]}
    resp = httpx.post(server.url + "/api/v1/report",
                      content=gzip.compress(json.dumps(doc).encode()),
                      headers={"Content-Encoding": "gzip"}, timeout=10)
    assert resp.status_code == 200
    (pull,) = httpx.get(server.url + "/api/v1/pulls").json()["pulls"]
    assert (pull["imageRef"], pull["layerCount"]) == ("img:1", 1)
