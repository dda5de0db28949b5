"""
The MQTT publisher against a real mosquitto that misbehaves or is set up
otherwise than the options say: a TLS listener with a CA made here (trusted,
or the wrong one), TLS against a plain port and plain against a TLS port, and
a broker that stalls (SIGSTOP) and resumes.
"""

import dataclasses
import json
import random
import signal

from twisted.internet import defer, reactor

from smartmeter_tx.outputs.mqtt.config import MqttConfig
from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
from tests.mosquitto import Certificates, Subscriber, wait_for
from tests.outputs.test_mqtt import MID, BrokerTestCase, meter_view

STATE = f"smartmeter/{MID}/state"


class FaultTestCase(BrokerTestCase):
    persistence = True

    def setUp(self):
        self.fatal = []
        d = super().setUp()
        # The CA files exist whatever the listener speaks (mqtts against a plain port).
        if self.certs is None:
            self.certs = Certificates(self.dir)
        return d

    def publisher(self, scheme, ca=None, keepalive=60):
        config = MqttConfig.from_options(f"{scheme}://127.0.0.1:{self.broker.port}", None,
                                         discovery_prefix="none", ca_file=ca)
        config = dataclasses.replace(config, keepalive=keepalive)
        p = MqttPublisher(config, meter_view(), reactor, rng=random.Random(11),
                          wall_clock=lambda: 1700000100.0, on_fatal=self.fatal.append)
        p.startService()
        self.addCleanup(p.stopService)
        return p


class TlsTests(FaultTestCase):
    tls = True

    @defer.inlineCallbacks
    def test_mqtts(self):
        """mqtts:// with --mqtt-ca: the broker's certificate verifies and the state arrives."""
        sub = Subscriber(self.broker.port, [STATE], ca=self.certs.ca)
        self.addCleanup(sub.close)
        p = self.publisher("mqtts", ca=self.certs.ca)
        yield wait_for(lambda: p.connected, "the TLS connection")
        p.recordReceived({"power_w": 321}, 1700000000.0)
        yield wait_for(lambda: sub.got(STATE), "the state over TLS")
        self.assertEqual(json.loads(sub.got(STATE)[-1][1])["power_w"], 321)
        yield wait_for(lambda: p.backlog == 0, "the broker's acknowledgement")
        self.assertEqual(self.fatal, [])

    @defer.inlineCallbacks
    def test_wrongCa(self):
        """A CA that did not sign the broker's certificate ends the start, naming --mqtt-ca."""
        p = self.publisher("mqtts", ca=self.certs.wrong_ca)
        yield wait_for(lambda: self.fatal, "the verdict on the certificate")
        self.assertEqual(len(self.fatal), 1)
        self.assertIn(f"--mqtt mqtts://127.0.0.1:{self.broker.port}: the broker's certificate "
                      "is not trusted (", self.fatal[0])
        self.assertIn("give its CA with --mqtt-ca", self.fatal[0])
        self.assertFalse(p.connected)

    @defer.inlineCallbacks
    def test_plainAgainstTls(self):
        """mqtt:// against the TLS port ends the start with the likely cause, after 3 tries."""
        p = self.publisher("mqtt")
        yield wait_for(lambda: self.fatal, "the verdict on the port", 20)
        self.assertEqual(self.fatal, [
            f"--mqtt mqtt://127.0.0.1:{self.broker.port}: the broker closed the connection "
            f"before answering; is port {self.broker.port} a TLS port (mqtts://)?"])
        self.assertFalse(p.connected)


class PlainTests(FaultTestCase):
    @defer.inlineCallbacks
    def test_tlsAgainstPlain(self):
        """mqtts:// against a plain port ends the start with the likely cause, after 3 tries."""
        p = self.publisher("mqtts", ca=self.certs.ca)
        yield wait_for(lambda: self.fatal, "the verdict on the port", 20)
        self.assertEqual(len(self.fatal), 1)
        self.assertIn(f"is port {self.broker.port} a plain MQTT port (mqtt://)?", self.fatal[0])
        self.assertFalse(p.connected)

    @defer.inlineCallbacks
    def test_stalledBroker(self):
        """
        A broker stopped (SIGSTOP) while readings go on, then resumed: a
        subscriber receives every state once or more, never an older one
        after a newer one, and the retained state is the newest.
        """
        sub = Subscriber(self.broker.port, [STATE], client_id="stall-sub", clean=False)
        self.addCleanup(sub.close)
        p = self.publisher("mqtt", keepalive=2)
        yield wait_for(lambda: p.connected, "the publisher to connect")
        p.recordReceived({"power_w": 0}, 1000.0)
        yield wait_for(lambda: p.backlog == 0, "the first state, acknowledged")
        self.broker.process.send_signal(signal.SIGSTOP)
        try:
            for i in range(1, 6):
                p.recordReceived({"power_w": i}, 1000.0 + i)
            # paho's keepalive (2 s) gives the stalled connection up.
            yield wait_for(lambda: not p.connected, "the publisher to give up the stalled broker")
        finally:
            self.broker.process.send_signal(signal.SIGCONT)
        yield wait_for(lambda: p.connected and p.backlog == 0, "the queue to drain", 30)
        yield wait_for(lambda: [m for _, m, r in sub.got(STATE)
                                if not r and json.loads(m)["power_w"] == 5], "the newest state")
        powers = [json.loads(m)["power_w"] for _, m, retain in sub.got(STATE) if not retain]
        self.assertEqual(sorted(set(powers)), [0, 1, 2, 3, 4, 5])
        self.assertEqual(powers, sorted(powers), "a state went back in time")
        late = Subscriber(self.broker.port, [STATE])
        self.addCleanup(late.close)
        yield wait_for(lambda: late.got(STATE), "the retained state")
        self.assertEqual(json.loads(late.got(STATE)[-1][1])["power_w"], 5)
