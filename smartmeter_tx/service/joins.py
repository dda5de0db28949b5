"""
When the service joins the meter: only once the backoff since the last
failed join has passed, never without credentials (then the service cannot
do its job: said once, as fatal), and a join after a session counts as a
rejoin.  The join itself is the session's
(L{smartmeter_tx.session.join.Joiner.authenticate}).
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smartmeter_tx.errors import SmartMeterError
from smartmeter_tx.service.backoff import Backoff
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.session.client import BRouteClient
from smartmeter_tx.session.config import SessionConfig
from smartmeter_tx.session.steps import Budget

__all__ = ["JoinPolicy"]


class JoinPolicy:
    """
    @ivar joined: whether this service has joined at least once.
    @ivar had_session: whether a session has been up (the next join is a rejoin).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, config: SessionConfig, backoff: Backoff,
                 store: LatestStore, timeout: float, on_fatal: Callable[[str], None],
                 save: Callable[[], None]) -> None:
        """
        @param timeout: the budget of one join (scan included).
        @param save: keeps the link (the state file) after each join.
        """
        self.clock = clock
        self.config = config
        self.backoff = backoff
        self.store = store
        self.timeout = timeout
        self.on_fatal = on_fatal
        self.save = save
        self.joined = False
        self.had_session = False
        self._next = 0.0
        self._fatal = False

    async def join(self, client: BRouteClient) -> bool:
        """
        Join, once the backoff delay has passed.

        @return: whether a session is up.
        """
        now = self.clock.seconds()
        if now < self._next:
            return False
        if self.config.credentials is None:
            # Idling for ever would look healthy to systemd while reading nothing.
            self._next = now + self.backoff.next_delay()
            if not self._fatal:
                self._fatal = True
                self.on_fatal("the module has no session with the meter and no B-route ID "
                              "and password were given (--id/--password-file, "
                              "$SMARTMETER_ID/$SMARTMETER_PASSWORD)")
            return False
        # Joins before the first session are not rejoins.  (After repeated
        # failures the client scans for the meter anew: the state file counts.)
        if self.had_session:
            self.store.rejoined(now)
        budget = Budget(self.clock, self.timeout)
        try:
            await budget.bound(client.joiner.authenticate(budget), "joining the meter")
        except SmartMeterError as e:
            delay = self.backoff.next_delay()
            self._next = self.clock.seconds() + delay
            self.log.warn("joining the meter failed ({error}); next try in {delay:.0f} s",
                          error=e, delay=delay)
            self.save()
            return False
        self.backoff.reset()
        self.had_session = self.joined = True
        self.save()
        self.log.info("session with the meter is up")
        return True
