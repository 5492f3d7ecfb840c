"""The HTTP API against a real server on 127.0.0.1: the original server's table and more."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.timefmt import format_rfc3339
from tests.collector.reports import at, digest
from tests.collector.server import RunningCollector

TOKEN = "s3cret"


def body(node: str = "node-1", seconds: float = 0, pulls: list | None = None) -> dict:
    return {"nodeName": node, "timestamp": format_rfc3339(at(seconds)), "pulls": pulls or []}


def go_ingest(n: int, done: int, total: int, started: float) -> dict:
    ref = digest(n)
    return {"imageRef": f"layer-{ref}", "startedAt": format_rfc3339(at(started)),
            "totalKnown": True,
            "layers": [{"digest": ref, "mediaType": "", "totalBytes": total,
                        "downloadedBytes": done, "totalKnown": True}]}


@pytest.fixture
def secured(tmp_path, clock):
    with RunningCollector(tmp_path / "auth.duckdb", token=TOKEN, gate_clock=clock) as running:
        yield running


def post(srv: RunningCollector, payload: object, **headers: str) -> httpx.Response:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return httpx.post(srv.url + "/api/v1/report", content=data, headers=headers, timeout=10)


def test_wrong_method_is_405(server):
    assert httpx.get(server.url + "/api/v1/report").status_code == 405
    assert httpx.put(server.url + "/api/v1/report", content=b"{}").status_code == 405


def test_accepted_report_is_200_with_an_empty_body(server):
    resp = post(server, body())
    assert (resp.status_code, resp.content) == (200, b"")


@pytest.mark.parametrize(("header", "expected"), [
    (None, 401),
    (TOKEN, 401),  # a bare token is not enough
    ("Bearer wrong", 401),
    ("Basic " + TOKEN, 401),
    ("Bearer " + TOKEN, 200),
    ("bearer " + TOKEN, 200),
    ("BEARER " + TOKEN, 200),
])
def test_token_needs_the_bearer_scheme(secured, clock, header, expected):
    headers = {"Authorization": header} if header else {}
    assert post(secured, body(), **headers).status_code == expected


@pytest.mark.parametrize(("payload", "message"), [
    (b"{not json", "invalid JSON"),
    (b"[]", "a report must be a JSON object"),
    (json.dumps(body(node="")).encode(), "nodeName: must not be empty"),
    (json.dumps(body(node="n" * 254)).encode(), "nodeName: is 254 characters; at most 253"),
    (json.dumps({"nodeName": "x", "timestamp": "yesterday"}).encode(), "timestamp: not an RFC"),
    (json.dumps(body(pulls=[{"imageRef": "a", "layers": [
        {"digest": "sha256:1", "downloadedBytes": -1}]}])).encode(),
     "pulls[0].layers[0].downloadedBytes: must not be negative"),
])
def test_invalid_reports_are_400_and_name_the_field(server, payload, message):
    resp = post(server, payload)
    assert resp.status_code == 400
    assert message in resp.text
    pulls = httpx.get(server.url + "/api/v1/pulls").json()["pulls"]
    assert pulls == []  # nothing changed


def test_node_name_of_253_characters_is_fine(server):
    assert post(server, body(node="n" * 253)).status_code == 200


def test_body_over_one_mib_is_413(server):
    big = json.dumps(body(pulls=[{"imageRef": "x" * (1 << 20), "layers": []}])).encode()
    assert post(server, big).status_code == 413
    assert httpx.get(server.url + "/api/v1/pulls").json()["pulls"] == []


def test_second_report_of_a_node_within_500ms_is_429(server, clock):
    assert post(server, body("a", 0)).status_code == 200
    clock.advance(0.499)
    assert post(server, body("a", 1)).status_code == 429
    assert post(server, body("b", 1)).status_code == 200  # other nodes are not limited
    clock.advance(0.002)
    assert post(server, body("a", 2)).status_code == 200


def test_go_ingest_refs_merge_per_node_and_list_as_json(server, clock):
    r1 = body("n", 0, [go_ingest(1, 0, 4_000_000, 0.1), go_ingest(2, 0, 2_000_000, 0.0)])
    r2 = body("n", 2, [go_ingest(1, 2_000_000, 4_000_000, 0.1),
                       go_ingest(2, 1_000_000, 2_000_000, 0.0)])
    other = body("n:x", 2, [go_ingest(3, 0, 1000, 1.0)])
    for payload in (r1, r2, other):
        assert post(server, payload).status_code == 200
        clock.advance(1)
    pulls = httpx.get(server.url + "/api/v1/pulls").json()["pulls"]
    assert [(p["nodeName"], p["layerCount"]) for p in pulls] == [("n:x", 1), ("n", 2)]
    merged = pulls[1]
    assert merged["imageRef"] == "__pulling__"
    assert merged["startedAt"] == format_rfc3339(at(0.0))
    assert merged["totalBytes"] == 6_000_000
    assert merged["downloadedBytes"] == 3_000_000
    assert merged["bytesPerSec"] == pytest.approx(1_500_000)  # 1e6/s + 0.5e6/s
    assert merged["etaSeconds"] == pytest.approx(2.0)  # 3e6 left / 1.5e6
    assert merged["percent"] == pytest.approx(50.0)
    assert merged["status"] == "active"
    assert set(merged) == {
        "id", "nodeName", "imageRef", "totalBytes", "downloadedBytes", "cachedBytes",
        "bytesPerSec", "etaSeconds", "percent", "layerCount", "layersDone", "startedAt",
        "completedAt", "error", "totalKnown", "status", "layers"}
    layer = merged["layers"][0]
    assert set(layer) == {"pullId", "digest", "mediaType", "totalBytes", "downloadedBytes",
                          "bytesPerSec", "percent", "startedAt", "completedAt", "totalKnown",
                          "status"}
    assert (layer["pullId"], layer["digest"]) == (merged["id"], digest(1))
    assert layer["bytesPerSec"] == pytest.approx(1_000_000)


def test_metrics_parse_and_carry_the_original_names(server, clock):
    post(server, body("n", 0, [{"imageRef": "img:1", "startedAt": format_rfc3339(at(0)),
                                "totalKnown": True, "error": "manifest unknown",
                                "layers": []}]))
    text = httpx.get(server.metrics_url).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("pulltrace_pulls_active", "pulltrace_pulls", "pulltrace_pull_duration_seconds",
                 "pulltrace_pull_bytes", "pulltrace_pull_errors", "pulltrace_agent_reports",
                 "pulltrace_sse_clients_active"):
        assert name in families, name
    assert families["pulltrace_pull_duration_seconds"].type == "histogram"
    buckets = [s.labels["le"] for s in families["pulltrace_pull_duration_seconds"].samples
               if s.name.endswith("_bucket")]
    assert buckets == ["1.0", "5.0", "10.0", "30.0", "60.0", "120.0", "300.0", "600.0", "+Inf"]
    value = {s.name: s.value for f in families.values() for s in f.samples}
    assert value["pulltrace_pull_errors_total"] == 1
    assert value["pulltrace_agent_reports_total"] == 1
    assert value["pulltrace_pulls_total"] == 1


def _pulls_with_layer(**fields) -> list[dict]:
    lay = {"digest": "sha256:1", "totalBytes": 10, "downloadedBytes": 1} | fields
    return [{"imageRef": "img:1", "startedAt": format_rfc3339(at(0)), "layers": [lay]}]


@pytest.mark.parametrize(("payload", "message"), [
    (json.dumps(body(pulls=_pulls_with_layer(totalBytes=2**63))),
     "pulls[0].layers[0].totalBytes: 9223372036854775808 is over 281474976710656 (256 TiB)"),
    (json.dumps(body(pulls=_pulls_with_layer(downloadedBytes=10**30, totalBytes=0))),
     "pulls[0].layers[0].downloadedBytes: 1000000000000000000000000000000 is over"),
    ('{"nodeName": "n", "timestamp": "9999-01-01T00:00:00Z"}',
     "timestamp: 9999-01-01T00:00:00Z is not between 1970 and 2200"),
    ('{"nodeName": "n", "timestamp": "2026-02-31T00:00:00Z"}',
     "timestamp: not an RFC 3339 time: '2026-02-31T00:00:00Z' (day is out of range"),
    ('{"nodeName": "n", "timestamp": "2026-01-01T00:00:00+25:99"}', "the offset is out of range"),
    ('{"nodeName": "n\\ud800", "timestamp": "2026-01-01T00:00:00Z"}',
     "nodeName: is not valid Unicode"),
    (json.dumps(body(pulls=[{"imageRef": "img\u001b[31m", "layers": []}])),
     "pulls[0].imageRef: contains the control character '\\x1b'"),
    ("[" * 100_000, "nested too deeply"),
])
def test_values_the_store_cannot_hold_are_400_and_ingest_goes_on(server, clock, payload,
                                                                  message):
    resp = post(server, payload.encode())
    assert resp.status_code == 400
    assert message in resp.text
    clock.advance(1)
    assert post(server, body(pulls=_pulls_with_layer())).status_code == 200
    assert [p["imageRef"] for p in httpx.get(server.url + "/api/v1/pulls").json()["pulls"]] \
        == ["img:1"]


def test_a_large_report_sent_in_chunks_is_read_whole(server):
    layers = [{"digest": f"sha256:{i:064x}", "totalBytes": 10**6, "downloadedBytes": 0,
               "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
              for i in range(2000)]  # the default cap
    data = json.dumps(body(pulls=[{"imageRef": "big:1", "startedAt": format_rfc3339(at(0)),
                                   "layers": layers}])).encode()
    assert 300_000 < len(data) < 1 << 20  # larger than aiohttp reads in one go

    def pieces():
        for i in range(0, len(data), 50_000):
            yield data[i:i + 50_000]

    resp = httpx.post(server.url + "/api/v1/report", content=pieces(), timeout=10)
    assert resp.status_code == 200
    (big,) = httpx.get(server.url + "/api/v1/pulls").json()["pulls"]
    assert big["layerCount"] == 2000


def test_a_chunked_body_over_one_mib_is_413(server):
    def pieces():
        for _ in range(30):
            yield b" " * 40_000

    resp = httpx.post(server.url + "/api/v1/report", content=pieces(), timeout=10)
    assert resp.status_code == 413


def test_pulls_filter_by_node_and_status_and_limit(server, clock):
    for n, node in enumerate(("a", "b", "c")):
        rep = body(node, n, [{"imageRef": f"img:{n}", "startedAt": format_rfc3339(at(n)),
                              "layers": [{"digest": digest(n), "totalBytes": 10}]}])
        assert post(server, rep).status_code == 200
    clock.advance(1)
    assert post(server, body("a", 5)).status_code == 200  # a's pull vanished: completed

    def images(query: str) -> list[str]:
        resp = httpx.get(server.url + "/api/v1/pulls" + query)
        assert resp.status_code == 200
        return [p["imageRef"] for p in resp.json()["pulls"]]

    assert images("") == ["img:2", "img:1", "img:0"]  # newest first
    assert images("?limit=2") == ["img:2", "img:1"]
    assert images("?status=completed") == ["img:0"]
    assert images("?node=b&status=active") == ["img:1"]
    bad = httpx.get(server.url + "/api/v1/pulls?limit=-1")
    assert (bad.status_code, bad.text) == (400, "limit: expected a number above 0, got '-1'\n")
