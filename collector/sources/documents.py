"""What containerd's labels and a manifest's or index's JSON say about a pull's blobs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from collector.sources.containerd import BlobInfo, IngestStatus

LABEL_CONFIG = "containerd.io/gc.ref.content.config"
LABEL_SOURCE = "containerd.io/distribution.source."
_LABEL_LAYER = re.compile(r"^containerd\.io/gc\.ref\.content\.l\.(\d+)$")
_LABEL_MANIFEST = re.compile(r"^containerd\.io/gc\.ref\.content\.m\.(\d+)$")
# Content/List filters (any of them matches): manifests (every one has a config) and indexes.
ROOT_FILTERS = (
    'labels."containerd.io/gc.ref.content.config"',
    'labels."containerd.io/gc.ref.content.m.0"',
)
# containerd's ingest keys for pulls: "<kind>-<digest>" (remotes.MakeRefKey).
_INGEST_REF = re.compile(r"^([a-z]+)-([a-z0-9]+:[0-9a-f]{32,})$")
DIGEST = re.compile(r"^[a-z0-9]+:[0-9a-f]{32,}$")
METADATA_KINDS = frozenset({"manifest", "index", "config"})

MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True, slots=True)
class Descriptor:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Document:
    """A manifest or an index as stored: the children it references, with their media types."""

    digest: str
    media_type: str
    is_index: bool
    children: tuple[Descriptor, ...]  # an index: its manifests; a manifest: config, then layers


def _descriptor(obj: Any, where: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is not an object")  # noqa: TRY004 - bad data, not a bug
    digest = obj.get("digest")
    size = obj.get("size", 0)
    media_type = obj.get("mediaType", "")
    if not isinstance(digest, str) or not digest:
        raise ValueError(f"{where} has no digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{where} has no valid size")
    if not isinstance(media_type, str):
        raise ValueError(f"{where} has no valid mediaType")  # noqa: TRY004
    return Descriptor(digest, media_type, size)


def parse_document(digest: str, data: bytes, media_type: str = "") -> Document:
    """Parse a manifest or index blob; ``media_type`` is used when the JSON does not say.

    Raises ValueError when the blob is neither.
    """
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{digest} is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{digest} is not a JSON object")  # noqa: TRY004
    own = obj.get("mediaType")
    declared = own if isinstance(own, str) and own else media_type
    manifests = obj.get("manifests")
    if isinstance(manifests, list):
        children = tuple(_descriptor(m, f"{digest} manifests[{i}]")
                         for i, m in enumerate(manifests))
        return Document(digest, declared or MEDIA_TYPE_OCI_INDEX, True, children)
    config = obj.get("config")
    layers = obj.get("layers", [])
    if config is None or not isinstance(layers, list):
        raise ValueError(f"{digest} is neither an image manifest nor an index")
    children = (_descriptor(config, f"{digest} config"),
                *(_descriptor(layer, f"{digest} layers[{i}]") for i, layer in enumerate(layers)))
    return Document(digest, declared or MEDIA_TYPE_OCI_MANIFEST, False, children)


def ingest_digest(status: IngestStatus) -> str | None:
    """The digest an ingest writes: ``expected`` when set, else taken from a pull's ref
    (``layer-sha256:<hex>``); None for a writer that names neither."""
    if status.expected:
        return status.expected
    found = _INGEST_REF.match(status.ref)
    return found.group(2) if found else None


def ingest_kind(status: IngestStatus) -> str:
    found = _INGEST_REF.match(status.ref)
    return found.group(1) if found else ""


# --- state -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Root:
    """A manifest or index in the content store, as its labels describe it."""

    digest: str
    size: int
    created_at: int
    is_index: bool
    children: tuple[str, ...]
    source: str | None
    present: bool = True
    absent: int = 0  # consecutive polls it has been missing from the content store


def root_of(info: BlobInfo) -> Root:
    labels = info.labels
    manifests = sorted((int(m.group(1)), value) for key, value in labels.items()
                       if (m := _LABEL_MANIFEST.match(key)))
    if manifests:
        return Root(info.digest, info.size, info.created_at_ns, True,
                     tuple(value for _, value in manifests), source_of(labels))
    layers = sorted((int(m.group(1)), value) for key, value in labels.items()
                    if (m := _LABEL_LAYER.match(key)))
    children = tuple(v for v in (labels.get(LABEL_CONFIG), *(v for _, v in layers)) if v)
    return Root(info.digest, info.size, info.created_at_ns, False, children, source_of(labels))


def source_of(labels: dict[str, str]) -> str | None:
    """``host/repo`` from the first distribution-source label (containerd drops the port)."""
    for key in sorted(labels):
        if key.startswith(LABEL_SOURCE):
            repo = labels[key].split(",")[0].strip()
            host = key[len(LABEL_SOURCE):]
            if host and repo:
                return f"{host}/{repo}"
    return None
