"""The fast report decoder and encoder, ``collector.wire``, held to the reference validator.

``parse_report`` decodes with msgspec and hands anything unusual to ``decode_report`` over
``load_json`` (the reference); the two must agree on every input: an equal report, or a
``ReportError`` with the same text. Valid reports must take the fast path outright.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import timefmt, wire
from collector.errors import ReportError
from collector.model import (
    AgentReport,
    LayerPhase,
    LayerState,
    PullState,
    parse_report,
    reference_parse_report,
)
from collector.timefmt import NS, format_rfc3339, parse_rfc3339
from tests.collector.malformed import FIXED, TRIED, broken_reports, reports

T = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z
HEAD = '{"nodeName":"n","timestamp":"2026-01-01T00:00:00Z"'
RECORDING = Path(__file__).resolve().parents[2] / "data" / "recording.jsonl"


def outcome(decode: object, body: str | bytes) -> AgentReport | str:
    """The report ``decode`` makes of ``body``, or the text of its ReportError."""
    assert callable(decode)
    try:
        report = decode(body)
    except ReportError as exc:
        return f"refused: {exc}"
    assert isinstance(report, AgentReport)
    return report


def assert_agree(body: str | bytes) -> AgentReport | str:
    fast = outcome(parse_report, body)
    assert fast == outcome(reference_parse_report, body), body
    return fast


def with_layer(fields: str) -> str:
    return HEAD + ',"pulls":[{"imageRef":"a","layers":[{"digest":"d",' + fields + "}]}]}"


# --- generated ---------------------------------------------------------------------------

ENCODINGS = {
    "dumps": lambda r: r.dumps(),
    "dumps as bytes": lambda r: r.dumps().encode(),
    # What dumps wrote before (non-ASCII escaped): lines of older recordings.
    "escaped": lambda r: json.dumps(r.to_json(), separators=(",", ":")).encode(),
    "indented": lambda r: json.dumps(r.to_json(), indent=1, ensure_ascii=False),
}


@settings(FIXED, max_examples=200)
@given(reports(), st.sampled_from(sorted(ENCODINGS)))
def test_a_valid_report_takes_the_fast_path_and_decodes_equal(report: AgentReport, how: str):
    body = ENCODINGS[how](report)
    assert wire.decode_fast(body) == report
    assert reference_parse_report(body) == report
    assert parse_report(body) == report


@settings(FIXED, max_examples=300)
@given(broken_reports)
def test_a_broken_report_is_refused_in_the_reference_words(case):
    TRIED["wire: broken"] += 1
    assert isinstance(assert_agree(case.body), str)


# Tokens that JSON or the validator treat specially, spliced in anywhere.
SPLICES = ["NaN", "-Infinity", "1e999", "18446744073709551616", "-1", "1.0", "true", "null",
           '"\\ud800"', '"\\u0000"', '"\\t"', "\x7f", "\ufeff", "\\", '"', ",", ":", "{}", "[]",
           '"nodeName":"x",', '"extra":[1,{"a":NaN}],', '"state":"cached",', "0001-01-01T00:00:00Z",
           ".5", "+01:00", "z", "\u0661", "\ud800"]


@st.composite
def mutated_bodies(draw: st.DrawFn) -> str | bytes:
    """A valid report's text with one edit: a character dropped, replaced or inserted, or
    a special token put in, anywhere; sometimes as bytes, sometimes as text."""
    text = draw(reports(min_pulls=draw(st.integers(0, 1)), min_layers=1)).dumps()
    at = draw(st.integers(0, len(text)))
    edit = draw(st.sampled_from(["drop", "replace", "insert", "splice"]))
    if edit == "drop":
        text = text[:at] + text[at + 1:]
    else:
        new = (draw(st.sampled_from(SPLICES)) if edit == "splice"
               else draw(st.characters(codec="utf-8") | st.sampled_from(list('{}[],:"\\0.eE-'))))
        text = text[:at] + new + text[at + (edit == "replace"):]
    if draw(st.booleans()):
        try:
            return text.encode()
        except UnicodeEncodeError:  # a lone surrogate put in: only text can hold it
            return text
    return text


@settings(FIXED, max_examples=500)
@given(mutated_bodies())
def test_a_mutated_report_gets_the_same_answer_from_both(body: str | bytes):
    TRIED["wire: mutated"] += 1
    assert_agree(body)


# --- corners, by hand ---------------------------------------------------------------------

LAYER_D = LayerState(digest="d")


@pytest.mark.parametrize(("body", "expected"), [
    # Duplicate keys: the last wins, as in Python's json; a null there is a missing field.
    ('{"nodeName":"a","nodeName":"b","timestamp":"2026-01-01T00:00:00Z"}', AgentReport("b", T)),
    ('{"nodeName":5,"nodeName":"b","timestamp":"2026-01-01T00:00:00Z"}', AgentReport("b", T)),
    ('{"nodeName":"a","nodeName":null,"timestamp":"2026-01-01T00:00:00Z"}',
     "refused: nodeName: is missing"),
    (HEAD + ',"x":[1,NaN]}',
     "refused: x[1]: NaN is not valid JSON; send a number, or leave the field out"),
    (HEAD + ',"x":1}', AgentReport("n", T)),  # an unknown field is ignored
    (with_layer('"totalBytes":1e999'),
     "refused: pulls[0].layers[0].totalBytes: 1e999 is too large for a number"),
    (with_layer('"totalBytes":18446744073709551616'),
     "refused: pulls[0].layers[0].totalBytes: 18446744073709551616 is over 281474976710656 "
     "(256 TiB)"),
    (with_layer('"totalBytes":1.0'),
     "refused: pulls[0].layers[0].totalBytes: expected an integer, got 1.0"),
    (with_layer('"totalBytes":true'),
     "refused: pulls[0].layers[0].totalBytes: expected an integer, got true"),
    (with_layer('"totalBytes":5,"totalKnown":null'),
     AgentReport("n", T, (PullState("a", None, (LayerState("d", total_bytes=5,
                                                           total_known=True),)),))),
    (with_layer('"state":""'), AgentReport("n", T, (PullState("a", None, (LAYER_D,)),))),
    (with_layer('"state":"Cached"'),
     "refused: pulls[0].layers[0].state: unknown state 'Cached'; expected one of downloading, "
     "completed, cached, failed"),
    (b"\xef\xbb\xbf" + HEAD.encode() + b"}", AgentReport("n", T)),
    ("\ufeff" + HEAD + "}",  # text: the mark is not stripped from text
     "refused: invalid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 "
     "(char 0)"),
    (HEAD.encode("utf-16") + "}".encode("utf-16-le"),
     "refused: the body is not UTF-8: byte 0xff at offset 0 (invalid start byte)"),
    ('{"nodeName":"\\ud800","timestamp":"2026-01-01T00:00:00Z"}',
     "refused: nodeName: is not valid Unicode (a lone surrogate)"),
    ('{"nodeName":"a\ud800","timestamp":"2026-01-01T00:00:00Z"}',
     "refused: nodeName: is not valid Unicode (a lone surrogate)"),
    ('{"nodeName":"\\ud83d\\ude00","timestamp":"2026-01-01T00:00:00Z"}',
     AgentReport("\U0001f600", T)),
    (HEAD + "} x", "refused: invalid JSON: Extra data: line 1 column 53 (char 52)"),
    (HEAD + "} \r\n\t", AgentReport("n", T)),
    (HEAD + ',"pulls":[{"imageRef":"a\x7f"}]}',
     "refused: pulls[0].imageRef: contains the control character '\\x7f'"),
    (with_layer('"mediaType":"m"').replace('"d"', '"\\u0000"'),
     "refused: pulls[0].layers[0].digest: contains the control character '\\x00'"),
    (HEAD + ',"pulls":[{"imageRef":"a","error":"a\\tb\\nc"}]}',
     AgentReport("n", T, (PullState("a", None, error="a\tb\nc"),))),
    (HEAD + ',"pulls":[{"imageRef":"a","startedAt":"0001-01-01T00:00:00Z"}]}',
     AgentReport("n", T, (PullState("a", None),))),
    ('{"nodeName":"n","timestamp":"2026-01-01T01:00:00.5+01:00"}',
     AgentReport("n", T + NS // 2)),
    ('{"nodeName":"n","timestamp":"2026-01-01t00:00:00.000000001z"}', AgentReport("n", T + 1)),
    ('{"nodeName":"n","timestamp":"2026-01-01T00:00:00.1234567890Z"}',
     "refused: timestamp: not an RFC 3339 time: '2026-01-01T00:00:00.1234567890Z' "
     "(expected e.g. 2024-05-01T12:00:00.5Z)"),
    # The seconds of this time are known from the timestamp; its fraction is not ASCII.
    (with_layer('"startedAt":"2026-01-01T00:00:00.\u0661Z"'),
     "refused: pulls[0].layers[0].startedAt: not an RFC 3339 time: "
     "'2026-01-01T00:00:00.\u0661Z' (expected e.g. 2024-05-01T12:00:00.5Z)"),
    (with_layer('"startedAt":"2026-01-01T00:00:01.25Z","updatedAt":"2026-01-01T00:00:01.25Z"'),
     AgentReport("n", T, (PullState("a", None, (LayerState(
         "d", started_at=T + 1_250_000_000, updated_at=T + 1_250_000_000),)),))),
])
def test_a_corner_of_json_gets_the_reference_answer(body: str | bytes,
                                                   expected: AgentReport | str):
    assert assert_agree(body) == expected


# --- times --------------------------------------------------------------------------------


@FIXED
@given(st.integers(0, 7_258_118_399), st.integers(0, NS - 1), st.integers(1, 9),
       st.sampled_from(["T", "t", " "]), st.sampled_from(["Z", "z", "+00:00", "-02:30"]))
def test_a_time_read_twice_reads_the_same_as_by_the_pattern(seconds: int, frac: int,
                                                             digits: int, sep: str, zone: str):
    base = format_rfc3339(seconds * NS)[:19].replace("T", sep)
    fraction = str(frac).rjust(9, "0")[:digits]
    text = f"{base}.{fraction}{zone}"
    offset = {"Z": 0, "z": 0, "+00:00": 0, "-02:30": -(2 * 3600 + 30 * 60)}[zone]
    expected = (seconds - offset) * NS + int(fraction) * 10 ** (9 - digits)
    assert parse_rfc3339(text) == expected
    assert parse_rfc3339(text) == expected  # the second time from the cached seconds


def test_the_caches_of_times_stay_bounded():
    for i in range(3 * wire._TIMES_MAX):
        ns = T + i * 1_000_000_007  # a different second and fraction each time
        assert parse_report(f'{{"nodeName":"n","timestamp":"{format_rfc3339(ns)}"}}') \
            == AgentReport("n", ns)
    assert 0 < len(wire._TIMES) <= wire._TIMES_MAX
    assert 0 < len(timefmt._UTC_SECONDS) <= timefmt._UTC_SECONDS_MAX
    assert 0 < len(timefmt._FORMATTED) <= timefmt._FORMATTED_MAX


def test_a_media_type_is_one_object_across_reports_and_the_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(wire, "_MEDIA", {})
    monkeypatch.setattr(wire, "_MEDIA_MAX", 3)

    def media_of(mt: str, node: str = "n") -> str:
        body = (f'{{"nodeName":"{node}","timestamp":"{format_rfc3339(T)}","pulls":[{{'
                f'"imageRef":"app:1","layers":[{{"digest":"sha256:{"a" * 64}",'
                f'"mediaType":"{mt}","totalBytes":10,"downloadedBytes":1}}]}}]}}')
        (layer,) = parse_report(body).pulls[0].layers
        assert layer.media_type == mt
        return layer.media_type

    first = media_of("application/vnd.oci.image.layer.v1.tar+gzip")
    assert media_of("application/vnd.oci.image.layer.v1.tar+gzip", "m") is first
    for i in range(5):  # more names than the cache holds: decoded all the same
        media_of(f"x/{i}")
    assert len(wire._MEDIA) == 3


# --- encoding -----------------------------------------------------------------------------


@FIXED
@given(reports())
def test_dumps_writes_the_to_json_document_on_one_line(report: AgentReport):
    line = report.dumps()
    assert "\n" not in line
    assert json.loads(line) == report.to_json()
    assert parse_report(line) == report


def test_dumps_by_hand():
    report = AgentReport("nœud", T + 1_500_000_000, (
        PullState("img", None, (
            LayerState("d1", "m", 10, 4, True, T, T + 1, LayerPhase.DOWNLOADING),
            LayerState("d2"),
        ), error="x"),
        PullState("b", T, digest="sha256:1"),
    ), received_at=T + 2 * NS)
    assert report.dumps() == (
        '{"nodeName":"nœud","timestamp":"2026-01-01T00:00:01.5Z","pulls":['
        '{"imageRef":"img","startedAt":"0001-01-01T00:00:00Z","totalKnown":false,"layers":['
        '{"digest":"d1","mediaType":"m","totalBytes":10,"downloadedBytes":4,"totalKnown":true,'
        '"startedAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00.000000001Z",'
        '"state":"downloading"},'
        '{"digest":"d2","mediaType":"","totalBytes":0,"downloadedBytes":0,"totalKnown":false}'
        '],"error":"x"},'
        '{"imageRef":"b","startedAt":"2026-01-01T00:00:00Z","totalKnown":false,"layers":[],'
        '"digest":"sha256:1"}],"receivedAt":"2026-01-01T00:00:02Z"}')


def test_a_lone_surrogate_built_in_code_is_escaped_and_refused_on_reading():
    line = AgentReport("a\ud800", T).dumps()
    assert line == '{"nodeName": "a\\ud800", "timestamp": "2026-01-01T00:00:00Z", "pulls": []}' \
        .replace(": ", ":").replace(", ", ",")
    with pytest.raises(ReportError, match=r"^nodeName: is not valid Unicode \(a lone surrogate\)$"):
        parse_report(line)


def test_the_committed_recording_decodes_as_before_and_survives_dumps():
    lines = RECORDING.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 50
    for line in lines:
        report = parse_report(line)
        assert report == reference_parse_report(line)
        assert parse_report(report.dumps()) == report


def test_a_decoded_report_is_written_as_it_arrived_with_its_arrival_time():
    body = ('{"nodeName":"n1","timestamp":"2026-12-03T19:00:01.5+02:00","pulls":[{"imageRef":'
            '"app:1","startedAt":"2026-12-03T17:00:00Z","layers":[{"digest":"sha256:ab",'
            '"totalBytes":10,"downloadedBytes":4,"updatedAt":"2026-12-03T17:00:01.25Z"}]}]}')
    decoded = parse_report(body)
    arrived = AgentReport(decoded.node_name, decoded.timestamp, decoded.pulls,
                          1_796_317_202 * NS, decoded.wire)  # 2026-12-03T17:00:02Z
    line = arrived.dumps()
    # the reporter's own spelling of its times is kept; nothing is formatted again
    assert '"timestamp":"2026-12-03T19:00:01.5+02:00"' in line
    assert line.endswith(',"receivedAt":"2026-12-03T17:00:02Z"}')
    again = parse_report(line)
    assert again == arrived
    assert again.timestamp == 1_796_317_201 * NS + NS // 2
    assert again.received_at == 1_796_317_202 * NS
