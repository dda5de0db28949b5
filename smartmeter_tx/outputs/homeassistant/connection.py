"""
The importer's connection to Home Assistant: one session at a time, opened
when the importer needs one, and what to do when it cannot be had.

  - HA away (no answer, a dropped session, a command not answered in
    time): one warning an outage, then tries with backoff, under a minute
    apart.  The outage ends only when a whole synchronisation succeeded: an
    HA that logs us in and then drops every import is still away (it would
    otherwise be tried every two seconds for ever).
  - The token refused, or C{https://} for an HA that speaks plain HTTP,
    before any success: the service cannot work as configured (78).  The
    token refused later (revoked, rotated): said once, at error level; the
    token is read again (the file, or the environment) before every
    connection, and the same refused token is tried again only every
    L{REFUSED_RETRY} seconds, since each try counts as a failed login in HA
    and may get the host banned (C{ip_ban_enabled}).
"""

from __future__ import annotations

import random
from typing import Any, Callable, Optional, Union

from twisted.internet import defer
from twisted.logger import Logger

from smartmeter_tx.errors import ConfigError
from smartmeter_tx.outputs.homeassistant import websocket as W
from smartmeter_tx.service.backoff import Backoff

__all__ = ["HaConnection"]


class HaConnection:
    """
    @ivar session: the open L{W.HaSession}, or C{None}.
    """

    log = Logger()

    #: Seconds before the same refused token is tried again.
    REFUSED_RETRY = 6 * 3600.0
    #: Seconds between looks at the token source while it is refused.
    TOKEN_LOOK = 300.0

    def __init__(self, url: str, token: Union[str, Callable[[], Optional[str]]], reactor: Any,
                 clock: Any, retry: Callable[[], None], on_fatal: Callable[[str], None],
                 wall_clock: Callable[[], float], connect: Callable = W.connect,
                 rng: Optional[random.Random] = None) -> None:
        """
        @param token: the access token, or what reads it afresh (the token
            file or the environment; C{None} when it gives none).
        @param retry: what to call when it is time to try again.
        """
        self.url = url
        self._read_token = token if callable(token) else (lambda: token)
        self.reactor = reactor
        self.clock = clock
        self._retry_now = retry
        self.on_fatal = on_fatal
        self.wall_clock = wall_clock
        self._connect = connect
        self.backoff = Backoff(2.0, 40.0, rng or random.Random())  # jitter keeps it < 60 s
        self.session: Optional[W.HaSession] = None
        self._authenticated_once = False
        self._away_since: Optional[float] = None
        self._refused: Optional[tuple] = None  # (token, when it was refused)
        self._said_token: Optional[str] = None
        self._retry = None
        self._stopping = False
        self._resting = False  # the session closed after a sync, not for an outage
        self._closing: Optional[W.HaSession] = None  # that session, until it has ended
        self._connecting: Optional[defer.Deferred] = None  # a session being made

    def __repr__(self) -> str:  # never the token
        return f"<HaConnection {self.url}>"

    @property
    def connected(self) -> bool:
        """
        Whether HA takes our imports: a session is open and no outage is on.
        A login during an outage (an HA that then hangs or drops the import)
        is not enough, or a monitor could never see such an HA.
        """
        return (self.session is not None or self._resting) and self._away_since is None

    def stop(self) -> defer.Deferred:
        """
        The service stops: no more tries, and the session's end is no outage.

        @return: a Deferred that fires once no session is left: the open one,
            the rested one still closing, or one being made (closed once made).
        """
        self._stopping = True
        self._cancel_retry()
        done: defer.Deferred = defer.Deferred()
        if self._connecting is not None:
            # After open() has seen the connection made (it closes it then).
            self._connecting.addBoth(lambda _: self.reactor.callLater(0, self._close, done))
        else:
            self._close(done)
        return done

    def _close(self, done: defer.Deferred) -> None:
        closing = self._closing
        session = self.session or (closing if closing is not None and not closing.lost.called
                                   else None)
        if session is None:
            done.callback(None)
        else:
            session.close_and_wait(self.reactor).chainDeferred(done)

    async def open(self) -> bool:
        """
        Open a session unless one is open; on failure say so (once) and
        schedule a try.

        @return: whether a session is open.
        """
        if self.session is not None:
            return True
        opened = await self._open()
        if not opened:
            self._resting = False  # no session to be had now: HA does not take imports
        return opened

    async def _open(self) -> bool:
        if self._retry is not None and self._retry.active() and self._refused is None:
            return False  # HA is away and its backoff runs: a new record waits for it
        token = self._token()  # (a refused token: a new one in the file is used at once)
        if token is None:
            return False
        self._connecting = defer.ensureDeferred(self._connect(self.reactor, self.url, token))
        try:
            session = await self._connecting
        except W.HaAuthError as e:
            self._auth_refused(token, str(e))
            return False
        except W.HaUnreachable as e:
            if isinstance(e, W.HaWrongScheme) and not self._authenticated_once:
                self.on_fatal(str(e))
            else:
                self.lost(str(e))
            return False
        finally:
            self._connecting = None
        if self._stopping:  # made while the service stopped: closed at once
            self._closing = session
            session.close()
            return False
        self.session = session
        self._authenticated_once = True
        if self._said_token is not None:  # the error line said, its end said too
            self.log.info("Home Assistant took the access token; imports go on")
        self._refused = self._said_token = None
        session.lost.addCallback(lambda _: self._closed(session))
        return True

    def synced(self) -> None:
        """A synchronisation succeeded: HA is back, the backoff starts over."""
        self.backoff.reset()
        self._cancel_retry()  # or the next outage's first try would wait for it
        if self._away_since is not None:
            self.log.warn("Home Assistant is back after {s:.0f} s; its statistics are refilled",
                          s=self.wall_clock() - self._away_since)
            self._away_since = None

    def rest(self) -> None:
        """
        Nothing more to send: close the session until the next record opens
        one.  An open session is pinged every minute, which would wake the
        service for nothing between two slots; a hung HA shows at the next
        command's deadline anyway.  Not an outage: C{connected} stays.
        """
        session, self.session = self.session, None
        if session is not None:
            self._resting = self._away_since is None
            self._closing = session
            session.close()

    def lost(self, why: str) -> None:
        """HA away: one warning an outage, then tries with backoff."""
        if self.session is not None:
            self.session.close()
        self.session = None
        if self._away_since is None:
            self._away_since = self.wall_clock()
            self.log.warn("{why}; trying again, at least once a minute, and refilling then",
                          why=why)
        self._try_in(self.backoff.next_delay())

    def _closed(self, session: W.HaSession) -> None:
        if self.session is session:
            self.session = None
            if not self._stopping:
                self.lost("the connection to Home Assistant ended")

    def _token(self) -> Optional[str]:
        """The token to connect with now, or C{None} (then a look is scheduled)."""
        try:
            token = self._read_token()
        except ConfigError as e:
            self._say_token(f"{e}; looking again every {self.TOKEN_LOOK / 60:g} min")
            self._try_in(self.TOKEN_LOOK)
            return None
        if not token:
            self._say_token("no Home Assistant access token any more; looking again every "
                            f"{self.TOKEN_LOOK / 60:g} min")
            self._try_in(self.TOKEN_LOOK)
            return None
        if self._refused is not None and self._refused[0] == token \
                and self.clock.seconds() < self._refused[1] + self.REFUSED_RETRY:
            self._try_in(self.TOKEN_LOOK)  # the same token: look for a new one later
            return None
        return token

    def _auth_refused(self, token: str, why: str) -> None:
        if not self._authenticated_once:
            self.on_fatal(why)
            return
        self._refused = (token, self.clock.seconds())
        self._say_token(f"{why}; the token is read again every {self.TOKEN_LOOK / 60:g} min "
                        f"(a new one is used at once), the same one tried again in "
                        f"{self.REFUSED_RETRY / 3600:g} h")
        self._try_in(self.TOKEN_LOOK)

    def _say_token(self, text: str) -> None:
        """A token problem, at error level, once until it changes."""
        if text != self._said_token:
            self._said_token = text
            self.log.error("{why}", why=text)

    def _try_in(self, seconds: float) -> None:
        if self._stopping:
            return
        if self._retry is None or not self._retry.active():
            self._retry = self.clock.callLater(seconds, self._retry_now)

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
