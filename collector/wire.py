"""Reports decoded fast, with the reference validator as the judge of anything unusual.

msgspec reads the JSON straight into structs shaped like the wire format (field names as
the Go agent sends them), which settles syntax, UTF-8, types and duplicate keys (the last
one wins, as in Python's ``json``) in C. What types cannot say is checked here: no control
characters, times in range, byte counts in bounds, no digest twice in a pull, no more
downloaded than a known total. Anything the fast path does not accept outright (an unknown
field, a wrong type, a value out of range, a number JSON does not allow, a byte order mark)
is decoded again by :func:`collector.model.decode_report` over :func:`load_json`, so a
refusal says exactly what that validator says, and the two accept the same reports.
"""

from __future__ import annotations

import dataclasses

import msgspec

from collector.jsontext import load_json
from collector.model import (
    _CONTROL,
    _CONTROL_IN_TEXT,
    MAX_BYTES,
    MAX_NODE_NAME,
    MAX_TIME_NS,
    MIN_TIME_NS,
    AgentReport,
    LayerPhase,
    LayerState,
    PullState,
    decode_report,
)
from collector.timefmt import _FRACTION_UNIT, _UTC_SECONDS, NS, format_rfc3339, parse_rfc3339


# Every field is optional and may be null here: absent and null mean the same to the
# validator, and what is required is checked below. An unknown field is refused so that
# whatever it holds (NaN, 1e999, deep nesting) is judged by the validator.
# Encoding leaves out the fields that are None, as AgentReport.to_json does.
class _Layer(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True,
             gc=False):
    digest: str | None = None
    media_type: str | None = None
    total_bytes: int | None = None
    downloaded_bytes: int | None = None
    total_known: bool | None = None
    started_at: str | None = None
    updated_at: str | None = None
    state: str | None = None


class _Pull(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True,
            gc=False):
    image_ref: str | None = None
    started_at: str | None = None
    total_known: bool | None = None
    layers: list[_Layer] | None = None
    error: str | None = None
    digest: str | None = None


class _Report(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True,
              gc=False):
    node_name: str | None = None
    timestamp: str | None = None
    pulls: list[_Pull] | None = None
    received_at: str | None = None


_DECODER = msgspec.json.Decoder(_Report)
_PHASES = {phase.value: phase for phase in LayerPhase}
_MAX_SECONDS = MAX_TIME_NS // NS
# Times already read, as sent: a report repeats most of its times (a pull's start is its
# first layers' start; layers started together), and the next report of a node repeats
# those of its finished layers. Bounded: emptied when full.
_TIMES: dict[str, int] = {}
_TIMES_MAX = 8192
# Media types, one object each: a handful of them fill every layer of every report, and
# rows that share the object cross to the database writer once per batch (pickle's memo)
# instead of once per row. Bounded: the names come from the network.
_MEDIA: dict[str, str] = {}
_MEDIA_MAX = 256


# A layer is built by setting its slots one by one, as the dataclass's own __init__ does,
# without looking object.__setattr__ up for each (it is frozen): a third cheaper, and a
# report holds a dozen layers. The fields must be these, in this order.
_LAYER_FIELDS = ("digest", "media_type", "total_bytes", "downloaded_bytes", "total_known",
                 "started_at", "updated_at", "state")
if tuple(f.name for f in dataclasses.fields(LayerState)) != _LAYER_FIELDS:  # pragma: no cover
    raise RuntimeError("LayerState's fields changed: update collector.wire._new_layer")
(_set_digest, _set_media_type, _set_total_bytes, _set_downloaded_bytes, _set_total_known,
 _set_started_at, _set_updated_at, _set_state) = (
    getattr(LayerState, name).__set__ for name in _LAYER_FIELDS)
_new = object.__new__


def _new_layer(digest: str, media_type: str, total_bytes: int, downloaded_bytes: int,
               total_known: bool, started_at: int | None, updated_at: int | None,
               state: LayerPhase | None) -> LayerState:
    layer: LayerState = _new(LayerState)
    _set_digest(layer, digest)
    _set_media_type(layer, media_type)
    _set_total_bytes(layer, total_bytes)
    _set_downloaded_bytes(layer, downloaded_bytes)
    _set_total_known(layer, total_known)
    _set_started_at(layer, started_at)
    _set_updated_at(layer, updated_at)
    _set_state(layer, state)
    return layer


class _Unsure(Exception):  # noqa: N818 - a signal inside this module, never raised out of it
    """The fast path does not accept the report as it stands; the validator decides.

    Raised as a new instance each time: one instance raised again keeps every traceback.
    """


def parse_report(text: str | bytes) -> AgentReport:
    """Decode a report from JSON text (bytes must be UTF-8); ReportError names the bad field."""
    report = decode_fast(text)
    return decode_report(load_json(text)) if report is None else report


def decode_fast(text: str | bytes) -> AgentReport | None:
    """The report, if the fast path accepts it outright; None where the validator decides."""
    try:
        return _fast(text)
    except (_Unsure, msgspec.DecodeError, ValueError, RecursionError):
        # ValueError: a time that is not one, or a lone surrogate in str input.
        return None


def _may_hold_control(text: str | bytes) -> bool:
    """Whether a string in this JSON text can hold a control character at all.

    JSON strings cannot hold a raw one below 0x20: it comes only from an escape, which
    starts with a backslash, or is DEL (0x7f) itself. Without either, no field needs
    searching.
    """
    if isinstance(text, str):
        return "\\" in text or "\x7f" in text
    return b"\\" in text or b"\x7f" in text


def _name(value: str) -> str:
    # An ASCII string with no control character is printable; anything else is searched.
    if (value.isascii() and value.isprintable()) or _CONTROL.search(value) is None:
        return value
    raise _Unsure


def _time(text: str | None) -> int | None:
    """Nanoseconds of an optional time in range (None: absent, or Go's zero time)."""
    if text is None:
        return None
    ns = _TIMES.get(text)
    if ns is not None:
        return ns
    ns = _read_time(text)
    if ns is not None:
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        _TIMES[text] = ns
    return ns


def _read_time(text: str) -> int | None:
    # Go's usual form ("...:05.123456789Z") is read from the seconds collector.timefmt has
    # already converted for the same date and time of day.
    size = len(text)
    if 22 <= size <= 30 and text[19] == "." and text[-1] == "Z":
        seconds = _UTC_SECONDS.get(text[:19])
        if seconds is not None and 0 <= seconds < _MAX_SECONDS:
            digits = text[20:-1]
            if digits.isdigit() and digits.isascii():
                return seconds * NS + int(digits) * _FRACTION_UNIT[size - 21]
    ns = parse_rfc3339(text)
    if ns is not None and not MIN_TIME_NS <= ns < MAX_TIME_NS:
        raise _Unsure
    return ns


def _layer(raw: _Layer, check: bool) -> LayerState:
    digest = raw.digest
    if not digest:
        raise _Unsure
    total = raw.total_bytes
    if total is None:
        total = 0
    elif not 0 <= total <= MAX_BYTES:
        raise _Unsure
    downloaded = raw.downloaded_bytes
    if downloaded is None:
        downloaded = 0
    elif not 0 <= downloaded <= MAX_BYTES:
        raise _Unsure
    known = raw.total_known
    if known is None:
        known = total > 0
    if known and downloaded > total:
        raise _Unsure
    state = None
    if raw.state:
        state = _PHASES.get(raw.state)
        if state is None:
            raise _Unsure
    media = raw.media_type
    if media is None:
        media = ""
    else:
        known_media = _MEDIA.get(media)
        if known_media is not None:
            media = known_media
        elif len(_MEDIA) < _MEDIA_MAX:
            _MEDIA[media] = media
    if check:
        _name(digest)
        _name(media)
    return _new_layer(digest, media, total, downloaded, known, _time(raw.started_at),
                      _time(raw.updated_at), state)


def _pull(raw: _Pull, check: bool) -> PullState:
    image_ref = raw.image_ref
    if not image_ref:
        raise _Unsure
    layers: tuple[LayerState, ...] = ()
    if raw.layers:
        layers = tuple([_layer(item, check) for item in raw.layers])
        if len({layer.digest for layer in layers}) != len(layers):
            raise _Unsure
    error = raw.error or None
    digest = raw.digest or None
    if check:
        _name(image_ref)
        if digest is not None:
            _name(digest)
        if error is not None and _CONTROL_IN_TEXT.search(error) is not None:
            raise _Unsure
    return PullState(image_ref, _time(raw.started_at), layers, bool(raw.total_known), error,
                     digest)


def _fast(text: str | bytes) -> AgentReport:
    raw = _DECODER.decode(text)
    check = _may_hold_control(text)
    node = raw.node_name
    if not node or len(node) > MAX_NODE_NAME:
        raise _Unsure
    if check:
        _name(node)
    timestamp = _time(raw.timestamp)
    if timestamp is None:  # absent, or Go's zero time
        raise _Unsure
    pulls: tuple[PullState, ...] = ()
    if raw.pulls:
        pulls = tuple([_pull(item, check) for item in raw.pulls])
    return AgentReport(node, timestamp, pulls, _time(raw.received_at), raw)


# --- encoding ------------------------------------------------------------------------------

_ENCODER = msgspec.json.Encoder()
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # a pull's start, not known: what Go writes


def dumps(report: AgentReport) -> str:
    """``report`` as one line of compact JSON: a decoded report as it arrived (with its
    ``receivedAt``), any other :meth:`AgentReport.to_json`'s document; with
    non-ASCII characters as they are (UTF-8), not escaped."""
    fmt = format_rfc3339
    received = None if report.received_at is None else fmt(report.received_at)
    if isinstance(report.wire, _Report):
        # As it arrived, times as the reporter wrote them: it decodes to the same report.
        raw = msgspec.structs.replace(report.wire, received_at=received)
        return _ENCODER.encode(raw).decode()
    pulls = [
        _Pull(pull.image_ref,
              _GO_ZERO_TIME if pull.started_at is None else fmt(pull.started_at),
              pull.total_known,
              [_Layer(layer.digest, layer.media_type, layer.total_bytes,
                      layer.downloaded_bytes, layer.total_known,
                      None if layer.started_at is None else fmt(layer.started_at),
                      None if layer.updated_at is None else fmt(layer.updated_at),
                      None if layer.state is None else layer.state.value)
               for layer in pull.layers],
              pull.error or None, pull.digest or None)
        for pull in report.pulls]
    return _ENCODER.encode(_Report(report.node_name, fmt(report.timestamp), pulls,
                                   received)).decode()
