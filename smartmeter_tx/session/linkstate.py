"""
The one owner of what the module tells us about the link: whether a PANA
session is up, and the holds that forbid sending (EVENT 29 until the module
has re-authenticated by itself, EVENT 32 until the ARIB transmit-time budget is
released).  Pure: no Twisted, no I/O; time is passed in.

The client feeds it every EVENT and every SFB reading, and asks it what
silence means (unanswered Gets, unanswered polls); the service, the HTTP
endpoints and the logs only read it.
"""

from __future__ import annotations

import enum
from typing import Optional

from smartmeter_tx.sk.events import EventNum

__all__ = ["Session", "LinkState", "sfb_set", "HOLD_EXPIRY", "HOLD_RATE_LIMIT", "LOST_EVENTS",
           "WARNING_EVENTS"]

HOLD_EXPIRY = "session re-authentication (EVENT 29)"
HOLD_RATE_LIMIT = "transmit-time limit (EVENT 32)"

#: The events that end a session: failed, ended by the peer, ended, timed out.
LOST_EVENTS = frozenset((EventNum.PANA_FAILED, EventNum.TERMINATE_REQUESTED,
                         EventNum.TERMINATED, EventNum.TERMINATE_TIMED_OUT))
#: The events worth a warning in the log: a session lost, the ARIB limit engaged.
WARNING_EVENTS = LOST_EVENTS | {EventNum.TX_LIMITED}


class Session(enum.Enum):
    """What we know of the module's PANA session."""

    UNKNOWN = "unknown"  # a fresh connection: the module may still hold one
    UP = "up"
    DOWN = "down"
    NO_MODULE = "no_module"  # the serial port is closed (an unplugged dongle)


def sfb_set(value: str) -> bool:
    """
    Whether the SFB register (send-restricted flag, read with C{SKSREG SFB})
    says that the module cancels every send.  Modules print it as C{1}, C{01}
    or C{0001}; anything that is not a hex number counts as not set, since a
    wrong "limited" would stop all reading for an hour.
    """
    try:
        return int(value.strip(), 16) != 0
    except ValueError:
        return False


class LinkState:
    """
    @ivar session: a L{Session}.
    @ivar session_since: when the session was last seen coming up, or C{None}.
    @ivar expired_at: when the first EVENT 29 of the episode came, while
        sends are held for the module's re-authentication.
    @ivar rate_limited: whether EVENT 32 (or SFB) holds every send.
    @ivar rate_limited_count: EVENT 32 episodes seen so far.
    @ivar last_event: the number of the last EVENT, or C{None}.
    @ivar last_rssi: the last received signal strength (dBm), or C{None}.
    @ivar last_lqi: the last LQI from a scan, or C{None}.
    @ivar silent_polls: polls in a row that got no answer.
    """

    #: Longest wait for the module's own re-authentication after EVENT 29 (it
    #: takes a few to about 15 s) before the session is taken as gone.
    EXPIRY_HOLD_MAX = 60.0
    #: While EVENT 32 holds sends, read SFB this often in case EVENT 33 was
    #: missed (e.g. printed while the port was closed).
    RATE_CHECK_INTERVAL = 300.0
    #: Unanswered Gets in a row, with the session unknown, that mean the
    #: module has no session (once SFB says sends are not being cancelled).
    SILENT_GETS = 2
    #: Unanswered polls in a row, with a session believed up, that mean the
    #: meter dropped it: the module still believes in it, the meter no longer
    #: answers.
    SILENT_POLLS = 3

    def __init__(self) -> None:
        self.session = Session.UNKNOWN
        self.session_since: Optional[float] = None
        self.expired_at: Optional[float] = None
        # EVENT 29s since the episode began (0: none): an episode ends with
        # EVENT 25, 24/26/27/28 or a new connection, not when review() gives
        # up on its hold, so that a module repeating EVENT 29 holds once.
        self._expiries = 0
        self.rate_limited = False
        self.rate_limited_count = 0
        self._next_rate_check = 0.0
        self.last_event: Optional[int] = None
        self.last_rssi: Optional[float] = None
        self.last_lqi: Optional[int] = None
        self.silent_polls = 0

    def __repr__(self) -> str:
        return f"<LinkState session={self.session.value} held={self.held!r}>"

    @property
    def held(self) -> Optional[str]:
        """Why sends are held now, or C{None}."""
        if self.rate_limited:
            return HOLD_RATE_LIMIT
        if self.expired_at is not None:
            return HOLD_EXPIRY
        return None

    @property
    def session_up(self) -> bool:
        return self.session is Session.UP

    # -- what the module says ---------------------------------------------------

    def event(self, num: int, now: float) -> Optional[str]:
        """
        Take one EVENT.

        @return: a short description of the change it made, for the log, or
            C{None} when it changed nothing that matters.
        """
        self.last_event = num
        if num == EventNum.PANA_OK:
            self.up(now)
            return None
        if num == EventNum.SESSION_EXPIRED:
            return self._expired(now)
        if num in LOST_EVENTS:
            was_up = self.session is Session.UP
            self.down()
            self._expiries = 0
            return "session lost" if was_up else None
        if num == EventNum.TX_LIMITED:
            if not self.rate_limited:
                self.rate_limited_count += 1
            self.rate_limited = True
            self._next_rate_check = now + self.RATE_CHECK_INTERVAL
            return "transmit-time limit reached (EVENT 32); holding sends"
        if num == EventNum.TX_RELEASED:
            was = self.rate_limited
            self.rate_limited = False
            return "transmit-time limit released (EVENT 33)" if was else None
        return None

    def _expired(self, now: float) -> Optional[str]:
        """
        EVENT 29: the module re-authenticates by itself, so sends are held
        until 25 or 24.  Only the episode's first EVENT 29 starts the hold
        and is said: a module may say it again before either comes (its
        re-authentication starting over), and a hold started anew by each
        would never reach L{EXPIRY_HOLD_MAX}: sends held for good.
        """
        self._expiries += 1
        if self._expiries > 1:
            return None
        self.expired_at = now
        return "PANA session lifetime expired; waiting for re-authentication"

    def sfb(self, value: str, now: float) -> bool:
        """
        Take a reading of the SFB register.

        @return: whether sends are restricted.
        """
        limited = sfb_set(value)
        if limited and not self.rate_limited:
            self.rate_limited_count += 1
        self.rate_limited = limited
        self._next_rate_check = now + self.RATE_CHECK_INTERVAL
        return limited

    def rssi(self, dbm: float) -> None:
        self.last_rssi = dbm

    def scanned(self, lqi: int, dbm: float) -> None:
        self.last_lqi = lqi
        self.last_rssi = dbm

    # -- what the client concludes ----------------------------------------------

    def up(self, now: float) -> None:
        """A session is up: EVENT 25, or the meter answered."""
        if self.session is not Session.UP:
            self.session_since = now
        self.session = Session.UP
        self.expired_at = None
        self._expiries = 0

    def down(self) -> None:
        """The session is gone: EVENT 24/26/27/28, EVENT 21 02, or lasting silence."""
        self.session = Session.DOWN
        self.session_since = None
        self.expired_at = None

    def new_connection(self) -> None:
        """
        A fresh serial connection: whether the module still holds a session is
        unknown, and holds belong to the old connection (a replugged dongle was
        power-cycled; one still under the ARIB limit says so through SFB).
        """
        self.session = Session.UNKNOWN
        self.session_since = None
        self.expired_at = None
        self._expiries = 0
        self.rate_limited = False
        self._next_rate_check = 0.0
        self.silent_polls = 0

    def port_lost(self) -> None:
        """
        The serial port to the module is closed or cannot be opened (an
        unplugged dongle): nothing can be read until it is open again.
        """
        self.new_connection()
        self.session = Session.NO_MODULE

    def review(self, now: float) -> Optional[str]:
        """
        End the EVENT 29 hold when the module's re-authentication has taken
        longer than L{EXPIRY_HOLD_MAX} since the episode's first EVENT 29 (the
        session is then taken as gone).  The episode goes on: an EVENT 29
        after this holds nothing until EVENT 25 or 24 has ended it.

        @return: a description for the log when the hold was ended, else C{None}.
        """
        if self.expired_at is not None and now - self.expired_at > self.EXPIRY_HOLD_MAX:
            waited = now - self.expired_at
            self.down()
            repeated = f" (said {self._expiries} times)" if self._expiries > 1 else ""
            return f"no re-authentication {waited:.0f} s after EVENT 29{repeated}"
        return None

    # -- silence -------------------------------------------------------------------

    def silence_means_no_session(self, silent_gets: int) -> bool:
        """
        Whether C{silent_gets} unanswered Gets in a row, in one exchange,
        mean the module has no session (with the session unknown only: a
        session known to be up is judged by L{poll_unanswered}).
        """
        return self.session is Session.UNKNOWN and silent_gets >= self.SILENT_GETS

    def poll_unanswered(self) -> Optional[str]:
        """
        Count a poll that got no answer; after L{SILENT_POLLS} in a row with
        the session up, it counts as gone.

        @return: a description for the log when the session was taken down.
        """
        self.silent_polls += 1
        if self.session is Session.UP and self.silent_polls >= self.SILENT_POLLS:
            self.down()
            return f"{self.silent_polls} polls unanswered"
        return None

    def poll_answered(self) -> None:
        self.silent_polls = 0

    def rate_check_due(self, now: float) -> bool:
        """Whether the EVENT 32 hold should be checked against SFB now."""
        return self.rate_limited and now >= self._next_rate_check
