"""
The emulated meter's history is a function of the seed (issue 27, item 17),
end to end: what C{smartmeter-history} does (the service's backfill through
the real SK stack and B-route client) run twice against the loopback
emulator on a task.Clock, started at other instants and time scales.
"""

import datetime

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.service.backfill import Backfill
from smartmeter_tx.session import client as C
from smartmeter_tx.session import join
from tests.emuloop import START, Loop

CREDS = join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)


class HistoryRunsTests(SynchronousTestCase):
    """Two backfills of one seed's meter agree on every slot both logged."""

    def history(self, days=2, **knobs):
        """
        The records a C{smartmeter-history --days DAYS} run would print,
        against a fresh emulator with C{knobs}: C{{slot: record}}.
        """
        loop = Loop(**knobs)
        self.addCleanup(loop.stop)
        client = C.BRouteClient(loop.connect(), CREDS, loop.clock)
        self.addCleanup(client.close)
        records: list = []

        async def run():
            await client.ensure_scale()
            meter_now = await client.history.meter_clock()
            backfill = Backfill(days, loop.clock, lambda record, when: records.append(record),
                                loop.clock.seconds)
            self.assertTrue(backfill.due(meter_now))
            while await backfill.step(client):
                pass

        self.successResultOf(loop.run(defer.Deferred.fromCoroutine(run()), 3600))
        return {record["slot"]: record for record in records}

    def test_sameSeedSameHistory(self):
        """
        Runs of seed 3 started at other instants (minutes and a day apart,
        mid-slot) at time scales 1, 0.01 and 0.3 log the same energies and
        cumulative counters for every slot they share.
        """
        runs = [self.history(seed=3, start=START, time_scale=1.0),
                self.history(seed=3, start=START + datetime.timedelta(minutes=4, seconds=51),
                             time_scale=0.01),
                self.history(seed=3, start=START + datetime.timedelta(days=1, hours=3,
                                                                        minutes=40, seconds=7),
                             time_scale=0.3)]
        for i, mine in enumerate(runs):
            for theirs in runs[:i]:
                common = sorted(set(mine) & set(theirs))
                self.assertGreaterEqual(len(common), 48 + 20)
                self.assertEqual([mine[s] for s in common], [theirs[s] for s in common])

    def test_solarAndOtherSeed(self):
        """
        With solar too (the reverse counter): same seed, same records; another
        seed logs other counters for the same slots.
        """
        later = START + datetime.timedelta(hours=5, minutes=13)
        first = self.history(seed=4, solar=3000, start=START, time_scale=0.01)
        second = self.history(seed=4, solar=3000, start=later, time_scale=1.0)
        other = self.history(seed=5, solar=3000, start=START, time_scale=0.01)
        common = sorted(set(first) & set(second))
        self.assertGreaterEqual(len(common), 48 + 20)
        self.assertEqual([first[s] for s in common], [second[s] for s in common])
        self.assertTrue(any(first[s]["energy_reverse_kwh"] > 0 for s in common), "no solar")
        self.assertEqual(set(first), set(other))
        counters = [(first[s]["cumulative_normal_kwh"], other[s]["cumulative_normal_kwh"])
                    for s in first]
        self.assertEqual(sum(a == b for a, b in counters), 0)
