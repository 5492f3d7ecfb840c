"""Synthetic reports shaped like containerd's: 1 MiB steps, ``updatedAt`` per step.

For benchmarks and for a demo recording where no containerd is at hand. Seeded, so the
same arguments give the same reports.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from collector.model import AgentReport, LayerPhase, LayerState, PullState
from collector.timefmt import NS

MIB = 1 << 20
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class PlannedLayer:
    digest: str
    media_type: str
    size: int
    rate: float  # bytes per second while it downloads
    start: float  # seconds after the pull starts
    cached: bool = False
    stall_at: float | None = None  # fraction of the size where it stops for good


@dataclass
class PlannedPull:
    node: str
    image: str
    start: float
    layers: list[PlannedLayer] = field(default_factory=list)
    fail_at: float | None = None  # seconds after start: the pull errors out


def _digest(rng: random.Random) -> str:
    return "sha256:" + "".join(rng.choice("0123456789abcdef") for _ in range(64))


def plan_pull(rng: random.Random, node: str, image: str, start: float, sizes: list[int],
              rate: float) -> PlannedPull:
    planned = PlannedPull(node, image, start)
    planned.layers.append(PlannedLayer(_digest(rng), MANIFEST, 1_200, rate, 0.0))
    planned.layers.append(PlannedLayer(_digest(rng), CONFIG, 3_400, rate, 0.2))
    for i, size in enumerate(sizes):
        planned.layers.append(PlannedLayer(_digest(rng), LAYER, size,
                                           rate * rng.uniform(0.8, 1.2), 0.4 + 0.1 * i))
    return planned


def _layer_state(layer: PlannedLayer, origin: int, elapsed: float) -> LayerState:
    """The layer as containerd would show it ``elapsed`` seconds into its pull (layers the
    manifest lists but that have not started yet are at 0 bytes)."""
    if layer.cached:
        return LayerState(layer.digest, layer.media_type, layer.size, 0, True,
                          state=LayerPhase.CACHED)
    if elapsed < layer.start:
        return LayerState(layer.digest, layer.media_type, layer.size, 0, True)
    running = elapsed - layer.start
    done_bytes = int(running * layer.rate)
    limit = layer.size if layer.stall_at is None else int(layer.size * layer.stall_at)
    if done_bytes >= layer.size and layer.stall_at is None:
        when = origin + round((layer.start + layer.size / layer.rate) * NS)
        return LayerState(layer.digest, layer.media_type, layer.size, layer.size, True,
                          started_at=origin + round(layer.start * NS), updated_at=when,
                          state=LayerPhase.COMPLETED)
    steps = min(done_bytes, limit) // MIB  # containerd shows whole MiB steps
    offset = steps * MIB
    updated = origin + round((layer.start + offset / layer.rate) * NS)
    return LayerState(layer.digest, layer.media_type, layer.size, offset, True,
                      started_at=origin + round(layer.start * NS), updated_at=updated)


def reports(pulls: list[PlannedPull], origin: int, duration: float,
            interval: float = 1.0) -> Iterator[AgentReport]:
    """Reports of every node every ``interval`` seconds for ``duration`` seconds."""
    nodes = sorted({p.node for p in pulls})
    steps = int(duration / interval)
    for step in range(steps + 1):
        for n, node in enumerate(nodes):
            t = step * interval + n * 0.05
            ts = origin + round(t * NS)
            states = []
            for planned in pulls:
                if planned.node != node or t < planned.start:
                    continue
                elapsed = t - planned.start
                pull_origin = origin + round(planned.start * NS)
                layers = [_layer_state(layer, pull_origin, elapsed) for layer in planned.layers]
                done = all(s.state in (LayerPhase.COMPLETED, LayerPhase.CACHED) for s in layers)
                if done and elapsed > planned.layers[-1].start + 2:
                    continue  # committed and gone from containerd
                error = None
                if planned.fail_at is not None and elapsed >= planned.fail_at:
                    if elapsed >= planned.fail_at + interval:
                        continue
                    error = "failed to copy: httpReadSeeker: failed open: unexpected status 503"
                states.append(PullState(planned.image, origin + round(planned.start * NS),
                                        tuple(layers), True, error))
            yield AgentReport(node, ts, tuple(states))


def demo_plan(seed: int = 7) -> list[PlannedPull]:
    """Two nodes, four pulls: two at once on one node, a cached layer, a stall, a failure."""
    rng = random.Random(seed)
    web = plan_pull(rng, "node-a", "registry.local/web:1.4", 0.0,
                    [24 * MIB, 9 * MIB, 3 * MIB], 2.5 * MIB)
    api = plan_pull(rng, "node-a", "registry.local/api:2.0", 4.0, [18 * MIB, 6 * MIB],
                    1.5 * MIB)
    api.layers[-1].cached = True
    db = plan_pull(rng, "node-b", "registry.local/db:16", 1.0, [30 * MIB, 12 * MIB],
                   2.0 * MIB)
    db.layers[2].stall_at = 0.55
    jobs = plan_pull(rng, "node-b", "registry.local/jobs:0.9", 6.0, [10 * MIB], 1.0 * MIB)
    jobs.fail_at = 8.0
    return [web, api, db, jobs]
