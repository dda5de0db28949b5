"""
Requests to the meter on behalf of others: what the ECHONET Lite bridge
cannot answer from what the meter last said (its record, E2/E4/EC) goes to
the meter through the service's one session, on the service's terms.

Those terms: one relayed request on the air at a time, and only after the
poll now running (a poll never waits behind a relay); never a join (the
poller decides when to join); never while sends are held (EVENT 29/32); all
within L{MeterRelay.BUDGET} of the request's arrival; and within the hour's
frames beyond the polls, the L{FrameWindow} the backfill spends from too, of
which relays may take half.  Identical requests that arrive while one is
under way share its answer and cost nothing more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Union

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from smartmeter_tx.echonet import frame as F
from smartmeter_tx.errors import SmartMeterError
from smartmeter_tx.service.radio import FrameWindow
from smartmeter_tx.session.steps import Budget

if TYPE_CHECKING:
    from smartmeter_tx.session.client import BRouteClient

__all__ = ["MeterRelay", "RelayRefused"]


class RelayRefused(SmartMeterError):
    """
    A request the service would not send: no port, sends held, the hour's
    frames spent, or too many requests waiting.
    """


_Key = tuple[int, tuple[int, ...]]


class MeterRelay:
    """
    @ivar frames: frames relayed requests put on the air.
    @ivar shared: requests answered by another's relay (no frame of their own).
    """

    #: Seconds one relayed request may take from its arrival: the wait for
    #: the poll and the requests ahead of it, and its resends.
    BUDGET = 10.0
    #: Requests waiting at most (one on the air, the others queued behind it).
    QUEUE = 8
    #: Askers sharing one request at most.
    SHARERS = 16
    #: Frames an hour at most for relays, so that the backfill always keeps
    #: the rest of the window.
    FRAMES_PER_HOUR = 60

    def __init__(self, client: Callable[[], Optional[BRouteClient]],
                 busy: Callable[[], Optional[defer.Deferred[None]]],
                 held: Callable[[], Optional[str]], clock: IReactorTime,
                 window: FrameWindow) -> None:
        """
        @param client: the connection's client now, or C{None} without a port.
        @param busy: a Deferred firing when the running poll is over, or
            C{None} when none runs.
        @param held: why sends are held now, or C{None}.
        """
        self._client = client
        self._busy = busy
        self._held = held
        self.clock = clock
        self.window = window
        self.own = FrameWindow(self.FRAMES_PER_HOUR)
        self._lock = defer.DeferredLock()
        self._waiting: dict[_Key, list[defer.Deferred[F.Frame]]] = {}
        self._running: set[defer.Deferred[F.Frame]] = set()
        self.frames = 0
        self.shared = 0

    def request(self, epcs: tuple[int, ...], deoj: int = F.METER) -> defer.Deferred[F.Frame]:
        """
        Send a Get of C{epcs} to the meter's object C{deoj}.

        @return: a Deferred firing with the meter's answer (success or SNA:
            the meter's own), or failing with L{RelayRefused}, or with the
            session's error (L{smartmeter_tx.errors.NoSession},
            L{smartmeter_tx.errors.ReadFailed}, L{smartmeter_tx.errors.StepTimeout}).
        """
        key = (deoj, tuple(epcs))
        mine: defer.Deferred[F.Frame] = defer.Deferred()
        if key in self._waiting:
            if len(self._waiting[key]) >= self.SHARERS:
                return defer.fail(RelayRefused(f"{self.SHARERS} askers wait for this answer"))
            self.shared += 1
            self._waiting[key].append(mine)
            return mine
        if len(self._waiting) >= self.QUEUE:
            return defer.fail(RelayRefused(f"{self.QUEUE} requests are waiting for the meter"))
        self._waiting[key] = [mine]
        budget = Budget(self.clock, self.BUDGET)
        run = budget.bound(self._lock.run(
            lambda: defer.Deferred.fromCoroutine(self._send(key, budget))),
            "relaying a request to the meter")
        self._running.add(run)
        run.addBoth(self._answered, key, run)
        return mine

    def busy_with(self, epcs: tuple[int, ...], deoj: int = F.METER) -> bool:
        """@return: whether the same request is under way (a new one would share its answer)."""
        return (deoj, tuple(epcs)) in self._waiting

    def _answered(self, result: Union[F.Frame, Failure], key: _Key, run: defer.Deferred[F.Frame]) -> None:
        self._running.discard(run)
        for d in self._waiting.pop(key, []):
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    async def _send(self, key: _Key, budget: Budget) -> F.Frame:
        """
        The request, once the poll under way is over, in what is left of
        C{budget} (which L{request} armed when it came).
        """
        deoj, epcs = key
        busy = self._busy()
        if busy is not None:
            await busy  # the poll first: it never waits behind a relay
        client = self._client()
        if client is None:
            raise RelayRefused("the module's port is not open")
        held = self._held()
        if held:
            raise RelayRefused(f"sends are held: {held}")
        now = self.clock.seconds()
        if not (self.window.room(now) and self.own.room(now)):
            raise RelayRefused("this hour's frames for requests from the LAN are spent")
        try:
            return await client.exchange(lambda tid: F.get_request(tid, epcs, deoj=deoj),
                                         budget, may_join=False)
        finally:
            # The relay's own frames (a poll may go out meanwhile).
            self.frames += budget.frames
            self.window.spend(self.clock.seconds(), budget.frames)
            self.own.spend(self.clock.seconds(), budget.frames)

    def stop(self) -> None:
        """Abandon every relayed request: their callers get C{CancelledError}."""
        for run in list(self._running):
            run.cancel()
