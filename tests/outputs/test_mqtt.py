"""
The MQTT publisher against a real broker: Debian's mosquitto on a free
loopback port, started and killed by the tests (skipped when it is absent).
"""

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.service.view import ServiceView
from tests.mosquitto import (
    MOSQUITTO, MOSQUITTO_PASSWD, WAIT, Broker, Certificates, Subscriber, paho, wait_for,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SERIAL = "SN12345"
MAC = "001D129012345678"
#: The meter's id in topics and unique ids: its MAC in lower case.
MID = MAC.lower()
PASSWORD = "s3cr3t-Pw-7781"


def meter_view(serial=SERIAL):
    store = LatestStore()
    store.identity = {"mac": MAC, "maker": "000016", "maker_name": "Toshiba", "serial": serial}
    return ServiceView(store, LinkState(), Clock())


class ConfigTests(unittest.TestCase):
    """C{MqttConfig.from_options} needs no broker."""

    def test_url(self):
        from smartmeter_tx.outputs.mqtt.config import MqttConfig
        c = MqttConfig.from_options("mqtt://bob@broker.lan", PASSWORD)
        self.assertEqual((c.host, c.port, c.tls, c.username), ("broker.lan", 1883, False, "bob"))
        self.assertEqual(c.display_url, "mqtt://bob@broker.lan:1883")
        self.assertNotIn(PASSWORD, repr(c))
        c = MqttConfig.from_options("mqtts://h:9999", None, discovery_prefix="none")
        self.assertEqual((c.port, c.tls, c.discovery_prefix), (9999, True, None))

    def test_badUrls(self):
        from smartmeter_tx.outputs.mqtt.config import MqttConfig
        for url in ("http://h", f"mqtt://bob:{PASSWORD}@h", "mqtt://h:99999", "mqtt://",
                    "mqtt://h/topic", "h:1883"):
            e = self.assertRaises(ArgumentError, MqttConfig.from_options, url, PASSWORD)
            self.assertNotIn(PASSWORD, str(e))
            self.assertNotIn("\n", str(e))
        self.assertRaises(ArgumentError, MqttConfig.from_options, "mqtt://h", None,
                          topic_prefix="a/#")

    def test_noPaho(self):
        """Without paho, the import works and construction says how to install it."""
        from smartmeter_tx.outputs.mqtt.config import MqttConfig
        from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
        saved = {k: v for k, v in sys.modules.items() if k == "paho" or k.startswith("paho.")}
        for k in saved:
            del sys.modules[k]
        sys.modules["paho"] = None
        try:
            e = self.assertRaises(ArgumentError, MqttPublisher,
                                  MqttConfig.from_options("mqtt://h", None), meter_view(),
                                  reactor)
        finally:
            del sys.modules["paho"]
            sys.modules.update(saved)
        self.assertEqual(str(e), "MQTT needs paho-mqtt: pip install 'smartmeter_tx[mqtt]'")


class BrokerTestCase(unittest.TestCase):
    extra = ""
    persistence = False
    #: Whether the broker's listener speaks TLS only (with C{self.certs}).
    tls = False

    def setUp(self):
        if MOSQUITTO is None:
            raise unittest.SkipTest("mosquitto not installed: apt-get install mosquitto")
        if paho is None:
            raise unittest.SkipTest("paho-mqtt not installed: pip install 'paho-mqtt>=2,<3'")
        self.dir = tempfile.mkdtemp(prefix="mqtt-test-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.certs = Certificates(self.dir) if self.tls else None
        self.broker = Broker(self.dir, self.broker_extra(), self.persistence, tls=self.certs)
        self.addCleanup(self.broker.kill)
        return self.broker.start()

    def broker_extra(self) -> str:
        return ""

    def subscriber(self, topics, **kw):
        sub = Subscriber(self.broker.port, topics, **kw)
        self.addCleanup(sub.close)
        return sub

    def publisher(self, poller=None, url=None, password=None, on_fatal=None, **kw):
        from smartmeter_tx.outputs.mqtt.config import MqttConfig
        from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
        config = MqttConfig.from_options(url or f"mqtt://127.0.0.1:{self.broker.port}",
                                         password, **kw)
        # A short keepalive: the publisher looks after the link state and the
        # meter's id each second (a quarter of it) when no record brings them.
        config = dataclasses.replace(config, keepalive=4)
        p = MqttPublisher(config, poller or meter_view(), reactor, rng=random.Random(7),
                          wall_clock=lambda: 1700000100.0, on_fatal=on_fatal)
        p.startService()
        self.addCleanup(p.stopService)
        return p


class DiscoveryTests(BrokerTestCase):

    @defer.inlineCallbacks
    def test_discoveryPayloads(self):
        sub = self.subscriber(["homeassistant/#"])
        p = self.publisher()
        got = yield wait_for(lambda: len(sub.got()) >= 14 and sub.got(), "14 discovery configs")
        configs = {t: json.loads(m) for t, m, _ in got}
        self.assertEqual(len(configs), 14)
        by_key = {}
        for topic, c in configs.items():
            component, unique = topic.split("/")[1:3]
            self.assertEqual(topic, f"homeassistant/{component}/{unique}/config")
            self.assertEqual(c["unique_id"], unique)
            self.assertTrue(unique.startswith(f"smartmeter_tx_{MID}_"))
            self.assertEqual(c["availability_topic"], f"smartmeter/{MID}/availability")
            self.assertEqual(c["device"]["identifiers"], [f"smartmeter_tx_{MID}"])
            self.assertEqual(c["device"]["manufacturer"], "Toshiba")
            self.assertEqual(c["device"]["model"], "Low-voltage smart electric energy meter")
            self.assertEqual(c["origin"]["name"], "smartmeter_tx")
            self.assertTrue(c["state_topic"].startswith(f"smartmeter/{MID}/"))
            by_key[unique[len(f"smartmeter_tx_{MID}_"):]] = (component, c)
        expect = {
            "power": ("sensor", "power", "measurement", "W", 90, "state"),
            "current_r": ("sensor", "current", "measurement", "A", 90, "state"),
            "current_t": ("sensor", "current", "measurement", "A", 90, "state"),
            "energy_bought": ("sensor", "energy", "total_increasing", "kWh", None, "energy"),
            "energy_sold": ("sensor", "energy", "total_increasing", "kWh", None, "energy"),
            "energy_bought_half_hour": ("sensor", "energy", None, "kWh", None, "fixed"),
            "energy_sold_half_hour": ("sensor", "energy", None, "kWh", None, "fixed"),
            "half_hour_time": ("sensor", "timestamp", None, None, None, "fixed"),
            "rssi": ("sensor", "signal_strength", "measurement", "dBm", None, "link"),
            "lqi": ("sensor", None, "measurement", None, None, "link"),
            "session": ("binary_sensor", "connectivity", None, None, None, "link"),
            "rate_limited": ("binary_sensor", "problem", None, None, None, "link"),
            "reading_age": ("sensor", "duration", "measurement", "s", None, "link"),
            "polls_failed": ("sensor", None, "total_increasing", None, None, "link"),
        }
        self.assertEqual(set(by_key), set(expect))
        for key, (component, dc, sc, unit, expire, suffix) in expect.items():
            got_component, c = by_key[key]
            self.assertEqual((got_component, c.get("device_class"), c.get("state_class"),
                              c.get("unit_of_measurement"), c.get("expire_after"),
                              c["state_topic"]),
                             (component, dc, sc, unit, expire, f"smartmeter/{MID}/{suffix}"),
                             key)
            diagnostic = suffix == "link"
            self.assertEqual(c.get("entity_category") == "diagnostic", diagnostic, key)
        self.assertEqual(by_key["power"][1]["value_template"], "{{ value_json.power_w }}")
        # discovery and availability (online) are retained
        late = self.subscriber(["homeassistant/#", f"smartmeter/{MID}/availability"])
        yield wait_for(lambda: len(late.got()) >= 15, "retained configs and availability")
        self.assertTrue(all(retain for _, _, retain in late.got()))
        self.assertEqual(late.got(f"smartmeter/{MID}/availability")[0][1], b"online")
        self.assertEqual(p.outbox.dropped, 0)

    @defer.inlineCallbacks
    def test_birthMessageRediscovery(self):
        sub = self.subscriber(["homeassistant/sensor/+/config", "homeassistant/binary_sensor/+/config"])
        p = self.publisher()
        yield wait_for(lambda: len(sub.got()) >= 14, "discovery")
        sub.clear()
        ha = self.subscriber(["nothing/here"])
        ha.client.publish("homeassistant/status", b"online", qos=1)
        yield wait_for(lambda: len(sub.got()) >= 14, "discovery again after HA's birth", 12)
        self.assertTrue(all(not retain for _, _, retain in sub.got()),
                        "re-sent configs arrive live, not as retained copies")
        # Each config twice, and availability and link: acknowledged by the broker.
        yield wait_for(lambda: p.published > 28 and p.backlog == 0, "the broker's PUBACKs")

    @defer.inlineCallbacks
    def test_retainedStates(self):
        p = self.publisher()
        yield wait_for(lambda: p.connected, "the publisher to connect")
        p.recordReceived({"power_w": 412, "current_r_a": 3.5, "current_t_a": 1.0,
                          "energy_normal_kwh": 12345.6, "energy_reverse_kwh": 7.1}, 1700000000.0)
        p.recordReceived({"kind": "fixed", "meter_time": "2024-05-01T12:30:00",
                          "energy_normal_kwh": 12345.5, "energy_reverse_kwh": 7.0},
                         1700000001.0)
        p.recordReceived({"kind": "history", "slot": "2024-05-01T12:00:00+09:00"}, 1700000002.0)
        first = self.subscriber([f"smartmeter/{MID}/fixed"])
        yield wait_for(lambda: first.got(), "the states to reach the broker")
        sub = self.subscriber([f"smartmeter/{MID}/+"])
        yield wait_for(lambda: len(sub.got()) >= 5, "retained states")
        states = {t.rsplit("/", 1)[1]: (json.loads(m) if t[-12:] != "availability" else m, r)
                  for t, m, r in sub.got()}
        self.assertEqual(set(states), {"availability", "state", "energy", "fixed", "link"})
        self.assertTrue(all(r for _, r in states.values()))
        self.assertEqual(states["state"][0], {"power_w": 412, "current_r_a": 3.5,
                                              "current_t_a": 1.0, "time": 1700000000.0})
        self.assertEqual(states["energy"][0], {"energy_normal_kwh": 12345.6,
                                               "energy_reverse_kwh": 7.1, "time": 1700000000.0})
        self.assertEqual(states["fixed"][0]["meter_time"], "2024-05-01T12:30:00+09:00")
        link = states["link"][0]
        self.assertEqual((link["session"], link["session_up"], link["rate_limited"],
                          link["polls_failed"]), ("unknown", False, False, 0))
        self.assertNotIn("history", [t.rsplit("/", 1)[1] for t, _, _ in sub.got()])

    @defer.inlineCallbacks
    def test_linkOnChange(self):
        poller = meter_view()
        p = self.publisher(poller)
        sub = self.subscriber([f"smartmeter/{MID}/link"])
        yield wait_for(lambda: sub.got(), "the first link state")
        poller.state.up(1.0)
        poller.state.rssi(-71.0)
        got = yield wait_for(lambda: [json.loads(m) for _, m, _ in sub.got()
                                      if json.loads(m)["session_up"]], "the changed link state")
        self.assertEqual((got[-1]["session"], got[-1]["rssi_dbm"]), ("up", -71.0))
        self.assertTrue(p.connected)

    @defer.inlineCallbacks
    def test_holdUntilIdentity(self):
        """
        No topic under a temporary id: a record waits until the meter is known,
        then reaches the broker under the meter's MAC; before, only the
        service's own topics are published.  (What is sent when is the
        policy's, tested on a clock in test_mqtt_policy.)
        """
        mac = "001D12901234ABCD"
        mid = mac.lower()
        poller = meter_view()
        poller.store.identity = None
        sub = self.subscriber(["#"])
        p = self.publisher(poller)
        p.recordReceived({"power_w": 1}, 1.0)
        self.assertEqual((p.connected, p.backlog), (False, 1))
        # The service's two messages acknowledged; the record still waits for the meter.
        yield wait_for(lambda: sub.got("smartmeter/link") and p.backlog == 1,
                       "the service's link state")
        poller.store.identity = {"mac": mac, "maker": None, "serial": None}
        yield wait_for(lambda: sub.got(f"smartmeter/{mid}/state"), "the held state")
        yield wait_for(lambda: p.backlog == 0, "the broker's acknowledgements")
        for topic, payload, _ in sub.got():
            if topic.startswith("homeassistant/"):
                self.assertEqual(json.loads(payload)["device"]["identifiers"],
                                 [f"smartmeter_tx_{mid}"])
            else:
                self.assertIn(topic, ("smartmeter/availability", "smartmeter/link",
                                      f"smartmeter/{mid}/availability", f"smartmeter/{mid}/state",
                                      f"smartmeter/{mid}/link"))


    @defer.inlineCallbacks
    def test_earlierVersionCleared(self):
        """
        What an earlier version left retained under the meter's serial
        number (an entity's discovery config, a state) is gone from the
        broker once the publisher is up; its own configs and states stand.
        """
        old_config = f"homeassistant/sensor/smartmeter_tx_{SERIAL}_energy_normal/config"
        old_state = f"smartmeter/{SERIAL}/energy"
        earlier = self.subscriber([old_config, old_state])
        for topic, payload in ((old_config, b'{"name": "Energy normal"}'),
                               (old_state, b'{"energy_normal_kwh": 1.5}')):
            earlier.client.publish(topic, payload, qos=1, retain=True)
        yield wait_for(lambda: len(earlier.got()) == 2, "the earlier version's topics")
        p = self.publisher()
        yield wait_for(lambda: sorted(t for t, m, _ in earlier.got() if m == b"")
                       == sorted([old_config, old_state]), "both cleared")
        yield wait_for(lambda: p.backlog == 0, "the broker's acknowledgements")
        new_config = f"homeassistant/sensor/smartmeter_tx_{MID}_energy_bought/config"
        # mosquitto sends the retained messages of one SUBSCRIBE filter by filter, in
        # order: once the new config is in, the earlier ones would have come before it.
        late = self.subscriber([old_config, old_state, new_config])
        yield wait_for(lambda: late.got(new_config), "the new config, retained")
        self.assertEqual([t for t, _, _ in late.got()], [new_config])


class LastWillTests(BrokerTestCase):

    def test_offlineAfterKill(self):
        """A publisher killed says offline on its meter's availability (its Last Will)."""
        return self.killed(f"smartmeter/{MID}/availability")

    def test_offlineAfterKillBeforeTheMeter(self):
        """Killed before the meter is known, it says offline on the service's availability."""
        return self.killed("smartmeter/availability", "unknown")

    @defer.inlineCallbacks
    def killed(self, topic, *args):
        """Run L{mqtt_child} with C{args}, see it online on C{topic}, kill it, see its will."""
        sub = self.subscriber([topic])
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        child = subprocess.Popen([sys.executable, os.path.join(HERE, "mqtt_child.py"),
                                  str(self.broker.port), *args], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: child.poll() is None and (child.kill(), child.wait()))
        yield wait_for(lambda: [m for _, m, _ in sub.got(topic) if m == b"online"],
                       "the child's online")
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT)
        yield wait_for(lambda: [m for _, m, _ in sub.got(topic) if m == b"offline"],
                       "the Last Will offline")
        late = self.subscriber([topic])
        yield wait_for(lambda: late.got(), "retained offline")
        self.assertEqual(late.got()[-1][1:], (b"offline", True))


class ReconnectTests(BrokerTestCase):
    persistence = True

    @defer.inlineCallbacks
    def test_queueAcrossBrokerRestart(self):
        state = f"smartmeter/{MID}/state"
        # A persistent session: the broker keeps it (and queues QoS 1 for it) across its restart.
        sub = self.subscriber([state], client_id="test-sub", clean=False)
        p = self.publisher()
        yield wait_for(lambda: p.connected, "the publisher to connect")
        p.recordReceived({"power_w": 100}, 1000.0)
        yield wait_for(lambda: sub.got(state) and p.backlog == 0, "the first state, acknowledged")
        self.broker.stop()
        yield wait_for(lambda: not p.connected, "the publisher to see the broker gone")
        for i in range(1, 4):
            p.recordReceived({"power_w": 100 + i}, 1000.0 + i)
        self.assertEqual(p.backlog, 3)
        yield self.broker.start(self.broker.port)
        yield wait_for(lambda: p.connected, "the publisher to reconnect", 20)
        yield wait_for(lambda: len(sub.got(state)) >= 4, "the queued states", 20)
        # Live deliveries only (the subscriber's own resubscription brings a
        # retained copy): the queue, oldest first, each once.
        powers = [json.loads(m)["power_w"] for _, m, retain in sub.got(state) if not retain]
        self.assertEqual(powers, [100, 101, 102, 103])
        self.assertEqual((p.reconnects, p.backlog, p.outbox.dropped), (1, 0, 0))


class PasswordTests(BrokerTestCase):

    def broker_extra(self):
        path = os.path.join(self.dir, "passwd")
        if MOSQUITTO_PASSWD is None:
            raise unittest.SkipTest("mosquitto_passwd not installed")
        subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", path, "meter", PASSWORD], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(path, 0o600)
        return f"password_file {path}"

    @defer.inlineCallbacks
    def test_passwordNeverShown(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        sub = self.subscriber(["#"], username="meter", password=PASSWORD)
        url = f"mqtt://meter@127.0.0.1:{self.broker.port}"
        fatal = []
        wrong = self.publisher(meter_view("SN-WRONG"), url=url, password=PASSWORD + "-wrong",
                               on_fatal=fatal.append)
        p = self.publisher(url=url, password=PASSWORD)
        yield wait_for(lambda: p.connected, "the publisher to connect with its password")
        p.recordReceived({"power_w": 5}, 1.0)
        yield wait_for(lambda: sub.got(f"smartmeter/{MID}/state"), "the state")
        yield wait_for(lambda: fatal, "the refusal of the wrong password")
        self.assertEqual(fatal, [f"--mqtt {url}: the broker does not "
                                 "authorise us (the user in --mqtt; --mqtt-password-file or "
                                 "SMARTMETER_MQTT_PASSWORD; the broker's ACL)"])
        self.assertFalse(wrong.connected)
        for topic, payload, _ in sub.got():
            self.assertNotIn(PASSWORD, topic)
            self.assertNotIn(PASSWORD.encode(), payload)
        text = "\n".join(formatEvent(e) + repr(e) for e in events)
        self.assertIn(f"mqtt://meter@127.0.0.1:{self.broker.port}", text)
        self.assertNotIn(PASSWORD, text)

    @defer.inlineCallbacks
    def test_wrongPasswordBeforeTheMeter(self):
        """
        A wrong password ends the start though no meter is known yet:
        on_fatal is called once, with one line that holds no password.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        fatal = []
        view = meter_view()
        view.store.identity = None
        wrong = self.publisher(view, url=self.url(), password=PASSWORD + "-wrong",
                               on_fatal=fatal.append)
        yield wait_for(lambda: fatal, "the refusal of the wrong password")
        # A publisher with the right password, a whole connection later: still one verdict.
        right = self.publisher(url=self.url(), password=PASSWORD)
        yield wait_for(lambda: right.connected and right.backlog == 0, "the right password's")
        self.assertEqual(fatal, [f"--mqtt {self.url()}: the broker does not authorise us (the "
                                 "user in --mqtt; --mqtt-password-file or "
                                 "SMARTMETER_MQTT_PASSWORD; the broker's ACL)"])
        self.assertNotIn("\n", fatal[0])
        self.assertEqual((wrong.connected, wrong.connection.retry_time), (False, None))
        self.assertNotIn(PASSWORD, "\n".join(formatEvent(e) + repr(e) for e in events))

    @defer.inlineCallbacks
    def test_availabilityBeforeAReading(self):
        """
        With the right password and the module unplugged, the broker has the
        service's availability and link state (no_module) before any reading;
        once the meter is known they are cleared and the meter's own stand.
        """
        sub = self.subscriber(["#"], username="meter", password=PASSWORD)
        view = meter_view()
        view.store.identity = None
        view.state.port_lost()
        p = self.publisher(view, url=self.url(), password=PASSWORD)
        yield wait_for(lambda: sub.got("smartmeter/availability") and sub.got("smartmeter/link"),
                       "the service's availability and link")
        self.assertEqual(sub.got("smartmeter/availability")[0][1:], (b"online", False))
        self.assertEqual(json.loads(sub.got("smartmeter/link")[0][1])["session"], "no_module")
        self.assertEqual({t for t, _, _ in sub.got()}, {"smartmeter/availability",
                                                         "smartmeter/link"})
        view.store.identity = meter_view().store.identity
        yield wait_for(lambda: sub.got(f"smartmeter/{MID}/link"), "the meter's link")
        self.assertEqual([m for _, m, _ in sub.got("smartmeter/availability")], [b"online", b""])
        self.assertEqual(sub.got("smartmeter/link")[-1][1], b"")
        self.assertEqual([m for _, m, _ in sub.got(f"smartmeter/{MID}/availability")],
                         [b"online"])
        self.assertEqual(p.reconnects, 0)
        # mosquitto sends the retained messages of one SUBSCRIBE filter by filter, in order:
        # once the meter's availability is in, the service's would have come before it.
        late = self.subscriber(["smartmeter/availability", "smartmeter/link",
                                f"smartmeter/{MID}/availability"],
                               username="meter", password=PASSWORD)
        yield wait_for(lambda: late.got(f"smartmeter/{MID}/availability"),
                       "the meter's retained availability")
        self.assertEqual(late.got("smartmeter/availability") + late.got("smartmeter/link"), [])

    def url(self):
        """The broker's URL with the user the password file knows."""
        return f"mqtt://meter@127.0.0.1:{self.broker.port}"
