"""The engine: reports in; samples, progress rows, pull/layer rows and lifecycle events out.

Pure and deterministic. It never reads a clock: time moves only when a report (its
``timestamp``, its layers' ``updatedAt``) or a caller's :meth:`Engine.tick` says so, which is
what lets the live collector and a replay at any speed produce the same rows.
"""

from __future__ import annotations

import heapq
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collector.model import (
    PENDING_IMAGE_REF,
    AgentReport,
    EventType,
    LayerPhase,
    LayerState,
    LayerStatusKind,
    PullEvent,
    PullState,
    PullStatus,
    PullStatusKind,
)
from collector.rates import RateWindow, Step
from collector.records import Output, Sample
from collector.timefmt import NS
from collector.tracking import Layer, Pull, PullKey, pull_id

# containerd's ingest refs ("layer-sha256:<hex>"), which is what a Go agent sends as imageRef.
INGEST_REF = re.compile(r"^(layer|manifest|config|index|unknown)-[a-z0-9]+:[0-9a-f]+$")
_FINISHED_KEYS_KEEP = 24 * 3600 * NS
_NODE_SWEEP_NS = 60 * NS
_DOWNLOADING, _STALLED = LayerStatusKind.DOWNLOADING, LayerStatusKind.STALLED
_FAILED = LayerStatusKind.FAILED
_PULL_PROGRESS, _LAYER_PROGRESS = EventType.PULL_PROGRESS, EventType.LAYER_PROGRESS
# Rows are made from a tuple of their fields in order (see collector.tracking).
_row: Any = tuple.__new__


@dataclass(frozen=True, slots=True)
class EngineConfig:
    rate_window_ns: int = 10 * NS
    stall_after_ns: int = 30 * NS
    stall_floor_bps: float = 1024.0
    stale_after_ns: int = 600 * NS
    history_ttl_ns: int = 3600 * NS
    step_grace: float = 2.0  # "well past" the next expected 1 MiB step, as a multiple


@dataclass(slots=True)
class _Pending:
    """Events gathered while handling one input; turned into PullEvents at the end."""

    events: list[tuple[Pull, EventType, int, str | None]] = field(default_factory=list)
    touched: dict[str, Pull] = field(default_factory=dict)

    def add(self, pull: Pull, kind: EventType, ts: int, digest: str | None = None) -> None:
        self.events.append((pull, kind, ts, digest))
        self.touched[pull.id] = pull


class Engine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        # Progress events (pull.progress, layer.progress) feed only the live event stream:
        # with nobody listening, False spares building them and the per-layer views of
        # snapshots no other event carries. Read on every call, so it may change between
        # calls; rows and lifecycle events are the same either way.
        self.progress_events = True
        # ``now`` is on the arrival time line (AgentReport.received_at, or the report's own
        # timestamp where there is none); every node's own times are on its own clock, and
        # ``_offset`` maps one onto the other, so one node's clock never moves another's.
        self.now = 0
        self._last_report: dict[str, int] = {}
        self._offset: dict[str, int] = {}
        self._pulls: dict[str, Pull] = {}
        self._history: dict[str, PullStatus] = {}  # finished before this engine started
        # Per node, the earliest time one of its layers could stall: other nodes' reports
        # only need to look at a node once that time has come.
        self._stall_due: dict[str, int] = {}
        # When each node with pulls in progress next needs a look (its stale deadline or its
        # next possible stall, on the arrival time line), as a heap: time passing visits only
        # the nodes that are due, not every node. Entries superseded in ``_due_at`` are
        # skipped when they come up.
        self._due: list[tuple[int, int, str]] = []
        self._due_at: dict[str, int] = {}
        self._due_seq = 0
        self._active: dict[str, dict[PullKey, Pull]] = {}
        self._active_total = 0  # pulls in ``_active``, kept as they come and go
        self._finished: dict[PullKey, int] = {}
        self._expiry: list[tuple[int, int, str]] = []  # (at, 0=pull id / 1=key index, ref)
        self._expiry_keys: dict[str, PullKey] = {}
        self.dropped: Counter[str] = Counter()
        self._next_sweep = 0

    # --- queries -----------------------------------------------------------------------------

    def pulls(self) -> list[PullStatus]:
        """Active pulls and those finished within the history TTL, newest first."""
        found = [p.status_at(self._node_time(p.node, self.now)) for p in self._pulls.values()]
        found += self._history.values()
        return sorted(found, key=lambda p: (p.started_at, p.id), reverse=True)

    def pull(self, pid: str) -> PullStatus | None:
        found = self._pulls.get(pid)
        if found is None:
            return self._history.get(pid)
        return found.status_at(self._node_time(found.node, self.now))

    def remember(self, status: PullStatus) -> None:
        """List a pull that finished before this engine started (recovery) until its
        history TTL runs out."""
        if status.id in self._pulls or status.completed_at is None:
            return
        self._history[status.id] = status
        heapq.heappush(self._expiry, (status.completed_at + self.config.history_ttl_ns, 0,
                                      status.id))

    def node_count(self) -> int:
        """Nodes remembered: those with pulls in progress or heard from within the stale
        time (up to a minute longer)."""
        return len(self._last_report)

    def active_count(self) -> int:
        return self._active_total

    def stalled_count(self) -> int:
        return sum(1 for pulls in self._active.values() for p in pulls.values()
                   if p.status is PullStatusKind.STALLED)

    @property
    def finished_keep_ns(self) -> int:
        """How long a finished pull's identity is remembered (its repeats change nothing)."""
        return max(self.config.history_ttl_ns, _FINISHED_KEYS_KEEP)

    def restore_last_report(self, node: str, at: int) -> None:
        """Remember a node's last report time (recovery), so older reports stay dropped."""
        if at > self._last_report.get(node, at - 1):
            self._last_report[node] = at
            self._offset.setdefault(node, 0)
            self._schedule(node)

    def mark_finished(self, node: str, identity: str, started_at: int, at: int) -> None:
        """Remember a pull finished before this engine started (recovery); ``identity`` is
        its image digest if it had one, else its image reference."""
        key = (sys.intern(node), sys.intern(identity), started_at)
        if key not in self._finished:
            self._finished[key] = at
            self._schedule_key(key, at + self.finished_keep_ns)

    # --- inputs ------------------------------------------------------------------------------

    def ingest(self, report: AgentReport) -> Output:
        node, now = report.node_name, report.timestamp
        arrived = report.received_at if report.received_at is not None else now
        last = self._last_report.get(node)
        if last is not None and now <= last:
            reason = "duplicate" if now == last else "out_of_order"
            self.dropped[reason] += 1
            return Output(accepted=False, drop_reason=reason, report=report)
        out = Output(report=report)
        stale = _Pending()
        # The node's own silence as a tick at this arrival would have found it: on the
        # arrival time line, so a node clock that jumps ahead does not end its own pulls.
        self._end_if_stale(node, self._node_time(node, arrived), stale)
        self._flush_lifecycle(stale, out)
        self._advance(arrived, out, skip=node)
        self._last_report[node] = now
        self._offset[node] = arrived - now
        pending = _Pending()
        active = self._active.setdefault(node, {})
        seen: set[str] = set()
        for state in _normalise(report.pulls):
            pull = self._resolve(node, state, now, pending)
            if pull is None:
                continue
            seen.add(pull.id)
            pending.touched[pull.id] = pull
            self._apply(pull, state, now, out, pending)
        for pull in list(active.values()):
            if pull.id not in seen:
                self._vanish(pull, now, out, pending)
        self._check_stalls(node, now, pending)
        self._schedule(node)
        self._flush(pending, out, snapshot_at=lambda _p: now)
        return out

    def tick(self, now: int) -> Output:
        """Let time pass without a report: stalls, stale nodes, history expiry. ``now`` is on
        the arrival time line: the collector's clock."""
        out = Output()
        self._advance(now, out, skip=None)
        return out

    # --- time --------------------------------------------------------------------------------

    def _node_time(self, node: str, arrived: int) -> int:
        """What ``node``'s clock read when the collector's read ``arrived``."""
        return arrived - self._offset.get(node, 0)

    def _advance(self, now: int, out: Output, skip: str | None) -> None:
        if now <= self.now:
            return
        if self._due and self._due[0][0] <= now:
            self._visit_due(now, out, skip)
        self.now = now
        self._expire(now)
        if now >= self._next_sweep:
            self._next_sweep = now + _NODE_SWEEP_NS
            self._forget_idle_nodes(now)

    def _visit_due(self, now: int, out: Output, skip: str | None) -> None:
        """Look at the nodes due by ``now``: stale ones end, the others' stalls are checked."""
        pending = _Pending()
        visited: list[str] = []
        while self._due and self._due[0][0] <= now:
            at, _, node = heapq.heappop(self._due)
            if self._due_at.get(node) != at:
                continue  # superseded by a later schedule
            del self._due_at[node]
            visited.append(node)
            if node == skip or not self._active.get(node):
                continue  # the reporting node is looked at (and scheduled) by its report
            node_now = self._node_time(node, now)
            if not self._end_if_stale(node, node_now, pending) \
                    and node_now >= self._stall_due.get(node, 0):
                self._check_stalls(node, node_now, pending)
        for node in visited:
            self._schedule(node)
        self._flush_lifecycle(pending, out)

    def _schedule(self, node: str) -> None:
        """Put ``node`` on the heap for the earlier of its stale deadline and its next
        possible stall (none while it has nothing in progress)."""
        last = self._last_report.get(node)
        if not self._active.get(node) or last is None:
            self._due_at.pop(node, None)
            return
        due = min(self._stall_due.get(node, 0), last + self.config.stale_after_ns)
        at = due + self._offset.get(node, 0)
        if self._due_at.get(node) == at:
            return
        self._due_at[node] = at
        self._due_seq += 1
        heapq.heappush(self._due, (at, self._due_seq, node))
        if len(self._due) > 2 * len(self._due_at) + 1024:  # drop superseded entries
            self._due = [(t, i, n) for t, i, n in self._due if self._due_at.get(n) == t]
            heapq.heapify(self._due)

    def _flush_lifecycle(self, pending: _Pending, out: Output) -> None:
        """Rows and events of changes found between reports, each pull as of its last one."""
        if not pending.events:
            return
        last_event: dict[str, int] = {}
        for pull, _, ts, _ in pending.events:
            last_event[pull.id] = max(ts, last_event.get(pull.id, ts))
        self._flush(pending, out, snapshot_at=lambda p: last_event[p.id])

    def _end_if_stale(self, node: str, now: int, pending: _Pending) -> bool:
        """End a silent node's pulls as stale, at the moment its silence ran out."""
        pulls = self._active.get(node)
        last = self._last_report.get(node)
        if not pulls or last is None or last + self.config.stale_after_ns > now:
            return False
        deadline = last + self.config.stale_after_ns
        for pull in list(pulls.values()):
            pull.status = PullStatusKind.STALE
            self._finish(pull, deadline, pending, EventType.PULL_STALE)
        return True

    def _expire(self, now: int) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, kind, ref = heapq.heappop(self._expiry)
            if kind == 0:
                self._pulls.pop(ref, None)
                self._history.pop(ref, None)
            else:
                key = self._expiry_keys.pop(ref, None)
                if key is not None:
                    self._finished.pop(key, None)

    def _forget_idle_nodes(self, now: int) -> None:
        """Drop what is kept per node for nodes silent past the stale time with nothing in
        progress: node names that come and go, or are invented, must not grow memory."""
        horizon = self.config.stale_after_ns
        idle = [node for node, last in self._last_report.items()
                if not self._active.get(node) and self._node_time(node, now) - last > horizon]
        for node in idle:
            for per_node in (self._last_report, self._offset, self._stall_due, self._active,
                             self._due_at):
                per_node.pop(node, None)

    def _schedule_key(self, key: PullKey, at: int) -> None:
        ref = f"{len(self._expiry_keys)}:{pull_id(key)}"
        self._expiry_keys[ref] = key
        heapq.heappush(self._expiry, (at, 1, ref))

    # --- pulls -------------------------------------------------------------------------------

    def new_pulls(self, report: AgentReport) -> int:
        """How many pulls ingesting ``report`` would start (changes nothing)."""
        keys = {found for state in _normalise(report.pulls)
                if isinstance(found := self._find(report.node_name, state, report.timestamp),
                              tuple)}
        return len(keys)

    def _find(self, node: str, state: PullState, now: int) -> Pull | PullKey | None:
        """The pull ``state`` belongs to; else the key of the one it would start; None for a
        finished pull reported again (which changes nothing)."""
        active = self._active.get(node, {})
        if state.image_ref == PENDING_IMAGE_REF:
            current = next((p for p in active.values() if p.merged), None)
            if current is not None:
                return current
            key: PullKey = (node, PENDING_IMAGE_REF, state.started_at or now)
        elif state.started_at is None:
            same = [p for p in active.values() if p.key[1] == state.identity]
            if same:
                return max(same, key=lambda p: p.started_at)
            key = (node, state.identity, now)
        else:
            key = (node, state.identity, state.started_at)
            if key in active:
                return active[key]
        return None if key in self._finished else key

    def _resolve(self, node: str, state: PullState, now: int, pending: _Pending) -> Pull | None:
        found = self._find(node, state, now)
        if not isinstance(found, tuple):
            return found
        # Interned: a finished pull's key is kept a day, and each report brings its own copy
        # of the node's and the image's names.
        key = (sys.intern(found[0]), sys.intern(found[1]), found[2])
        merged = state.image_ref == PENDING_IMAGE_REF
        pull = Pull(key=key, id=pull_id(key), first_seen=now, image_ref=state.image_ref,
                    merged=merged)
        self._pulls[pull.id] = pull
        self._active[node][key] = pull
        self._active_total += 1
        pending.add(pull, EventType.PULL_STARTED, now)
        return pull

    def _apply(self, pull: Pull, state: PullState, now: int, out: Output,
               pending: _Pending) -> None:
        pull.last_seen = now
        pull.image_ref = state.image_ref
        pull.total_known = pull.total_known or state.total_known
        listed: set[str] = set()
        list_layer, find, add_sample = listed.add, pull.layers.get, out.samples.append
        node, pid, ref = pull.key[0], pull.id, pull.image_ref
        for ls in state.layers:
            digest = ls.digest
            list_layer(digest)
            layer = find(digest)
            if layer is None:
                window = RateWindow(self.config.rate_window_ns, self.config.stall_after_ns,
                                    self.config.step_grace)
                layer = Layer(digest=digest, media_type=ls.media_type, window=window,
                              first_seen=now, started_at=ls.started_at, checked_at=now)
                pull.layers[digest] = layer
                pending.add(pull, EventType.LAYER_STARTED, now, digest)
            else:
                status = layer.status
                if status is not _DOWNLOADING and status is not _STALLED:
                    # A finished layer's figures never change again (and most layers a
                    # report lists are finished ones): its sample is made here, with no
                    # rate window and no call per layer.
                    layer.last_seen = now
                    updated = ls.updated_at
                    add_sample(_row(Sample, (
                        now, now if updated is None or updated > now else updated, node, pid,
                        ref, digest, layer.media_type, status._value_, layer.downloaded,
                        layer.total, 0, None)))
                    continue
            self._update_layer(pull, layer, ls, now, out, pending)
        failed: Layer | None = None
        moving = False
        for layer in pull.layers.values():
            status = layer.status
            if status is _DOWNLOADING or status is _STALLED:
                if layer.digest in listed:
                    moving = True
                else:
                    self._complete_layer(pull, layer, now, out, pending)
            elif failed is None and status is _FAILED:
                failed = layer
        if state.error or failed is not None:
            pull.error = state.error or (
                f"layer {failed.digest} failed to download" if failed is not None else None)
            self._fail(pull, now, pending)
        elif pull.layers and not pull.merged and state.total_known and not moving:
            pull.status = PullStatusKind.COMPLETED
            self._finish(pull, now, pending, EventType.PULL_COMPLETED)

    def _vanish(self, pull: Pull, now: int, out: Output, pending: _Pending) -> None:
        """A pull no longer in its node's report: containerd committed its blobs."""
        for layer in pull.layers.values():
            if layer.active:
                self._complete_layer(pull, layer, now, out, pending)
        pull.last_seen = now
        pull.status = PullStatusKind.COMPLETED
        self._finish(pull, now, pending, EventType.PULL_COMPLETED)

    def _fail(self, pull: Pull, now: int, pending: _Pending) -> None:
        for layer in pull.layers.values():
            if layer.active:
                layer.status = LayerStatusKind.FAILED
                layer.completed_at = now
        pull.status = PullStatusKind.FAILED
        self._finish(pull, now, pending, EventType.PULL_FAILED)

    def _finish(self, pull: Pull, at: int, pending: _Pending, kind: EventType) -> None:
        pull.completed_at = at
        if self._active[pull.node].pop(pull.key, None) is not None:
            self._active_total -= 1
        self._finished[pull.key] = at
        # Expiry is on the arrival time line, like ``now``.
        at_arrival = at + self._offset.get(pull.node, 0)
        heapq.heappush(self._expiry, (at_arrival + self.config.history_ttl_ns, 0, pull.id))
        self._schedule_key(pull.key, at_arrival + self.finished_keep_ns)
        pending.add(pull, kind, at)

    # --- layers ------------------------------------------------------------------------------

    def _update_layer(self, pull: Pull, layer: Layer, ls: LayerState, now: int, out: Output,
                      pending: _Pending) -> None:
        """A layer still downloading, as ``ls`` reports it (finished ones: see _apply)."""
        # A layer cannot have changed after the report was taken; a later updatedAt is a
        # broken clock and would freeze the layer's rate window in the future.
        updated = ls.updated_at
        ts = now if updated is None or updated > now else updated
        gained = 0
        if ls.media_type:
            layer.media_type = ls.media_type
        if ls.total_known or ls.total_bytes > layer.total:
            layer.total = ls.total_bytes
        layer.total_known = layer.total_known or ls.total_known
        if ls.state is LayerPhase.FAILED:
            layer.status = LayerStatusKind.FAILED
            layer.completed_at = now
        elif ls.state is LayerPhase.CACHED and layer.fetched == 0:
            layer.status = LayerStatusKind.CACHED
            layer.downloaded = layer.total
            layer.completed_at = now
            pending.add(pull, EventType.LAYER_COMPLETED, now, layer.digest)
        else:
            done = ls.state is LayerPhase.COMPLETED or ls.state is LayerPhase.CACHED
            nbytes = ls.downloaded_bytes
            if done and layer.total_known:
                nbytes = max(nbytes, layer.total)
            added = layer.window.add(ts, nbytes)
            if added.step is Step.RESTART:
                layer.restarts += 1
            if added.step is not Step.IGNORED:
                layer.downloaded = nbytes
            gained = added.gained
            layer.fetched += gained
            pull.fetched += gained
            if gained and layer.first_byte_at is None:
                layer.first_byte_at = ts
            if done:
                layer.status = LayerStatusKind.COMPLETED
                layer.completed_at = ts
                pending.add(pull, EventType.LAYER_COMPLETED, ts, layer.digest)
            elif gained and self.progress_events:
                # The pull is touched already: its report lists it.
                pending.add(pull, _LAYER_PROGRESS, ts, layer.digest)
        layer.last_seen = now
        out.samples.append(pull.sample_row(layer, now, ts, gained))

    def _complete_layer(self, pull: Pull, layer: Layer, now: int, out: Output,
                        pending: _Pending) -> None:
        # containerd never shows the last partial MiB: the commit is what says it arrived.
        gained = max(layer.total - layer.downloaded, 0) if layer.total_known else 0
        layer.downloaded += gained
        layer.fetched += gained
        pull.fetched += gained
        if gained and layer.first_byte_at is None:
            layer.first_byte_at = now
        layer.status = LayerStatusKind.COMPLETED
        layer.completed_at = now
        layer.last_seen = now
        pending.add(pull, EventType.LAYER_COMPLETED, now, layer.digest)
        out.samples.append(pull.sample_row(layer, now, now, gained))

    def _check_stalls(self, node: str, now: int, pending: _Pending) -> None:
        cfg = self.config
        due: int | None = None
        for pull in self._active.get(node, {}).values():
            onsets: list[int] = []
            moving = stalled = 0
            for layer in pull.layers.values():
                status = layer.status
                if status is _DOWNLOADING:
                    onset = layer.window.stall_onset(layer.checked_at, now, cfg.stall_after_ns,
                                                     cfg.stall_floor_bps)
                    if onset is not None:
                        layer.status = _STALLED
                        layer.stalled_since = onset
                        pending.add(pull, EventType.LAYER_STALLED, onset, layer.digest)
                elif status is _STALLED:
                    if not layer.window.is_slow(now, cfg.stall_after_ns, cfg.stall_floor_bps):
                        layer.status = _DOWNLOADING
                        layer.stalled_since = None
                        pending.add(pull, EventType.LAYER_PROGRESS, now, layer.digest)
                else:
                    # Finished: never looked at by the stall rule again. A layer that
                    # finished while stalled still dates the pull's stall.
                    if layer.stalled_since is not None:
                        onsets.append(layer.stalled_since)
                    continue
                moving += 1
                layer.checked_at = max(layer.checked_at, now)
                if layer.status is _STALLED:
                    stalled += 1
                if layer.stalled_since is not None:
                    onsets.append(layer.stalled_since)
                elif layer.status is _DOWNLOADING:
                    nxt = layer.window.next_onset_candidate(layer.checked_at, cfg.stall_after_ns)
                    if nxt is not None and (due is None or nxt < due):
                        due = nxt
            is_stalled = moving > 0 and stalled == moving
            if is_stalled and pull.status is PullStatusKind.ACTIVE:
                pull.status = PullStatusKind.STALLED
                pending.add(pull, EventType.PULL_STALLED, max(onsets))
            elif not is_stalled and pull.status is PullStatusKind.STALLED:
                pull.status = PullStatusKind.ACTIVE
                pending.add(pull, EventType.PULL_PROGRESS, now)
        # No candidate: nothing can stall until this node reports again.
        self._stall_due[node] = due if due is not None else 2**62

    # --- output ------------------------------------------------------------------------------

    def _flush(self, pending: _Pending, out: Output,
               snapshot_at: Callable[[Pull], int]) -> None:
        events = pending.events
        progress = self.progress_events
        carried: set[str] | None = None  # pulls whose snapshot an event carries; None: all
        if not progress:
            # Those found by the stall rule are gathered anyway (they are rare, and date
            # the rows of a change found between reports) and left out here.
            events = [e for e in events
                      if e[1] is not _PULL_PROGRESS and e[1] is not _LAYER_PROGRESS]
            carried = {pull.id for pull, _, _, _ in events}
        snapshots: dict[str, PullStatus] = {}
        layers = out.layers
        for pull in pending.touched.values():
            at = snapshot_at(pull)
            if carried is None or pull.id in carried:
                status = snapshots[pull.id] = pull.status_at(at)
            else:
                status = pull.status_at(at, views=False)
            out.progress.append(pull.progress_row(status, at))
            out.pulls.append(pull.pull_row(status))
            layers += pull.layer_rows()
        announced: set[str] = set()
        for pull, kind, ts, digest in events:
            out.events.append(PullEvent(ts, kind, pull.key[0], snapshots[pull.id], digest))
            # EventType is a str: startswith runs on the member itself.
            if kind.startswith("pull.") and kind is not EventType.PULL_STARTED:
                announced.add(pull.id)
        if not progress:
            return
        # Every touched pull gets one pull.* event; a lifecycle one stands in for progress.
        for pull in pending.touched.values():
            if pull.id not in announced:
                out.events.append(PullEvent(snapshot_at(pull), _PULL_PROGRESS,
                                            pull.key[0], snapshots[pull.id]))


def _normalise(pulls: tuple[PullState, ...]) -> list[PullState]:
    """Group a node's pull states: ingest-ref pulls (Go agent) into one pending pull per
    node, starting at their earliest startedAt; repeats of one pull into one."""
    by_key: dict[tuple[str, int | None], PullState] = {}
    pending_layers: dict[str, LayerState] = {}
    pending_start: int | None = None
    pending_error: str | None = None
    any_pending = False
    for state in pulls:
        if state.image_ref == PENDING_IMAGE_REF or INGEST_REF.match(state.image_ref):
            any_pending = True
            layers = state.layers or _layer_from_ref(state)
            for layer in layers:
                pending_layers[layer.digest] = layer
            if state.started_at is not None and (pending_start is None
                                                 or state.started_at < pending_start):
                pending_start = state.started_at
            pending_error = pending_error or state.error
            continue
        key = (state.identity, state.started_at)
        prior = by_key.get(key)
        if prior is not None:
            merged = {layer.digest: layer for layer in prior.layers}
            merged.update({layer.digest: layer for layer in state.layers})
            by_key[key] = PullState(state.image_ref, state.started_at, tuple(merged.values()),
                                    prior.total_known or state.total_known,
                                    prior.error or state.error, state.digest)
        else:
            by_key[key] = state
    result = list(by_key.values())
    if any_pending:
        result.append(PullState(PENDING_IMAGE_REF, pending_start, tuple(pending_layers.values()),
                                False, pending_error))
    return result


def _layer_from_ref(state: PullState) -> tuple[LayerState, ...]:
    if state.image_ref == PENDING_IMAGE_REF:
        return ()
    digest = state.image_ref.split("-", 1)[1]
    return (LayerState(digest=digest, started_at=state.started_at),)
