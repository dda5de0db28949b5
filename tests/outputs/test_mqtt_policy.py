"""
Tests for L{smartmeter_tx.outputs.mqtt.publisher.MqttPublisher}'s policy on a
L{task.Clock}: when it connects and reconnects, its Last Will, the queue
while the broker is away, what it sends again, and how it stops.  The broker
connection is a stand-in with the driver's methods (the real one is tested
against mosquitto in L{tests.outputs.test_mqtt}).
"""

import json
import random

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.outputs.mqtt.config import MqttConfig
from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.service.view import ServiceView
from smartmeter_tx.session.linkstate import LinkState

IDENTITY = {"mac": "001D129012345678", "maker": "000016", "serial": "SN-1"}


class Reason:
    """A CONNACK or DISCONNECT reason code, as paho gives it."""

    def __init__(self, failure=False, text="Success"):
        self.is_failure = failure
        self.text = text

    def __str__(self):
        return self.text


class FakeDriver:
    """
    The driver's methods, recording what the publisher asks; the test plays
    the broker through L{connack}, L{lose} and L{message}.
    """

    def __init__(self, config, reactor, client_id, on_connect, on_disconnect, on_message):
        self.client_id = client_id
        self.on_connect, self.on_disconnect, self.on_message = on_connect, on_disconnect, on_message
        self.connects = []  # (will topic, Deferred)
        self.published = []  # (topic, payload, retain)
        self.subscribed = []
        self.disconnects = 0
        self.has_socket = False
        self.pending = False

    @property
    def idle(self):
        return not self.has_socket and not self.pending

    def connect(self, will_topic):
        d = defer.Deferred()
        self.connects.append((will_topic, d))
        self.pending = True
        return d

    def sent(self):
        """The CONNECT went out: a socket is open."""
        self.pending = False
        self.has_socket = True
        self.connects[-1][1].callback(0)

    def refused(self, error):
        self.pending = False
        self.connects[-1][1].errback(error)

    def connack(self, failure=False):
        self.on_connect(Reason(failure, "Not authorized" if failure else "Success"))

    def lose(self):
        self.has_socket = False
        self.on_disconnect(Reason(True, "Unspecified error"))

    def message(self, topic, payload):
        self.on_message(topic, payload)

    def tick(self):
        pass

    def publish(self, topic, payload, retain=True):
        self.published.append((topic, payload, retain))

    def subscribe(self, topic):
        self.subscribed.append(topic)

    def disconnect(self):
        self.disconnects += 1

    def drop_socket(self):
        self.has_socket = False

    def topics(self):
        return [topic for topic, _, _ in self.published]


class PolicyTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = LatestStore()
        self.store.identity = dict(IDENTITY)
        self.view = ServiceView(self.store, LinkState(), self.clock)

    def publisher(self, **options):
        config = MqttConfig.from_options("mqtt://broker.lan", None, **options)
        p = MqttPublisher(config, self.view, self.clock, rng=random.Random(3),
                          wall_clock=self.clock.seconds, driver_factory=FakeDriver)
        p.startService()
        self.addCleanup(lambda: p.running and p.stopService())
        return p, p.driver

    def up(self, p, driver):
        """Let the publisher connect and the broker accept it."""
        self.clock.advance(1)
        driver.sent()
        driver.connack()
        self.assertTrue(p.connected)


class ConnectTests(PolicyTestCase):
    def test_waitsForTheMeter(self):
        """No connection before the meter's id is known: the Last Will names it."""
        self.store.identity = None
        p, driver = self.publisher()
        self.clock.advance(5)
        self.assertEqual(driver.connects, [])
        self.store.identity = dict(IDENTITY)
        self.clock.advance(1)
        self.assertEqual([will for will, _ in driver.connects], ["smartmeter/SN-1/availability"])

    def test_onConnack(self):
        """On CONNACK: online, HA's status subscribed, 14 discovery configs, then the link."""
        p, driver = self.publisher()
        self.up(p, driver)
        topics = driver.topics()
        self.assertEqual(topics[0], "smartmeter/SN-1/availability")
        self.assertEqual(driver.published[0][1:], (b"online", True))
        self.assertEqual(driver.subscribed, ["homeassistant/status"])
        self.assertEqual(sum(t.startswith("homeassistant/") for t in topics), 14)
        self.assertEqual(topics[-1], "smartmeter/SN-1/link")
        self.assertEqual(p.published, len(driver.published))

    def test_noDiscovery(self):
        """With discovery off nothing goes under homeassistant/ and nothing is subscribed."""
        p, driver = self.publisher(discovery_prefix="none")
        self.up(p, driver)
        self.assertFalse(any(t.startswith("homeassistant/") for t in driver.topics()))
        self.assertEqual(driver.subscribed, [])

    def test_refusedConnack(self):
        """A broker that refuses us (CONNACK failure) leaves the publisher disconnected."""
        p, driver = self.publisher()
        self.clock.advance(1)
        driver.sent()
        driver.connack(failure=True)
        self.assertFalse(p.connected)
        self.assertEqual(driver.published, [])


class ReconnectTests(PolicyTestCase):
    def test_backoffGrows(self):
        """Failed connects are retried after growing, jittered delays (1 s, 2 s, 4 s base)."""
        p, driver = self.publisher()
        delays = []
        self.clock.advance(1)
        for n in range(4):
            before = self.clock.seconds()
            driver.refused(ConnectionRefusedError(111, "Connection refused"))
            retry = p._retry
            delays.append(retry.getTime() - before)
            self.clock.advance(delays[-1])
            self.assertEqual(len(driver.connects), n + 2)
        for n, delay in enumerate(delays):
            base = min(p.BACKOFF_CAP, p.BACKOFF_BASE * 2 ** n)
            self.assertTrue(0.5 * base <= delay < 1.5 * base, (n, delay))

    def test_backoffResetOnConnack(self):
        """After a successful connection the next loss is retried after the base delay again."""
        p, driver = self.publisher()
        self.clock.advance(1)
        for _ in range(3):
            driver.refused(OSError("no route"))
            self.clock.advance(p._retry.getTime() - self.clock.seconds())
        driver.sent()
        driver.connack()
        driver.lose()
        delay = p._retry.getTime() - self.clock.seconds()
        self.assertTrue(0.5 <= delay < 1.5, delay)
        self.assertFalse(p.connected)

    def test_republishOnReconnect(self):
        """The newest state of each kind is sent again after a reconnect, retained."""
        p, driver = self.publisher()
        self.up(p, driver)
        p.publish_record({"power_w": 1}, 1001.0)
        p.publish_record({"power_w": 2, "energy_normal_kwh": 5.0}, 1002.0)
        driver.lose()
        driver.published.clear()
        self.clock.advance(p._retry.getTime() - self.clock.seconds())
        driver.sent()
        driver.connack()
        states = [(t, json.loads(m)) for t, m, _ in driver.published
                  if t in ("smartmeter/SN-1/state", "smartmeter/SN-1/energy")]
        self.assertEqual(states, [("smartmeter/SN-1/state", {"power_w": 2, "current_r_a": None,
                                                             "current_t_a": None,
                                                             "time": 1002.0}),
                                  ("smartmeter/SN-1/energy", {"energy_normal_kwh": 5.0,
                                                              "energy_reverse_kwh": None,
                                                              "time": 1002.0})])
        self.assertEqual(p.reconnects, 1)


class QueueTests(PolicyTestCase):
    def test_waitWhileAway(self):
        """Records taken while the broker is away are published oldest first once it is back."""
        p, driver = self.publisher()
        for i in range(3):
            p.publish_record({"power_w": i}, 1000.0 + i)
        self.assertEqual((p.backlog, p.waiting.queued), (3, 3))
        self.up(p, driver)
        powers = [json.loads(m)["power_w"] for t, m, _ in driver.published
                  if t == "smartmeter/SN-1/state"]
        self.assertEqual(powers, [0, 1, 2])
        self.assertEqual(p.backlog, 0)

    def test_oldestDropped(self):
        """Past the queue limit the oldest records go, and are counted."""
        p, driver = self.publisher(queue_limit=2)
        for i in range(5):
            p.publish_record({"power_w": i}, 1000.0 + i)
        self.assertEqual((p.waiting.queued, p.waiting.dropped, p.backlog), (5, 3, 2))
        self.up(p, driver)
        powers = [json.loads(m)["power_w"] for t, m, _ in driver.published
                  if t == "smartmeter/SN-1/state"]
        self.assertEqual(powers, [3, 4])

    def test_historyIgnored(self):
        """Backfilled history slots are not MQTT states: nothing is queued or published."""
        p, driver = self.publisher()
        p.publish_record({"kind": "history", "slot": "2024-06-01T00:00:00+09:00"}, 1000.0)
        self.assertEqual((p.waiting.queued, p.backlog), (0, 0))


class HomeAssistantTests(PolicyTestCase):
    def test_birthResendsDiscovery(self):
        """HA's birth message brings discovery again after a random delay, once per burst."""
        p, driver = self.publisher()
        self.up(p, driver)
        driver.published.clear()
        driver.message("homeassistant/status", b"online")
        driver.message("homeassistant/status", b" Online\n")
        self.assertFalse(any(t.startswith("homeassistant/") for t in driver.topics()))
        self.clock.advance(p.BIRTH_DELAY_MAX)
        configs = [(t, retain) for t, _, retain in driver.published
                   if t.startswith("homeassistant/")]
        self.assertEqual(len(configs), 14)

    def test_otherMessagesIgnored(self):
        """HA going offline, or another topic, sends nothing."""
        p, driver = self.publisher()
        self.up(p, driver)
        driver.published.clear()
        driver.message("homeassistant/status", b"offline")
        driver.message("somewhere/else", b"online")
        self.clock.advance(p.BIRTH_DELAY_MAX + 1)
        self.assertFalse(any(t.startswith("homeassistant/") for t in driver.topics()))


class LinkTests(PolicyTestCase):
    def test_onChangeAndEveryMinute(self):
        """The link state is sent when it changes, and once a minute anyway."""
        p, driver = self.publisher()
        self.up(p, driver)
        driver.published.clear()
        self.clock.advance(1)
        self.assertNotIn("smartmeter/SN-1/link", driver.topics())
        self.view.state.up(self.clock.seconds())
        self.clock.advance(1)
        self.assertEqual(driver.topics().count("smartmeter/SN-1/link"), 1)
        driver.published.clear()
        self.clock.pump([1] * int(p.LINK_INTERVAL))
        self.assertEqual(driver.topics().count("smartmeter/SN-1/link"), 1)


class StopTests(PolicyTestCase):
    def test_goodbye(self):
        """Stopping says offline under the meter's id, then disconnects."""
        p, driver = self.publisher()
        self.up(p, driver)
        driver.published.clear()
        d = p.stopService()
        self.assertEqual(driver.published, [("smartmeter/SN-1/availability", b"offline", True)])
        self.assertEqual(driver.disconnects, 1)
        self.assertNoResult(d)
        driver.lose()
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_goodbyeTimesOut(self):
        """A broker that never closes the connection does not hold the stop up for long."""
        p, driver = self.publisher()
        self.up(p, driver)
        d = p.stopService()
        self.clock.advance(p.STOP_TIMEOUT)
        self.successResultOf(d)

    def test_neverConnected(self):
        """Stopping without a connection returns at once and leaves no timer."""
        self.store.identity = None
        p, driver = self.publisher()
        self.assertIsNone(p.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_anotherMeter(self):
        """When the meter's id changes, the old id says offline and the publisher reconnects."""
        p, driver = self.publisher()
        self.up(p, driver)
        driver.published.clear()
        self.store.identity = dict(IDENTITY, serial="SN-2")
        self.clock.advance(1)
        self.assertEqual(driver.published[0], ("smartmeter/SN-1/availability", b"offline", True))
        self.assertEqual(driver.disconnects, 1)
        driver.lose()
        self.clock.advance(p._retry.getTime() - self.clock.seconds())
        self.assertEqual(driver.connects[-1][0], "smartmeter/SN-2/availability")
