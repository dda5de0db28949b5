"""
When the service joins the meter: only once the backoff since the last
failed join has passed, never without credentials (then the service cannot
do its job: said once, as fatal), and a join after a session counts as a
rejoin.  The join itself is the session's
(L{smartmeter_tx.session.join.Joiner.authenticate}).

A failed join is tried again when its backoff ends, not at the next poll
tick: the delay the log announces is the delay kept.  Why the last join
failed stays in the store (L{LatestStore.join_failure}) until a session is
up, for C{/latest}, the page and the checks.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from smartmeter_tx.errors import (
    AuthenticationFailed, ConfigError, MeterNotFound, SmartMeterError,
)
from smartmeter_tx.service.backoff import Backoff
from smartmeter_tx.service.store import JoinFailure, LatestStore
from smartmeter_tx.session.client import BRouteClient
from smartmeter_tx.session.config import SessionConfig
from smartmeter_tx.session.steps import Budget

__all__ = ["JoinPolicy", "join_failure"]


def join_failure(error: SmartMeterError) -> JoinFailure:
    """
    Why a join failed, as the service tells it: a refusal without the
    one-shot commands' words about their next run.  Pure.
    """
    if isinstance(error, AuthenticationFailed):
        return JoinFailure("refused", error.cause)
    if isinstance(error, MeterNotFound):
        return JoinFailure("not_found", str(error))
    return JoinFailure("other", str(error))


class JoinPolicy:
    """
    @ivar joined: whether this service has joined at least once.
    @ivar had_session: whether a session has been up (the next join is a rejoin).
    @ivar joining: whether a join is running now.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, config: SessionConfig, backoff: Backoff,
                 store: LatestStore, timeout: float, on_fatal: Callable[[str], None],
                 save: Callable[[], None], retry: Callable[[], object] = lambda: None,
                 running: Callable[[], bool] = lambda: True) -> None:
        """
        @param timeout: the budget of one join (scan included).
        @param save: keeps the link (the state file) after each join.
        @param retry: called when the backoff after a failed join has passed
            (the poller polls, and so joins, then).
        @param running: whether the service runs: a join that ends while it
            stops is no failure to report.
        """
        self.clock = clock
        self.config = config
        self.backoff = backoff
        self.store = store
        self.timeout = timeout
        self.on_fatal = on_fatal
        self.save = save
        self.retry = retry
        self.running = running
        self.joined = False
        self.had_session = False
        self.joining = False
        self._next = 0.0
        self._fatal = False
        self._retry: Optional[IDelayedCall] = None

    def fatal(self, message: str) -> None:
        """The service cannot do its job as configured: said once, to C{on_fatal}."""
        self.stop()
        if not self._fatal:
            self._fatal = True
            self.on_fatal(message)

    def stop(self) -> None:
        """No more tries: the service stops."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    async def join(self, client: BRouteClient) -> bool:
        """
        Join, once the backoff delay has passed.

        @return: whether a session is up.
        @raise ConfigError: a setting that can never work (a forced dialect
            the module does not speak): not retried.
        """
        now = self.clock.seconds()
        if now < self._next or self._fatal:  # after a fatal error the service is ending
            return False
        if self.config.credentials is None:
            # Idling for ever would look healthy to systemd while reading nothing.
            self._next = now + self.backoff.next_delay()
            self.fatal("the module has no session with the meter and no B-route ID and "
                       "password were given (--id/--password-file, "
                       "$SMARTMETER_ID/$SMARTMETER_PASSWORD)")
            return False
        # Joins before the first session are not rejoins.  (After repeated
        # failures the client scans for the meter anew: the state file counts.)
        if self.had_session:
            self.store.rejoined(now)
        budget = Budget(self.clock, self.timeout)
        self.joining = True
        try:
            await budget.bound(client.joiner.authenticate(budget), "joining the meter")
        except ConfigError:
            raise  # the user's setting, not the radio: the poller ends the service
        except SmartMeterError as e:
            if self.running():
                self._failed(e)
            return False
        finally:
            self.joining = False
        self.session_up()
        self.had_session = self.joined = True
        self.save()
        self.log.info("session with the meter is up")
        return True

    def session_up(self) -> None:
        """A session is up (joined, or one the module held): the failures are over."""
        self.backoff.reset()
        self.store.join_failure = None

    def _failed(self, error: SmartMeterError) -> None:
        """Keep why, say it with the delay, and try again when that delay has passed."""
        delay = self.backoff.next_delay()
        self._next = self.clock.seconds() + delay
        failure = join_failure(error)
        self.store.join_failed(failure)
        self.log.warn("joining the meter failed ({error}); next try in {delay:.0f} s",
                      error=failure.text, delay=delay)
        self.stop()
        self._retry = self.clock.callLater(delay, self.retry)
        self.save()
