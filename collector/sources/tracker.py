"""containerd's content store at one moment, read as pulls: one AgentReport per poll.

See :mod:`collector.sources.poller` for how containerd's state maps onto pulls.
"""


from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from collector.errors import ContainerdError
from collector.model import PENDING_IMAGE_REF, AgentReport, LayerPhase, LayerState, PullState
from collector.sources.containerd import (
    BlobInfo,
    ContainerdUnavailableError,
    ImageRecord,
    IngestStatus,
)
from collector.sources.documents import (
    DIGEST,
    METADATA_KINDS,
    ROOT_FILTERS,
    Descriptor,
    Document,
    Root,
    ingest_digest,
    ingest_kind,
    parse_document,
    root_of,
)
from collector.timefmt import NS

log = logging.getLogger("pulltrace.containerd")


class ContentSource(Protocol):
    """What the tracker reads from containerd (one namespace)."""

    def list_statuses(self) -> list[IngestStatus]: ...

    def list_content(self, filters: Iterable[str] = ()) -> list[BlobInfo]: ...

    def info(self, digest: str) -> BlobInfo | None: ...

    def read(self, digest: str) -> bytes: ...

    def list_images(self, filters: Iterable[str] = ()) -> list[ImageRecord]: ...


@dataclass(slots=True)
class _Blob:
    """One blob of one pull."""

    digest: str
    media_type: str = ""
    size: int = 0
    ingested: bool = False  # this pull's ingest of it was seen
    shared: bool = False  # another pull was downloading it
    started_at: int | None = None
    offset: int = 0
    updated_at: int | None = None
    committed_at: int | None = None  # set once it is known to be in the content store
    cached: bool = False  # in the store before the pull started: not fetched by it
    missing: int = 0  # polls its ingest has been gone without the blob in the store
    failed: bool = False
    done_at: int | None = None  # first report that showed it finished (pending pull only)

    @property
    def finished(self) -> bool:
        return self.failed or self.committed_at is not None


@dataclass(slots=True)
class _Pull:
    root: str | None  # the manifest or index digest; None for the node's pending pull
    started_at: int
    blobs: dict[str, _Blob] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    name: str | None = None
    total_known: bool = False
    error: str | None = None
    complete: bool = False
    finished_at: int | None = None  # timestamp of the first report that showed it finished
    source: str | None = None  # host/repo from the distribution-source label
    held: bool = False  # its completion already waited one poll for an image name
    just: list[str] = field(default_factory=list)  # blobs whose commit this poll revealed
    hidden: bool = False  # left out of this poll's report
    reported: bool = False

    @property
    def finished(self) -> bool:
        return self.complete or self.error is not None


def _best_name(names: Iterable[str]) -> str | None:
    """A tag if there is one (``host/repo:tag``), else a digest reference; never an image id."""
    ranked = sorted(("@" in n, n.startswith("sha256:"), n) for n in names)
    return ranked[0][2] if ranked else None


def _what(media_type: str, is_root: bool) -> str:
    if "index" in media_type or "manifest.list" in media_type:
        return "index"
    if "manifest" in media_type or (is_root and not media_type):
        return "manifest"
    if "config" in media_type:
        return "config"
    return "layer"


class PullTracker:
    """containerd's content store, one poll at a time, as AgentReports of one node.

    A finished pull (all its blobs committed, or failed) stays in the reports until
    :meth:`acknowledge` confirms that a report showing it was delivered; then it is dropped.
    """

    def __init__(self, node: str, *, clock: Callable[[], int] = time.time_ns,
                 metadata_grace_ns: int = 2 * NS, confirm_polls: int = 2) -> None:
        if not node:
            raise ValueError("the node name is empty")
        self.node = node
        self._clock = clock
        self._grace = metadata_grace_ns
        self._confirm = max(1, confirm_polls)
        self._roots: dict[str, Root] = {}
        self._docs: dict[str, Document] = {}
        self._seen: set[tuple[str, int]] | None = None  # (digest, created_at) of roots met
        self._pulls: dict[str, _Pull] = {}
        self._finished: dict[str, int] = {}  # root -> when its last pull finished
        self._pending: _Pull | None = None
        self._pending_start = 0  # startedAt of the last pending pull
        self._unclaimed: dict[str, int] = {}  # metadata ingests nobody claims -> first seen
        self._last_ts = 0

    # --- one poll --------------------------------------------------------------------------

    def poll(self, source: ContentSource) -> AgentReport:
        """Read containerd once and return the report of this moment."""
        began = self._clock()
        ingests = source.list_statuses()
        listed = source.list_content(ROOT_FILTERS)
        live: dict[str, IngestStatus] = {}
        for status in ingests:
            live[ingest_digest(status) or status.ref] = status
        parents = self._refresh_roots(listed)

        owned: dict[str, _Pull] = {}
        unclaimed: list[str] = []
        for key in sorted(live):
            tops = self._tops(key, parents)
            if not tops:
                unclaimed.append(key)
                continue
            pull = self._owner(tops, live[key])
            if pull is not None:
                owned[key] = pull
        for pull in list(self._pulls.values()):
            pull.hidden = False
            pull.just = []
            if not pull.finished:
                self._sync(pull, source, live, owned)
        self._name(source)
        self._hold_for_names()
        self._sync_pending(source, live, unclaimed, owned, began)
        return self._report()

    def acknowledge(self, timestamp: int) -> None:
        """A report with this timestamp was delivered: finished pulls it showed are dropped."""
        for root, pull in list(self._pulls.items()):
            if pull.finished_at is not None and pull.finished_at <= timestamp:
                del self._pulls[root]
                self._finished[root] = pull.finished_at
                for digest in pull.blobs:
                    self._docs.pop(digest, None)
        pending = self._pending
        if pending is None:
            return
        if pending.finished_at is not None and pending.finished_at <= timestamp:
            self._pending = None
            return
        for key, blob in list(pending.blobs.items()):
            if blob.done_at is not None and blob.done_at <= timestamp:
                del pending.blobs[key]
                pending.order.remove(key)
        if not pending.blobs:
            self._pending = None

    # --- manifests and indexes -------------------------------------------------------------

    def _refresh_roots(self, listed: Sequence[BlobInfo]) -> dict[str, set[str]]:
        """Take in the manifests and indexes containerd lists now; returns each blob's
        parents among them."""
        present = set()
        first = self._seen is None
        seen = self._seen if self._seen is not None else set()
        fresh: list[Root] = []
        for info in listed:
            root = root_of(info)
            present.add(root.digest)
            self._roots[root.digest] = root
            mark = (root.digest, root.created_at)
            if mark not in seen:
                seen.add(mark)
                if not first:
                    fresh.append(root)
        self._seen = seen
        for digest, root in list(self._roots.items()):
            if digest in present:
                continue
            root.present = False
            root.absent += 1
            if not self._in_use(digest) and root.absent > self._confirm:
                del self._roots[digest]
                seen.discard((digest, root.created_at))
                self._finished.pop(digest, None)  # a pull of it again writes a new blob
        # A root created since the last poll is a pull, even if nothing of it downloads
        # (all its layers cached, or too small to be seen downloading).
        parents = self._parents()
        for root in sorted(fresh, key=lambda r: (r.created_at, r.digest)):
            for top in sorted(self._tops(root.digest, parents) or {root.digest}):
                if top not in self._pulls:
                    self._open(top, self._roots[top].created_at if top in self._roots
                               else root.created_at)
        return parents

    def _in_use(self, digest: str) -> bool:
        return any(digest in pull.blobs for pull in self._pulls.values())

    def _parents(self) -> dict[str, set[str]]:
        parents: dict[str, set[str]] = {}
        for root in self._roots.values():
            for child in root.children:
                parents.setdefault(child, set()).add(root.digest)
        return parents

    def _tops(self, digest: str, parents: dict[str, set[str]]) -> set[str]:
        """The outermost manifests or indexes that reference ``digest`` (not itself)."""
        tops: set[str] = set()
        stack = list(parents.get(digest, ()))
        visited: set[str] = set()
        while stack:
            current = stack.pop()
            if current in visited:
                continue
            visited.add(current)
            above = parents.get(current)
            if above:
                stack.extend(above)
            else:
                tops.add(current)
        return tops

    def _owner(self, tops: set[str], status: IngestStatus) -> _Pull | None:
        """The pull an ingest counts for: the earliest running pull that lists it, else a new
        pull of the image that lists it (None for what is left of a finished pull)."""
        running = [self._pulls[t] for t in tops if t in self._pulls]
        if running:
            return min(running, key=lambda p: (p.started_at, p.root or ""))
        top = max(tops, key=lambda t: (t not in self._finished,
                                       self._roots[t].created_at if t in self._roots else 0, t))
        finished = self._finished.get(top)
        if finished is None:
            root = self._roots.get(top)
            start = root.created_at if root is not None and root.created_at else (
                status.started_at_ns or self._clock())
            return self._open(top, start)
        # A pull of this image finished here before: a download that moved since is a new
        # pull; an ingest untouched since then is a leftover of the old one.
        if status.started_at_ns > finished:
            return self._open(top, status.started_at_ns)
        if status.updated_at_ns > finished:
            return self._open(top, status.updated_at_ns)
        return None

    def _open(self, top: str, started_at: int) -> _Pull:
        pull = self._pulls.get(top)
        if pull is None:
            previous = self._finished.get(top)
            if previous is not None and started_at <= previous:
                started_at = previous + 1
            pull = _Pull(root=top, started_at=started_at)
            self._pulls[top] = pull
        return pull

    def _document(self, digest: str, source: ContentSource,
                  media_type: str = "") -> Document | None:
        doc = self._docs.get(digest)
        if doc is not None:
            return doc
        root = self._roots.get(digest)
        if root is None or not root.present:
            return None
        try:
            data = source.read(digest)
        except ContainerdError as exc:
            if isinstance(exc, ContainerdUnavailableError):
                raise
            log.debug("cannot read %s yet: %s", digest, exc)
            return None
        try:
            doc = parse_document(digest, data, media_type)
        except ValueError as exc:
            log.warning("ignoring %s: %s", digest, exc)
            return None
        self._docs[digest] = doc
        return doc

    def _members(self, pull: _Pull, source: ContentSource,
                 live: dict[str, IngestStatus]) -> tuple[list[Descriptor], bool]:
        """Every blob of the pull in order, and whether that list is complete."""
        assert pull.root is not None
        root = self._roots.get(pull.root)
        doc = self._document(pull.root, source)
        known = doc is not None
        own_type = doc.media_type if doc else (
            pull.blobs[pull.root].media_type if pull.root in pull.blobs else "")
        size = root.size if root else (pull.blobs[pull.root].size if pull.root in pull.blobs
                                       else 0)
        members = [Descriptor(pull.root, own_type, size)]
        children = self._children(pull.root, doc, root)
        is_index = doc.is_index if doc else bool(root and root.is_index)
        if not is_index:
            members.extend(children)
            return members, known
        in_play = 0
        for child in children:
            child_root = self._roots.get(child.digest)
            if not (child.digest in live or child.digest in pull.blobs
                    or (child_root is not None and child_root.present)):
                continue  # another platform's manifest: not part of this pull
            in_play += 1
            members.append(child)
            child_doc = self._document(child.digest, source, child.media_type)
            known = known and child_doc is not None
            members.extend(self._children(child.digest, child_doc, child_root))
        return members, known and in_play > 0

    @staticmethod
    def _children(digest: str, doc: Document | None, root: Root | None) -> list[Descriptor]:
        if doc is not None:
            return list(doc.children)
        if root is not None:
            return [Descriptor(child, "", 0) for child in root.children]
        return []

    # --- blobs of a pull -------------------------------------------------------------------

    def _sync(self, pull: _Pull, source: ContentSource, live: dict[str, IngestStatus],
              owned: dict[str, _Pull]) -> None:
        assert pull.root is not None
        members, known = self._members(pull, source, live)
        pull.total_known = pull.total_known or known
        root = self._roots.get(pull.root)
        if root is not None and root.source:
            pull.source = root.source
        order = list(dict.fromkeys(desc.digest for desc in members))
        for desc in members:
            blob = pull.blobs.setdefault(desc.digest, _Blob(desc.digest))
            blob.media_type = desc.media_type or blob.media_type
            blob.size = desc.size or blob.size
        pull.order = order
        for digest in order:
            blob = pull.blobs[digest]
            status = live.get(digest)
            if status is not None:
                if owned.get(digest) is pull:
                    _follow(blob, status)
                elif not blob.ingested:
                    blob.shared = True
                continue
            if blob.finished:
                continue
            info = self._info(digest, source)
            if info is None:
                if blob.ingested:
                    blob.missing += 1
                    blob.failed = blob.missing >= self._confirm
                continue
            blob.size = blob.size or info.size
            blob.committed_at = info.created_at_ns or self._clock()
            blob.cached = not blob.ingested and (blob.shared
                                                 or blob.committed_at < pull.started_at)
            if blob.ingested:
                pull.just.append(digest)
        failed = [pull.blobs[d] for d in order if pull.blobs[d].failed]
        if failed:
            blob = failed[0]
            what = _what(blob.media_type, blob.digest == pull.root)
            pull.error = (f"{what} {blob.digest} was aborted: its download stopped and the "
                          "blob is not in the content store")
            return
        pull.complete = pull.total_known and all(
            pull.blobs[d].committed_at is not None for d in order)
        if not pull.complete and root is not None and root.absent >= self._confirm:
            what = "index" if root.is_index else "manifest"
            pull.error = (f"the {what} {root.digest} was removed from the content store before "
                          "the pull finished: the pull was cancelled")

    def _info(self, digest: str, source: ContentSource) -> BlobInfo | None:
        root = self._roots.get(digest)
        if root is not None and root.present:
            return BlobInfo(digest, root.size, root.created_at, 0)
        if not DIGEST.match(digest):
            return None
        return source.info(digest)

    def _name(self, source: ContentSource) -> None:
        """Name pulls after the image record that points at their digest (the tag)."""
        unnamed = [p for p in self._pulls.values() if p.name is None and p.error is None]
        if not unnamed:
            return
        names: dict[str, list[str]] = {}
        wanted = sorted({f'target.digest=="{p.root}"' for p in unnamed if p.root})
        try:
            images = source.list_images(wanted)
        except ContainerdUnavailableError:
            raise
        except ContainerdError as exc:
            # Names are a nicety: pulls are still reported under their digest.
            log.warning("cannot list images: %s", exc)
            return
        for image in images:
            names.setdefault(image.target_digest, []).append(image.name)
        for pull in unnamed:
            pull.name = _best_name(names.get(pull.root or "", ()))

    def _hold_for_names(self) -> None:
        """containerd writes the image record just after the last blob is committed. A pull
        that completes without a name waits one poll for it, so that it does not finish under
        its digest: the blobs whose commit completed it stay as last seen, and a pull not yet
        reported stays out of this report."""
        for pull in self._pulls.values():
            if not pull.complete or pull.finished_at is not None or pull.name or pull.held:
                continue
            pull.held = True
            if pull.just:
                for digest in pull.just:
                    blob = pull.blobs[digest]
                    blob.committed_at = None
                    blob.cached = False
                pull.complete = False
            elif not pull.reported:
                pull.hidden = True
                pull.complete = False

    # --- ingests nobody claims -------------------------------------------------------------

    def _sync_pending(self, source: ContentSource, live: dict[str, IngestStatus],
                      unclaimed: list[str], owned: dict[str, _Pull], now: int) -> None:
        pending = self._pending
        keys: list[str] = []
        for key in unclaimed:
            if pending is not None and key in pending.blobs:
                keys.append(key)
                continue
            # A manifest or config being written is claimed as soon as it is committed (or
            # its index is); give it a moment before it counts as a pull of its own.
            if ingest_kind(live[key]) in METADATA_KINDS:
                first = self._unclaimed.setdefault(key, now)
                if now - first < self._grace:
                    continue
            keys.append(key)
        for key in list(self._unclaimed):
            if key not in live or key in owned:
                del self._unclaimed[key]
        if pending is None:
            if not keys:
                return
            start = min(live[key].started_at_ns or now for key in keys)
            start = max(start, self._pending_start + 1)
            pending = self._pending = _Pull(root=None, started_at=start)
            self._pending_start = start
        if pending.error is None:
            for key in keys:
                blob = pending.blobs.get(key)
                if blob is None:
                    blob = pending.blobs[key] = _Blob(key)
                    pending.order.append(key)
                _follow(blob, live[key])
        waiting = set(unclaimed)
        for key, blob in list(pending.blobs.items()):
            if key in live:
                if key not in waiting:  # a manifest claims it now
                    del pending.blobs[key]
                    pending.order.remove(key)
                continue
            if blob.finished:
                continue
            if not DIGEST.match(key):
                # A writer that named no digest: nothing to look up, it simply ended.
                blob.committed_at = blob.updated_at or now
                continue
            info = source.info(key)
            if info is None:
                blob.missing += 1
                blob.failed = blob.missing >= self._confirm
                continue
            blob.size = blob.size or info.size
            blob.committed_at = info.created_at_ns or now
        failed = [blob for blob in pending.blobs.values() if blob.failed]
        if failed and pending.error is None:
            pending.error = (f"ingest {failed[0].digest} was aborted: its download stopped and "
                             "the blob is not in the content store")
        if not pending.blobs:
            self._pending = None

    # --- the report ------------------------------------------------------------------------

    def _report(self) -> AgentReport:
        ts = max(self._clock(), self._last_ts + 1)
        self._last_ts = ts
        states: list[PullState] = []
        for pull in sorted(self._pulls.values(), key=lambda p: (p.started_at, p.root or "")):
            if pull.hidden:
                continue
            states.append(PullState(
                image_ref=self._image_ref(pull), started_at=pull.started_at,
                layers=tuple(_layer(pull.blobs[d]) for d in pull.order),
                total_known=pull.total_known, error=pull.error, digest=pull.root))
            pull.reported = True
            if pull.finished and pull.finished_at is None:
                pull.finished_at = ts
        pending = self._pending
        if pending is not None and pending.blobs:
            states.append(PullState(
                image_ref=PENDING_IMAGE_REF, started_at=pending.started_at,
                layers=tuple(_layer(pending.blobs[k]) for k in pending.order),
                total_known=False, error=pending.error))
            for blob in pending.blobs.values():
                if blob.finished and blob.done_at is None:
                    blob.done_at = ts
            if pending.error is not None and pending.finished_at is None:
                pending.finished_at = ts
        return AgentReport(node_name=self.node, timestamp=ts, pulls=tuple(states))

    def _image_ref(self, pull: _Pull) -> str:
        assert pull.root is not None
        if pull.name:
            return pull.name
        if pull.source:
            return f"{pull.source}@{pull.root}"
        return pull.root


def _follow(blob: _Blob, status: IngestStatus) -> None:
    blob.ingested = True
    blob.started_at = status.started_at_ns or blob.started_at
    blob.offset = status.offset
    blob.updated_at = status.updated_at_ns or blob.updated_at
    blob.size = blob.size or status.total
    blob.missing = 0


def _layer(blob: _Blob) -> LayerState:
    total = blob.size
    known = total > 0
    if blob.failed:
        return LayerState(digest=blob.digest, media_type=blob.media_type, total_bytes=total,
                          downloaded_bytes=min(blob.offset, total) if known else blob.offset,
                          total_known=known, started_at=blob.started_at,
                          updated_at=blob.updated_at, state=LayerPhase.FAILED)
    if blob.committed_at is not None:
        if blob.cached:
            return LayerState(digest=blob.digest, media_type=blob.media_type, total_bytes=total,
                              downloaded_bytes=total, total_known=known,
                              state=LayerPhase.CACHED)
        return LayerState(digest=blob.digest, media_type=blob.media_type, total_bytes=total,
                          downloaded_bytes=total if known else blob.offset, total_known=known,
                          started_at=blob.started_at, updated_at=blob.committed_at,
                          state=LayerPhase.COMPLETED)
    if blob.ingested:
        return LayerState(digest=blob.digest, media_type=blob.media_type, total_bytes=total,
                          downloaded_bytes=min(blob.offset, total) if known else blob.offset,
                          total_known=known, started_at=blob.started_at,
                          updated_at=blob.updated_at, state=LayerPhase.DOWNLOADING)
    # Not started yet (or being fetched for another pull): nothing of it has arrived here.
    return LayerState(digest=blob.digest, media_type=blob.media_type, total_bytes=total,
                      downloaded_bytes=0, total_known=known, state=LayerPhase.DOWNLOADING)


