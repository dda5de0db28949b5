"""
Tests for L{smartmeter_tx.outputs.mqtt.outbox.Outbox}: order, one message in
flight per topic, what a lost connection puts back, and the bound.
"""

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.outputs.mqtt.outbox import Outbox


class OutboxTests(SynchronousTestCase):
    def test_oneInFlightPerTopic(self):
        """Only the oldest message of each topic is ready; the next once it is acknowledged."""
        box = Outbox(10)
        for n in range(3):
            box.put("state", b"s%d" % n)
        box.put("energy", b"e0")
        self.assertEqual(box.take_ready(), [("state", b"s0"), ("energy", b"e0")])
        self.assertEqual(box.take_ready(), [])
        self.assertEqual((box.waiting, box.in_flight, len(box)), (2, 2, 4))
        box.acknowledged("state")
        self.assertEqual(box.take_ready(), [("state", b"s1")])
        self.assertEqual(box.delivered, 1)

    def test_requeueKeepsTheOrder(self):
        """A lost connection puts what was in flight back before the newer messages of its topic."""
        box = Outbox(10)
        box.put("state", b"old")
        self.assertEqual(box.take_ready(), [("state", b"old")])
        box.put("state", b"new")
        box.requeue()
        self.assertEqual((box.waiting, box.in_flight), (2, 0))
        self.assertEqual(box.take_ready(), [("state", b"old")])
        box.acknowledged("state")
        self.assertEqual(box.take_ready(), [("state", b"new")])

    def test_urgentFirst(self):
        """Urgent messages go before the older ones that are not."""
        box = Outbox(10)
        box.put("state", b"s")
        box.put("availability", b"online", latest_only=True, urgent=True)
        self.assertEqual([key for key, _ in box.take_ready()], ["availability", "state"])

    def test_latestOnlyReplaces(self):
        """A latest-only message replaces the one of its topic still waiting, without a drop."""
        box = Outbox(10)
        box.put("link", b"1", latest_only=True)
        box.put("link", b"2", latest_only=True)
        self.assertEqual((box.waiting, box.dropped), (1, 0))
        self.assertEqual(box.take_ready(), [("link", b"2")])
        # One in flight: the newest waits behind it, replacing any other waiting.
        box.put("link", b"3", latest_only=True)
        box.put("link", b"4", latest_only=True)
        box.acknowledged("link")
        self.assertEqual(box.take_ready(), [("link", b"4")])

    def test_boundDropsTheOldest(self):
        """Past the limit the oldest bounded message goes, whatever its topic; counted."""
        box = Outbox(3)
        box.put("state", b"s0")
        box.put("energy", b"e0")
        box.put("state", b"s1")
        self.assertEqual(box.put("state", b"s2"), 1)
        box.put("availability", b"online", latest_only=True, urgent=True)
        self.assertEqual((box.waiting, box.dropped), (4, 1))
        self.assertEqual(box.take_ready(), [("availability", b"online"), ("energy", b"e0"),
                                            ("state", b"s1")])

    def test_requeueOverTheBound(self):
        """What comes back from flight counts against the bound like the rest."""
        box = Outbox(2)
        box.put("state", b"s0")
        box.take_ready()
        box.put("state", b"s1")
        box.put("state", b"s2")
        self.assertEqual(box.requeue(), 1)
        self.assertEqual(box.take_ready(), [("state", b"s1")])
        self.assertTrue(box.holds("state"))
        self.assertFalse(box.holds("energy"))

    def test_takeOnly(self):
        """Keys the filter leaves out wait, in their order, until they are taken."""
        box = Outbox(10)
        box.put("state", b"s0")
        box.put("a/availability", b"online")
        box.put("state", b"s1")
        self.assertEqual(box.take_ready(lambda key: "/" in key), [("a/availability", b"online")])
        self.assertEqual((box.waiting, box.in_flight), (2, 1))
        self.assertEqual(box.take_ready(), [("state", b"s0")])
