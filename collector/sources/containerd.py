"""A small client of containerd's gRPC content and images services.

This is the only module that imports the generated stubs in ``collector.sources._generated``;
everything it returns is a plain dataclass, and every gRPC error leaves it as a
:class:`~collector.errors.ContainerdError` whose message says what to do.

Facts about containerd (1.6) the callers rely on:

- every call carries the metadata header ``containerd-namespace`` (kubelet's is ``k8s.io``);
  content and images are per namespace;
- an ingest (``ListStatuses``) is a write that is not committed yet. It appears with offset 0 as
  soon as the writer opens it; its ``offset`` moves in the writer's buffer steps (1 MiB for pulls
  and ``ctr``); it disappears when the blob is committed (its offset never equals its total
  there) and stays, frozen, when the writer dies. Its ``expected`` digest is empty even when the
  writer gave one: the digest is in the ref (``layer-sha256:<hex>``);
- while a writer is attached, an ingest's ``updated_at`` is the mtime of its data file, i.e. the
  time of the last write by the kernel's coarse clock (it can lag the write by one tick, 4 ms at
  HZ=250); when the writer goes away containerd restamps it once, a few ms later, with no new
  bytes. Progress is told by ``offset``, not by ``updated_at`` moving;
- ``Content/List`` leaves ``updated_at`` unset (``Content/Info`` fills it);
- times are converted to integer nanoseconds since the Unix epoch; 0 means "not set".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import grpc

from collector.errors import ContainerdError
from collector.sources._generated.containerd.services.content.v1 import (
    content_pb2,
    content_pb2_grpc,
)
from collector.sources._generated.containerd.services.images.v1 import (
    images_pb2,
    images_pb2_grpc,
)
from collector.sources.socket_path import check_socket
from collector.timefmt import NS

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_SOCKET",
    "MAX_READ_BYTES",
    "NAMESPACE_HEADER",
    "BlobInfo",
    "ContainerdClient",
    "ContainerdError",
    "ContainerdNotFoundError",
    "ContainerdUnavailableError",
    "ImageRecord",
    "IngestStatus",
]

DEFAULT_SOCKET: Final = "/run/containerd/containerd.sock"
DEFAULT_NAMESPACE: Final = "k8s.io"
NAMESPACE_HEADER: Final = "containerd-namespace"

MAX_READ_BYTES: Final = 4 << 20
"""Default cap of :meth:`ContainerdClient.read`: 4 MiB, the size limit registries and containerd
put on manifests and indexes. Layers are not meant to be read through this client."""

_MAX_MESSAGE_BYTES: Final = 16 << 20  # containerd's own default gRPC message limit
_CHANNEL_OPTIONS: Final = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.enable_http_proxy", 0),
    # reconnect fast once a restarted containerd is back (gRPC's default backoff grows to 120 s)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

_GO_ZERO_TIME_S: Final = -62_135_596_800  # 0001-01-01T00:00:00Z


class ContainerdUnavailableError(ContainerdError):
    """containerd cannot be reached right now: the socket went away, nothing listens on it, or
    it did not answer in time (containerd restarting or overloaded). Worth retrying with backoff;
    any other :class:`ContainerdError` is not."""


class ContainerdNotFoundError(ContainerdError):
    """The blob or image asked for is not in containerd (in this namespace)."""


@dataclass(frozen=True, slots=True)
class IngestStatus:
    """One ingest: a blob being written into the content store, not committed yet."""

    ref: str
    """The writer's key, e.g. ``layer-sha256:<hex>`` for a layer being pulled."""
    offset: int
    """Bytes written so far."""
    total: int
    """Expected size in bytes, 0 when the writer did not say."""
    expected: str
    """Expected digest; containerd 1.6 leaves it "" (take the digest from ``ref``)."""
    started_at_ns: int
    updated_at_ns: int
    """Time of the last write (ns since the epoch): the timestamp of ``offset``."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A committed blob of the content store."""

    digest: str
    size: int
    created_at_ns: int
    updated_at_ns: int
    """Last change of the blob's metadata (its labels); 0 from :meth:`ContainerdClient.list_content`
    (containerd 1.6 does not fill it there)."""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """An image record: a name pointing to a root descriptor (manifest or index)."""

    name: str
    target_digest: str
    target_media_type: str
    target_size: int
    labels: dict[str, str] = field(default_factory=dict)
    created_at_ns: int = 0
    updated_at_ns: int = 0


def _ns(ts: Any) -> int:
    """A google.protobuf.Timestamp as nanoseconds since the epoch; 0 when unset or Go's zero
    time (0001-01-01, which containerd 1.6 sends e.g. as ``updated_at`` of Content/List)."""
    seconds = int(ts.seconds)
    if seconds <= _GO_ZERO_TIME_S:
        return 0
    return seconds * NS + int(ts.nanos)


def _filters(filters: Iterable[str]) -> list[str]:
    if isinstance(filters, str):
        return [filters]
    return [str(f) for f in filters]


def _blob(info: Any) -> BlobInfo:
    return BlobInfo(
        digest=str(info.digest),
        size=int(info.size),
        created_at_ns=_ns(info.created_at),
        updated_at_ns=_ns(info.updated_at),
        labels={str(k): str(v) for k, v in info.labels.items()},
    )


def _image(image: Any) -> ImageRecord:
    target = image.target
    return ImageRecord(
        name=str(image.name),
        target_digest=str(target.digest),
        target_media_type=str(target.media_type),
        target_size=int(target.size),
        labels={str(k): str(v) for k, v in image.labels.items()},
        created_at_ns=_ns(image.created_at),
        updated_at_ns=_ns(image.updated_at),
    )


def _status(st: Any) -> IngestStatus:
    return IngestStatus(
        ref=str(st.ref),
        offset=int(st.offset),
        total=int(st.total),
        expected=str(st.expected),
        started_at_ns=_ns(st.started_at),
        updated_at_ns=_ns(st.updated_at),
    )


class ContainerdClient:
    """Blocking client of one containerd socket, in one namespace.

    ``socket_path`` is the containerd gRPC socket (a ``unix://`` prefix is accepted), resolved
    (symlinks, ``..``); it must exist when the client is made (see
    :mod:`collector.sources.socket_path`, which also restricts where it may be). ``timeout``
    (seconds) bounds every call, a streaming call as a whole. Methods are safe to call from
    several threads. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self, socket_path: str, namespace: str = DEFAULT_NAMESPACE, timeout: float = 5.0
    ) -> None:
        path = socket_path.removeprefix("unix://")
        if not path:
            raise ContainerdError("no containerd socket given; pass --containerd SOCKET")
        if not namespace:
            raise ContainerdError("the containerd namespace is empty; kubelet uses 'k8s.io'")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self._path = os.path.realpath(path)
        self._namespace = namespace
        self._timeout = float(timeout)
        check_socket(self._path, path)
        self._metadata = ((NAMESPACE_HEADER, namespace),)
        self._channel = grpc.insecure_channel(f"unix://{self._path}", options=_CHANNEL_OPTIONS)
        self._content = content_pb2_grpc.ContentStub(self._channel)
        self._images = images_pb2_grpc.ImagesStub(self._channel)
        self._closed = False

    @property
    def socket_path(self) -> str:
        return self._path

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def timeout(self) -> float:
        return self._timeout

    def __repr__(self) -> str:
        return f"ContainerdClient({self._path!r}, namespace={self._namespace!r})"

    # -- content ---------------------------------------------------------------------------------

    def list_statuses(self, filters: Iterable[str] = ()) -> list[IngestStatus]:
        """The ingests in progress matching any of ``filters`` (containerd filter syntax, e.g.
        ``ref~="^layer-"``); all of them when there is none. Sorted by ref."""
        request = content_pb2.ListStatusesRequest(filters=_filters(filters))
        response = self._unary(self._content.ListStatuses, request, "ListStatuses")
        return sorted((_status(s) for s in response.statuses), key=lambda s: s.ref)

    def info(self, digest: str) -> BlobInfo | None:
        """The committed blob ``digest``, or None when it is not in the content store."""
        request = content_pb2.InfoRequest(digest=digest)
        try:
            response = self._unary(self._content.Info, request, f"Info({digest})")
        except ContainerdNotFoundError:
            return None
        return _blob(response.info)

    def list_content(self, filters: Iterable[str] = ()) -> list[BlobInfo]:
        """The committed blobs matching any of ``filters`` (e.g. ``digest==sha256:...`` or
        ``labels."containerd.io/gc.ref.content.l.0"``); all of them when there is none."""
        request = content_pb2.ListContentRequest(filters=_filters(filters))
        blobs: list[BlobInfo] = []
        for response in self._stream(self._content.List, request, "List"):
            blobs.extend(_blob(info) for info in response.info)
        return blobs

    def read(
        self, digest: str, offset: int = 0, size: int = 0, *, max_bytes: int = MAX_READ_BYTES
    ) -> bytes:
        """The bytes of the committed blob ``digest`` from ``offset``: ``size`` bytes, or up to
        its end when ``size`` is 0.

        Never transfers more than ``max_bytes`` (+1): a blob that goes on past it raises
        :class:`ContainerdError` instead of being read whole by accident. A missing blob raises
        :class:`ContainerdNotFoundError`.
        """
        if offset < 0 or size < 0:
            raise ValueError(f"offset and size must be >= 0, got offset={offset} size={size}")
        if size > max_bytes:
            raise ValueError(f"size={size} is over max_bytes={max_bytes}; raise max_bytes")
        want = size if size > 0 else max_bytes + 1
        request = content_pb2.ReadContentRequest(digest=digest, offset=offset, size=want)
        chunks: list[bytes] = []
        received = 0
        stream = self._stream(self._content.Read, request, f"Read({digest})")
        try:
            for response in stream:
                # containerd 1.6 numbers the chunks from the requested offset, not from the
                # start of the blob; accept both
                if int(response.offset) not in (received, offset + received):
                    raise ContainerdError(
                        f"containerd at {self._path} sent {digest} out of order: a chunk at "
                        f"{response.offset}, expected {received} bytes after offset {offset}"
                    )
                data = bytes(response.data)
                chunks.append(data)
                received += len(data)
                if received > max_bytes:
                    raise ContainerdError(
                        f"blob {digest} is larger than max_bytes={max_bytes}; read it in parts "
                        "(offset, size) or pass a larger max_bytes"
                    )
        finally:
            stream.cancel()
        return b"".join(chunks)

    # -- images ----------------------------------------------------------------------------------

    def list_images(self, filters: Iterable[str] = ()) -> list[ImageRecord]:
        """The image records matching any of ``filters`` (e.g. ``name==docker.io/library/x:1``);
        all of them when there is none."""
        request = images_pb2.ListImagesRequest(filters=_filters(filters))
        response = self._unary(self._images.List, request, "Images.List")
        return [_image(image) for image in response.images]

    def get_image(self, name: str) -> ImageRecord | None:
        """The image record ``name``, or None when there is none."""
        request = images_pb2.GetImageRequest(name=name)
        try:
            response = self._unary(self._images.Get, request, f"Images.Get({name})")
        except ContainerdNotFoundError:
            return None
        return _image(response.image)

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel; calls made afterwards raise :class:`ContainerdError`."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ContainerdError(f"{self!r} is closed")

    def _unary(self, method: Any, request: Any, what: str) -> Any:
        self._check_open()
        try:
            return method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._translate(exc, what) from exc

    def _stream(self, method: Any, request: Any, what: str) -> _Stream:
        self._check_open()
        try:
            call = method(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._translate(exc, what) from exc
        return _Stream(call, lambda exc: self._translate(exc, what))

    def _translate(self, exc: grpc.RpcError, what: str) -> ContainerdError:
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        details = str(exc.details() or "") if callable(getattr(exc, "details", None)) else ""
        path = self._path
        if code == grpc.StatusCode.UNAVAILABLE:
            if "No such file or directory" in details:
                return ContainerdUnavailableError(
                    f"no containerd socket at {path}; is containerd running? "
                    "pass --containerd SOCKET"
                )
            if "Permission denied" in details:
                return ContainerdError(
                    f"permission denied on the containerd socket {path}; run as root or as a "
                    "user who may open it"
                )
            if "Connection refused" in details:
                return ContainerdUnavailableError(
                    f"containerd at {path} is not answering (connection refused); "
                    "is containerd running?"
                )
            hint = ""
            if "SETTINGS frame" in details:
                hint = (
                    "; if this is not containerd's gRPC socket (e.g. its ttrpc socket), "
                    "pass the right one with --containerd SOCKET"
                )
            return ContainerdUnavailableError(
                f"containerd at {path} is not answering ({details or 'unavailable'}){hint}"
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ContainerdUnavailableError(
                f"containerd at {path} did not answer {what} within {self._timeout:g} s; "
                "is it overloaded or stuck?"
            )
        if code == grpc.StatusCode.NOT_FOUND:
            return ContainerdNotFoundError(
                f"{what}: not found in containerd at {path}, namespace {self._namespace!r}"
                + (f" ({details})" if details else "")
            )
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return ContainerdError(
                f"{path} does not implement {what}; is it containerd's gRPC socket "
                "(not its ttrpc socket, nor another daemon's)?"
            )
        if code == grpc.StatusCode.FAILED_PRECONDITION and "namespace" in details:
            return ContainerdError(
                f"containerd at {path} rejected namespace {self._namespace!r}: {details}"
            )
        name = code.name if code is not None else "an error"
        suffix = f": {details}" if details else ""
        return ContainerdError(f"containerd at {path} answered {what} with {name}{suffix}")


class _Stream:
    """The responses of a server-streaming call, with gRPC errors translated."""

    def __init__(self, call: Any, translate: Callable[[grpc.RpcError], ContainerdError]) -> None:
        self._call = call
        self._translate = translate

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._call
        except grpc.RpcError as exc:
            raise self._translate(exc) from exc

    def cancel(self) -> None:
        """Stop the call (no-op when it has finished)."""
        self._call.cancel()
