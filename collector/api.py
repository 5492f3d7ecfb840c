"""HTTP: the report endpoint, the pull list, the event stream, health; metrics on their own app.

Status codes follow the original server: 405 wrong method, 401 bad token, 400 invalid JSON
or node name, 429 a node's second report within 500 ms, 200 with an empty body. Past the caps
of :mod:`collector.limits`: 413 for a body or a layer list too large, 503 (with Retry-After)
while the collector follows as many pulls as it may.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable

from aiohttp import web

from collector.export import add_export_route
from collector.intake import Answer, ReportEndpoint
from collector.limits import Limits
from collector.service import Collector

log = logging.getLogger("pulltrace.api")

SSE_SLICE = 64 << 10  # bytes written to an event-stream client at a time
COLLECTOR_KEY = web.AppKey("collector", Collector)


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


class ReportGate:
    """Token check and the per-node 429 rule, by the server's own monotonic clock."""

    def __init__(self, token: str | None, clock: Callable[[], int] = time.monotonic_ns,
                 min_gap_ns: int = Limits.min_report_gap_ns) -> None:
        self.token = token or None
        self.clock = clock
        self.min_gap_ns = min_gap_ns
        self._last: dict[str, int] = {}

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # aiohttp hands undecodable header bytes over as lone surrogates, and an environment
        # variable may hold them too: "surrogatepass" encodes any str, so no header is a 500.
        return hmac.compare_digest(value.strip().encode("utf-8", "surrogatepass"),
                                   self.token.encode("utf-8", "surrogatepass"))

    def admit(self, node: str) -> bool:
        now = self.clock()
        last = self._last.get(node)
        if last is not None and now - last < self.min_gap_ns:
            return False
        self._last[node] = now
        if len(self._last) > 10_000:  # forget nodes whose window has long passed
            self._last = {n: t for n, t in self._last.items() if now - t < self.min_gap_ns}
        return True


def report_gate(collector: Collector, token: str | None) -> ReportGate:
    return ReportGate(token, min_gap_ns=collector.limits.min_report_gap_ns)


def _response(answer: Answer) -> web.Response:
    headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
    if not answer.text:
        return web.Response(status=answer.status, headers=headers)
    return web.Response(status=answer.status, text=answer.text + "\n", headers=headers)


def build_app(collector: Collector, token: str | None = None,
              gate: ReportGate | None = None,
              endpoint: ReportEndpoint | None = None) -> web.Application:
    """The API; ``endpoint`` shares its gate with the lean report path in front of it."""
    limits = collector.limits
    endpoint = endpoint or ReportEndpoint(collector, gate or report_gate(collector, token))
    app = web.Application(client_max_size=limits.max_body)
    app[COLLECTOR_KEY] = collector
    metrics = collector.metrics

    async def report(request: web.Request) -> web.Response:
        # The lean path (collector.intake) answers plain posts; these are the others:
        # chunked or compressed bodies, oversized ones, and what a test sends here directly.
        refused = endpoint.authorize(request.headers.get("Authorization"))
        if refused is not None:
            return _response(refused)
        try:
            # The whole body, however it arrives (chunked, in pieces); over the cap: 413.
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _response(endpoint.too_large())
        except web.RequestPayloadError:
            # aiohttp decompresses as Content-Encoding says; a body that is not so encoded
            # would otherwise be a 500.
            metrics.reports_dropped.labels("invalid").inc()
            encoding = request.headers.get("Content-Encoding", "")
            return _text(400, f"invalid report: the body does not decode as its "
                              f"Content-Encoding ({encoding!r}) says; send it uncompressed, "
                              "or compressed that way")
        answer = endpoint.take(body)
        if isinstance(answer, Answer):
            return _response(answer)
        timer = endpoint.wait(answer)
        try:
            await answer
        except TimeoutError:
            pass
        finally:
            timer.cancel()
        return _response(endpoint.outcome(answer))

    async def pulls(request: web.Request) -> web.Response:
        node = request.query.get("node")
        status = request.query.get("status")
        limit_text = request.query.get("limit")
        limit = None
        if limit_text is not None:
            if not limit_text.isdigit() or int(limit_text) == 0:
                return _text(400, f"limit: expected a number above 0, got {limit_text!r}")
            limit = int(limit_text)
        found = [p for p in collector.pulls()
                 if (node is None or p.node_name == node)
                 and (status is None or p.status.value == status)]
        # Newest first; a limit keeps the response small on a busy cluster.
        return web.json_response({"pulls": [p.to_json() for p in found[:limit]]})

    async def events(request: web.Request) -> web.StreamResponse:
        sub = collector.subscribe()
        if sub is None:
            return _text(503, f"too many event-stream clients ({limits.max_sse_clients}, the "
                              "collector's --max-sse-clients); try again later")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        transport = request.transport
        if transport is not None:
            # abort, not close: close would keep what is buffered for a client that does
            # not read until it reads
            sub.on_drop = transport.abort
        try:
            await resp.prepare(request)
            await resp.write(b": connected\n\n")
            while True:
                chunks = await sub.next()
                if chunks is None:
                    break
                for chunk in chunks:
                    # In slices: what a slow client has not taken is copied into its socket's
                    # buffer, so a whole commit would be copied once per client.
                    view = memoryview(chunk)
                    for start in range(0, len(view), SSE_SLICE):
                        await resp.write(view[start:start + SSE_SLICE])
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            collector.unsubscribe(sub)
        return resp

    async def healthz(_: web.Request) -> web.Response:
        return _text(200, "ok")

    async def readyz(_: web.Request) -> web.Response:
        if not collector.ready:
            return _text(503, "not ready: recovering the database")
        if collector.journal_error:
            return _text(503, f"not ready: writes to the journal fail ({collector.journal_error});"
                              " reports wait until they succeed")
        if collector.store_error:
            after = (" reports wait until they succeed" if collector.journal is None else
                     " reports are answered from the journal until --max-backlog of them wait")
            return _text(503, f"not ready: writes to the database fail ({collector.store_error});"
                              + after)
        return _text(200, "ready")

    app.router.add_post("/api/v1/report", report)
    app.router.add_get("/api/v1/pulls", pulls)
    app.router.add_get("/api/v1/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_export_route(app, collector)
    return app


def build_metrics_app(collector: Collector) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        collector.refresh_gauges()
        return web.Response(body=collector.metrics.exposition(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
