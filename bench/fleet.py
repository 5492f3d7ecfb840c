"""A synthetic fleet of nodes pulling images, rendered as the JSON agents post.

Each node has a few pull slots; a slot runs one pull after another, with an idle gap
between them. A pull is an image from a shared catalogue (the same image has the same
layers on every node, as in a rollout): a manifest, a config and a few layers whose sizes
are lognormal (a few MB to a few hundred MB). Layers download at lognormal speeds, at most
three at once per pull (containerd's default), and show progress in whole MiB steps with
``updatedAt`` at the step, as containerd's ingests do. Once every layer is done the pull is
reported one more time, completed, and then leaves the reports (its ingests are committed).

Seeded: the same shape gives the same bytes. Rendering goes straight to JSON text (no
dataclasses on the way), so a load generator can build a few hundred thousand reports in
seconds; ``tests/bench`` checks the text decodes to the states described above.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import time
from dataclasses import dataclass, field

NS = 1_000_000_000
MIB = 1 << 20
ORIGIN_NS = 1_790_000_000 * NS  # simulated time 0 (2026-09-21), on every node's clock
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MAX_PARALLEL = 3  # containerd's max_concurrent_downloads


@dataclass(frozen=True)
class FleetShape:
    """What a fleet looks like; every figure printed names the shape it ran."""

    nodes: int
    slots: int = 2  # pulls a node runs at once
    layers: tuple[int, int] = (3, 10)  # image layers (besides manifest and config)
    size_median_mib: float = 16.0
    size_sigma: float = 1.2  # of the natural log of the size
    size_bounds_mib: tuple[float, float] = (1.0, 512.0)
    speed_median_mib: float = 12.0  # per layer, MiB/s
    speed_sigma: float = 0.7
    speed_bounds_mib: tuple[float, float] = (0.5, 100.0)
    gap_mean: float = 1.0  # seconds a slot stays idle between pulls (exponential)
    cached_fraction: float = 0.1  # layers already on the node
    images: int = 300
    head_start: float = 10.0  # pulls were already running for up to this long at time 0
    seed: int = 1

    def describe(self) -> str:
        lo, hi = self.layers
        return (f"{self.nodes:,} nodes x {self.slots} pull slots, {lo}-{hi} layers/image "
                f"(+manifest, config), sizes lognormal median {self.size_median_mib:g} MiB, "
                f"speeds median {self.speed_median_mib:g} MiB/s, idle gap ~{self.gap_mean:g} s")


@dataclass(frozen=True)
class Blob:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Image:
    ref: str
    digest: str
    blobs: tuple[Blob, ...]  # manifest, config, layers


@dataclass
class LayerRun:
    """One blob of one pull: when it starts (seconds after the pull) and how fast."""

    head: str  # the fixed part of its JSON object
    size: int
    start: float
    rate: float  # bytes per second
    cached: bool
    started_text: str  # its startedAt, rendered once

    @property
    def end(self) -> float:
        """When it is done, in seconds after its pull started."""
        return self.start if self.cached else self.start + self.size / self.rate

    def render(self, pull_start_ns: int, elapsed: float, text: TimeText) -> str:
        """Its JSON object ``elapsed`` seconds after its pull started at ``pull_start_ns``."""
        if self.cached:
            return self.head + ',"downloadedBytes":0,"state":"cached"}'
        running = elapsed - self.start
        if running < 0:
            return self.head + ',"downloadedBytes":0}'
        if running * self.rate >= self.size:
            done = text(pull_start_ns + round(self.end * NS))
            return (f'{self.head},"downloadedBytes":{self.size},"startedAt":'
                    f'"{self.started_text}","updatedAt":"{done}","state":"completed"}}')
        offset = int(running * self.rate) // MIB * MIB  # containerd's 1 MiB steps
        updated = text(pull_start_ns + round((self.start + offset / self.rate) * NS))
        return (f'{self.head},"downloadedBytes":{offset},"startedAt":"{self.started_text}",'
                f'"updatedAt":"{updated}"}}')


@dataclass
class PullRun:
    start: float  # simulated seconds
    head: str  # the fixed part of its JSON object, up to the layers
    layers: list[LayerRun]
    end: float = 0.0  # when its last layer is done (simulated seconds)

    def __post_init__(self) -> None:
        self.end = self.start + max(layer.end for layer in self.layers)


@dataclass
class Slot:
    pull: PullRun | None = None
    next_start: float = 0.0


@dataclass
class Node:
    name: str
    phase: float  # where in each interval this node reports
    slots: list[Slot] = field(default_factory=list)


class TimeText:
    """RFC 3339 with nanoseconds, the seconds part cached (reports share a few seconds)."""

    def __init__(self) -> None:
        self._base: dict[int, str] = {}

    def __call__(self, ns: int) -> str:
        sec, frac = divmod(ns, NS)
        base = self._base.get(sec)
        if base is None:
            if len(self._base) > 4096:  # a long run must not grow the harness's memory
                self._base.clear()
            base = self._base[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{base}.{frac:09d}Z"


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _lognormal(rng: random.Random, median: float, sigma: float,
               bounds: tuple[float, float]) -> float:
    return min(max(rng.lognormvariate(math.log(median), sigma), bounds[0]), bounds[1])


def catalogue(shape: FleetShape) -> list[Image]:
    rng = random.Random(shape.seed * 7919 + 1)
    images = []
    for i in range(shape.images):
        ref = f"registry.local/team-{i % 17}/app-{i}:v{1 + i % 5}"
        blobs = [Blob(_digest(f"{ref}/manifest"), MANIFEST, rng.randint(900, 2_500)),
                 Blob(_digest(f"{ref}/config"), CONFIG, rng.randint(1_500, 12_000))]
        for j in range(rng.randint(*shape.layers)):
            size = _lognormal(rng, shape.size_median_mib, shape.size_sigma,
                              shape.size_bounds_mib)
            blobs.append(Blob(_digest(f"{ref}/layer/{j}"), LAYER, int(size * MIB)))
        images.append(Image(ref, blobs[0].digest, tuple(blobs)))
    return images


class Fleet:
    """The fleet's reports, tick by tick: ``bodies(t)`` is every node's report at ``t``."""

    def __init__(self, shape: FleetShape, interval: float = 1.0) -> None:
        self.shape = shape
        self.interval = interval
        self.images = catalogue(shape)
        # A few popular images and a long tail (Zipf), as in a cluster's rollouts.
        self._popularity = list(itertools.accumulate(1.0 / (i + 1)
                                                     for i in range(len(self.images))))
        self._rng = random.Random(shape.seed)
        self._time = TimeText()
        self.nodes = []
        for n in range(shape.nodes):
            # Spread over the interval, as agents started at different moments are.
            node = Node(f"node-{n:05d}", (n * 0.6180339887) % 1.0 * interval)
            for _ in range(shape.slots):
                node.slots.append(Slot(next_start=-self._rng.uniform(0, shape.head_start)))
            self.nodes.append(node)

    def ns(self, t: float) -> int:
        return ORIGIN_NS + round(t * NS)

    def _new_pull(self, start: float) -> PullRun:
        rng, shape = self._rng, self.shape
        image = rng.choices(self.images, cum_weights=self._popularity)[0]
        start_ns = self.ns(start)
        head = (f'{{"imageRef":"{image.ref}","startedAt":"{self._time(start_ns)}",'
                f'"totalKnown":true,"digest":"{image.digest}","layers":[')
        free = [0.2] * MAX_PARALLEL  # when each download slot frees up
        layers = []
        for i, blob in enumerate(image.blobs):
            cached = i >= 2 and rng.random() < shape.cached_fraction
            rate = _lognormal(rng, shape.speed_median_mib, shape.speed_sigma,
                              shape.speed_bounds_mib) * MIB
            if i == 0:
                begin = 0.0  # the manifest comes first
            elif cached:
                begin = 0.2
            else:
                k = min(range(MAX_PARALLEL), key=free.__getitem__)
                begin = free[k]
                free[k] = begin + blob.size / rate
            layers.append(LayerRun(
                head=(f'{{"digest":"{blob.digest}","mediaType":"{blob.media_type}",'
                      f'"totalBytes":{blob.size},"totalKnown":true'),
                size=blob.size, start=begin, rate=rate, cached=cached,
                started_text=self._time(start_ns + round(begin * NS))))
        return PullRun(start, head, layers)

    def _pulls_at(self, node: Node, t: float) -> list[PullRun]:
        """The node's pulls shown at ``t`` (slots move on to their next pull as needed)."""
        shown = []
        for slot in node.slots:
            while True:
                pull = slot.pull
                if pull is None:
                    if slot.next_start > t:
                        break
                    slot.pull = self._new_pull(slot.next_start)
                    continue
                # Shown while downloading and once more when done, then committed and gone.
                if t < pull.end + self.interval:
                    shown.append(pull)
                    break
                slot.pull = None
                gap = (self._rng.expovariate(1.0 / self.shape.gap_mean)
                       if self.shape.gap_mean > 0 else 0.0)
                slot.next_start = pull.end + self.interval + gap
        return shown

    def report(self, node: Node, tick: int) -> tuple[str, int]:
        """``node``'s report at ``tick``, and how many layer samples it holds."""
        t = tick * self.interval + node.phase
        parts = []
        count = 0
        for pull in self._pulls_at(node, t):
            elapsed, start_ns = t - pull.start, self.ns(pull.start)
            layers = ",".join(layer.render(start_ns, elapsed, self._time)
                              for layer in pull.layers)
            count += len(pull.layers)
            parts.append(f"{pull.head}{layers}]}}")
        body = (f'{{"nodeName":"{node.name}","timestamp":"{self._time(self.ns(t))}",'
                f'"pulls":[{",".join(parts)}]}}')
        return body, count

    def tick(self, tick: int, nodes: int | None = None) -> list[tuple[str, int]]:
        """The reports of the first ``nodes`` nodes (all by default) at ``tick``, in node
        order; ticks must be asked in order."""
        return [self.report(node, tick) for node in self.nodes[:nodes]]

    def arrivals(self, tick: int) -> list[tuple[str, int]]:
        """Every node's report at ``tick`` in the order they are taken (by phase), as a
        collector receives them."""
        return [self.report(node, tick) for node in sorted(self.nodes, key=_phase)]


def _phase(node: Node) -> float:
    return node.phase
