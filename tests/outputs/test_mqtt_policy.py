"""
Tests for L{smartmeter_tx.outputs.mqtt.publisher.MqttPublisher}'s policy on a
L{task.Clock}: when it connects and reconnects, its Last Will, the queue
while the broker is away, what it sends again, and how it stops.  The broker
connection is a stand-in with the driver's methods (the real one is tested
against mosquitto in L{tests.outputs.test_mqtt}).
"""

import json
import random
import ssl

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.outputs.mqtt.config import MqttConfig
from smartmeter_tx.outputs.mqtt.connection import BrokerConnection
from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.service.view import ServiceView
from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.service.interfaces import figures as figures_of

IDENTITY = {"mac": "001D129012345678", "maker": "000016", "maker_name": "Toshiba", "serial": "SN-1"}
#: The meter's id in topics: its MAC in lower case.
MID = "001d129012345678"


class HighRandom(random.Random):
    """A random source whose C{random()} is always its largest value: the longest jitter."""

    def random(self):
        return 1.0 - 2.0 ** -53


class Reason:
    """A CONNACK or DISCONNECT reason code, as paho gives it."""

    def __init__(self, failure=False, text="Success", value=0):
        self.is_failure = failure
        self.text = text
        self.value = value

    def __str__(self):
        return self.text


class FakeDriver:
    """
    The driver's methods, recording what the publisher asks; the test plays
    the broker through L{connack}, L{lose}, L{message} and L{ack}.  Like
    paho, C{publish} returns a message id and the acknowledgement comes
    later, never from within C{publish}.
    """

    def __init__(self, config, reactor, client_id, on_connect, on_disconnect, on_message,
                 on_publish):
        self.client_id = client_id
        self.on_connect, self.on_disconnect, self.on_message = on_connect, on_disconnect, on_message
        self.on_publish = on_publish
        self.connects = []  # (will topic, Deferred)
        self.published = []  # (topic, payload, retain)
        self.unacked = []  # message ids
        self.subscribed = []
        self.disconnects = 0
        self.has_socket = False
        self.pending = False
        self.ticks = 0  # paho's housekeeping asked for
        self.in_callback = False
        self._mid = 0

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

    def connack(self, failure=False, value=0):
        self.on_connect(Reason(failure, "Not authorized" if failure else "Success",
                               value if failure else 0))

    def lose(self, value=128):
        """The connection ends: closed by the broker (128) or given up by paho (141)."""
        self.has_socket = False
        self.unacked.clear()
        self.on_disconnect(Reason(True, "Keep alive timeout" if value == 141
                                  else "Unspecified error", value))

    def message(self, topic, payload):
        self.on_message(topic, payload)

    def ack(self):
        """PUBACK everything in flight, and what that lets through, until nothing is left."""
        while self.unacked:
            mid = self.unacked.pop(0)
            self.in_callback = True  # as paho, which holds its callback lock meanwhile
            try:
                self.on_publish(mid)
            finally:
                self.in_callback = False

    def tick(self):
        # paho's loop_misc may disconnect, which takes the callback lock again.
        assert not self.in_callback, "paho's housekeeping from within a paho callback"
        self.ticks += 1

    def publish(self, topic, payload, retain=True):
        self._mid += 1
        self.published.append((topic, payload, retain))
        self.unacked.append(self._mid)
        return self._mid

    def subscribe(self, topic):
        self.subscribed.append(topic)

    def disconnect(self):
        self.disconnects += 1

    def drop_socket(self):
        self.has_socket = False

    def topics(self):
        return [topic for topic, _, _ in self.published]

    def powers(self):
        """The C{power_w} of each state published, in order."""
        return [json.loads(m)["power_w"] for t, m, _ in self.published
                if t == f"smartmeter/{MID}/state"]


class PolicyTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = LatestStore()
        self.store.identity = dict(IDENTITY)
        self.view = ServiceView(self.store, LinkState(), self.clock)
        self.fatal = []

    def publisher(self, rng=None, **options):
        config = MqttConfig.from_options("mqtt://broker.lan", None, **options)
        p = MqttPublisher(config, self.view, self.clock, rng=rng or random.Random(3),
                          wall_clock=self.clock.seconds, driver_factory=FakeDriver,
                          on_fatal=self.fatal.append)
        p.startService()
        self.addCleanup(lambda: p.running and p.stopService())
        return p, p.driver

    def up(self, p, driver, ack=True):
        """Let the publisher connect, the broker accept it and acknowledge what it sent."""
        self.clock.advance(1)
        driver.sent()
        driver.connack()
        self.assertTrue(p.connected)
        if ack:
            driver.ack()

    def refused(self, driver, value):
        """Let the publisher connect and the broker refuse it with CONNACK reason C{value}."""
        self.clock.advance(1)
        driver.sent()
        driver.connack(failure=True, value=value)
        driver.lose()

    def retry(self, p):
        """Let the time pass until the next try to connect."""
        self.clock.advance(p.connection.retry_time - self.clock.seconds())


class ConnectTests(PolicyTestCase):
    def test_connectsAtStart(self):
        """The publisher connects at start, the meter's id unknown, its Last Will the service's."""
        self.store.identity = None
        p, driver = self.publisher()
        self.assertEqual([will for will, _ in driver.connects], ["smartmeter/availability"])

    def test_serviceTopicsBeforeTheMeter(self):
        """
        Before the meter is known the broker gets the service's availability
        and link state (an unplugged module: no_module), on change too, and
        nothing under a meter's id or for Home Assistant; a reading waits.
        """
        self.store.identity = None
        self.view.state.port_lost()
        p, driver = self.publisher()
        p.recordReceived({"power_w": 7}, 1000.0)
        self.up(p, driver)
        self.assertEqual(driver.topics(), ["smartmeter/availability", "smartmeter/link"])
        self.assertEqual(driver.published[0][1:], (b"online", True))
        self.assertEqual(json.loads(driver.published[1][1])["session"], "no_module")
        self.assertEqual(driver.subscribed, [])
        self.assertEqual(p.backlog, 1)
        self.view.state.new_connection()
        self.clock.advance(p.look_every)
        self.assertEqual(driver.topics()[2:], ["smartmeter/link"])
        self.assertEqual(json.loads(driver.published[2][1])["session"], "unknown")

    def test_meterFound(self):
        """
        Once the meter is known the service's topics are cleared, and the
        connection is made again at once, without a warning, with the Last
        Will and everything under the meter's id.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.store.identity = None
        p, driver = self.publisher()
        self.up(p, driver)
        p.recordReceived({"power_w": 7}, 1000.0)
        driver.published.clear()
        self.store.identity = dict(IDENTITY)
        p.recordReceived({"power_w": 8}, 1010.0)  # the first reading follows the identity
        self.assertEqual(driver.published, [("smartmeter/availability", b"", True),
                                            ("smartmeter/link", b"", True)])
        self.assertEqual(driver.disconnects, 0)  # not before the broker has them
        driver.ack()  # no wait for the next look
        self.assertEqual((driver.disconnects, len(driver.published)), (1, 2))
        driver.lose()
        self.clock.advance(0)
        self.assertEqual(driver.connects[-1][0], f"smartmeter/{MID}/availability")
        driver.sent()
        driver.connack()
        topics = driver.topics()[2:]
        self.assertEqual(topics[0], f"smartmeter/{MID}/availability")
        self.assertEqual(sum(t.startswith("homeassistant/") for t in topics), 14)
        self.assertEqual(driver.powers(), [7])
        self.assertFalse(any(t.startswith("smartmeter/") and t.count("/") == 1 for t in topics))
        self.assertEqual(p.reconnects, 0)
        warned = [formatEvent(e) for e in events if e.get("log_level") is not None
                  and e["log_level"].name in ("warn", "error", "critical")]
        self.assertEqual(warned, [])

    def test_meterFoundWhileAway(self):
        """
        A meter found while the broker is away: the next connection is made
        under its id, and clears the service's topics there.
        """
        self.store.identity = None
        p, driver = self.publisher()
        self.up(p, driver)
        driver.lose()
        self.store.identity = dict(IDENTITY)
        self.retry(p)
        self.assertEqual(driver.connects[-1][0], f"smartmeter/{MID}/availability")
        driver.published.clear()
        driver.sent()
        driver.connack()
        driver.ack()
        published = [(t, m) for t, m, _ in driver.published if t.count("/") == 1]
        self.assertEqual(published, [("smartmeter/availability", b""), ("smartmeter/link", b"")])
        self.assertEqual(driver.disconnects, 0)

    def test_onConnack(self):
        """
        On CONNACK: online, HA's status subscribed (and an earlier version's
        topics: L{EarlierTests}), 14 discovery configs, then the link.
        """
        p, driver = self.publisher()
        self.up(p, driver)
        topics = driver.topics()
        self.assertEqual(topics[0], f"smartmeter/{MID}/availability")
        self.assertEqual(driver.published[0][1:], (b"online", True))
        self.assertEqual(driver.subscribed[0], "homeassistant/status")
        self.assertEqual(len(driver.subscribed), 1 + 19)
        self.assertEqual(sum(t.startswith("homeassistant/") for t in topics), 14)
        self.assertEqual(topics[-1], f"smartmeter/{MID}/link")
        self.assertEqual(p.published, len(driver.published))
        self.assertEqual(p.backlog, 0)

    def test_noDiscovery(self):
        """
        With discovery off nothing goes under homeassistant/ and nothing of
        it is subscribed; only an earlier version's states are looked for.
        """
        p, driver = self.publisher(discovery_prefix="none")
        self.up(p, driver)
        self.assertFalse(any(t.startswith("homeassistant/") for t in driver.topics()))
        self.assertEqual(driver.subscribed, [f"smartmeter/SN-1/{suffix}" for suffix in (
            "availability", "state", "energy", "fixed", "link")])

    def test_refusedConnack(self):
        """A broker that refuses us for a passing reason (3, unavailable) is tried again."""
        p, driver = self.publisher()
        self.refused(driver, 136)
        self.assertFalse(p.connected)
        self.assertEqual(driver.published, [])
        self.assertEqual(self.fatal, [])
        self.retry(p)
        self.assertEqual(len(driver.connects), 2)


class FatalTests(PolicyTestCase):
    """What no retry can cure ends the start; only before the first success."""

    def test_badCredentialsBeforeTheMeter(self):
        """Refused credentials end the start at once, though the meter is not known yet."""
        self.store.identity = None
        p, driver = self.publisher()
        self.clock.advance(1)
        self.assertEqual(len(driver.connects), 1)
        driver.sent()
        driver.connack(failure=True, value=134)
        driver.lose()
        self.assertEqual(len(self.fatal), 1)
        self.assertIn("the broker refuses the user name or password", self.fatal[0])
        self.assertIsNone(p.connection.retry_time)

    def test_badCredentials(self):
        """Refused user name or password (CONNACK 4) at start: one line naming --mqtt, no retry."""
        p, driver = self.publisher()
        self.refused(driver, 134)
        self.assertEqual(self.fatal, ["--mqtt mqtt://broker.lan:1883: the broker refuses the "
                                      "user name or password (the user in --mqtt; "
                                      "--mqtt-password-file or SMARTMETER_MQTT_PASSWORD)"])
        self.assertIsNone(p.connection.retry_time)
        self.clock.advance(300)
        self.assertEqual(len(driver.connects), 1)

    def test_notAuthorisedLater(self):
        """After a connection has worked, a refusal is said and retried, not fatal."""
        p, driver = self.publisher()
        self.up(p, driver)
        driver.lose()
        self.retry(p)
        driver.sent()
        driver.connack(failure=True, value=135)
        driver.lose()
        self.assertEqual(self.fatal, [])
        self.assertIsNotNone(p.connection.retry_time)

    def test_untrustedCertificate(self):
        """A broker certificate that does not verify is fatal at once, naming --mqtt-ca."""
        p, driver = self.publisher()
        self.clock.advance(1)
        error = ssl.SSLCertVerificationError(1, "certificate verify failed")
        error.verify_message = "self-signed certificate in certificate chain"
        driver.refused(error)
        self.assertEqual(len(self.fatal), 1)
        self.assertIn("not trusted (self-signed certificate in certificate chain); give its CA "
                      "with --mqtt-ca", self.fatal[0])

    def test_plainAgainstTls(self):
        """Closed before CONNACK three times in a row on mqtt:// suggests a TLS port: fatal."""
        p, driver = self.publisher()
        self.clock.advance(1)
        for n in range(3):
            self.assertEqual(self.fatal, [])
            driver.sent()
            driver.lose()
            if n < 2:
                self.retry(p)
        self.assertEqual(self.fatal, ["--mqtt mqtt://broker.lan:1883: the broker closed the "
                                      "connection before answering; is port 1883 a TLS port "
                                      "(mqtts://)?"])

    def test_silentBrokerIsNeverFatal(self):
        """A broker that never answers CONNECT (hung) is no sign of the wrong port: retried."""
        p, driver = self.publisher()
        self.clock.advance(1)
        for _ in range(5):
            driver.sent()
            driver.lose(value=141)
            self.retry(p)
        self.assertEqual(self.fatal, [])

    def test_refusedIsNeverFatal(self):
        """A broker that is not up (connection refused) is waited for, however long."""
        p, driver = self.publisher()
        self.clock.advance(1)
        for _ in range(10):
            driver.refused(ConnectionRefusedError(111, "Connection refused"))
            self.retry(p)
        self.assertEqual(self.fatal, [])


class ReconnectTests(PolicyTestCase):
    def test_backoffGrows(self):
        """Failed connects are retried after growing, jittered delays (1 s, 2 s, 4 s base)."""
        p, driver = self.publisher()
        delays = []
        self.clock.advance(1)
        for n in range(4):
            before = self.clock.seconds()
            driver.refused(ConnectionRefusedError(111, "Connection refused"))
            delays.append(p.connection.retry_time - before)
            self.clock.advance(delays[-1])
            self.assertEqual(len(driver.connects), n + 2)
        for n, delay in enumerate(delays):
            base = min(p.connection.BACKOFF_CAP, p.connection.BACKOFF_BASE * 2 ** n)
            self.assertTrue(0.5 * base <= delay < 1.5 * base, (n, delay))

    def test_backoffUnderAMinute(self):
        """However many tries fail, the next comes within 60 s, the longest jitter included."""
        p, driver = self.publisher(rng=HighRandom())
        delays = []
        self.clock.advance(1)
        for n in range(12):
            driver.refused(ConnectionRefusedError(111, "Connection refused"))
            delays.append(p.connection.retry_time - self.clock.seconds())
            self.retry(p)
        self.assertLessEqual(max(delays), 60.0)
        self.assertGreater(delays[-1], 59.0)  # the cap is reached, and it is a minute
        self.assertLessEqual(BrokerConnection.BACKOFF_CAP * 1.5, 60.0)

    def test_backoffResetOnConnack(self):
        """After a successful connection the next loss is retried after the base delay again."""
        p, driver = self.publisher()
        self.clock.advance(1)
        for _ in range(3):
            driver.refused(OSError("no route"))
            self.retry(p)
        driver.sent()
        driver.connack()
        driver.lose()
        delay = p.connection.retry_time - self.clock.seconds()
        self.assertTrue(0.5 <= delay < 1.5, delay)
        self.assertFalse(p.connected)

    def test_republishOnReconnect(self):
        """The newest state of each kind is sent again after a reconnect, retained."""
        p, driver = self.publisher()
        self.up(p, driver)
        p.recordReceived({"power_w": 1}, 1001.0)
        driver.ack()
        p.recordReceived({"power_w": 2, "energy_normal_kwh": 5.0}, 1002.0)
        driver.ack()
        driver.lose()
        driver.published.clear()
        self.retry(p)
        driver.sent()
        driver.connack()
        states = [(t, json.loads(m)) for t, m, _ in driver.published
                  if t in (f"smartmeter/{MID}/state", f"smartmeter/{MID}/energy")]
        self.assertEqual(states, [(f"smartmeter/{MID}/state", {"power_w": 2, "current_r_a": None,
                                                             "current_t_a": None,
                                                             "time": 1002.0}),
                                  (f"smartmeter/{MID}/energy", {"energy_normal_kwh": 5.0,
                                                              "energy_reverse_kwh": None,
                                                              "time": 1002.0})])
        self.assertEqual(p.reconnects, 1)


class QueueTests(PolicyTestCase):
    def test_waitWhileAway(self):
        """Records taken while the broker is away are published oldest first once it is back."""
        p, driver = self.publisher()
        for i in range(3):
            p.recordReceived({"power_w": i}, 1000.0 + i)
        self.assertEqual(p.backlog, 3)
        self.up(p, driver)
        self.assertEqual(driver.powers(), [0, 1, 2])
        self.assertEqual(p.backlog, 0)

    def test_oldestDropped(self):
        """
        Past the queue limit the oldest messages go, are counted, and said:
        once when drops begin, once when the queue has caught up.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        p, driver = self.publisher(queue_limit=2)
        for i in range(5):
            p.recordReceived({"power_w": i}, 1000.0 + i)
        self.assertEqual((p.outbox.dropped, p.backlog), (3, 2))
        said = [formatEvent(e) for e in events if "dropp" in e.get("log_format", "")]
        self.assertEqual(said, ["MQTT: 2 messages wait for mqtt://broker.lan:1883; "
                                "dropping the oldest"])
        self.up(p, driver)
        self.assertEqual(driver.powers(), [3, 4])
        said = [formatEvent(e) for e in events if "dropp" in e.get("log_format", "")]
        self.assertEqual(said[1:], ["MQTT: caught up with mqtt://broker.lan:1883; 3 messages "
                                    "had been dropped"])

    def test_stalledBrokerNeverGoesBack(self):
        """
        A broker that stops acknowledging holds one state per topic; the
        newer ones wait.  After the connection is lost and made again, the
        broker receives the states in the order they were taken, the held
        one first, and the last retained state is the newest.
        """
        p, driver = self.publisher()
        self.up(p, driver)
        for i in range(5):
            p.recordReceived({"power_w": i}, 1000.0 + i)
        self.assertEqual(driver.powers(), [0])  # 1-4 wait for the PUBACK of 0
        self.assertEqual(p.backlog, 5)
        driver.lose()  # paho's keepalive gives up on the stalled broker
        self.retry(p)
        driver.sent()
        driver.connack()
        driver.ack()
        self.assertEqual(driver.powers(), [0, 0, 1, 2, 3, 4])
        self.assertEqual(p.backlog, 0)

    def test_metrics(self):
        """The publisher's figures for /metrics: connected, queued, published, dropped."""
        p, driver = self.publisher(queue_limit=2)
        for i in range(3):
            p.recordReceived({"power_w": i}, 1000.0 + i)
        figures = figures_of([p])
        self.assertEqual(figures, {"smartmeter_mqtt_connected": 0,
                                   "smartmeter_mqtt_queued_messages": 2,
                                   "smartmeter_mqtt_published": 0,
                                   "smartmeter_mqtt_dropped": 1})
        self.up(p, driver)
        figures = figures_of([p])
        self.assertEqual(figures["smartmeter_mqtt_connected"], 1)
        self.assertEqual(figures["smartmeter_mqtt_queued_messages"], 0)
        self.assertEqual(figures["smartmeter_mqtt_published"], len(driver.published))

    def test_historyIgnored(self):
        """Backfilled history slots are not MQTT states: nothing is queued or published."""
        p, driver = self.publisher()
        p.recordReceived({"kind": "history", "slot": "2024-06-01T00:00:00+09:00"}, 1000.0)
        self.assertEqual(p.backlog, 0)


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


class EarlierTests(PolicyTestCase):
    """What a version before the MAC was the meter's id left on the broker."""

    CONFIG = "homeassistant/sensor/smartmeter_tx_SN-1_energy_normal/config"
    STATE = "smartmeter/SN-1/energy"

    def infos(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return lambda: [formatEvent(e) for e in events if e.get("log_level") is not None
                        and e["log_level"].name == "info" and "earlier" in formatEvent(e)]

    def test_clearedWhatTheBrokerHolds(self):
        """
        Connected under the meter, the publisher looks for the configs and
        states an earlier version published under the serial number; each
        the broker still holds is cleared with an empty retained message
        (HA deletes the entity), said once; the empty ones heard back are
        left alone.
        """
        infos = self.infos()
        p, driver = self.publisher()
        self.up(p, driver)
        looked = [t for t in driver.subscribed if "SN-1" in t]
        self.assertEqual(len(looked), 19)
        self.assertIn(self.CONFIG, looked)
        self.assertIn(self.STATE, looked)
        self.assertEqual([t for t in driver.topics() if "SN-1" in t], [])
        driver.message(self.CONFIG, b'{"name": "Energy normal"}')
        driver.message(self.STATE, b'{"energy_normal_kwh": 1.5}')
        self.assertEqual([m for m in driver.published if "SN-1" in m[0]],
                         [(self.CONFIG, b"", True), (self.STATE, b"", True)])
        driver.ack()
        driver.message(self.CONFIG, b"")
        self.assertEqual(len([m for m in driver.published if "SN-1" in m[0]]), 2)
        said = infos()
        self.assertEqual(len(said), 1)
        self.assertIn("under SN-1", said[0])
        self.assertIn(MID, said[0])
        self.assertEqual(p.backlog, 0)

    def test_saidOncePerMeter(self):
        """
        Every connection looks again (the broker may hold one again); the
        log says it only the first time.
        """
        infos = self.infos()
        p, driver = self.publisher()
        self.up(p, driver)
        driver.message(self.CONFIG, b"{}")
        driver.ack()
        driver.lose()
        self.retry(p)
        driver.subscribed.clear()
        driver.published.clear()
        self.up(p, driver)
        self.assertEqual(len([t for t in driver.subscribed if "SN-1" in t]), 19)
        driver.message(self.STATE, b"{}")
        self.assertIn((self.STATE, b"", True), driver.published)
        self.assertEqual(len(infos()), 1)

    def test_otherMessagesPassed(self):
        """HA's birth message still reaches the birth watch; other topics clear nothing."""
        p, driver = self.publisher()
        self.up(p, driver)
        driver.published.clear()
        driver.message(f"smartmeter/{MID}/energy", b"{}")
        driver.message("homeassistant/status", b"online")
        self.clock.advance(p.BIRTH_DELAY_MAX)
        topics = driver.topics()
        self.assertEqual(sum(t.startswith("homeassistant/") for t in topics), 14)
        self.assertFalse(any(payload == b"" for _, payload, _ in driver.published))


class LinkTests(PolicyTestCase):
    def test_onChangeAndEveryMinute(self):
        """
        The link state is sent when it changes, with the next record or
        within a look (a quarter of the keepalive), and once a minute anyway.
        """
        p, driver = self.publisher()
        self.up(p, driver)
        driver.published.clear()
        self.clock.advance(p.look_every)
        self.assertNotIn(f"smartmeter/{MID}/link", driver.topics())
        self.view.state.up(self.clock.seconds())
        p.recordReceived({"power_w": 7}, 1000.0)
        self.assertEqual(driver.topics().count(f"smartmeter/{MID}/link"), 1)
        driver.ack()  # (one message in flight per topic)
        self.view.state.port_lost()
        self.clock.advance(p.look_every)
        self.assertEqual(driver.topics().count(f"smartmeter/{MID}/link"), 2)
        driver.ack()
        driver.published.clear()
        self.clock.pump([p.look_every] * int(p.link.INTERVAL / p.look_every))
        self.assertEqual(driver.topics().count(f"smartmeter/{MID}/link"), 1)

    def test_quietBetweenRecords(self):
        """
        With the default keepalive (60 s) the publisher looks after the
        connection every 15 s, not every second: paho still pings in time.
        """
        p, driver = self.publisher()
        self.up(p, driver)
        self.assertEqual((p.config.keepalive, p.look_every), (60, 15.0))
        ticks = driver.ticks
        self.clock.pump([1] * 60)
        self.assertEqual(driver.ticks - ticks, 4)


class StopTests(PolicyTestCase):
    def test_goodbye(self):
        """Stopping says offline under the meter's id, then disconnects."""
        p, driver = self.publisher()
        self.up(p, driver)
        driver.published.clear()
        d = p.stopService()
        self.assertEqual(driver.published, [(f"smartmeter/{MID}/availability", b"offline", True)])
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
        self.clock.advance(p.connection.STOP_TIMEOUT)
        self.successResultOf(d)

    def test_goodbyeBeforeTheMeter(self):
        """Stopping before the meter is known says offline on the service's availability."""
        self.store.identity = None
        p, driver = self.publisher()
        self.up(p, driver)
        driver.published.clear()
        p.stopService()
        self.assertEqual(driver.published, [("smartmeter/availability", b"offline", True)])
        self.assertEqual(driver.disconnects, 1)

    def test_stopWhileBindingTheMeter(self):
        """Stopping while the connection is made again for the meter found says nothing more."""
        self.store.identity = None
        p, driver = self.publisher()
        self.up(p, driver)
        self.store.identity = dict(IDENTITY)
        self.clock.advance(p.look_every)
        driver.ack()
        self.assertEqual(driver.disconnects, 1)
        driver.published.clear()
        d = p.stopService()
        self.assertEqual(driver.published, [])
        driver.lose()
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(len(driver.connects), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

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
        self.store.identity = dict(IDENTITY, mac="001D12901234ABCD", serial="SN-2")
        self.clock.advance(p.look_every)
        self.assertEqual(driver.published[0], (f"smartmeter/{MID}/availability", b"offline", True))
        self.assertEqual(driver.disconnects, 1)
        driver.lose()
        self.retry(p)
        self.assertEqual(driver.connects[-1][0], "smartmeter/001d12901234abcd/availability")
