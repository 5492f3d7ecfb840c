"""Properties of the report decoder, ``collector.model.parse_report``, over generated input.

A valid report survives the trip through JSON unchanged; every way of breaking one is a
``ReportError`` that names the bad field; and no byte string makes the decoder raise
anything else.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collector.errors import ReportError
from collector.model import AgentReport, parse_report
from tests.collector.malformed import (
    FIXED,
    TRIED,
    Broken,
    byte_breaks,
    field_breaks,
    reports,
    structure_breaks,
)


@settings(FIXED, max_examples=200)
@given(reports())
def test_a_valid_report_survives_the_round_trip(report: AgentReport):
    assert parse_report(report.dumps()) == report
    assert parse_report(json.dumps(report.to_json(), indent=1).encode()) == report


def test_a_pull_that_started_at_the_epoch_keeps_its_start():
    report = parse_report('{"nodeName": "n", "timestamp": "1970-01-01T00:00:01Z", "pulls": '
                          '[{"imageRef": "a", "startedAt": "1970-01-01T00:00:00Z"}]}')
    assert report.pulls[0].started_at == 0
    assert parse_report(report.dumps()) == report


def _check(case: Broken, name: str) -> ReportError:
    TRIED[name] += 1
    with pytest.raises(ReportError) as caught:
        parse_report(case.body)
    exc = caught.value
    message = str(exc)
    if case.field is not None:
        assert exc.field == case.field, (case.family, message)
        assert message.startswith(f"{case.field}: " if case.field else "")
    assert case.words in message, (case.family, message)
    assert "Traceback" not in message
    return exc


def _run(strategy: st.SearchStrategy[Broken], examples: int, name: str,
         families: set[str]) -> None:
    seen: set[str] = set()

    @settings(FIXED, max_examples=examples)
    @given(strategy)
    def check(case: Broken) -> None:
        seen.add(case.family.split(" ")[0] if case.family.startswith("bad ") else case.family)
        _check(case, name)

    check()
    # The strategy really made each family: one that silently stopped would leave the
    # test passing on less.
    assert families <= seen


def test_a_broken_field_is_a_report_error_naming_it():
    _run(field_breaks(), 400, "parse: field",
         {"bad", "field removed", "nested value", "nested too deeply"})


def test_a_report_that_does_not_hold_together_names_where():
    _run(structure_breaks(), 200, "parse: structure",
         {"downloaded over total", "digest twice", "pull not an object", "layer not an object",
          "non-JSON token"})


def test_a_body_that_is_not_a_report_says_why():
    _run(byte_breaks(), 150, "parse: bytes", {"cut short", "not UTF-8", "not an object"})


@settings(FIXED, max_examples=300)
@given(st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
@example(b"")
@example(b"\xef\xbb\xbf")  # a UTF-8 byte order mark and nothing else
@example(b"\xff\xfe{\x00}\x00")  # UTF-16: not what a report is sent in
@example(b"[" * 100_000)
@example(b"1" * 5000)
def test_arbitrary_bytes_raise_nothing_but_report_error(data: bytes):
    TRIED["parse: arbitrary bytes"] += 1
    message = "accepted"
    try:
        parse_report(data)
    except ReportError as exc:
        message = str(exc)
    assert message


@pytest.mark.parametrize(("body", "message"), [
    (b"", "the body is empty; send a JSON report"),
    (b"  \n", "the body is empty; send a JSON report"),
    (b'{"nodeName": "n\xff"}',
     "the body is not UTF-8: byte 0xff at offset 15 (invalid start byte)"),
    (b"\xff\xfe{\x00}\x00", "the body is not UTF-8: byte 0xff at offset 0 (invalid start byte)"),
    (b'{"nodeName": "n", "timestamp": "2026-01-01T00:00:00Z", "x": [1, NaN]}',
     "x[1]: NaN is not valid JSON; send a number, or leave the field out"),
    (b'{"nodeName": "n", "timestamp": "2026-01-01T00:00:00Z", "pulls": [{"imageRef": "a", '
     b'"layers": [{"digest": "d", "totalBytes": -Infinity}]}]}',
     "pulls[0].layers[0].totalBytes: -Infinity is not valid JSON; send a number, or leave the "
     "field out"),
    (b'{"nodeName": "n", "timestamp": "2026-01-01T00:00:00Z", "a b": {"c": 1e999}}',
     '["a b"].c: 1e999 is too large for a number'),
    (b'{"nodeName": "n", "timestamp": "2026-01-01T00:00:00Z", "pulls": [{"imageRef": "a", '
     b'"layers": [{"digest": "d", "totalBytes": ' + b"1" * 5000 + b"}]}]}",
     "pulls[0].layers[0].totalBytes: an integer of 5000 digits is out of range"),
    (b'{"nodeName": "n", "timestamp": "2026-01-01T00:00:00Z\\n"}',
     "timestamp: not an RFC 3339 time: '2026-01-01T00:00:00Z\\n' (expected e.g. "
     "2024-05-01T12:00:00.5Z)"),
    ('{"nodeName": "n", "timestamp": "\u0662\u0660\u0662\u0666-01-01T00:00:00Z"}'.encode(),
     "timestamp: not an RFC 3339 time: '\u0662\u0660\u0662\u0666-01-01T00:00:00Z' (expected e.g. "
     "2024-05-01T12:00:00.5Z)"),
    (b'{"nodeName": "n", "timestamp": "' + b"2" * 300 + b'"}',
     "timestamp: not an RFC 3339 time: '222222222222222222222222222222222222..."
     " (300 characters)"),
    (b'{"nodeName": "n", "timestamp": "2026-01-01T00:00:00Z", "pulls": [{"imageRef": "a", '
     b'"layers": [{"digest": "d", "totalBytes": 0, "totalKnown": true, '
     b'"downloadedBytes": 5}]}]}',
     "pulls[0].layers[0].downloadedBytes: 5 exceeds totalBytes 0"),
])
def test_what_the_decoder_says_about_a_body(body: bytes, message: str):
    with pytest.raises(ReportError) as caught:
        parse_report(body)
    assert str(caught.value) == message


def test_a_utf8_byte_order_mark_is_allowed():
    report = parse_report(b'\xef\xbb\xbf{"nodeName": "n", "timestamp": "2026-01-01T00:00:00Z"}')
    assert (report.node_name, report.timestamp) == ("n", 1_767_225_600 * 10**9)
