"""The committed stubs in collector/sources/_generated are exactly what regen produces, and the
.proto files keep containerd's names and field numbers (so the wire format matches)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from collector.sources import regen

pytest.importorskip("grpc_tools", reason="needs grpcio-tools: pip install -e '.[dev]'")


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_stubs_are_what_regen_writes(tmp_path: Path) -> None:
    fresh_dir = tmp_path / "generated"
    regen.generate(fresh_dir)
    fresh = _tree(fresh_dir)
    committed = _tree(regen.GENERATED_DIR)
    hint = "run `python -m collector.sources.regen` and commit collector/sources/_generated"
    assert sorted(committed) == sorted(fresh), hint
    differing = [name for name in fresh if fresh[name] != committed[name]]
    assert differing == [], hint


def test_regen_command_line_writes_a_tree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "collector.sources.regen", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _tree(out) == _tree(regen.GENERATED_DIR)
    # running it again replaces its own tree
    again = subprocess.run(
        [sys.executable, "-m", "collector.sources.regen", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr


def test_regen_refuses_to_replace_a_directory_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(regen.RegenError, match="not a generated tree"):
        regen.regenerate(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_generated_imports_are_package_relative() -> None:
    for path in regen.GENERATED_DIR.rglob("*.py*"):
        if path.suffix not in (".py", ".pyi"):
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            assert not line.startswith(("from containerd", "import containerd")), (path, line)


@pytest.mark.parametrize(
    ("package", "target", "expected"),
    [
        (("containerd", "services", "images", "v1"), "containerd.services.images.v1", "."),
        (("containerd", "services", "images", "v1"), "containerd.types", "....types"),
        (("containerd", "types"), "containerd.services.content.v1", "..services.content.v1"),
    ],
)
def test_relative_module(package: tuple[str, ...], target: str, expected: str) -> None:
    assert regen._relative_module(package, target) == expected


def _fields(message: object) -> dict[str, int]:
    descriptor = message.DESCRIPTOR  # type: ignore[attr-defined]
    return {f.name: f.number for f in descriptor.fields}


def test_names_and_field_numbers_follow_containerd() -> None:
    from collector.sources._generated.containerd.services.content.v1 import content_pb2
    from collector.sources._generated.containerd.services.images.v1 import images_pb2
    from collector.sources._generated.containerd.types import descriptor_pb2

    content = content_pb2.DESCRIPTOR.services_by_name["Content"]
    assert content.full_name == "containerd.services.content.v1.Content"
    assert {m.name: (m.server_streaming, m.client_streaming) for m in content.methods} == {
        "Info": (False, False),
        "List": (True, False),
        "Read": (True, False),
        "ListStatuses": (False, False),
    }
    images = images_pb2.DESCRIPTOR.services_by_name["Images"]
    assert images.full_name == "containerd.services.images.v1.Images"
    assert sorted(m.name for m in images.methods) == ["Get", "List"]

    assert _fields(content_pb2.Status) == {
        "started_at": 1,
        "updated_at": 2,
        "ref": 3,
        "offset": 4,
        "total": 5,
        "expected": 6,
    }
    assert _fields(content_pb2.ListStatusesRequest) == {"filters": 1}
    assert _fields(content_pb2.ListStatusesResponse) == {"statuses": 1}
    assert _fields(content_pb2.Info) == {
        "digest": 1,
        "size": 2,
        "created_at": 3,
        "updated_at": 4,
        "labels": 5,
    }
    assert _fields(content_pb2.InfoRequest) == {"digest": 1}
    assert _fields(content_pb2.InfoResponse) == {"info": 1}
    assert _fields(content_pb2.ListContentRequest) == {"filters": 1}
    assert _fields(content_pb2.ListContentResponse) == {"info": 1}
    assert _fields(content_pb2.ReadContentRequest) == {"digest": 1, "offset": 2, "size": 3}
    assert _fields(content_pb2.ReadContentResponse) == {"offset": 1, "data": 2}
    assert _fields(images_pb2.Image) == {
        "name": 1,
        "labels": 2,
        "target": 3,
        "created_at": 7,
        "updated_at": 8,
    }
    assert _fields(images_pb2.GetImageRequest) == {"name": 1}
    assert _fields(images_pb2.GetImageResponse) == {"image": 1}
    assert _fields(images_pb2.ListImagesRequest) == {"filters": 1}
    assert _fields(images_pb2.ListImagesResponse) == {"images": 1}
    assert _fields(descriptor_pb2.Descriptor) == {
        "media_type": 1,
        "digest": 2,
        "size": 3,
        "annotations": 5,
    }
