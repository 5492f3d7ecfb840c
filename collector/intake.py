"""Report intake: what a posted report goes through once its body is in hand, and a lean
HTTP/1.1 path for the plain post that every agent sends.

An aiohttp request costs the collector about 150 µs of the one core its interpreter has
(parsing, the request and response objects, routing, a task per request); at 2,000 reports a
second that is a third of its time. :class:`IntakeProtocol` answers the plain case itself —
``POST /api/v1/report`` over HTTP/1.1 with a ``Content-Length`` within the cap and nothing
that changes how the body is read (no transfer or content encoding, no ``Expect``) — and
hands the connection to aiohttp, as it stands, for any other request: the other endpoints,
chunked or compressed bodies, oversized ones, anything malformed. aiohttp then keeps that
connection, so every case but the plain one is served exactly as before.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol, cast

from collector.errors import CapacityError, ReportError
from collector.model import check_clock, parse_report

if TYPE_CHECKING:
    from collector.api import ReportGate
    from collector.service import Collector

RETRY_AFTER = "5"  # seconds, on a 503 for the active-pull cap
COMMIT_WAIT = 30.0  # seconds a report waits to be made durable before the answer is 503
_PATH_LINE = b"POST /api/v1/report HTTP/1.1"
_MAX_HEAD = 16 << 10  # a head larger than this goes to aiohttp, which refuses it
_IDLE_AFTER = 75.0  # seconds an idle keep-alive connection is kept (aiohttp's default)
_SWEEP_EVERY = 15.0
# Control characters, and a CR or LF that is not part of a CRLF: such a head is left to
# aiohttp's parser to refuse.
_BAD_HEAD = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
_HAND_OVER = frozenset((b"transfer-encoding", b"content-encoding", b"expect", b"upgrade"))


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    text: str = ""  # sent with a newline; "" is an empty body
    retry_after: str | None = None


OK = Answer(200)


def _give_up(committed: asyncio.Future[None]) -> None:
    if not committed.done():
        committed.set_exception(TimeoutError())


class ReportEndpoint:
    """``POST /api/v1/report`` from the body on: the checks in the original server's order,
    then the collector. Shared by the lean path and aiohttp's handler."""

    def __init__(self, collector: Collector, gate: ReportGate) -> None:
        self.collector = collector
        self.gate = gate
        self.limits = collector.limits
        self._dropped = collector.metrics.reports_dropped

    def authorize(self, header: str | None) -> Answer | None:
        """None if ``header`` (Authorization) may post; else the 401."""
        if self.gate.authorized(header):
            return None
        self._dropped.labels("unauthorized").inc()
        return Answer(401, "unauthorized: send 'Authorization: Bearer <token>'")

    def too_large(self) -> Answer:
        self._dropped.labels("too_large").inc()
        return Answer(413, f"report body over {self.limits.max_body} bytes; send fewer pulls "
                           "per report")

    def take(self, body: bytes) -> Answer | asyncio.Future[None]:
        """The answer now, or a future done once the report is durable (see
        :meth:`Collector.accept`; :meth:`wait` puts a time limit on it)."""
        collector = self.collector
        try:
            parsed = parse_report(body)
            check_clock(parsed, collector.clock())
        except ReportError as exc:
            self._dropped.labels("invalid").inc()
            return Answer(400, f"invalid report: {exc}")
        limits = self.limits
        if (layers := sum(len(p.layers) for p in parsed.pulls)) > limits.max_layers:
            self._dropped.labels("too_many_layers").inc()
            return Answer(413, f"report lists {layers} layers, over the cap of "
                               f"{limits.max_layers} (the collector's --max-layers)")
        gate = self.gate
        if not gate.admit(parsed.node_name):
            self._dropped.labels("rate_limited").inc()
            return Answer(429, f"node {parsed.node_name!r} reported less than "
                               f"{gate.min_gap_ns // 1_000_000}ms ago; send at most "
                               f"{1e9 / gate.min_gap_ns:g} reports per second")
        try:
            committed = collector.accept(parsed)
        except CapacityError as exc:
            return Answer(503, str(exc), RETRY_AFTER)
        return OK if committed.done() else committed

    def wait(self, committed: asyncio.Future[None]) -> asyncio.TimerHandle:
        """Give up on ``committed`` after :data:`COMMIT_WAIT` (a timer, not a task per
        report); cancel the timer once it is done."""
        return asyncio.get_running_loop().call_later(COMMIT_WAIT, _give_up, committed)

    def outcome(self, committed: asyncio.Future[None]) -> Answer:
        """The answer for a done ``committed`` that was not cancelled."""
        if committed.exception() is not None:
            return Answer(503, f"not recorded yet: {self.collector.waiting_for()}; the report "
                               "is kept and will be written, resending it is safe")
        return OK


def encode(answer: Answer, date: bytes, close: bool) -> bytes:
    body = (answer.text + "\n").encode() if answer.text else b""
    head = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}".encode(),
            b"Content-Length: " + str(len(body)).encode(), b"Date: " + date,
            b"Server: pulltrace"]
    if body:
        head.append(b"Content-Type: text/plain; charset=utf-8")
    if answer.retry_after is not None:
        head.append(b"Retry-After: " + answer.retry_after.encode())
    if close:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Endpoint(Protocol):
    """What the lean path asks of the report endpoint (:class:`ReportEndpoint`; the HTTP
    benchmark's limit has one that does nothing)."""

    def authorize(self, header: str | None) -> Answer | None: ...

    def take(self, body: bytes) -> Answer | asyncio.Future[None]: ...

    def wait(self, committed: asyncio.Future[None]) -> asyncio.TimerHandle: ...

    def outcome(self, committed: asyncio.Future[None]) -> Answer: ...


class Intake:
    """What the connections of one listener share: the endpoint, aiohttp's protocol factory
    for the connections handed over, and the open connections (closed when idle)."""

    def __init__(self, endpoint: Endpoint, fallback: Callable[[], asyncio.Protocol],
                 max_body: int) -> None:
        self.endpoint = endpoint
        self.fallback = fallback
        self.max_body = max_body
        self.connections: set[IntakeProtocol] = set()
        self.answered = 0  # requests answered on the lean path
        self.handed_over = 0  # connections given to aiohttp
        self._second = -1  # the Date header is formatted once a second
        self._date = b""
        self._ok = (b"", b"")  # this second's 200, kept alive and closing
        self._sweeper: asyncio.TimerHandle | None = None

    def protocol(self) -> IntakeProtocol:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_EVERY, self._sweep)
        return IntakeProtocol(self)

    def response(self, answer: Answer, close: bool) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._date = formatdate(second, usegmt=True).encode()
            self._ok = (encode(OK, self._date, False), encode(OK, self._date, True))
        if answer is OK:  # nearly every answer
            return self._ok[close]
        return encode(answer, self._date, close)

    async def drain(self) -> None:
        """Close every connection: idle ones at once, those with a report waiting once it is
        answered (its commit, or the 503 after :data:`COMMIT_WAIT`)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        deadline = asyncio.get_running_loop().time() + COMMIT_WAIT + 1.0
        while True:
            for conn in list(self.connections):
                if not conn.waiting:
                    conn.close()
            if not self.connections or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()

    def sweep(self) -> None:
        """Close the connections idle for longer than :data:`_IDLE_AFTER`."""
        horizon = asyncio.get_running_loop().time() - _IDLE_AFTER
        for conn in list(self.connections):
            if conn.idle_since is not None and conn.idle_since < horizon:
                conn.close()

    def _sweep(self) -> None:
        self.sweep()
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_EVERY, self._sweep)


class IntakeProtocol(asyncio.Protocol):
    """One connection, on the lean path until a request needs aiohttp."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._waiting: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._close_after = False
        self._paused = False
        self.idle_since: float | None = None  # loop time; None while a request is open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._intake.connections.add(self)
        self.idle_since = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._intake.connections.discard(self)
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # A report still waiting stays queued and is written; only its answer is lost.

    @property
    def waiting(self) -> bool:
        return self._waiting is not None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiting is None:
            self._next()
        elif len(self._buf) > self._intake.max_body + _MAX_HEAD and not self._paused:
            # A client sending on while its last report waits: hold it until answered.
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused = True

    def _next(self) -> None:
        """Answer every whole request in the buffer, in order, until one must wait."""
        intake = self._intake
        while self._transport is not None:
            buf = self._buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD or (buf and not _PATH_LINE.startswith(
                        bytes(buf[:len(_PATH_LINE)]))):
                    self._hand_over()
                else:
                    self.idle_since = None if buf else asyncio.get_running_loop().time()
                return
            head = bytes(buf[:end])
            found = self._read_head(head)
            if found is None:
                self._hand_over()
                return
            length, authorization, close = found
            start = end + 4
            if len(buf) < start + length:
                self.idle_since = None
                return  # the rest of the body is on its way
            body = bytes(buf[start:start + length])
            del buf[:start + length]
            endpoint = intake.endpoint
            answer = endpoint.authorize(authorization) or endpoint.take(body)
            if isinstance(answer, Answer):
                self._send(answer, close)
                continue
            self._waiting, self._close_after = answer, close
            self._timer = endpoint.wait(answer)
            answer.add_done_callback(self._answered)
            self.idle_since = None
            return

    def _read_head(self, head: bytes) -> tuple[int, str | None, bool] | None:
        """(Content-Length, Authorization, close after) of a plain report post; None for
        anything aiohttp should see."""
        if not head.startswith(_PATH_LINE + b"\r\n") or not head.isascii() \
                or _BAD_HEAD.search(head) is not None:
            return None
        length: int | None = None
        authorization: str | None = None
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[0] in b" \t" or name[-1] in b" \t":
                return None  # folded, or space before the colon: not for this path
            key = name.lower()
            if key == b"content-length":
                digits = value.strip(b" \t")
                if length is not None or not digits.isdigit():
                    return None
                length = int(digits)
            elif key == b"authorization":
                if authorization is not None:
                    return None
                authorization = value.strip(b" \t").decode()
            elif key == b"connection":
                token = value.strip(b" \t").lower()
                if token == b"close":
                    close = True
                elif token != b"keep-alive":
                    return None
            elif key in _HAND_OVER:
                return None
        if length is None or length > self._intake.max_body:
            return None  # aiohttp answers chunked bodies, and 413s, as it always has
        return length, authorization, close

    def _answered(self, committed: asyncio.Future[None]) -> None:
        self._waiting = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is None:
            return
        if committed.cancelled():  # the collector is stopping
            self._transport.close()
            return
        self._send(self._intake.endpoint.outcome(committed), self._close_after)
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        self._next()

    def _send(self, answer: Answer, close: bool) -> None:
        assert self._transport is not None
        self._intake.answered += 1  # before the write: the client may read it at once
        self._transport.write(self._intake.response(answer, close))
        if close:
            self._transport.close()
            self._transport = None

    def _hand_over(self) -> None:
        """Give the connection, from the request at the start of the buffer on, to aiohttp."""
        transport = self._transport
        assert transport is not None
        self._intake.connections.discard(self)
        self._intake.handed_over += 1
        self._transport = None
        protocol = self._intake.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        data, self._buf = bytes(self._buf), bytearray()
        if self._paused:
            transport.resume_reading()
        if data:
            protocol.data_received(data)
