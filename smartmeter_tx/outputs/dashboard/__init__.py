"""
The dashboard page at C{/}, in four steps: L{snapshot} copies what the page
shows out of the service's view into plain data; L{svg} draws its two charts;
L{page} fills the page template in Japanese or English (L{text}).

The snapshot and the words are pure (no Twisted, no I/O); the page and its
charts are L{twisted.web.template} tags, so that the flattener escapes all
they show.  The web resource (L{smartmeter_tx.outputs.web.DashboardResource})
serves the result.
"""

from smartmeter_tx.outputs.dashboard.snapshot import Slot, Snapshot, period_energy, snapshot
from smartmeter_tx.outputs.dashboard.text import TEXT, language

__all__ = ["Snapshot", "Slot", "snapshot", "render", "language", "period_energy", "REFRESH",
           "TEXT"]

#: Names of L{page}, imported on first use: importing the snapshot or the
#: words (which runs this package) must not load Twisted.
_FROM_PAGE = ("render", "REFRESH")


def __getattr__(name: str):
    """L{render} and L{REFRESH} from L{page}, imported when first asked for (PEP 562)."""
    if name in _FROM_PAGE:
        from smartmeter_tx.outputs.dashboard import page
        return getattr(page, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
