"""Prometheus metrics, on a registry of their own.

The seven names of the original keep their names, types and buckets. Labels stay
low-cardinality: node names at most; never images or digests. Media types are folded onto a
fixed set so a reporter cannot invent label values.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from collector.model import EventType
from collector.records import Output
from collector.timefmt import NS

DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600)

_MEDIA_KINDS = {
    "application/vnd.oci.image.layer.v1.tar+gzip": "oci-layer-gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "oci-layer-zstd",
    "application/vnd.oci.image.layer.v1.tar": "oci-layer",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "docker-layer-gzip",
    "application/vnd.oci.image.manifest.v1+json": "oci-manifest",
    "application/vnd.oci.image.index.v1+json": "oci-index",
    "application/vnd.oci.image.config.v1+json": "oci-config",
    "application/vnd.docker.distribution.manifest.v2+json": "docker-manifest",
    "application/vnd.docker.distribution.manifest.list.v2+json": "docker-manifest-list",
    "application/vnd.docker.container.image.v1+json": "docker-config",
}


def media_kind(media_type: str) -> str:
    """A bounded label value for a media type ("unknown" when a reporter sent none)."""
    if not media_type:
        return "unknown"
    return _MEDIA_KINDS.get(media_type, "other")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pulls_active = Gauge("pulltrace_pulls_active", "Pulls in progress", registry=r)
        self.pulls_total = Counter("pulltrace_pulls_total", "Pulls seen", registry=r)
        self.pull_duration = Histogram(
            "pulltrace_pull_duration_seconds", "Duration of completed pulls",
            buckets=DURATION_BUCKETS, registry=r)
        self.pull_bytes = Counter("pulltrace_pull_bytes_total", "Bytes fetched", registry=r)
        self.pull_errors = Counter("pulltrace_pull_errors_total", "Failed pulls", registry=r)
        self.agent_reports = Counter("pulltrace_agent_reports_total", "Reports accepted",
                                     registry=r)
        self.sse_clients = Gauge("pulltrace_sse_clients_active", "Clients of /api/v1/events",
                                 registry=r)
        # Beyond the original.
        self.samples = Counter("pulltrace_samples_total", "Layer samples recorded", registry=r)
        self.reports_dropped = Counter(
            "pulltrace_reports_dropped_total",
            "Reports dropped: duplicate, out_of_order (older than the node's last), "
            "rate_limited, invalid, unauthorized, too_large (body), too_many_layers, "
            "too_many_pulls (the active-pull cap), backlog (too many reports waiting for the "
            "database)", ["reason"], registry=r)
        self.sse_rejected = Counter(
            "pulltrace_sse_rejected_total",
            "Event-stream clients refused (too_many_clients) or dropped for not reading "
            "fast enough (slow)", ["reason"], registry=r)
        self.stalls = Counter("pulltrace_stalls_total", "Layers that stalled", ["node"],
                              registry=r)
        self.nodes = Gauge("pulltrace_nodes",
                           "Nodes with pulls in progress or heard from within the stale time",
                           registry=r)
        self.stalled_pulls = Gauge("pulltrace_pulls_stalled", "Pulls whose layers all stall",
                                   registry=r)
        self.fetched_by_media = Counter(
            "pulltrace_fetched_bytes_total", "Bytes fetched by media type", ["media_type"],
            registry=r)
        self.pulls_finished = Counter("pulltrace_pulls_finished_total",
                                      "Pulls ended, by status (completed, failed, stale)",
                                      ["status"], registry=r)
        self.backlog = Gauge("pulltrace_reports_unwritten",
                             "Reports (and ticks) accepted and waiting to be written", registry=r)
        self.commit_reports = Histogram(
            "pulltrace_commit_reports", "Reports (and ticks) written per transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000), registry=r)
        self.commit_seconds = Histogram(
            "pulltrace_commit_seconds", "Time to write one batch, from its start to its commit",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5), registry=r)
        self.store_errors = Counter("pulltrace_store_errors_total",
                                    "Failed writes to the database", registry=r)
        self.source_gaps = Counter("pulltrace_source_gaps_total",
                                   "Times a source (containerd) became unreachable", ["source"],
                                   registry=r)

    def observe(self, out: Output) -> None:
        """Count what one engine output says happened (after it was committed)."""
        self.observe_all([out])

    def observe_all(self, outs: Iterable[Output]) -> None:
        """Count what a commit's outputs say happened: each counter once per commit, as a
        label lookup costs more than the addition."""
        accepted = samples = fetched = 0
        by_media: dict[str, int] = {}
        for out in outs:
            if out.report is not None:
                if out.accepted:
                    accepted += 1
                elif out.drop_reason:
                    self.reports_dropped.labels(out.drop_reason).inc()
            samples += len(out.samples)
            for sample in out.samples:
                if sample.fetched_bytes:
                    fetched += sample.fetched_bytes
                    by_media[sample.media_type] = (by_media.get(sample.media_type, 0)
                                                   + sample.fetched_bytes)
            for event in out.events:
                kind = event.type
                if kind is EventType.PULL_PROGRESS or kind is EventType.LAYER_PROGRESS:
                    continue
                if kind is EventType.PULL_STARTED:
                    self.pulls_total.inc()
                elif kind is EventType.LAYER_STALLED:
                    self.stalls.labels(event.node_name).inc()
                elif kind in (EventType.PULL_COMPLETED, EventType.PULL_FAILED,
                              EventType.PULL_STALE):
                    self.pulls_finished.labels(event.pull.status.value).inc()
                    if kind is EventType.PULL_FAILED:
                        self.pull_errors.inc()
                    if kind is EventType.PULL_COMPLETED and event.pull.completed_at is not None:
                        self.pull_duration.observe(
                            (event.pull.completed_at - event.pull.started_at) / NS)
        if accepted:
            self.agent_reports.inc(accepted)
        if samples:
            self.samples.inc(samples)
        if fetched:
            self.pull_bytes.inc(fetched)
        kinds: dict[str, int] = {}
        for media_type, nbytes in by_media.items():
            kind_name = media_kind(media_type)
            kinds[kind_name] = kinds.get(kind_name, 0) + nbytes
        for kind_name, nbytes in kinds.items():
            self.fetched_by_media.labels(kind_name).inc(nbytes)

    def set_gauges(self, active: int, stalled: int, nodes: int) -> None:
        self.pulls_active.set(active)
        self.nodes.set(nodes)
        self.stalled_pulls.set(stalled)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
