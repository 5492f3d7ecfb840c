"""The testbed itself: synthetic images, the throttling proxy, and pulls into a real containerd."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from pathlib import Path

import pytest

from collector.errors import TestbedError
from collector.testbed import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    MiB,
    Testbed,
    write_image,
)


def stored_digests(bed: Testbed) -> set[str]:
    """First column of `ctr content ls`: exact digests, not the layer digests a manifest's labels
    also mention."""
    lines = bed.ctr("content", "ls").splitlines()
    return {line.split()[0] for line in lines[1:] if line.strip()}


def active_offset(bed: Testbed, digest: str) -> str | None:
    """The SIZE column of `ctr content active` for this layer's ingest, if there is one."""
    for line in bed.ctr("content", "active").splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == f"layer-{digest}":
            return fields[1]
    return None


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# -- OCI layout (no services needed) ----------------------------------------------------------


def test_write_image_writes_a_valid_layout(tmp_path: Path) -> None:
    info = write_image(tmp_path, "v1", [300_000, 100_000], seed=5)

    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [info.manifest.digest]
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "v1"

    for blob in info.blobs:
        data = (tmp_path / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest
        assert len(data) == blob.size

    manifest = json.loads((tmp_path / "blobs" / "sha256" / info.manifest.digest[7:]).read_bytes())
    assert manifest["mediaType"] == MEDIA_TYPE_MANIFEST
    assert manifest["config"]["mediaType"] == MEDIA_TYPE_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [MEDIA_TYPE_LAYER_GZIP] * 2
    # Random payload does not compress: the blob is the size asked for, plus tar/gzip framing.
    for layer, asked in zip(info.layers, [300_000, 100_000], strict=True):
        assert asked <= layer.size <= asked + 12 * 1024


def test_write_image_is_deterministic_and_shares_layers(tmp_path: Path) -> None:
    first = write_image(tmp_path / "a", "v1", [50_000], seed=1)
    again = write_image(tmp_path / "b", "v1", [50_000], seed=1)
    other = write_image(tmp_path / "c", "v1", [50_000], seed=2)
    derived = write_image(tmp_path / "d", "v1", [20_000], seed=3, shared_layers=first.layers)

    assert again.manifest.digest == first.manifest.digest
    assert other.layers[0].digest != first.layers[0].digest
    assert derived.layers[0].digest == first.layers[0].digest
    assert derived.layers[0].path.read_bytes() == first.layers[0].path.read_bytes()
    assert len(derived.layers) == 2


def test_write_image_keeps_other_tags_in_one_layout(tmp_path: Path) -> None:
    one = write_image(tmp_path, "one", [10_000], seed=1)
    two = write_image(tmp_path, "two", [10_000], seed=2)
    index = json.loads((tmp_path / "index.json").read_text())
    assert {m["digest"] for m in index["manifests"]} == {one.manifest.digest, two.manifest.digest}


def test_write_image_rejects_an_image_without_layers(tmp_path: Path) -> None:
    with pytest.raises(TestbedError):
        write_image(tmp_path, "v1", [], seed=1)


# -- services ---------------------------------------------------------------------------------


@pytest.mark.e2e
def test_fetch_through_proxy_stores_every_blob(testbed: Testbed, repo: str, seed: int) -> None:
    pushed = testbed.make_image(repo, [3 * MiB, 1 * MiB], seed=seed)

    started = time.monotonic()
    testbed.pull(pushed.ref, via_proxy=True)
    elapsed = time.monotonic() - started

    stored = stored_digests(testbed)
    for blob in pushed.image.blobs:
        assert blob.digest in stored
    # Each layer has its own connection at the limit, so the largest one bounds the pull.
    assert elapsed >= 0.95 * max(layer.size for layer in pushed.image.layers) / testbed.rate


@pytest.mark.e2e
def test_proxy_rate_matches_the_limit(testbed: Testbed, repo: str, seed: int) -> None:
    pushed = testbed.make_image(repo, [3 * MiB], seed=seed)
    layer = pushed.image.layers[0]
    host, port = testbed.proxy_addr.split(":")

    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        started = time.monotonic()
        conn.request("GET", f"/v2/{repo}/blobs/{layer.digest}")
        response = conn.getresponse()
        received = hashlib.sha256()
        count = 0
        while chunk := response.read(64 * 1024):
            received.update(chunk)
            count += len(chunk)
        elapsed = time.monotonic() - started
    finally:
        conn.close()

    assert response.status == 200
    assert count == layer.size
    assert "sha256:" + received.hexdigest() == layer.digest
    assert count / elapsed / testbed.rate == pytest.approx(1.0, abs=0.05)


@pytest.mark.e2e
def test_shared_layer_is_not_downloaded_again(testbed: Testbed, repo: str, seed: int) -> None:
    base = testbed.make_image(repo + "/base", [1 * MiB], seed=seed)
    app = testbed.make_image(
        repo + "/app", [512 * 1024], seed=seed + 1, shared_layers=base.image.layers
    )
    testbed.pull(base.ref)

    output = testbed.pull(app.ref)

    shared = base.image.layers[0].digest
    status = [line.split()[1] for line in output.splitlines() if line.startswith(f"layer-{shared}")]
    assert status
    assert status[-1] == "exists"
    assert {b.digest for b in app.image.blobs} <= stored_digests(testbed)


@pytest.mark.e2e
def test_killed_proxy_fails_the_fetch_and_a_restart_recovers(
    testbed: Testbed, repo: str, seed: int
) -> None:
    pushed = testbed.make_image(repo, [4 * MiB], seed=seed)
    layer = pushed.image.layers[0]
    fetch = testbed.fetch(pushed.ref)
    wait_for(
        lambda: active_offset(testbed, layer.digest) not in (None, "0B"),
        timeout=10,
        what="the first MiB of the layer",
    )

    testbed.kill_proxy()

    assert fetch.wait(timeout=10) != 0
    assert layer.digest not in stored_digests(testbed)
    testbed.restart_proxy()
    testbed.pull(pushed.ref)
    assert layer.digest in stored_digests(testbed)


@pytest.mark.e2e
def test_containerd_restart_keeps_the_content_store(testbed: Testbed, repo: str, seed: int) -> None:
    pushed = testbed.make_image(repo, [256 * 1024], seed=seed)
    testbed.pull(pushed.ref, via_proxy=False)
    old_pid = testbed.pid("containerd")

    testbed.restart_containerd(kill=True)

    assert testbed.pid("containerd") not in (None, old_pid)
    assert pushed.image.manifest.digest in stored_digests(testbed)


@pytest.mark.e2e
def test_paused_proxy_freezes_the_ingest_until_resumed(
    testbed: Testbed, repo: str, seed: int
) -> None:
    pushed = testbed.make_image(repo, [3 * MiB], seed=seed)
    layer = pushed.image.layers[0]
    fetch = testbed.fetch(pushed.ref)
    wait_for(
        lambda: active_offset(testbed, layer.digest) not in (None, "0B"),
        timeout=10,
        what="the first MiB of the layer",
    )

    testbed.pause_proxy()
    frozen = active_offset(testbed, layer.digest)
    time.sleep(1.5)  # three times what one more MiB takes at the limit

    assert active_offset(testbed, layer.digest) == frozen
    assert fetch.poll() is None
    testbed.resume_proxy()
    assert fetch.wait(timeout=30) == 0, testbed.fetch_output(fetch)
    assert layer.digest in stored_digests(testbed)
