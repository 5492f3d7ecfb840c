"""Wire and domain types.

Incoming: :class:`AgentReport` > :class:`PullState` > :class:`LayerState`, the JSON shape of the
Go agent plus optional fields (per-layer ``startedAt``/``updatedAt``/``state``, per-pull
``error``). Outgoing: :class:`PullStatus` > :class:`LayerStatus` and :class:`PullEvent`.
Times are integer nanoseconds since the epoch (see :mod:`collector.timefmt`).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.errors import ReportError
from collector.jsontext import load_json
from collector.timefmt import format_rfc3339, parse_rfc3339

MAX_NODE_NAME = 253
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tabs, newlines are fine
MAX_BYTES = 1 << 48  # 256 TiB: no layer is larger, and sums over a pull stay in 64 bits
# Times must fit DuckDB's nanosecond timestamps (1677-2262); anything outside 1970-2200 is
# a broken clock, not a pull.
MIN_TIME_NS = 0
MAX_TIME_NS = 7_258_118_400 * 1_000_000_000  # 2200-01-01
# A report dated further ahead of the collector's clock is refused: accepted, it would make
# every later report of its node look older than it, and be dropped, until the clock caught
# up. A day lets through any time-zone mistake; a clock behind is harmless (see check_clock).
MAX_AHEAD_NS = 24 * 3600 * 1_000_000_000
SCHEMA_VERSION = "v1"
# Ingests that no manifest claims yet (and every ingest of a Go agent) are grouped per node
# under this image reference, as the Go server did.
PENDING_IMAGE_REF = "__pulling__"


class LayerPhase(enum.StrEnum):
    """What a reporter says about a layer (the optional ``state`` field)."""

    DOWNLOADING = "downloading"
    COMPLETED = "completed"
    CACHED = "cached"
    FAILED = "failed"


class LayerStatusKind(enum.StrEnum):
    DOWNLOADING = "downloading"
    STALLED = "stalled"
    COMPLETED = "completed"
    FAILED = "failed"
    CACHED = "cached"


class PullStatusKind(enum.StrEnum):
    ACTIVE = "active"
    STALLED = "stalled"
    COMPLETED = "completed"
    FAILED = "failed"
    STALE = "stale"


FINISHED = frozenset({PullStatusKind.COMPLETED, PullStatusKind.FAILED, PullStatusKind.STALE})
LAYER_DONE = frozenset({LayerStatusKind.COMPLETED, LayerStatusKind.CACHED})


class EventType(enum.StrEnum):
    PULL_STARTED = "pull.started"
    PULL_PROGRESS = "pull.progress"
    PULL_COMPLETED = "pull.completed"
    PULL_FAILED = "pull.failed"
    LAYER_STARTED = "layer.started"
    LAYER_PROGRESS = "layer.progress"
    LAYER_COMPLETED = "layer.completed"
    # Added by this project; clients of the original ignore unknown types.
    PULL_STALLED = "pull.stalled"
    LAYER_STALLED = "layer.stalled"
    PULL_STALE = "pull.stale"
    # A source (containerd) stopped or started answering; these carry no pull.
    SOURCE_UNAVAILABLE = "source.unavailable"
    SOURCE_AVAILABLE = "source.available"


@dataclass(frozen=True, slots=True)
class LayerState:
    digest: str
    media_type: str = ""
    total_bytes: int = 0
    downloaded_bytes: int = 0
    total_known: bool = False
    started_at: int | None = None
    updated_at: int | None = None
    state: LayerPhase | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "digest": self.digest,
            "mediaType": self.media_type,
            "totalBytes": self.total_bytes,
            "downloadedBytes": self.downloaded_bytes,
            "totalKnown": self.total_known,
        }
        if self.started_at is not None:
            out["startedAt"] = format_rfc3339(self.started_at)
        if self.updated_at is not None:
            out["updatedAt"] = format_rfc3339(self.updated_at)
        if self.state is not None:
            out["state"] = self.state.value
        return out


@dataclass(frozen=True, slots=True)
class PullState:
    image_ref: str
    started_at: int | None
    layers: tuple[LayerState, ...] = ()
    total_known: bool = False
    error: str | None = None
    # The manifest or index digest the image resolves to, when the reporter knows it. It
    # identifies the pull instead of imageRef, so imageRef may change (digest -> tag).
    digest: str | None = None

    @property
    def identity(self) -> str:
        return self.digest or self.image_ref

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "imageRef": self.image_ref,
            "startedAt": format_rfc3339(self.started_at) if self.started_at is not None
            else "0001-01-01T00:00:00Z",
            "totalKnown": self.total_known,
            "layers": [layer.to_json() for layer in self.layers],
        }
        if self.error:
            out["error"] = self.error
        if self.digest:
            out["digest"] = self.digest
        return out


@dataclass(frozen=True, slots=True)
class AgentReport:
    node_name: str
    timestamp: int  # the reporter's clock
    pulls: tuple[PullState, ...] = ()
    # The collector's clock when the report arrived (set by the collector, kept in
    # recordings): the one time line on which nodes whose clocks disagree can be compared.
    received_at: int | None = None
    # The document this report was decoded from (collector.wire's), kept so that its line
    # is written again without formatting every time in it; not part of its value.
    wire: Any = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "nodeName": self.node_name,
            "timestamp": format_rfc3339(self.timestamp),
            "pulls": [pull.to_json() for pull in self.pulls],
        }
        if self.received_at is not None:
            out["receivedAt"] = format_rfc3339(self.received_at)
        return out

    def dumps(self) -> str:
        """One line of compact JSON: :meth:`to_json` (UTF-8 as is, not escaped)."""
        try:
            return _wire.dumps(self)
        except UnicodeEncodeError:
            # A lone surrogate, in a report built in code (a decoded one has none): escaped,
            # it is still one line, and the decoder names it.
            return json.dumps(self.to_json(), separators=(",", ":"))


# --- decoding ---------------------------------------------------------------------------


def _get(obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...],
         default: Any = None, *, required: bool = False) -> Any:
    if key not in obj or obj[key] is None:
        if required:
            raise ReportError(f"{path}{key}", "is missing")
        return default
    value = obj[key]
    # bool is an int in Python; JSON true is never a byte count.
    if isinstance(value, bool) and kind is not bool and bool not in (
        kind if isinstance(kind, tuple) else (kind,)
    ):
        raise ReportError(f"{path}{key}", f"expected {_kind_name(kind)}, got {json.dumps(value)}")
    if not isinstance(value, kind):
        raise ReportError(f"{path}{key}", f"expected {_kind_name(kind)}, got {_short(value)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "an array",
             dict: "an object"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _time(obj: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> int | None:
    text = _get(obj, key, path, str, required=required)
    if text is None:
        return None
    if len(text) > 40:  # no time is this long; keep the message short
        raise ReportError(f"{path}{key}", f"not an RFC 3339 time: {_short(text)} "
                                          f"({len(text)} characters)")
    try:
        value = parse_rfc3339(text)
    except ValueError as exc:
        raise ReportError(f"{path}{key}", str(exc)) from exc
    if value is not None and not MIN_TIME_NS <= value < MAX_TIME_NS:
        raise ReportError(f"{path}{key}", f"{text} is not between 1970 and 2200; "
                                          "is the reporter's clock set?")
    if value is None and required:
        raise ReportError(f"{path}{key}", "is the zero time; send the time of the report")
    return value


def _bytes(obj: Mapping[str, Any], key: str, path: str) -> int:
    value: int = _get(obj, key, path, int, 0)
    if value < 0:
        raise ReportError(f"{path}{key}", f"must not be negative, got {value}")
    if value > MAX_BYTES:
        raise ReportError(f"{path}{key}", f"{value} is over {MAX_BYTES} (256 TiB)")
    return value


def _name(obj: Mapping[str, Any], key: str, path: str, default: str | None = None, *,
          required: bool = False, free_text: bool = False) -> Any:
    """A string field: valid UTF-8, and, unless free text, no control characters."""
    value = _get(obj, key, path, str, default, required=required)
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ReportError(f"{path}{key}", "is not valid Unicode (a lone surrogate)") from exc
    bad = (_CONTROL_IN_TEXT if free_text else _CONTROL).search(value)
    if bad is not None:
        raise ReportError(f"{path}{key}", f"contains the control character {bad.group()!r}")
    return value


def _layer(obj: Any, path: str) -> LayerState:
    if not isinstance(obj, dict):
        raise ReportError(path.rstrip("."), f"expected an object, got {_short(obj)}")
    digest = _name(obj, "digest", path, required=True)
    if not digest:
        raise ReportError(f"{path}digest", "must not be empty")
    total = _bytes(obj, "totalBytes", path)
    downloaded = _bytes(obj, "downloadedBytes", path)
    total_known = _get(obj, "totalKnown", path, bool, total > 0)
    # A known total bounds the bytes; past it the reporter contradicts itself.
    if total_known and downloaded > total:
        raise ReportError(f"{path}downloadedBytes",
                          f"{downloaded} exceeds totalBytes {total}")
    state_text = _name(obj, "state", path)
    state = None
    if state_text:
        try:
            state = LayerPhase(state_text)
        except ValueError as exc:
            choices = ", ".join(p.value for p in LayerPhase)
            raise ReportError(f"{path}state",
                              f"unknown state {state_text!r}; expected one of {choices}") from exc
    return LayerState(
        digest=digest,
        media_type=_name(obj, "mediaType", path, ""),
        total_bytes=total,
        downloaded_bytes=downloaded,
        total_known=total_known,
        started_at=_time(obj, "startedAt", path),
        updated_at=_time(obj, "updatedAt", path),
        state=state,
    )


def _pull(obj: Any, path: str) -> PullState:
    if not isinstance(obj, dict):
        raise ReportError(path.rstrip("."), f"expected an object, got {_short(obj)}")
    image_ref = _name(obj, "imageRef", path, required=True)
    if not image_ref:
        raise ReportError(f"{path}imageRef", "must not be empty")
    raw_layers = _get(obj, "layers", path, list, [])
    layers = tuple(_layer(item, f"{path}layers[{i}].") for i, item in enumerate(raw_layers))
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        if layer.digest in seen:
            raise ReportError(f"{path}layers[{i}].digest",
                              f"{layer.digest} appears twice in one pull")
        seen.add(layer.digest)
    error = _name(obj, "error", path, free_text=True)
    return PullState(
        image_ref=image_ref,
        started_at=_time(obj, "startedAt", path),
        layers=layers,
        total_known=_get(obj, "totalKnown", path, bool, False),
        error=error or None,
        digest=_name(obj, "digest", path) or None,
    )


def decode_report(obj: Any) -> AgentReport:
    """Validate a parsed JSON value as an AgentReport; ReportError names the bad field."""
    if not isinstance(obj, dict):
        raise ReportError("", f"a report must be a JSON object, got {_short(obj)}")
    node = _name(obj, "nodeName", "", required=True)
    if not node:
        raise ReportError("nodeName", "must not be empty")
    if len(node) > MAX_NODE_NAME:
        raise ReportError("nodeName", f"is {len(node)} characters; at most {MAX_NODE_NAME}")
    timestamp = _time(obj, "timestamp", "", required=True)
    assert timestamp is not None
    raw_pulls = _get(obj, "pulls", "", list, [])
    pulls = tuple(_pull(item, f"pulls[{i}].") for i, item in enumerate(raw_pulls))
    return AgentReport(node_name=node, timestamp=timestamp, pulls=pulls,
                       received_at=_time(obj, "receivedAt", ""))


def parse_report(text: str | bytes) -> AgentReport:
    """Decode a report from JSON text (bytes must be UTF-8)."""
    return _wire.parse_report(text)


def reference_parse_report(text: str | bytes) -> AgentReport:
    """:func:`parse_report` by the validator alone: what the fast decoder is held to."""
    return decode_report(load_json(text))


def check_clock(report: AgentReport, now: int, max_ahead_ns: int = MAX_AHEAD_NS) -> None:
    """Refuse a report dated more than ``max_ahead_ns`` after ``now`` (the collector's clock).

    Only ahead: a node whose clock is behind is placed on the collector's time line by the
    arrival time, and one report from the past is at worst dropped as out of order.
    """
    ahead = report.timestamp - now
    if ahead <= max_ahead_ns:
        return
    hours = ahead / 3_600_000_000_000
    span = f"{hours / 24:.0f} days" if hours >= 48 else f"{hours:.1f} hours"
    raise ReportError("timestamp", f"{format_rfc3339(report.timestamp)} is {span} ahead of the "
                                   f"collector's clock ({format_rfc3339(now)}); reports over "
                                   f"{max_ahead_ns // 3_600_000_000_000} hours ahead are "
                                   "refused: set the node's clock (NTP), or the collector's")


# --- outgoing -----------------------------------------------------------------------------


def _opt_time(ns: int | None) -> str | None:
    return format_rfc3339(ns) if ns is not None else None


@dataclass(slots=True)
class LayerStatus:
    pull_id: str
    digest: str
    media_type: str
    total_bytes: int
    downloaded_bytes: int
    bytes_per_sec: float | None
    percent: float | None
    started_at: int | None
    completed_at: int | None
    total_known: bool
    status: LayerStatusKind

    def to_json(self) -> dict[str, Any]:
        return {
            "pullId": self.pull_id,
            "digest": self.digest,
            "mediaType": self.media_type,
            "totalBytes": self.total_bytes,
            "downloadedBytes": self.downloaded_bytes,
            "bytesPerSec": self.bytes_per_sec,
            "percent": self.percent,
            "startedAt": _opt_time(self.started_at),
            "completedAt": _opt_time(self.completed_at),
            "totalKnown": self.total_known,
            "status": self.status.value,
        }


@dataclass(slots=True)
class PullStatus:
    id: str
    node_name: str
    image_ref: str
    total_bytes: int
    downloaded_bytes: int
    cached_bytes: int
    bytes_per_sec: float | None
    eta_seconds: float | None
    percent: float | None
    layer_count: int
    layers_done: int
    started_at: int
    completed_at: int | None
    error: str | None
    total_known: bool
    status: PullStatusKind
    layers: list[LayerStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "nodeName": self.node_name,
            "imageRef": self.image_ref,
            "totalBytes": self.total_bytes,
            "downloadedBytes": self.downloaded_bytes,
            "cachedBytes": self.cached_bytes,
            "bytesPerSec": self.bytes_per_sec,
            "etaSeconds": self.eta_seconds,
            "percent": self.percent,
            "layerCount": self.layer_count,
            "layersDone": self.layers_done,
            "startedAt": format_rfc3339(self.started_at),
            "completedAt": _opt_time(self.completed_at),
            "error": self.error,
            "totalKnown": self.total_known,
            "status": self.status.value,
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass(slots=True)
class PullEvent:
    timestamp: int
    type: EventType
    node_name: str
    pull: PullStatus
    digest: str | None = None  # the layer, for layer.* events

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": SCHEMA_VERSION,
            "timestamp": format_rfc3339(self.timestamp),
            "type": self.type.value,
            "nodeName": self.node_name,
            "pull": self.pull.to_json(),
        }
        if self.digest is not None:
            out["digest"] = self.digest
        return out


@dataclass(slots=True)
class SourceEvent:
    """A gap in what a source can see: containerd went away, or came back."""

    timestamp: int
    type: EventType
    node_name: str
    source: str
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schemaVersion": SCHEMA_VERSION,
            "timestamp": format_rfc3339(self.timestamp),
            "type": self.type.value,
            "nodeName": self.node_name,
            "source": self.source,
            "error": self.message,
            "pull": None,
        }


# The fast decoder and encoder build on the types above, so they come in last (whichever of
# the two modules is imported first, the other finds what it needs).
from collector import wire as _wire  # noqa: E402
