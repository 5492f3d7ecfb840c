"""`LiveDashboard`: what a collector shows now, refreshed in the notebook.

Each refresh reads the collector's pulls once and sends the browser aggregates only: four
headline figures, a table of pulls (HTML), and one point per line of the speed chart —
never raw samples. Refreshes come at most twice a second and update the chart in one
batch, which keeps the kernel far below the message rate Jupyter cuts off.
"""

from __future__ import annotations

import html
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from pulltrace_analysis.live import HttpSource, PullSource
from pulltrace_analysis.widgets.render import (
    ACTIVE,
    MB,
    Headline,
    PullLine,
    headline_html,
    pulls_table_html,
)

MIN_INTERVAL = 0.5  # seconds: 2 refreshes a second at most
TOTAL = "all nodes"


class LiveDashboard:
    """Headline figures, a table of pulls and a speed chart of a live collector.

    ``source``: the URL of a running collector, or an object with ``pulls()`` such as
    :class:`~pulltrace_analysis.live.InProcessCollector`. It refreshes every ``interval``
    seconds (0.5 at least) from a background thread until :meth:`stop`.
    """

    def __init__(self, source: str | PullSource, *, interval: float = 1.0,
                 history: int = 300, start: bool = True) -> None:
        if interval < MIN_INTERVAL:
            raise ValueError(f"interval: refresh at most twice a second "
                             f"(interval >= {MIN_INTERVAL}), got {interval}")
        self.source: PullSource = HttpSource(source) if isinstance(source, str) else source
        self.interval = interval
        self.refreshes = 0
        self.last: Headline | None = None
        self._times: deque[datetime] = deque(maxlen=history)
        self._speeds: dict[str, deque[float]] = {TOTAL: deque(maxlen=history)}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

        self.headline = widgets.HTML(headline_html(Headline(0, 0, 0, 0.0)))
        self.table = widgets.HTML(pulls_table_html([]))
        self.status = widgets.HTML("<i>waiting for the first refresh</i>")
        self.figure = go.FigureWidget(go.Figure(
            go.Scatter(x=[], y=[], mode="lines", name=TOTAL, line={"width": 3}),
            layout={"title": {"text": "Speed now (MB/s), all active pulls"},
                    "xaxis_title": "time (UTC)", "yaxis_title": "MB/s", "height": 320,
                    "template": "plotly_white", "margin": {"t": 50, "b": 40}}))
        self.widget = widgets.VBox([self.headline, self.figure, self.table, self.status],
                                   layout=widgets.Layout(width="100%"))
        self.widget.add_class("pulltrace-live")
        if start:
            self.start()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # --- refreshing -------------------------------------------------------------------

    def refresh(self) -> Headline | None:
        """Read the source once and update every view; returns the headline figures (None
        when the source could not be read: the status line says why)."""
        with self._lock:
            now = datetime.now(UTC).replace(tzinfo=None)
            try:
                lines = [PullLine.from_status(p) for p in self.source.pulls()]
            except (ConnectionError, OSError, TimeoutError) as exc:
                self.status.value = f"<i>{now:%H:%M:%S}: {html.escape(str(exc))}</i>"
                return None
            head = Headline.of(lines)
            self._record(now, head, lines)
            self._draw(head, lines)
            self.refreshes += 1
            self.last = head
            self.status.value = f"<i>updated {now:%H:%M:%S} UTC</i>"
            return head

    def _record(self, now: datetime, head: Headline, lines: list[PullLine]) -> None:
        per_node: dict[str, float] = {}
        for line in lines:
            if line.status in ACTIVE:
                per_node[line.node] = per_node.get(line.node, 0.0) + (line.bytes_per_sec or 0)
        self._times.append(now)
        for node in per_node:
            if node not in self._speeds:  # a new node: zeros for the refreshes before it
                self._speeds[node] = deque([0.0] * (len(self._times) - 1),
                                           maxlen=self._times.maxlen)
        for node, values in self._speeds.items():
            values.append(head.bytes_per_sec / MB if node == TOTAL
                          else per_node.get(node, 0.0) / MB)

    def _draw(self, head: Headline, lines: list[PullLine]) -> None:
        times = list(self._times)
        names = [trace.name for trace in self.figure.data]
        missing = [node for node in self._speeds if node not in names]
        if missing:  # adding traces cannot happen inside a batch
            self.figure.add_traces([go.Scatter(x=[], y=[], mode="lines", name=node)
                                    for node in missing])
        with self.figure.batch_update():
            for trace in self.figure.data:
                trace.x = times
                trace.y = list(self._speeds[trace.name])
        self.headline.value = headline_html(head)
        self.table.value = pulls_table_html(lines)

    # --- the background thread ------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pulltrace-dashboard",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self.interval):
                return

    def wait(self, seconds: float) -> None:
        """Block for ``seconds`` while the dashboard keeps refreshing (for a cell that
        should watch for a while, e.g. in a notebook run from top to bottom)."""
        self._stop.wait(seconds)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop refreshing (the views keep their last state)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("the dashboard's refresh thread did not stop")
            self._thread = None
        self.status.value += " — stopped"

    def __repr__(self) -> str:
        return f"LiveDashboard({self.source!r}, {self.refreshes} refreshes)"


__all__ = ["LiveDashboard"]
