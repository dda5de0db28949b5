"""
What the service's log says of a backfill (L{smartmeter_tx.service.backfill.FillReport}),
on the emulator and a task.Clock: a start, progress at most every 30 s and an
end for a long fill and for the refill after an outage, nothing for the
routine half-hourly slot.
"""

import re

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.service.test_backfill import HOUR, _Harness

START = re.compile(r"^backfill: reading (\d+) missing 30-minute slots \((\d+) days\) from the "
                   r"meter's record$")
PROGRESS = re.compile(r"^backfill: (\d+) of (\d+) days read, (\d+) slots logged, (\d+) missing "
                      r"\((\d+) s so far\)$")
END = re.compile(r"^backfill done: (\d+) slots logged \((\d+) without data from the meter\), "
                 r"none missing, in (\d+) s$")


class FillLogTests(_Harness, SynchronousTestCase):
    """A meter without EC/ED (E2/E4 day reads), a 30-day window."""

    knobs = {"history2": False}

    def setUp(self):
        super().setUp()
        self.said = []  # (clock time, line) of the backfill's info lines
        self.addCleanup(globalLogPublisher.removeObserver, self.observe)
        globalLogPublisher.addObserver(self.observe)

    def observe(self, event):
        if event.get("log_namespace", "").endswith("backfill.Backfill"):
            self.said.append((self.loop.clock.seconds(), formatEvent(event)))

    def lines(self, since=0.0):
        return [line for at, line in self.said if at >= since and line.startswith("backfill")]

    def test_longFillStartProgressEnd(self):
        """
        A 30-day fill says what it will read, then at most every 30 s how far
        it got (days done of the total, slots logged), then what it logged
        in how long; every slot logged is counted.
        """
        window = self.expected_slots(30)  # the first step comes before the next boundary
        poller, datalog = self.start(days=30)
        self.loop.advance(2 * HOUR)
        lines = self.lines()
        start, *progress, end = lines
        slots, days = map(int, START.match(start).groups())
        self.assertEqual(slots, len(window))
        self.assertEqual(days, 31)  # from midnight 30 days back to today
        self.assertGreater(len(progress), 0, lines)
        times = [at for at, line in self.said if PROGRESS.match(line)]
        self.assertTrue(all(b - a >= 30 for a, b in zip(times, times[1:])), times)
        done = [int(PROGRESS.match(line).group(1)) for line in progress]
        self.assertEqual(done, sorted(done))
        logged, nodata, seconds = map(int, END.match(end).groups())
        self.assertEqual((logged, nodata), (slots, 0))  # no boundary passed meanwhile
        self.assertGreater(seconds, 30)
        self.assertEqual(poller.backfill.missing, 0)

    def test_refillAfterOutageQuiet(self):
        """
        After three hours down, the refill (six or seven slots, seconds)
        says its start and its end only; the routine new slot of each half
        hour says nothing.
        """
        poller, datalog = self.start(days=1)
        self.loop.advance(HOUR + 600)  # not right at a boundary
        self.stop(poller, datalog)
        self.loop.advance(3 * HOUR)
        logged_before = {record["slot"] for record in self.logged_slots()}
        missing = [slot for slot in self.expected_slots(1) if slot not in logged_before]
        back = self.loop.clock.seconds()
        poller, datalog = self.start(days=1)
        self.loop.advance(2 * HOUR)
        start, end = self.lines(since=back)
        slots, days = map(int, START.match(start).groups())
        self.assertEqual((slots, days), (len(missing), 1))
        self.assertIn(slots, (6, 7))
        logged, nodata, seconds = map(int, END.match(end).groups())
        self.assertEqual((logged, nodata), (slots, 0))
        self.assertLess(seconds, 30)
        self.assertGreater(poller.backfill.written, slots)  # the routine slots since, unsaid
