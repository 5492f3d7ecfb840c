"""Metrics counted from engine outputs, read back through prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from collector.engine import Engine, EngineConfig
from collector.metrics import Metrics
from tests.collector.reports import digest, layer, pull, report

A = digest(0xA)
MT = "application/vnd.oci.image.layer.v1.tar+gzip"


def values(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    text = metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_stall_error_bytes_and_duration_are_counted_once():
    eng = Engine(EngineConfig(stall_after_ns=5 * 10**9, stall_floor_bps=1))
    metrics = Metrics()
    outs = [eng.ingest(report("n1", t, pull("img:1", 0, layer(A, min(t, 2) * 1_000_000,
                                                              10_000_000, media_type=MT))))
            for t in range(10)]
    outs.append(eng.ingest(report("n1", 10, pull("img:1", 0, layer(A, 2_000_000, 10_000_000),
                                                 error="unexpected EOF"))))
    outs += [eng.ingest(report("n1", t, pull("img:1", 0, layer(A, 2_000_000, 10_000_000),
                                              error="unexpected EOF"))) for t in (11, 12)]
    outs.append(eng.ingest(report("n2", 0, pull("img:2", 0, layer(digest(2), 0, 500)))))
    outs.append(eng.ingest(report("n2", 3)))  # img:2 vanished: committed after 3 s
    for out in outs:
        metrics.observe(out)
    metrics.set_gauges(eng.active_count(), eng.stalled_count(), eng.node_count())
    v = values(metrics)
    assert v[("pulltrace_stalls_total", (("node", "n1"),))] == 1  # stalled at 7 s
    assert v[("pulltrace_pull_errors_total", ())] == 1  # three failing reports, one pull
    assert v[("pulltrace_pulls_total", ())] == 2
    assert v[("pulltrace_pulls_active", ())] == 0
    # 2e6 fetched by img:1's layer; img:2's 500 B arrived with its commit
    assert v[("pulltrace_pull_bytes_total", ())] == 2_000_500
    assert v[("pulltrace_fetched_bytes_total", (("media_type", "oci-layer-gzip"),))] == 2_000_000
    assert v[("pulltrace_fetched_bytes_total", (("media_type", "unknown"),))] == 500
    assert v[("pulltrace_pull_duration_seconds_count", ())] == 1
    assert v[("pulltrace_pull_duration_seconds_sum", ())] == 3.0
    assert v[("pulltrace_pull_duration_seconds_bucket", (("le", "5.0"),))] == 1
    assert v[("pulltrace_pull_duration_seconds_bucket", (("le", "1.0"),))] == 0
    assert v[("pulltrace_pulls_finished_total", (("status", "failed"),))] == 1
    assert v[("pulltrace_pulls_finished_total", (("status", "completed"),))] == 1
    assert v[("pulltrace_agent_reports_total", ())] == 15


def test_dropped_reports_are_counted_by_reason():
    eng, metrics = Engine(), Metrics()
    for t in (5, 5, 4):
        metrics.observe(eng.ingest(report("n1", t)))
    v = values(metrics)
    assert v[("pulltrace_reports_dropped_total", (("reason", "duplicate"),))] == 1
    assert v[("pulltrace_reports_dropped_total", (("reason", "out_of_order"),))] == 1
    assert v[("pulltrace_agent_reports_total", ())] == 1
