"""Valid reports, and ways to break them, for the property tests and the HTTP fuzz.

Every broken body carries what the answer to it must name: the path of the bad field
(``pulls[0].layers[2].totalBytes``) or, where the body is not a report at all (not JSON,
not UTF-8, nested too deeply), the problem in words.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from collector.model import (
    MAX_BYTES,
    MAX_NODE_NAME,
    MAX_TIME_NS,
    MIN_TIME_NS,
    AgentReport,
    LayerPhase,
    LayerState,
    PullState,
)
from collector.timefmt import format_rfc3339

# How many broken inputs each test tried, by family; printed at the end of the run.
TRIED: Counter[str] = Counter()

# Derandomized, no example database: CI tries the same inputs every run, and a failure
# found once is found again. No deadline: the machine is shared and speed is not the point.
FIXED = settings(derandomize=True, database=None, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CONTROL = [chr(c) for c in range(0x20)] + ["\x7f"]
TEXT_CONTROL = [c for c in CONTROL if c not in "\t\n\r"]  # free text may hold these three

# --- valid reports ----------------------------------------------------------------------


def _text(exclude: list[str], min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8", exclude_characters=exclude),
                   min_size=min_size, max_size=max_size)


times = st.integers(MIN_TIME_NS, MAX_TIME_NS - 1) | st.sampled_from(
    [MIN_TIME_NS, MAX_TIME_NS - 1, 1_700_000_000_000_000_000])
opt_times = st.none() | times
names = _text(CONTROL, 1, 40)
node_names = names | _text(CONTROL, MAX_NODE_NAME, MAX_NODE_NAME)
free_text = _text(TEXT_CONTROL, 1, 60)
byte_counts = st.integers(0, MAX_BYTES) | st.sampled_from([0, 1, 1 << 20, MAX_BYTES])


@st.composite
def layers(draw: st.DrawFn) -> LayerState:
    known = draw(st.booleans())
    total = draw(byte_counts)
    # A known total bounds what was downloaded; an unknown one does not.
    downloaded = draw(st.integers(0, total) if known else byte_counts)
    return LayerState(
        digest=draw(names), media_type=draw(st.just("") | names), total_bytes=total,
        downloaded_bytes=downloaded, total_known=known, started_at=draw(opt_times),
        updated_at=draw(opt_times), state=draw(st.none() | st.sampled_from(LayerPhase)))


@st.composite
def pulls(draw: st.DrawFn, min_layers: int = 0) -> PullState:
    return PullState(
        image_ref=draw(names), started_at=draw(opt_times),
        layers=tuple(draw(st.lists(layers(), min_size=min_layers, max_size=4,
                                   unique_by=lambda layer: layer.digest))),
        total_known=draw(st.booleans()), error=draw(st.none() | free_text),
        digest=draw(st.none() | names))


@st.composite
def reports(draw: st.DrawFn, min_pulls: int = 0, min_layers: int = 0,
            timestamps: st.SearchStrategy[int] = times) -> AgentReport:
    return AgentReport(
        node_name=draw(node_names), timestamp=draw(timestamps),
        pulls=tuple(draw(st.lists(pulls(min_layers), min_size=min_pulls, max_size=3))),
        received_at=draw(opt_times))


# --- broken bodies ----------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    family: str
    body: bytes
    field: str | None  # the path the message must name; None: the body is not a report
    words: str  # what the message must also say ("" where the path is enough)


# The fields of each level of a report and the kind of value each holds; "!" = required.
TOP = {"nodeName": "node!", "timestamp": "time!", "pulls": "list", "receivedAt": "time"}
PULL = {"imageRef": "name!", "startedAt": "time", "totalKnown": "bool", "layers": "list",
        "error": "text", "digest": "name"}
LAYER = {"digest": "name!", "mediaType": "name", "totalBytes": "bytes",
         "downloadedBytes": "bytes", "totalKnown": "bool", "startedAt": "time",
         "updatedAt": "time", "state": "state"}

_RAW = "\x00raw\x00"  # stands for a token json.dumps cannot write (NaN, 1e400, 5000 digits)


def encode(doc: Any, raw: str | None = None) -> bytes:
    text = json.dumps(doc)
    if raw is not None:
        text = text.replace(json.dumps(_RAW), raw)
    return text.encode()


_strings = st.text(max_size=12)
_ints = st.integers(-(2**70), 2**70)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_lists = st.lists(st.integers(0, 9), max_size=3)
_objects = st.dictionaries(st.text(max_size=4), st.integers(0, 9), max_size=2)
_NOT_OBJECTS = st.none() | _strings | _ints | _floats | st.booleans() | _lists
_WRONG = {
    "str": _ints | _floats | st.booleans() | _lists | _objects,
    "bytes": _strings | _floats | st.booleans() | _lists | _objects,
    "bool": _strings | _ints | _floats | _lists | _objects,
    "list": _strings | _ints | _floats | st.booleans() | _objects,
}
_NON_STANDARD = ["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "9" * 5000, "-" + "7" * 4400]
_FLOAT_LITERALS = ["1.0", "1e3", "1E3", "0.0", "-0.0", "2.5", "1.5e2", "4e-1"]


def _base(kind: str) -> str:
    kind = kind.rstrip("!")
    return {"node": "str", "name": "str", "text": "str", "time": "str", "state": "str"}.get(
        kind, kind)


@st.composite
def _insert(draw: st.DrawFn, text: str, chars: st.SearchStrategy[str]) -> str:
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(chars) + text[at:]


_BAD_TIMES = [
    "", "yesterday", "2026-02-31T00:00:00Z", "2026-01-01T00:00:00+25:99", "2026-01-01T24:00:00Z",
    "2026-13-01T00:00:00Z", "2026-01-01T00:00:00Z\n", "\u0662\u0660\u0662\u0666-01-01T00:00:00Z",
    "2026-01-01", "2026-01-01T00:00:00", "2026-01-01T00:00:00.1234567890Z",
    "1970-01-01T00:00:00+00:01", "1969-12-31T23:59:59.999999999Z", "2200-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "2026-01-01T00:00:00.Z",
]


@st.composite
def bad_values(draw: st.DrawFn, kind: str) -> tuple[Any, str | None, str]:
    """A value wrong for a field of ``kind``: (JSON value, raw token or None, words)."""
    required = kind.endswith("!")
    kind = kind.rstrip("!")
    options = ["type"]
    if required:
        options += ["null"]
    options += {
        "bytes": ["negative", "huge", "float", "literal"],
        "node": ["control", "empty", "long", "surrogate"],
        "name": ["control", "surrogate"] + (["empty"] if required else []),
        "text": ["control", "surrogate"],
        "time": ["corrupt", "cut", "fixed", "range"] + (["zero"] if required else []),
        "state": ["unknown", "control"],
        "bool": ["literal"],
        "list": ["literal"],
    }[kind]
    how = draw(st.sampled_from(options))
    if how == "type":
        return draw(_WRONG[_base(kind)]), None, "expected"
    if how == "null":
        return None, None, "is missing"
    if how == "negative":
        return draw(st.integers(-(2**80), -1)), None, "must not be negative"
    if how == "huge":
        return draw(st.integers(MAX_BYTES + 1, 2**80) | st.sampled_from([2**63, 2**64])), \
            None, "is over"
    if how == "float":
        return _RAW, draw(st.sampled_from(_FLOAT_LITERALS)), "expected an integer"
    if how == "literal":
        token = draw(st.sampled_from(_NON_STANDARD))
        return _RAW, token, "digits" if len(token) > 20 else token
    if how == "control":
        chars = TEXT_CONTROL if kind == "text" else CONTROL
        return draw(_insert(draw(names), st.sampled_from(chars))), None, "control character"
    if how == "empty":
        return "", None, "must not be empty"
    if how == "long":
        return draw(_text(CONTROL, MAX_NODE_NAME + 1, 400)), None, "at most 253"
    if how == "surrogate":
        return draw(_insert(draw(names), st.just("\ud800"))), None, "not valid Unicode"
    if how == "unknown":
        phases = {p.value for p in LayerPhase}
        return draw(names.filter(lambda s: s not in phases)), None, "unknown state"
    if how == "zero":
        return "0001-01-01T00:00:00Z", None, "zero time"
    if how == "range":
        year = draw(st.integers(2200, 9999) | st.integers(1000, 1969))
        return f"{year:04d}-06-01T00:00:00Z", None, "between 1970 and 2200"
    if how == "fixed":
        return draw(st.sampled_from(_BAD_TIMES)), None, ""
    valid = format_rfc3339(draw(times))
    if how == "cut":  # every proper prefix lacks the zone, so none is a time
        return valid[:draw(st.integers(0, len(valid) - 1))], None, ""
    # Any character but an ASCII digit, put anywhere, breaks the fixed shape of the time.
    not_digit = st.characters(codec="utf-8").filter(lambda c: not ("0" <= c <= "9"))
    return draw(_insert(valid, not_digit)), None, ""


def _containers(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(path prefix, object, its fields) for the report, each pull and each layer."""
    found = [("", doc, TOP)]
    for i, pull in enumerate(doc["pulls"]):
        found.append((f"pulls[{i}].", pull, PULL))
        for j, layer in enumerate(pull["layers"]):
            found.append((f"pulls[{i}].layers[{j}].", layer, LAYER))
    return found


@st.composite
def field_breaks(draw: st.DrawFn) -> Broken:
    """One field of a valid report made wrong: removed, a wrong type, out of range..."""
    doc = draw(reports(min_pulls=draw(st.integers(0, 1)),
                       min_layers=draw(st.integers(0, 1)))).to_json()
    prefix, obj, fields = draw(st.sampled_from(_containers(doc)))
    key = draw(st.sampled_from(sorted(fields)))
    how = draw(st.sampled_from(["value", "value", "value", "remove", "deep"]))
    if how == "remove":
        required = [k for k, kind in fields.items() if kind.endswith("!")]
        key = draw(st.sampled_from(required))
        del obj[key]
        return Broken("field removed", encode(doc), prefix + key, "is missing")
    if how == "deep":
        depth = draw(st.integers(1, 200) | st.integers(20_000, 100_000))
        obj[key] = _RAW
        raw = '{"a":' * depth + "1" + "}" * depth
        if depth > 1000:
            return Broken("nested too deeply", encode(doc, raw), None, "nested too deeply")
        return Broken("nested value", encode(doc, raw), prefix + key, "expected")
    value, raw, words = draw(bad_values(fields[key]))
    obj[key] = value
    return Broken(f"bad {key}", encode(doc, raw), prefix + key, words)


@st.composite
def structure_breaks(draw: st.DrawFn) -> Broken:
    """A report whose fields are each fine but which does not hold together."""
    doc = draw(reports(min_pulls=1, min_layers=1)).to_json()
    how = draw(st.sampled_from(["overrun", "duplicate", "element", "unknown field"]))
    i = draw(st.integers(0, len(doc["pulls"]) - 1))
    pull = doc["pulls"][i]
    j = draw(st.integers(0, len(pull["layers"]) - 1))
    layer = pull["layers"][j]
    if how == "overrun":
        total = draw(st.integers(0, MAX_BYTES - 1))
        layer.update(totalKnown=True, totalBytes=total,
                     downloadedBytes=draw(st.integers(total + 1, MAX_BYTES)))
        return Broken("downloaded over total", encode(doc),
                      f"pulls[{i}].layers[{j}].downloadedBytes", "exceeds totalBytes")
    if how == "duplicate":
        at = draw(st.integers(0, len(pull["layers"])))
        pull["layers"].insert(at, dict(layer))
        second = j + 1 if at <= j else at  # the later of the two
        return Broken("digest twice", encode(doc), f"pulls[{i}].layers[{second}].digest",
                      "appears twice")
    if how == "element":
        value = draw(_NOT_OBJECTS)
        if draw(st.booleans()):
            at = draw(st.integers(0, len(doc["pulls"])))
            doc["pulls"].insert(at, value)
            return Broken("pull not an object", encode(doc), f"pulls[{at}]", "expected an object")
        at = draw(st.integers(0, len(pull["layers"])))
        pull["layers"].insert(at, value)
        return Broken("layer not an object", encode(doc), f"pulls[{i}].layers[{at}]",
                      "expected an object")
    # A token that is not JSON in a field the decoder does not know is still not JSON.
    prefix, obj, _ = draw(st.sampled_from(_containers(doc)))
    obj["extra"] = _RAW
    token = draw(st.sampled_from(_NON_STANDARD))
    return Broken("non-JSON token", encode(doc, token), prefix + "extra",
                  "digits" if len(token) > 20 else token)


_NOT_UTF8 = [*range(0x80, 0xC2), *range(0xF5, 0x100)]  # never valid where they are put


@st.composite
def byte_breaks(draw: st.DrawFn) -> Broken:
    """Bodies that are not a report at all: cut short, not UTF-8, not an object."""
    body = draw(reports()).dumps().encode()
    how = draw(st.sampled_from(["cut", "not utf-8", "top level"]))
    if how == "cut":
        cut = body[:draw(st.integers(0, len(body) - 1))]
        try:
            cut.decode("utf-8")
        except UnicodeDecodeError:  # cut inside a character
            return Broken("cut short", cut, None, "not UTF-8")
        return Broken("cut short", cut, None, "the body is empty" if not cut else "invalid JSON")
    if how == "not utf-8":
        at = draw(st.integers(0, len(body)))
        bad = bytes([draw(st.sampled_from(_NOT_UTF8))])
        return Broken("not UTF-8", body[:at] + bad + body[at:], None, "not UTF-8")
    return Broken("not an object", encode(draw(_NOT_OBJECTS)), "", "must be a JSON object")


broken_reports = field_breaks() | structure_breaks() | byte_breaks()
