"""An in-memory stand-in for containerd's content and images services, for tracker tests.

It answers what :class:`collector.sources.poller.ContentSource` asks, with the quirks of the real
one that matter: ingest refs carry the digest and ``expected`` is empty, Content/List filters on
label presence, a manifest carries the gc.ref and distribution-source labels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace

from collector.sources.containerd import (
    BlobInfo,
    ContainerdNotFoundError,
    ContainerdUnavailableError,
    ImageRecord,
    IngestStatus,
)
from tests.collector.reports import at

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Desc:
    digest: str
    media_type: str
    size: int

    def json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def blob(name: str, size: int, media_type: str = LAYER) -> Desc:
    """A descriptor of a made-up blob (its digest derives from its name)."""
    return Desc(sha(name.encode()), media_type, size)


@dataclass(frozen=True)
class Manifest:
    desc: Desc
    data: bytes
    config: Desc
    layers: tuple[Desc, ...]

    @property
    def digest(self) -> str:
        return self.desc.digest

    def labels(self, source: str | None = "reg.local/team/app") -> dict[str, str]:
        labels = {"containerd.io/gc.ref.content.config": self.config.digest}
        for i, layer in enumerate(self.layers):
            labels[f"containerd.io/gc.ref.content.l.{i}"] = layer.digest
        if source:
            host, _, repo = source.partition("/")
            labels[f"containerd.io/distribution.source.{host}"] = repo
        return labels


def manifest(config: Desc, *layers: Desc, declare_type: bool = True) -> Manifest:
    doc: dict[str, object] = {"schemaVersion": 2, "config": config.json(),
                              "layers": [layer.json() for layer in layers]}
    if declare_type:
        doc["mediaType"] = MANIFEST
    data = json.dumps(doc).encode()
    return Manifest(Desc(sha(data), MANIFEST, len(data)), data, config, tuple(layers))


@dataclass(frozen=True)
class Index:
    desc: Desc
    data: bytes
    manifests: tuple[Desc, ...]

    @property
    def digest(self) -> str:
        return self.desc.digest

    def labels(self, source: str = "reg.local/team/app") -> dict[str, str]:
        labels = {f"containerd.io/gc.ref.content.m.{i}": m.digest
                  for i, m in enumerate(self.manifests)}
        host, _, repo = source.partition("/")
        labels[f"containerd.io/distribution.source.{host}"] = repo
        return labels


def index(*manifests: Desc) -> Index:
    data = json.dumps({"schemaVersion": 2, "mediaType": INDEX,
                       "manifests": [m.json() for m in manifests]}).encode()
    return Index(Desc(sha(data), INDEX, len(data)), data, tuple(manifests))


class FakeContainerd:
    """Times are seconds from the origin of tests.collector.reports.at()."""

    def __init__(self) -> None:
        self.ingests: dict[str, IngestStatus] = {}
        self.blobs: dict[str, BlobInfo] = {}
        self.data: dict[str, bytes] = {}
        self.images: list[ImageRecord] = []
        self.down = False
        self.calls: list[str] = []

    # -- changing it ---------------------------------------------------------------------------

    def start(self, desc: Desc, t: float, kind: str = "layer") -> None:
        ref = f"{kind}-{desc.digest}"
        self.ingests[ref] = IngestStatus(ref=ref, offset=0, total=desc.size, expected="",
                                         started_at_ns=at(t), updated_at_ns=at(t))

    def write(self, desc: Desc, offset: int, t: float, kind: str = "layer") -> None:
        ref = f"{kind}-{desc.digest}"
        self.ingests[ref] = replace(self.ingests[ref], offset=offset, updated_at_ns=at(t))

    def commit(self, desc: Desc, t: float, labels: dict[str, str] | None = None,
               data: bytes | None = None, kind: str = "layer") -> None:
        self.ingests.pop(f"{kind}-{desc.digest}", None)
        self.blobs[desc.digest] = BlobInfo(desc.digest, desc.size, at(t), at(t), labels or {})
        if data is not None:
            self.data[desc.digest] = data

    def commit_manifest(self, m: Manifest, t: float, source: str | None = "reg.local/team/app",
                        ) -> None:
        self.commit(m.desc, t, m.labels(source), m.data, kind="manifest")

    def commit_index(self, i: Index, t: float) -> None:
        self.commit(i.desc, t, i.labels(), i.data, kind="index")

    def abort(self, desc: Desc, kind: str = "layer") -> None:
        del self.ingests[f"{kind}-{desc.digest}"]

    def remove(self, *digests: str) -> None:
        for digest in digests:
            self.blobs.pop(digest, None)
            self.data.pop(digest, None)

    def tag(self, name: str, target: Desc, t: float) -> None:
        self.images.append(ImageRecord(name, target.digest, target.media_type, target.size,
                                       created_at_ns=at(t), updated_at_ns=at(t)))

    # -- the ContentSource protocol ------------------------------------------------------------

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise ContainerdUnavailableError("containerd at /fake is not answering")

    def list_statuses(self) -> list[IngestStatus]:
        self._check("ListStatuses")
        return sorted(self.ingests.values(), key=lambda s: s.ref)

    def list_content(self, filters: Iterable[str] = ()) -> list[BlobInfo]:
        self._check("List")
        keys = [f.removeprefix("labels.").strip('"') for f in filters]
        return [b for b in self.blobs.values()
                if not keys or any(k in b.labels for k in keys)]

    def info(self, digest: str) -> BlobInfo | None:
        self._check("Info")
        return self.blobs.get(digest)

    def read(self, digest: str) -> bytes:
        self._check("Read")
        if digest not in self.data:
            raise ContainerdNotFoundError(f"Read({digest}): not found")
        return self.data[digest]

    def list_images(self, filters: Iterable[str] = ()) -> list[ImageRecord]:
        self._check("Images.List")
        targets = {f.removeprefix("target.digest==").strip('"') for f in filters}
        return [i for i in self.images if not targets or i.target_digest in targets]
