"""ipywidgets views: :class:`LiveDashboard` for a running collector, :class:`ReplayPlayer`
for a recording."""

from pulltrace_analysis.widgets.dashboard import LiveDashboard
from pulltrace_analysis.widgets.player import ReplayPlayer

__all__ = ["LiveDashboard", "ReplayPlayer"]
