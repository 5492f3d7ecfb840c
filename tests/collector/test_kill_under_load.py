"""kill -9, again and again, while agents post: nothing acknowledged is lost, pulls go on.

Agents (threads, each posting for two nodes, each node at most one report per 600 ms) report
pulls that progress in real time whether the collector is up or not. The collector is killed
at seeded random moments and started again on the same file. Set PULLTRACE_KILL_SEED to
replay a run's plan and kill times (it is printed).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import duckdb
import httpx
import pytest

from collector.model import AgentReport, LayerPhase, LayerState, PullState
from collector.timefmt import NS
from tests.collector.process import CollectProcess

pytestmark = pytest.mark.e2e

KILLS = 6
NODES = 16
NODES_PER_AGENT = 2
GAP = 0.6  # seconds between two reports of a node (the collector takes one per 500 ms)


@dataclass(frozen=True)
class PlannedLayer:
    digest: str
    total: int
    rate: int  # bytes a second
    delay: float  # seconds after the pull's start before its first byte

    def done_at(self, start: float) -> float:
        return start + self.delay + self.total / self.rate

    def bytes_at(self, elapsed: float) -> int:
        return min(self.total, int(max(0.0, elapsed - self.delay) * self.rate))


@dataclass(frozen=True)
class PlannedPull:
    image: str
    start: float  # seconds after the run began
    layers: tuple[PlannedLayer, ...]

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)


@dataclass
class Sent:
    """One report as posted, and how it was answered (None: no answer)."""

    node: str
    ts: int
    body: str
    layers: dict[tuple[str, str], int]  # (image, digest) -> downloaded bytes
    status: int | None = None


def plan_node(rng: random.Random, node: str, until: float) -> list[PlannedPull]:
    """Pulls one after another, and now and then a second one beside them."""
    pulls: list[PlannedPull] = []
    t = rng.uniform(0.0, 1.0)
    n = 0
    while t < until:
        layers = tuple(
            PlannedLayer(digest=f"sha256:{node}-{n}-{i}".ljust(71, "0"),
                         total=rng.randrange(1, 12) * 1_048_576 + rng.randrange(0, 1_048_576),
                         rate=rng.randrange(1, 6) * 1_048_576,
                         delay=rng.choice((0.0, 0.0, rng.uniform(0.5, 2.0))))
            for i in range(rng.randrange(1, 5)))
        pull = PlannedPull(f"registry.local/{node}/app-{n}:1", t, layers)
        pulls.append(pull)
        n += 1
        end = max(layer.done_at(t) for layer in layers)
        # a second pull now and then overlaps this one
        t = rng.uniform(t + 0.5, end) if rng.random() < 0.3 else end + rng.uniform(0.2, 1.5)
    return pulls


@dataclass
class Node:
    name: str
    pulls: list[PlannedPull]
    delivered: set[str] = field(default_factory=set)  # pulls acknowledged as finished
    next_at: float = 0.0
    retry: Sent | None = None

    def finished(self, pull: PlannedPull, elapsed: float) -> bool:
        return all(layer.bytes_at(elapsed - pull.start) >= layer.total for layer in pull.layers)

    def report(self, base_ns: int, elapsed: float, last_ts: int) -> tuple[Sent, set[str]]:
        ts = max(base_ns + round(elapsed * NS), last_ts + 1)
        states, shown, finished = [], {}, set()
        for pull in self.pulls:
            if pull.start > elapsed or pull.image in self.delivered:
                continue
            layers = []
            for layer in pull.layers:
                done = layer.bytes_at(elapsed - pull.start)
                shown[(pull.image, layer.digest)] = done
                layers.append(LayerState(
                    digest=layer.digest, media_type="application/vnd.oci.image.layer.v1.tar+gzip",
                    total_bytes=layer.total, downloaded_bytes=done, total_known=True,
                    state=LayerPhase.COMPLETED if done >= layer.total else None))
            if self.finished(pull, elapsed):
                finished.add(pull.image)
            states.append(PullState(image_ref=pull.image,
                                    started_at=base_ns + round(pull.start * NS),
                                    layers=tuple(layers), total_known=True))
        body = AgentReport(node_name=self.name, timestamp=ts, pulls=tuple(states)).dumps()
        return Sent(self.name, ts, body, shown), finished


class Agents:
    """Threads posting for their nodes until every pull was acknowledged finished."""

    def __init__(self, url: str, nodes: list[Node], seed: int, base_ns: int) -> None:
        self.url = url + "/api/v1/report"
        self.nodes = nodes
        self.base_ns = base_ns
        self.began = time.monotonic()
        self.sent: list[Sent] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(nodes[i:i + NODES_PER_AGENT],
                                                     random.Random(seed + i)), daemon=True)
            for i in range(0, len(nodes), NODES_PER_AGENT)]

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def done(self) -> bool:
        return all(len(n.delivered) == len(n.pulls) for n in self.nodes)

    def _run(self, nodes: list[Node], rng: random.Random) -> None:
        last_ts = {n.name: 0 for n in nodes}
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and not all(
                    len(n.delivered) == len(n.pulls) for n in nodes):
                node = min(nodes, key=lambda n: n.next_at)
                if (wait := node.next_at - self.elapsed()) > 0:
                    time.sleep(wait)
                node.next_at = self.elapsed() + GAP
                if node.retry is not None:
                    # an agent that got no answer may send the same report again
                    sent, finished = node.retry, set()
                    node.retry = None
                    sent = Sent(sent.node, sent.ts, sent.body, sent.layers)
                else:
                    sent, finished = node.report(self.base_ns, self.elapsed(),
                                                 last_ts[node.name])
                    last_ts[node.name] = sent.ts
                try:
                    sent.status = client.post(self.url, content=sent.body).status_code
                except httpx.TransportError:
                    sent.status = None
                with self.lock:
                    self.sent.append(sent)
                if sent.status == 200:
                    node.delivered |= finished
                elif sent.status is None and rng.random() < 0.5:
                    node.retry = sent


def test_acknowledged_reports_survive_repeated_kill_9_under_load(tmp_path):
    seed = int(os.environ.get("PULLTRACE_KILL_SEED") or random.SystemRandom().randrange(2**31))
    print(f"kill -9 under load: seed {seed} (PULLTRACE_KILL_SEED={seed} replays the plan)")
    rng = random.Random(seed)
    db = tmp_path / "kill.duckdb"
    nodes = [Node(f"node-{i}", plan_node(rng, f"node-{i}", until=22.0)) for i in range(NODES)]
    base_ns = time.time_ns()
    kill_ts: list[int] = []
    with CollectProcess(db, tmp_path / "collector.log") as collector:
        collector.start()
        agents = Agents(collector.url, nodes, seed, base_ns)
        for t in agents.threads:
            t.start()
        try:
            for _ in range(KILLS):
                time.sleep(rng.uniform(1.0, 3.5))
                collector.kill()
                kill_ts.append(base_ns + round(agents.elapsed() * NS))
                time.sleep(rng.uniform(0.0, 0.6))
                collector.start()
            deadline = time.monotonic() + 120
            while not agents.done() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            agents.stop.set()
            for t in agents.threads:
                t.join(timeout=30)
        assert agents.done(), "agents could not deliver every finished pull"
        assert collector.stop() == 0, collector.log()

    con = duckdb.connect(str(db), read_only=True)
    sent = {(s.node, s.ts): s for s in agents.sent}
    acked = {(s.node, s.ts) for s in agents.sent if s.status == 200}

    # every report is in the file at most once, and each is one the agents sent
    stored = Counter((node, ts) for node, ts in con.execute(
        "SELECT node, epoch_ns(ts) FROM reports").fetchall())
    assert [k for k, n in stored.items() if n > 1] == []
    assert set(stored) <= set(sent)
    assert acked - set(stored) == set(), "acknowledged reports missing"

    # pulls: one row each, completed, with the plan's totals
    pulls = {(node, image, started): (pid, status, total, downloaded, fetched, layer_count,
                                      done, completed, first_seen)
             for pid, node, image, started, status, total, downloaded, fetched, layer_count,
             done, completed, first_seen in con.execute(
                 "SELECT id, node, image_ref, epoch_ns(started_at), status, total_bytes, "
                 "downloaded_bytes, fetched_bytes, layer_count, layers_done, "
                 "epoch_ns(completed_at), epoch_ns(first_seen) FROM pulls").fetchall()}
    assert con.execute("SELECT count(*) FROM pulls").fetchone() == (len(pulls),)
    planned = {(n.name, p.image, base_ns + round(p.start * NS)): p for n in nodes
               for p in n.pulls}
    assert set(pulls) == set(planned)

    # the samples of each stored report: one per layer of each pull not finished before
    # it, with the bytes the report said
    samples: dict[tuple[str, int], Counter[tuple[str, str, int]]] = {}
    for node, ts, image, digest, nbytes, pid in con.execute(
            "SELECT node, epoch_ns(ts), image_ref, digest, downloaded_bytes, pull_id "
            "FROM samples").fetchall():
        samples.setdefault((node, ts), Counter())[(image, digest, nbytes)] += 1
        key = next(k for k in pulls if k[0] == node and k[1] == image)
        assert pid == pulls[key][0], "a pull's samples carry its one id"
    completed_at = {(k[0], k[1]): v[7] for k, v in pulls.items()}
    acked_samples = lost = 0
    for key in stored:
        report = sent[key]
        expected = Counter((image, digest, nbytes)
                           for (image, digest), nbytes in report.layers.items()
                           if key[1] <= completed_at[(key[0], image)])
        got = samples.get(key, Counter())
        assert got == expected, (key, seed)
        if key in acked:
            acked_samples += sum(expected.values())
            lost += sum((expected - got).values())
    assert set(samples) <= set(stored), "samples of a report that is not in the file"

    # hand-computed figures of each pull, from the plan and the reports the file holds
    first_bytes: dict[tuple[str, str], int] = {}
    finished_at: dict[tuple[str, str], int] = {}
    for key in sorted(stored, key=lambda k: k[1]):
        report = sent[key]
        for (image, digest), nbytes in report.layers.items():
            first_bytes.setdefault((image, digest), nbytes)
        for image in {image for image, _ in report.layers}:
            plan = planned[next(k for k in planned if k[0] == key[0] and k[1] == image)]
            if all(report.layers[(image, layer.digest)] == layer.total
                   for layer in plan.layers):
                finished_at.setdefault((key[0], image), key[1])
    spanning = Counter()
    for key, plan in planned.items():
        _, status, total, downloaded, fetched, layer_count, done, completed, first_seen = \
            pulls[key]
        assert status == "completed", (key, seed)
        assert (total, downloaded) == (plan.total, plan.total), (key, seed)
        assert (layer_count, done) == (len(plan.layers), len(plan.layers)), (key, seed)
        assert fetched == sum(layer.total - first_bytes[(plan.image, layer.digest)]
                              for layer in plan.layers), (key, seed)
        assert completed == finished_at[(key[0], plan.image)], (key, seed)
        for k, at in enumerate(kill_ts):
            if first_seen < at < completed:
                spanning[k] += 1

    # progress never goes back across a restart
    backwards = con.execute(
        "SELECT count(*) FROM (SELECT downloaded_bytes < lag(downloaded_bytes) OVER "
        "(PARTITION BY node, digest ORDER BY ts) AS back FROM samples) WHERE back").fetchone()
    assert backwards == (0,)

    # each pull started and completed once, whatever the restarts
    events = Counter(con.execute(
        "SELECT pull_id, type FROM events WHERE type IN ('pull.started', 'pull.completed')"
    ).fetchall())
    assert set(events.values()) == {1}
    assert len(events) == 2 * len(pulls)
    con.close()

    print(f"kills survived: {len(kill_ts)}; reports sent {len(sent)}, acknowledged "
          f"{len(acked)}, in the file {len(stored)}; acknowledged samples {acked_samples}, "
          f"lost {lost}; pulls {len(pulls)}, in flight across a kill "
          f"{sum(spanning.values())} ({dict(sorted(spanning.items()))}); answers "
          f"{dict(Counter(str(s.status) for s in agents.sent))}")
    assert lost == 0
    assert all(spanning[k] >= 1 for k in range(KILLS)), (spanning, seed)
