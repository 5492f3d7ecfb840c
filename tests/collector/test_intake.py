"""The lean report path on a real socket: plain posts answered by it, byte for byte;
everything else handed, with the connection, to aiohttp."""

from __future__ import annotations

import gzip
import socket
import time

import pytest

from collector import intake as intake_module
from tests.collector.reports import digest, layer, pull, report
from tests.collector.server import RunningCollector, SteppingClock


@pytest.fixture
def live(tmp_path):
    with RunningCollector(tmp_path / "intake.duckdb", gate_clock=SteppingClock()) as running:
        yield running


def body(node: str, seconds: float, nbytes: int = 1_000) -> bytes:
    return report(node, seconds, pull("app:1", 0, layer(digest(1), nbytes, 10_000))).dumps() \
        .encode()


def post(payload: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in ("POST /api/v1/report HTTP/1.1", "Host: x",
                                         f"Content-Length: {len(payload)}", *headers))
    return head.encode() + b"\r\n" + payload


def connect(live: RunningCollector) -> socket.socket:
    host, port = live.server.http_addr
    return socket.create_connection((host, port), timeout=10)


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` HTTP answers read off ``sock``: status, headers (lower-case names), body."""
    data = b""
    found = []
    while len(found) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            lines = data[:end].decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:])}
            length = int(headers["content-length"])
            if len(data) >= end + 4 + length:
                found.append((int(lines[0].split()[1]), headers,
                              data[end + 4:end + 4 + length]))
                data = data[end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(found)} answers")
        data += chunk
    return found


def intake(live: RunningCollector) -> intake_module.Intake:
    assert live.server.intake is not None
    return live.server.intake


def test_plain_posts_are_answered_by_the_lean_path_in_order(live):
    with connect(live) as sock:
        # two reports in one write (pipelined), then one sent a byte at a time
        sock.sendall(post(body("a", 1)) + post(body("b", 1)))
        answers = read_answers(sock, 2)
        third = post(body("a", 2))
        for i in range(len(third)):
            sock.send(third[i:i + 1])
        answers += read_answers(sock, 1)
    assert [(status, text) for status, _, text in answers] == [(200, b"")] * 3
    headers = answers[0][1]
    assert headers["content-length"] == "0"
    assert headers["server"] == "pulltrace"
    assert headers["date"].endswith(" GMT")
    assert intake(live).answered == 3
    assert intake(live).handed_over == 0
    assert live.collector.engine.active_count() == 2  # a's and b's pulls


def test_a_refusal_has_the_same_words_as_through_aiohttp(live):
    bad = b'{"nodeName": "", "timestamp": "2026-01-01T00:00:00Z"}'
    with connect(live) as sock:
        sock.sendall(post(bad))
        ((status, headers, text),) = read_answers(sock, 1)
    assert intake(live).handed_over == 0
    with connect(live) as sock:  # chunked: aiohttp's
        sock.sendall(b"POST /api/v1/report HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                     b"chunked\r\n\r\n" + f"{len(bad):x}\r\n".encode() + bad + b"\r\n0\r\n\r\n")
        ((status2, headers2, text2),) = read_answers(sock, 1)
    assert intake(live).handed_over == 1
    assert (status, text) == (status2, text2)
    assert status == 400
    assert text.startswith(b"invalid report: nodeName")
    assert headers["content-type"] == headers2["content-type"] == "text/plain; charset=utf-8"


def test_connection_close_is_honoured(live):
    with connect(live) as sock:
        sock.sendall(post(body("a", 1), "Connection: close"))
        ((status, headers, _),) = read_answers(sock, 1)
        assert (status, headers["connection"]) == (200, "close")
        assert sock.recv(1) == b""  # closed by the collector


def test_a_get_after_a_post_hands_the_connection_to_aiohttp(live):
    with connect(live) as sock:
        sock.sendall(post(body("a", 1)))
        assert read_answers(sock, 1)[0][0] == 200
        sock.sendall(b"GET /api/v1/pulls HTTP/1.1\r\nHost: x\r\n\r\n")
        ((status, _, text),) = read_answers(sock, 1)
        assert status == 200
        assert b'"nodeName":"a"' in text.replace(b" ", b"")
        # the connection stays aiohttp's: a plain post on it is answered all the same
        sock.sendall(post(body("a", 2)))
        assert read_answers(sock, 1)[0][0] == 200
    assert (intake(live).answered, intake(live).handed_over) == (1, 1)


def test_bodies_that_need_aiohttp_are_handed_over_and_answered(live):
    payload = body("g", 1)
    zipped = gzip.compress(payload)
    chunked = (f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n")
    cases = [
        post(zipped, "Content-Encoding: gzip"),
        b"POST /api/v1/report HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked.replace(b'"g"', b'"h"'),
        post(b"x" * 2_000_000),
        b"PUT /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    ]
    answers = []
    for request in cases:
        with connect(live) as sock:
            sock.sendall(request)
            answers.append(read_answers(sock, 1)[0])
    assert [a[0] for a in answers] == [200, 200, 413, 405]
    assert answers[2][2] == b"report body over 1048576 bytes; send fewer pulls per report\n"
    assert intake(live).handed_over == 4
    assert {p.node_name for p in live.collector.pulls()} == {"g", "h"}


def test_idle_connections_are_closed(live, monkeypatch):
    monkeypatch.setattr(intake_module, "_IDLE_AFTER", 0.2)

    async def sweep() -> None:
        intake(live).sweep()

    with connect(live) as sock, connect(live) as busy:
        sock.sendall(post(body("a", 1)))
        assert read_answers(sock, 1)[0][0] == 200
        busy.sendall(post(body("b", 1))[:40])  # a request under way is not idle
        live.call(sweep())
        assert len(intake(live).connections) == 2  # neither idle for long yet
        time.sleep(0.3)
        live.call(sweep())
        assert sock.recv(1) == b""
        assert len(intake(live).connections) == 1
