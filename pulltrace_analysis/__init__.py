"""Notebook library for pulltrace: recordings and live collectors as polars frames, plotly
figures and ipywidgets.

    from pulltrace_analysis import read_recording, figures
    rec = read_recording("data/recording.jsonl")
    figures.throughput(rec)

``frames`` holds the pure functions (one polars DataFrame each), ``figures`` the plotly
figures drawn from them, ``widgets`` the live dashboard and the replay player.
"""

from pulltrace_analysis import figures, frames, widgets
from pulltrace_analysis.live import HttpSource, InProcessCollector
from pulltrace_analysis.load import connect, find_recording, open_db, read_recording
from pulltrace_analysis.recording import PandasRecording, Recording
from pulltrace_analysis.replay import Frame, replay
from pulltrace_analysis.widgets import LiveDashboard, ReplayPlayer

__all__ = [
    "Frame",
    "HttpSource",
    "InProcessCollector",
    "LiveDashboard",
    "PandasRecording",
    "Recording",
    "ReplayPlayer",
    "connect",
    "figures",
    "find_recording",
    "frames",
    "open_db",
    "read_recording",
    "replay",
    "widgets",
]
