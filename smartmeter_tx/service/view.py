"""
What every output reads of the running service, and all it reads: the HTTP
endpoints, the dashboard, the metrics and the MQTT publisher take a
L{ServiceView}, never the poller itself.  It holds the service's state
only, never an output's: an output's own figures reach the page and
C{/metrics} through L{smartmeter_tx.service.interfaces.IMetricsSource}.

The poller makes it (L{smartmeter_tx.service.poller.MeterPoller.view}); the
composition root hands it to the outputs; tests build one from real parts.
The objects it holds are the poller's own, so the view is always current;
outputs only read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from twisted.internet.interfaces import IReactorTime

from smartmeter_tx.service.backfill import Backfill
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.session.state import MeterLink

__all__ = ["ServiceView"]


@dataclass
class ServiceView:
    """
    @ivar store: the newest readings, the meter's identity and the counters.
    @ivar state: the link: session, holds, link quality, events.
    @ivar clock: the service's clock (for ages on it: the session's, the
        rejoins of the last hour), not the wall clock.
    @ivar backfill: the 30-minute slots logged from the meter's record, or
        C{None} without a data log.
    @ivar device: the C{--device} the service reads, as given.
    @ivar interval: seconds between two polls.
    @ivar link: where the meter is (its MAC names it), or C{None}.
    """

    store: LatestStore
    state: LinkState
    clock: IReactorTime
    backfill: Optional[Backfill] = None
    device: Optional[str] = None
    interval: float = 30.0
    link: Optional[MeterLink] = None
