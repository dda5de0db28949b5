"""
Tests for L{smartmeter_tx.session.discovery.matching_pans}: which of the PANs a scan
heard are worth joining, best first.
"""

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.session.discovery import matching_pans
from smartmeter_tx.sk.values import PanDesc

RBID = "00112233445566778899AABBCCDDEEFF"
PAIR = RBID[-8:]  # "CCDDEEFF"
MAC = "001D129012345678"
OTHER_MAC = "0011223344556677"


def pan(lqi, channel=0x3B, pan_id=0x8888, addr=MAC, side=None, pair_id=PAIR):
    return PanDesc(channel=channel, channel_page=0x09, pan_id=pan_id, addr=addr, lqi=lqi,
                   side=side, pair_id=pair_id)


class MatchingPansTests(SynchronousTestCase):
    def test_empty(self):
        """No descriptors give no PANs."""
        self.assertEqual(matching_pans([], RBID), [])

    def test_one(self):
        """One matching descriptor (standard module: no SIDE) is returned as it is."""
        desc = pan(0xB2)
        self.assertEqual(matching_pans([desc], RBID), [desc])

    def test_hanSideSkipped(self):
        """A DSE descriptor heard on SIDE 1 (HAN) is skipped; SIDE 0 (B-route) is kept."""
        b_route = pan(0x50, side=0)
        self.assertEqual(matching_pans([pan(0xF0, side=1), b_route], RBID), [b_route])
        self.assertEqual(matching_pans([pan(0xF0, side=1)], RBID), [])

    def test_pairIdMismatchSkipped(self):
        """A PAN whose pairing ID is not the last 8 characters of our B-route ID is skipped."""
        ours = pan(0x40)
        other = pan(0xF0, addr=OTHER_MAC, pan_id=0x1111, pair_id="12345678")
        self.assertEqual(matching_pans([other, ours], RBID), [ours])
        self.assertEqual(matching_pans([other], RBID), [])

    def test_pairIdNoneAccepted(self):
        """A descriptor without a PairID line (the module did not print it) is accepted."""
        desc = pan(0x40, pair_id=None)
        self.assertEqual(matching_pans([desc], RBID), [desc])

    def test_withoutRbid(self):
        """Without a B-route ID, the pairing ID is not checked."""
        desc = pan(0x40, pair_id="12345678")
        self.assertEqual(matching_pans([desc], None), [desc])
        self.assertEqual(matching_pans([desc], ""), [desc])

    def test_duplicatesMergedBestLqi(self):
        """Several descriptors of one PAN count once, with the best LQI heard, in any order."""
        descs = [pan(0x40), pan(0xB2), pan(0x80)]
        for order in (descs, descs[::-1]):
            self.assertEqual(matching_pans(order, RBID), [pan(0xB2)])

    def test_distinctPansKept(self):
        """Descriptors differing in channel, PAN ID or address are different PANs."""
        descs = [pan(0x40), pan(0x41, channel=0x21), pan(0x42, pan_id=0x1234),
                 pan(0x43, addr=OTHER_MAC)]
        self.assertEqual(len(matching_pans(descs, RBID)), 4)

    def test_sortedBestFirst(self):
        """The PANs come best LQI first."""
        a = pan(0x30, channel=0x21)
        b = pan(0xC0, channel=0x22)
        c = pan(0x70, channel=0x23)
        self.assertEqual(matching_pans([a, b, c], RBID), [b, c, a])

    def test_filtersBeforeMerging(self):
        """A HAN-side or foreign descriptor of the same PAN never lends its better LQI."""
        descs = [pan(0x40, side=0), pan(0xF0, side=1), pan(0xE0, side=0, pair_id="12345678")]
        self.assertEqual(matching_pans(descs, RBID), [pan(0x40, side=0)])

    def test_acceptsIterator(self):
        """matching_pans takes any iterable (e.g. a generator)."""
        self.assertEqual(matching_pans((pan(lqi) for lqi in (1, 2)), RBID), [pan(2)])


class ProgressTests(SynchronousTestCase):
    """What a scan says while it runs (C{--scan} prints it on stderr)."""

    def test_everyStepAndEveryTenSeconds(self):
        """
        A meter found only at duration 7 (about a minute of scanning): each
        step is announced with what it covers and its length, and no more
        than 10 s pass between two lines.
        """
        from twisted.internet import defer

        from smartmeter_tx.session import client as C
        from smartmeter_tx.session import join, steps
        from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
        from tests.emuloop import Loop

        loop = Loop(scan_min_duration=7)
        self.addCleanup(loop.stop)
        client = C.BRouteClient(loop.connect(), join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD),
                                loop.clock)
        self.addCleanup(client.close)
        lines = []
        client.joiner.discovery.progress = lambda text: lines.append((loop.clock.seconds(), text))
        start = loop.clock.seconds()
        d = loop.run(defer.Deferred.fromCoroutine(
            client.joiner.locate(steps.Budget(loop.clock, 120))))
        self.successResultOf(d)
        end = loop.clock.seconds()
        texts = [text for _, text in lines]
        self.assertEqual([t for t in texts if not t.startswith("still")], [
            "scanning all 28 channels (duration 5, about 9 s)",
            "scanning all 28 channels (duration 6, about 17 s)",
            "scanning all 28 channels (duration 7, about 35 s)",
        ])
        self.assertIn("still scanning: 30 s of about 35 s", texts)
        times = [start] + [t for t, _ in lines] + [end]
        self.assertGreater(end - start, 55)
        self.assertLessEqual(max(b - a for a, b in zip(times, times[1:])), 10.0 + 1.1)
