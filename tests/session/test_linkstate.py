"""
Tests for L{smartmeter_tx.session.linkstate}: the pure owner of the PANA session state
and of the holds (EVENT 29, EVENT 32 / SFB) that forbid sending.
"""

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.session.linkstate import (
    HOLD_EXPIRY, HOLD_RATE_LIMIT, LinkState, Session, sfb_set,
)

JOINED, EXPIRED, LIMITED, RELEASED = 0x25, 0x29, 0x32, 0x33
LOST = (0x24, 0x26, 0x27, 0x28)


def up_at(now=100.0) -> LinkState:
    """A LinkState whose session came up (EVENT 25) at C{now}."""
    state = LinkState()
    state.event(JOINED, now)
    return state


class InitialTests(SynchronousTestCase):
    """
    A new LinkState knows nothing and holds nothing.
    """

    def test_fresh(self):
        """A new LinkState has an UNKNOWN session, no hold, and no counters or readings."""
        state = LinkState()
        self.assertIs(state.session, Session.UNKNOWN)
        self.assertFalse(state.session_up)
        self.assertIsNone(state.session_since)
        self.assertIsNone(state.held)
        self.assertFalse(state.rate_limited)
        self.assertEqual(state.rate_limited_count, 0)
        self.assertIsNone(state.last_event)
        self.assertIsNone(state.last_rssi)
        self.assertIsNone(state.last_lqi)
        self.assertFalse(state.rate_check_due(1e9))
        self.assertIsNone(state.review(1e9))


class SessionEventTests(SynchronousTestCase):
    """
    EVENT 25 brings the session up; EVENT 24/26/27/28 take it down.
    """

    def test_joined(self):
        """EVENT 25 puts the session UP with session_since the event's time, logging nothing."""
        state = LinkState()
        self.assertIsNone(state.event(JOINED, 12.5))
        self.assertIs(state.session, Session.UP)
        self.assertTrue(state.session_up)
        self.assertEqual(state.session_since, 12.5)
        self.assertEqual(state.last_event, JOINED)

    def test_joinedAgainKeepsSince(self):
        """A second EVENT 25 while UP keeps the time the session first came up."""
        state = up_at(10.0)
        state.event(JOINED, 50.0)
        self.assertEqual(state.session_since, 10.0)
        self.assertTrue(state.session_up)

    def test_joinedAfterDownRestartsSince(self):
        """EVENT 25 after the session went down records the new session's time."""
        state = up_at(10.0)
        state.event(0x27, 20.0)
        state.event(JOINED, 30.0)
        self.assertEqual(state.session_since, 30.0)

    def test_lostWhenUp(self):
        """Each of EVENT 24, 26, 27 and 28 takes an UP session DOWN and says "session lost"."""
        for num in LOST:
            state = up_at(10.0)
            self.assertEqual(state.event(num, 20.0), "session lost", hex(num))
            self.assertIs(state.session, Session.DOWN, hex(num))
            self.assertFalse(state.session_up)
            self.assertIsNone(state.session_since, hex(num))
            self.assertEqual(state.last_event, num)

    def test_lostWhenNotUp(self):
        """EVENT 24/26/27/28 on an UNKNOWN or DOWN session sets it DOWN without "session lost"."""
        for num in LOST:
            state = LinkState()
            self.assertIsNone(state.event(num, 1.0), hex(num))
            self.assertIs(state.session, Session.DOWN)
            self.assertIsNone(state.event(num, 2.0), hex(num))
            self.assertIs(state.session, Session.DOWN)

    def test_otherEvents(self):
        """An EVENT that is not about the session (21, 22, 02) changes nothing but last_event."""
        state = up_at(10.0)
        for num in (0x21, 0x22, 0x02):
            self.assertIsNone(state.event(num, 11.0))
            self.assertEqual(state.last_event, num)
        self.assertTrue(state.session_up)
        self.assertEqual(state.session_since, 10.0)
        self.assertIsNone(state.held)

    def test_upAndDownDirectly(self):
        """up() and down() (the client's own conclusions) move the session like 25 and 24 do."""
        state = LinkState()
        state.up(5.0)
        self.assertEqual((state.session, state.session_since), (Session.UP, 5.0))
        state.down()
        self.assertEqual((state.session, state.session_since), (Session.DOWN, None))


class ExpiryHoldTests(SynchronousTestCase):
    """
    EVENT 29 holds sends until EVENT 25 or 24, or until review() gives up.
    """

    def test_expiredHolds(self):
        """EVENT 29 holds sends with HOLD_EXPIRY and says why; the session stays UP."""
        state = up_at(10.0)
        message = state.event(EXPIRED, 100.0)
        self.assertIn("re-authentication", message)
        self.assertEqual(state.held, HOLD_EXPIRY)
        self.assertEqual(state.expired_at, 100.0)
        self.assertTrue(state.session_up)
        self.assertEqual(state.session_since, 10.0)

    def test_joinedEndsHold(self):
        """EVENT 25 after EVENT 29 ends the hold and keeps the session UP."""
        state = up_at(10.0)
        state.event(EXPIRED, 100.0)
        state.event(JOINED, 105.0)
        self.assertIsNone(state.held)
        self.assertIsNone(state.expired_at)
        self.assertTrue(state.session_up)
        self.assertIsNone(state.review(1000.0))

    def test_failedEndsHold(self):
        """EVENT 24 after EVENT 29 ends the hold and takes the session DOWN ("session lost")."""
        state = up_at(10.0)
        state.event(EXPIRED, 100.0)
        self.assertEqual(state.event(0x24, 103.0), "session lost")
        self.assertIsNone(state.held)
        self.assertIs(state.session, Session.DOWN)
        self.assertIsNone(state.review(1000.0))

    def test_holdLastsUntilReviewMax(self):
        """review() keeps the EVENT 29 hold up to EXPIRY_HOLD_MAX seconds after it came."""
        state = up_at(10.0)
        state.event(EXPIRED, 100.0)
        for now in (100.0, 130.0, 100.0 + LinkState.EXPIRY_HOLD_MAX):
            self.assertIsNone(state.review(now), now)
            self.assertEqual(state.held, HOLD_EXPIRY)
            self.assertTrue(state.session_up)

    def test_reviewEndsHold(self):
        """review() after EXPIRY_HOLD_MAX ends the hold, takes the session DOWN and says how long."""
        state = up_at(10.0)
        state.event(EXPIRED, 100.0)
        message = state.review(100.0 + LinkState.EXPIRY_HOLD_MAX + 1)
        self.assertEqual(message, "no re-authentication 61 s after EVENT 29")
        self.assertIsNone(state.held)
        self.assertIsNone(state.expired_at)
        self.assertIs(state.session, Session.DOWN)
        self.assertIsNone(state.session_since)
        self.assertIsNone(state.review(500.0))

    def test_repeatedExpiryKeepsFirst(self):
        """EVENT 29 again during the hold keeps it counting from the first, and says nothing."""
        state = up_at(10.0)
        self.assertIn("re-authentication", state.event(EXPIRED, 100.0))
        self.assertIsNone(state.event(EXPIRED, 130.0))
        self.assertIsNone(state.event(EXPIRED, 159.0))
        self.assertEqual(state.expired_at, 100.0)
        self.assertEqual(state.held, HOLD_EXPIRY)
        self.assertEqual(state.last_event, EXPIRED)

    def test_repeatedExpiryEndsInTime(self):
        """review() ends the hold EXPIRY_HOLD_MAX after the first EVENT 29 while 29 keeps coming."""
        state = up_at(10.0)
        for now in (100.0, 130.0, 160.0):
            state.event(EXPIRED, now)
            self.assertIsNone(state.review(now))
        message = state.review(100.0 + LinkState.EXPIRY_HOLD_MAX + 1)
        self.assertEqual(message, "no re-authentication 61 s after EVENT 29 (said 3 times)")
        self.assertIsNone(state.held)
        self.assertIs(state.session, Session.DOWN)

    def test_expiryAfterGivingUpIsTheSameEpisode(self):
        """An EVENT 29 after review() gave up neither holds nor says anything until EVENT 25."""
        state = up_at(10.0)
        state.event(EXPIRED, 100.0)
        state.review(161.0)
        self.assertIsNone(state.event(EXPIRED, 190.0))
        self.assertIsNone(state.held)
        self.assertIs(state.session, Session.DOWN)
        state.event(JOINED, 200.0)  # the join: the episode is over
        self.assertIn("re-authentication", state.event(EXPIRED, 300.0))
        self.assertEqual((state.held, state.expired_at), (HOLD_EXPIRY, 300.0))

    def test_episodeEndsWithSessionOrConnection(self):
        """After EVENT 24, EVENT 27 or a new connection, EVENT 29 begins a new episode."""
        for end in (lambda s: s.event(0x24, 110.0), lambda s: s.event(0x27, 110.0),
                    LinkState.new_connection):
            state = up_at(10.0)
            state.event(EXPIRED, 100.0)
            end(state)
            self.assertIn("re-authentication", state.event(EXPIRED, 120.0))
            self.assertEqual((state.held, state.expired_at), (HOLD_EXPIRY, 120.0))

    def test_reviewWithoutHold(self):
        """review() with no EVENT 29 pending changes nothing, even long after."""
        state = up_at(10.0)
        self.assertIsNone(state.review(10_000.0))
        self.assertTrue(state.session_up)


class RateLimitTests(SynchronousTestCase):
    """
    EVENT 32 holds every send until EVENT 33 (or SFB says 0); episodes are counted.
    """

    def test_limited(self):
        """EVENT 32 holds sends with HOLD_RATE_LIMIT and counts one episode."""
        state = up_at()
        message = state.event(LIMITED, 200.0)
        self.assertIn("EVENT 32", message)
        self.assertTrue(state.rate_limited)
        self.assertEqual(state.held, HOLD_RATE_LIMIT)
        self.assertEqual(state.rate_limited_count, 1)
        self.assertTrue(state.session_up)

    def test_repeatedLimitedCountsOnce(self):
        """A second and third EVENT 32 within one hold do not count another episode."""
        state = up_at()
        state.event(LIMITED, 200.0)
        state.event(LIMITED, 210.0)
        state.event(LIMITED, 220.0)
        self.assertEqual(state.rate_limited_count, 1)
        self.assertTrue(state.rate_limited)

    def test_eachHoldCounts(self):
        """EVENT 32, 33, 32 counts two episodes."""
        state = up_at()
        state.event(LIMITED, 200.0)
        state.event(RELEASED, 300.0)
        state.event(LIMITED, 400.0)
        self.assertEqual(state.rate_limited_count, 2)

    def test_released(self):
        """EVENT 33 ends the EVENT 32 hold, says so, and keeps the episode count."""
        state = up_at()
        state.event(LIMITED, 200.0)
        self.assertIn("EVENT 33", state.event(RELEASED, 300.0))
        self.assertFalse(state.rate_limited)
        self.assertIsNone(state.held)
        self.assertEqual(state.rate_limited_count, 1)
        self.assertFalse(state.rate_check_due(10_000.0))

    def test_releasedWithoutHold(self):
        """EVENT 33 without a hold logs nothing and changes nothing but last_event."""
        state = up_at()
        self.assertIsNone(state.event(RELEASED, 300.0))
        self.assertFalse(state.rate_limited)
        self.assertEqual(state.rate_limited_count, 0)
        self.assertEqual(state.last_event, RELEASED)

    def test_rateLimitHasPriority(self):
        """With both EVENT 29 and EVENT 32 holding, held names the rate limit, then the expiry."""
        state = up_at()
        state.event(EXPIRED, 100.0)
        state.event(LIMITED, 101.0)
        self.assertEqual(state.held, HOLD_RATE_LIMIT)
        state.event(RELEASED, 102.0)
        self.assertEqual(state.held, HOLD_EXPIRY)

    def test_priorityEitherOrder(self):
        """The rate limit wins over the expiry whichever EVENT came first."""
        state = up_at()
        state.event(LIMITED, 100.0)
        state.event(EXPIRED, 101.0)
        self.assertEqual(state.held, HOLD_RATE_LIMIT)

    def test_sessionLossKeepsRateLimit(self):
        """Losing the session does not end the EVENT 32 hold (the radio budget is still spent)."""
        state = up_at()
        state.event(LIMITED, 100.0)
        state.event(0x27, 101.0)
        self.assertEqual(state.held, HOLD_RATE_LIMIT)

    def test_rateCheckDue(self):
        """rate_check_due is false until RATE_CHECK_INTERVAL after EVENT 32, then true."""
        state = up_at()
        state.event(LIMITED, 1000.0)
        interval = LinkState.RATE_CHECK_INTERVAL
        self.assertFalse(state.rate_check_due(1000.0))
        self.assertFalse(state.rate_check_due(1000.0 + interval - 0.001))
        self.assertTrue(state.rate_check_due(1000.0 + interval))
        self.assertTrue(state.rate_check_due(1000.0 + 10 * interval))

    def test_repeatedLimitedPostponesCheck(self):
        """A repeated EVENT 32 postpones the SFB check to RATE_CHECK_INTERVAL after it."""
        state = up_at()
        interval = LinkState.RATE_CHECK_INTERVAL
        state.event(LIMITED, 1000.0)
        state.event(LIMITED, 1100.0)
        self.assertFalse(state.rate_check_due(1000.0 + interval))
        self.assertTrue(state.rate_check_due(1100.0 + interval))

    def test_rateCheckNotDueUnlimited(self):
        """rate_check_due is never true without a rate-limit hold."""
        state = up_at()
        for now in (0.0, 1e6):
            self.assertFalse(state.rate_check_due(now))


class SFBTests(SynchronousTestCase):
    """
    The SFB register, as the module prints it, and what reading it does.
    """

    def test_sfbSetValues(self):
        """sfb_set reads 0 and 00 as not set, 1, 01, 0001 (and padded text) as set."""
        for value in ("0", "00", "0000", " 0\r"):
            self.assertFalse(sfb_set(value), repr(value))
        for value in ("1", "01", "0001", " 01 "):
            self.assertTrue(sfb_set(value), repr(value))

    def test_sfbSetGarbage(self):
        """sfb_set counts what is not a hex number (empty, words, OK) as not set."""
        for value in ("", "   ", "OK", "ESREG", "zz", "1 2", "FAIL ER06"):
            self.assertFalse(sfb_set(value), repr(value))

    def test_sfbLimits(self):
        """LinkState.sfb("01") holds sends, counts one episode and returns True."""
        state = up_at()
        self.assertTrue(state.sfb("01", 50.0))
        self.assertTrue(state.rate_limited)
        self.assertEqual(state.held, HOLD_RATE_LIMIT)
        self.assertEqual(state.rate_limited_count, 1)

    def test_sfbWhileLimitedDoesNotRecount(self):
        """SFB 1 while EVENT 32 already holds counts no new episode."""
        state = up_at()
        state.event(LIMITED, 10.0)
        self.assertTrue(state.sfb("0001", 20.0))
        self.assertTrue(state.sfb("1", 30.0))
        self.assertEqual(state.rate_limited_count, 1)

    def test_sfbReleases(self):
        """SFB 0 ends an EVENT 32 hold (EVENT 33 was missed) and returns False."""
        state = up_at()
        state.event(LIMITED, 10.0)
        self.assertFalse(state.sfb("00", 400.0))
        self.assertFalse(state.rate_limited)
        self.assertIsNone(state.held)
        self.assertEqual(state.rate_limited_count, 1)

    def test_sfbGarbageNotLimited(self):
        """A garbled SFB reading does not hold sends, nor count an episode."""
        state = up_at()
        self.assertFalse(state.sfb("garbage", 10.0))
        self.assertFalse(state.rate_limited)
        self.assertEqual(state.rate_limited_count, 0)

    def test_sfbSchedulesNextCheck(self):
        """After SFB 1, the next check is due RATE_CHECK_INTERVAL after that reading."""
        state = up_at()
        interval = LinkState.RATE_CHECK_INTERVAL
        state.event(LIMITED, 0.0)
        self.assertTrue(state.rate_check_due(interval))
        state.sfb("1", interval)
        self.assertFalse(state.rate_check_due(interval + 1))
        self.assertTrue(state.rate_check_due(2 * interval))


class RadioTests(SynchronousTestCase):
    """
    RSSI and LQI readings are kept as they come.
    """

    def test_rssiAndScan(self):
        """rssi() keeps the dBm; scanned() keeps the LQI and its dBm."""
        state = LinkState()
        state.rssi(-71.0)
        self.assertEqual(state.last_rssi, -71.0)
        state.scanned(0xB2, -55.5)
        self.assertEqual((state.last_lqi, state.last_rssi), (0xB2, -55.5))


class NewConnectionTests(SynchronousTestCase):
    """
    A fresh serial connection forgets the session and the holds, not the history.
    """

    def test_resetsSessionAndHolds(self):
        """new_connection makes the session UNKNOWN and drops the EVENT 29 and 32 holds."""
        state = up_at(10.0)
        state.event(EXPIRED, 100.0)
        state.event(LIMITED, 101.0)
        state.new_connection()
        self.assertIs(state.session, Session.UNKNOWN)
        self.assertIsNone(state.session_since)
        self.assertIsNone(state.expired_at)
        self.assertFalse(state.rate_limited)
        self.assertIsNone(state.held)
        self.assertFalse(state.rate_check_due(1e9))
        self.assertIsNone(state.review(1e9))

    def test_keepsCountersAndReadings(self):
        """new_connection keeps the episode count, the last EVENT, the RSSI and the LQI."""
        state = up_at(10.0)
        state.scanned(0x90, -60.0)
        state.rssi(-70.0)
        state.event(LIMITED, 101.0)
        state.new_connection()
        self.assertEqual(state.rate_limited_count, 1)
        self.assertEqual(state.last_event, LIMITED)
        self.assertEqual(state.last_rssi, -70.0)
        self.assertEqual(state.last_lqi, 0x90)

    def test_newEpisodeAfterReconnect(self):
        """An EVENT 32 on the new connection counts a new episode."""
        state = up_at()
        state.event(LIMITED, 1.0)
        state.new_connection()
        state.event(LIMITED, 2.0)
        self.assertEqual(state.rate_limited_count, 2)

    def test_repr(self):
        """The repr shows the session and the hold."""
        state = up_at()
        state.event(LIMITED, 1.0)
        self.assertEqual(repr(state),
                         f"<LinkState session=up held={HOLD_RATE_LIMIT!r}>")
