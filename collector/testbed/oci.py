"""Synthetic OCI image layouts for the testbed.

Layers are tar archives holding one file of seeded random bytes, gzip'd. Random bytes do not
compress, so a layer's blob size is within a fraction of a percent of the size asked for: a test can
pick sizes and know how long a throttled download should take. Everything is deterministic (fixed
tar and gzip timestamps, seeded RNG), so the same call writes the same digests on every machine.

Several images may share one layout directory; ``index.json`` keeps one entry per tag.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
import random
import shutil
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from collector.errors import TestbedError

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

_REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20
# A fixed timestamp keeps digests stable across runs; any constant would do.
_EPOCH = 1_700_000_000
_TAR_BLOCK = 512
_TAR_RECORD = 20 * _TAR_BLOCK


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob of the layout, as a manifest descriptor names it."""

    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class Layer(Blob):
    """A layer blob plus what is needed to put the same bytes into another image."""

    diff_id: str
    path: Path


@dataclass(frozen=True)
class ImageInfo:
    """What ``write_image`` wrote: enough for a test to know every digest a pull will touch."""

    directory: Path
    tag: str
    manifest: Blob
    config: Blob
    layers: tuple[Layer, ...]

    @property
    def layer_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Every blob a full fetch stores: manifest, config, then the layers."""
        return (self.manifest, self.config, *self.layers)


class _HashingWriter:
    """File sink that hashes and counts what passes through it."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self._sink.write(data)

    def flush(self) -> None:
        self._sink.flush()


def _blob_path(directory: Path, digest: str) -> Path:
    algorithm, _, hexpart = digest.partition(":")
    return directory / "blobs" / algorithm / hexpart


def _write_json_blob(directory: Path, document: dict[str, Any], media_type: str) -> Blob:
    data = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = _blob_path(directory, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Blob(digest=digest, size=len(data), media_type=media_type)


def _write_layer(directory: Path, size: int, seed: str, compress: bool) -> Layer:
    """Stream one layer to disk, hashing both the compressed and the uncompressed form.

    Streaming keeps memory flat, so demo images of hundreds of MiB are fine.
    """
    rng = random.Random(seed)
    header = tarfile.TarInfo(name="data.bin")
    header.size = size
    header.mtime = _EPOCH
    header.mode = 0o644
    header_bytes = header.tobuf(format=tarfile.PAX_FORMAT)
    tar_len = len(header_bytes) + size + (-size % _TAR_BLOCK) + 2 * _TAR_BLOCK
    trailer = b"\0" * ((-size % _TAR_BLOCK) + 2 * _TAR_BLOCK + (-tar_len % _TAR_RECORD))

    staging = directory / "blobs" / "sha256" / f".layer-{seed}.tmp"
    staging.parent.mkdir(parents=True, exist_ok=True)
    diff_hash = hashlib.sha256()
    with staging.open("wb") as raw:
        out = _HashingWriter(raw)
        # Random bytes do not shrink, so the fastest level costs nothing in size.
        stream: gzip.GzipFile | _HashingWriter = (
            gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) if compress else out
        )
        diff_hash.update(header_bytes)
        stream.write(header_bytes)
        remaining = size
        while remaining:
            piece = rng.randbytes(min(_CHUNK, remaining))
            diff_hash.update(piece)
            stream.write(piece)
            remaining -= len(piece)
        diff_hash.update(trailer)
        stream.write(trailer)
        if isinstance(stream, gzip.GzipFile):
            stream.close()
    digest = "sha256:" + out.hash.hexdigest()
    path = _blob_path(directory, digest)
    staging.replace(path)
    media_type = MEDIA_TYPE_LAYER_GZIP if compress else MEDIA_TYPE_LAYER_TAR
    return Layer(
        digest=digest,
        size=out.size,
        media_type=media_type,
        diff_id="sha256:" + diff_hash.hexdigest(),
        path=path,
    )


def _reuse_layer(directory: Path, layer: Layer) -> Layer:
    target = _blob_path(directory, layer.digest)
    if not target.exists():
        if not layer.path.exists():
            raise TestbedError(f"shared layer {layer.digest} is gone from {layer.path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(layer.path, target)
    return Layer(
        digest=layer.digest,
        size=layer.size,
        media_type=layer.media_type,
        diff_id=layer.diff_id,
        path=target,
    )


def _oci_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def _update_index(directory: Path, tag: str, manifest: Blob) -> None:
    index_path = directory / "index.json"
    manifests: list[dict[str, Any]] = []
    if index_path.exists():
        existing = json.loads(index_path.read_text())
        manifests = [
            entry
            for entry in existing.get("manifests", [])
            if entry.get("annotations", {}).get(_REF_NAME) != tag
        ]
    manifests.append(
        {
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": {_REF_NAME: tag},
        }
    )
    index = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX, "manifests": manifests}
    index_path.write_text(json.dumps(index, indent=2))
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


def write_image(
    directory: Path | str,
    tag: str,
    layer_sizes: Sequence[int],
    seed: int,
    *,
    shared_layers: Sequence[Layer] = (),
    compress: bool = True,
) -> ImageInfo:
    """Write (or add to) an OCI image layout at ``directory`` and tag the new image ``tag``.

    ``shared_layers`` (taken from an earlier ``ImageInfo``) come first, like base layers of a real
    image, and keep their exact bytes: pulling the second image after the first finds them cached.
    Then one fresh layer per entry of ``layer_sizes``; their bytes depend only on ``seed``, the
    layer's position and its size, so two different seeds never share a fresh layer.
    """
    if any(size < 0 for size in layer_sizes):
        raise TestbedError(f"layer sizes must not be negative: {list(layer_sizes)}")
    if not layer_sizes and not shared_layers:
        raise TestbedError("an image needs at least one layer")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)

    layers = [_reuse_layer(root, layer) for layer in shared_layers]
    layers += [
        _write_layer(root, size, f"{seed}:{position}:{size}", compress)
        for position, size in enumerate(layer_sizes)
    ]

    config = _write_json_blob(
        root,
        {
            "architecture": _oci_arch(),
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {"Labels": {"pulltrace.testbed.seed": str(seed)}},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "pulltrace testbed"}]
            * len(layers),
        },
        MEDIA_TYPE_CONFIG,
    )
    manifest = _write_json_blob(
        root,
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {
                "mediaType": config.media_type,
                "digest": config.digest,
                "size": config.size,
            },
            "layers": [
                {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
                for layer in layers
            ],
        },
        MEDIA_TYPE_MANIFEST,
    )
    _update_index(root, tag, manifest)
    return ImageInfo(
        directory=root, tag=tag, manifest=manifest, config=config, layers=tuple(layers)
    )
