"""
C{twist smartmeter} under a host clock that steps, as NTP fixing a fast
clock or a Pi's fake-hwclock at boot makes it: the real service in a
subprocess on the emulator, its wall clock moved by libfaketime (Debian's
C{libfaketime}; the monotonic clock left alone), while the test watches
C{/metrics}, C{/latest} and the log.

The schedule runs on the monotonic clock: a step back stops no poll, a
step forward invents no skipped ones, ages stay true, and each step is
logged once.
"""

from __future__ import annotations

import glob
import json
import os
import urllib.request

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from tests.cli.test_flood import ANSWERED, Twist
from tests.mosquitto import wait_for

#: Debian's libfaketime (package libfaketime), by architecture.
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
SKIPPED = "smartmeter_polls_skipped_total"


class ClockStepTests(TestCase):
    timeout = 120  # only catches a hang

    def setUp(self):
        if not LIBFAKETIME:
            raise SkipTest("libfaketime not installed: apt-get install libfaketime")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.offset = os.path.join(self.dir, "faketime")
        self.set_offset("+0")
        env = {"LD_PRELOAD": LIBFAKETIME[0], "FAKETIME_TIMESTAMP_FILE": self.offset,
               "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        self.twist = Twist(self.dir, interval=1.0, env=env)
        self.twist.start()
        self.addCleanup(self.twist.stop)

    def set_offset(self, text: str) -> None:
        """Move the service's wall clock to real time plus C{text} (libfaketime's form)."""
        with open(self.offset, "w") as f:
            f.write(text + "\n")

    def latest(self) -> dict:
        url = f"http://127.0.0.1:{self.twist.port}/latest"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())

    def more_polls(self, n: int, what: str):
        """Wait for C{n} more polls answered (a hang catcher: 20 s for what takes ~n s)."""
        start = self.twist.answered()
        return wait_for(lambda: self.twist.answered() >= start + n, what, 20 + 2 * n, 0.2)

    @defer.inlineCallbacks
    def test_stepBackAndForward(self):
        """
        A 300 s step back and a 2 h step forward: polls go on at their
        interval, no skipped polls appear, the reading's age stays small
        and true, records carry the new wall time, each step is logged once.
        """
        yield wait_for(lambda: self.twist.answered() >= 2, "the first readings", 60, 0.2)
        skipped = self.twist.metrics()[SKIPPED]
        before = self.latest()["time"]
        self.set_offset("-300")
        yield self.more_polls(4, "polls after the clock went back 300 s")
        latest = self.latest()
        self.assertLess(latest["time"], before - 250)  # stamped with the new wall time
        self.assertTrue(0 <= latest["age"] < 3, latest)
        self.assertTrue(0 <= latest["poll_age"] < 3, latest)
        self.set_offset("+7200")
        yield self.more_polls(4, "polls after the clock went forward 2 h")
        figures = self.twist.metrics()
        self.assertLessEqual(figures[SKIPPED] - skipped, 3)
        latest = self.latest()
        self.assertGreater(latest["time"], before + 7000)
        self.assertTrue(0 <= latest["age"] < 3, latest)
        self.assertGreaterEqual(figures["smartmeter_last_poll_age_seconds"], 0)
        log = self.twist.log_text()
        self.assertEqual(log.count("the host's clock stepped back by 300 s"), 1, log[-3000:])
        self.assertEqual(log.count("the host's clock stepped forward by 7500 s"), 1,
                         log[-3000:])
        self.assertNotIn("Traceback", log)
        self.assertGreater(self.twist.answered(), 0)
        self.assertIn(ANSWERED, figures)
