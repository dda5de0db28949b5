"""
The dashboard page at C{/}, in four pure steps: L{snapshot} copies what the
page shows out of the service's view into plain data; L{svg} draws its two
charts; L{page} fills the page template in Japanese or English (L{text}).

Nothing here imports Twisted or does I/O; the web resource
(L{smartmeter_tx.outputs.web.DashboardResource}) serves the result.
"""

from smartmeter_tx.outputs.dashboard.page import REFRESH, render
from smartmeter_tx.outputs.dashboard.snapshot import Slot, Snapshot, period_energy, snapshot
from smartmeter_tx.outputs.dashboard.text import TEXT, language

__all__ = ["Snapshot", "Slot", "snapshot", "render", "language", "period_energy", "REFRESH",
           "TEXT"]
