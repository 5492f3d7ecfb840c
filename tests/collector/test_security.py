"""What SECURITY.md promises, against real servers and real processes: the bearer token, what is
open without it, where the collector listens by default."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from collector.api import ReportGate
from collector.redaction import SecretFilter, redact_url, url_password
from collector.timefmt import format_rfc3339
from tests.collector.reports import at
from tests.collector.server import RunningCollector, SteppingClock

TOKEN = "s3cret-t0ken"
REPO = Path(__file__).resolve().parents[2]


def report_body(node: str = "node-1") -> bytes:
    return json.dumps({"nodeName": node, "timestamp": format_rfc3339(at(0)),
                       "pulls": []}).encode()


def raw_post(url: str, authorization: bytes | None) -> tuple[int, bytes]:
    """POST a report with the Authorization header's bytes exactly as given (httpx would
    refuse to send some of them)."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    body = report_body()
    head = [b"POST /api/v1/report HTTP/1.1", b"Host: x", b"Connection: close",
            b"Content-Length: %d" % len(body)]
    if authorization is not None:
        head.append(b"Authorization: " + authorization)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture
def secured(tmp_path):
    with RunningCollector(tmp_path / "auth.duckdb", token=TOKEN,
                          gate_clock=SteppingClock()) as running:
        yield running


@pytest.mark.parametrize(("authorization", "expected"), [
    (None, 401),                                  # missing
    (b"", 401),                                   # empty
    (TOKEN.encode(), 401),                        # bare token (the Go server took it)
    (b"Basic " + TOKEN.encode(), 401),            # wrong scheme
    (b"Token " + TOKEN.encode(), 401),
    (b"Bearer", 401),                             # scheme alone
    (b"Bearer wrong", 401),                       # wrong token
    (b"Bearer " + TOKEN.encode() + b"x", 401),    # longer
    (b"Bearer " + TOKEN[:-1].encode(), 401),      # shorter
    (b"Bearer \xff\xfe", 401),                    # not UTF-8: no 500
    (b"Bearer t\xf6k\xe9n", 401),                 # Latin-1
    ("Bearer tökén".encode(), 401),               # UTF-8, not the token
    (b"Bearer " + TOKEN.encode(), 200),
    (b"bearer " + TOKEN.encode(), 200),           # the scheme word in any case
    (b"Bearer   " + TOKEN.encode() + b"  ", 200),  # spaces around the token
])
def test_only_the_bearer_token_passes_and_no_header_is_a_server_error(
        secured, authorization, expected):
    status, body = raw_post(secured.url, authorization)
    assert status == expected, body
    if expected == 401:
        assert body == b"unauthorized: send 'Authorization: Bearer <token>'\n"
    dropped = secured.collector.metrics.reports_dropped.labels("unauthorized")._value.get()
    assert dropped == (1 if expected == 401 else 0)


def test_a_non_ascii_token_works_in_utf_8_only(tmp_path):
    token = "tökén-✓"
    with RunningCollector(tmp_path / "utf8.duckdb", token=token,
                          gate_clock=SteppingClock()) as srv:
        utf8 = raw_post(srv.url, b"Bearer " + token.encode())[0]
        latin = raw_post(srv.url, b"Bearer t\xf6k\xe9n-?")[0]
        garbage = raw_post(srv.url, b"Bearer \xed\xa0\x80")[0]  # an encoded lone surrogate
    assert (utf8, latin, garbage) == (200, 401, 401)


def test_the_gate_compares_any_strings_without_raising():
    # what aiohttp makes of undecodable bytes, and what os.environ makes of them
    gate = ReportGate("t\udcf6k")
    assert gate.authorized("Bearer t\udcf6k")
    assert not gate.authorized("Bearer t\udcf6")
    assert not gate.authorized("Bearer \ud800")
    assert ReportGate("").authorized(None)  # no token set: everyone may post


def test_reads_and_metrics_are_open_and_only_reports_need_the_token(secured):
    # SECURITY.md: the token guards POST /api/v1/report; everything else answers anyone
    # who reaches the port, which is why both listen on 127.0.0.1 unless told otherwise.
    get = {
        secured.url + "/api/v1/pulls": 200,
        secured.url + "/api/v1/export?table=samples&format=jsonl": 200,
        secured.url + "/healthz": 200,
        secured.url + "/readyz": 200,
        secured.metrics_url: 200,
    }
    for url, status in get.items():
        assert httpx.get(url, timeout=10).status_code == status, url
    with httpx.stream("GET", secured.url + "/api/v1/events", timeout=10) as stream:
        assert stream.status_code == 200
        assert next(stream.iter_lines()) == ": connected"
    assert httpx.post(secured.url + "/api/v1/report", content=report_body(),
                      timeout=10).status_code == 401
    assert httpx.post(secured.url + "/api/v1/report", content=report_body(),
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).status_code == 200


# -- where the collector listens by default ---------------------------------------------------


def _namespace_prefix() -> list[str]:
    """A command prefix giving the probe a network namespace of its own, where 8080 and 9090
    are free; none when the machine does not allow one (then the probe runs beside
    everything else and needs those ports free)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    for prefix in ([unshare, "--net", "--"], [unshare, "--user", "--map-root-user", "--net", "--"]):
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
            return prefix
    return []


def probe(*args: str) -> dict:
    done = subprocess.run([*_namespace_prefix(), sys.executable, "-m",
                           "tests.collector.listen_probe", *args],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("command", ["collect", "record"])
def test_without_listen_flags_the_collector_listens_on_127_0_0_1_only(tmp_path, command):
    args = ["--db", str(tmp_path / "d.duckdb")] if command == "collect" else [
        str(tmp_path / "r.jsonl")]
    seen = probe(command, *args)
    assert seen["listening"] == [["tcp", "127.0.0.1", 8080], ["tcp", "127.0.0.1", 9090]], seen
    # the same interface, another address: a socket bound to 127.0.0.1 does not take it
    assert seen["reach"] == {"8080": {"127.0.0.1": True, "127.0.0.2": False},
                             "9090": {"127.0.0.1": True, "127.0.0.2": False}}, seen
    assert seen["exit"] == 0, seen["output"]


def test_the_probe_sees_a_wildcard_listener(tmp_path):
    # told otherwise (Go's ":PORT" form), the collector listens everywhere: the probe says so
    seen = probe("collect", "--db", str(tmp_path / "d.duckdb"), "--listen", ":8080",
                 "--metrics-listen", "127.0.0.1:9090")
    assert seen["listening"] == [["tcp", "0.0.0.0", 8080], ["tcp", "127.0.0.1", 9090]], seen
    assert seen["reach"]["8080"] == {"127.0.0.1": True, "127.0.0.2": True}


def test_every_command_that_listens_defaults_to_127_0_0_1(monkeypatch):
    from collector.cli import build_parser

    monkeypatch.delenv("PULLTRACE_HTTP_ADDR", raising=False)
    monkeypatch.delenv("PULLTRACE_METRICS_ADDR", raising=False)
    parser = build_parser()
    for argv in (["collect"], ["record", "r.jsonl"], ["demo"]):
        args = parser.parse_args(argv)
        assert (args.listen, args.metrics_listen) == ("127.0.0.1:8080", "127.0.0.1:9090"), argv


# -- no secret in logs ----------------------------------------------------------------------------


def test_urls_are_shown_without_their_password():
    assert redact_url("http://user:pa55@collector:8080/api/v1/report") == (
        "http://user:***@collector:8080/api/v1/report")
    assert redact_url("https://t0ken@collector/") == "https://***@collector/"
    assert redact_url("http://collector:8080") == "http://collector:8080"
    assert redact_url("http://u:p@[::1") == "http://***@[::1"  # not parseable: masked anyway
    assert url_password("http://user:pa55@h") == "pa55"
    assert url_password("http://t0ken@h") == "t0ken"
    assert url_password("http://h") is None


def test_the_filter_masks_secrets_in_messages_arguments_and_tracebacks():
    filt = SecretFilter(["s3cret", None, "tökén"])
    logger = logging.getLogger("test.redaction")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(filt)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token %s in %r", "s3cret", b"Bearer t\xc3\xb6k\xc3\xa9n")
        logger.warning("headers {'Authorization': 'Bearer anything'}")
        try:
            raise ValueError("bad s3cret")
        except ValueError:
            logger.exception("failed")
        logger.warning("s3cret %s %s", "one argument short")  # noqa: PLE1206 - on purpose
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "token *** in b'Bearer ***'", "headers {'Authorization': '***'}", "failed", "*** %s %s"]
    assert records[2].exc_text is not None
    assert "ValueError: bad ***" in records[2].exc_text
    assert "s3cret" not in records[2].exc_text


def test_the_collector_never_logs_the_token_even_at_debug(tmp_path):
    from collector.testbed._process import free_port

    port, metrics = free_port(), free_port()
    log = tmp_path / "collect.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "--log-level", "debug", "collect",
             "--db", str(tmp_path / "c.duckdb"), "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", f"127.0.0.1:{metrics}", "--token", TOKEN],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while "collecting into" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        answers = [raw_post(url, b"Bearer " + TOKEN.encode())[0],
                   raw_post(url, b"Bearer wrong")[0],
                   # a header aiohttp refuses and logs, token and all
                   raw_post(url, b"Bearer " + TOKEN.encode() + b"\x00")[0]]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    text = log.read_text()
    assert (answers, code) == ([200, 401, 400], 0)
    assert "Invalid header value char" in text  # the request that carried the token was logged
    assert "Authorization: ***" in text
    assert TOKEN not in text
