"""
The publisher's policy: the Last Will under the meter's id, what is sent on
connect and on Home Assistant's birth message, the link state on change or
once a minute.  When to connect and reconnect, and which failures end the
start, is L{smartmeter_tx.outputs.mqtt.connection}'s.

Every message goes through the L{Outbox}: in the order it was made, at most
one per topic unacknowledged, so a broker that stalls or comes back never
receives an older state after a newer one; up to C{queue_limit} messages
wait while the broker is away, past that the oldest are dropped, counted and
said (once when drops begin, once when the outbox has caught up).  The
broker connection itself is L{smartmeter_tx.outputs.mqtt.driver}'s; the
payloads are L{smartmeter_tx.outputs.mqtt.payloads}'.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Optional

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger
from zope.interface import implementer

import smartmeter_tx
from smartmeter_tx.outputs.mqtt import payloads
from smartmeter_tx.outputs.mqtt.config import MqttConfig
from smartmeter_tx.outputs.mqtt.connection import BrokerConnection
from smartmeter_tx.outputs.mqtt.driver import PahoDriver
from smartmeter_tx.outputs.mqtt.outbox import Outbox
from smartmeter_tx.service.interfaces import Figure, IMetricsSource, IRecordReceiver
from smartmeter_tx.service.view import ServiceView

__all__ = ["MqttPublisher"]


@implementer(IRecordReceiver, IMetricsSource)
class MqttPublisher(service.Service):
    """
    Publish the service's records to an MQTT broker.

    @ivar outbox: the L{Outbox} of messages not yet acknowledged.
    @ivar connection: the L{BrokerConnection}.
    """

    log = Logger()

    #: Seconds between two publications of the link state (it is also sent on change).
    LINK_INTERVAL = 60.0
    #: The longest random delay before re-sending discovery on HA's birth message.
    BIRTH_DELAY_MAX = 5.0

    def __init__(self, config: MqttConfig, view: ServiceView, reactor, rng=None,
                 wall_clock=time.time, driver_factory=PahoDriver,
                 on_fatal: Optional[Callable[[str], None]] = None) -> None:
        """
        @param driver_factory: makes the broker connection, called as
            L{PahoDriver} is (tests give a stand-in).
        @param on_fatal: called with one line when the broker cannot be
            used as configured (see L{faults}); without it that is logged.
        @raise ArgumentError: paho-mqtt is missing.
        @raise ConfigError: the TLS files are unusable.
        """
        self.config = config
        self.view = view
        self.reactor = reactor
        self.rng = rng if rng is not None else random.Random()
        self.wall_clock = wall_clock
        self.on_fatal = on_fatal
        self.outbox = Outbox(config.queue_limit)
        #: suffix ("state", "energy", "fixed") -> the newest payload, republished on reconnect.
        self._last: dict = {}
        #: message id (paho's) -> the outbox key of the message in flight.
        self._mids: dict = {}
        self._dropping = 0
        self._birth_call = None
        self._will_id: Optional[str] = None
        self._link_sent: Optional[dict] = None
        self._misc = task.LoopingCall(self._tick)
        self._misc.clock = reactor
        self._link_loop = task.LoopingCall(self._publish_link, True)
        self._link_loop.clock = reactor
        self.connection = BrokerConnection(
            config, reactor, self.rng, driver_factory,
            f"smartmeter_tx-{self.rng.getrandbits(48):012x}", will=self._will,
            on_up=self._on_up, on_down=self._on_down, on_message=self._on_message,
            on_publish=self._on_publish, on_fatal=self._fatal)
        self.driver = self.connection.driver

    # -- what the service calls ---------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted us and not gone."""
        return self.connection.connected

    @property
    def reconnects(self) -> int:
        return self.connection.reconnects

    @property
    def backlog(self) -> int:
        """Messages not yet acknowledged by the broker."""
        return len(self.outbox)

    @property
    def published(self) -> int:
        """Messages the broker acknowledged."""
        return self.outbox.delivered

    def recordReceived(self, record: dict, when: float) -> None:
        """
        Publish one record of the service taken at C{when} (epoch seconds): an
        instantaneous reading (C{state}, and C{energy} when it carries the
        counters) or the meter's fixed-time EA/EB (C{fixed}).

        History records (C{"kind": "history"}, backfilled 30-minute slots) are
        ignored on purpose: an MQTT state is "the value now", and Home
        Assistant books a state at the time it receives it, so publishing a
        slot of yesterday would date it wrongly in its statistics; a retained
        history topic would tell a new subscriber an old value as the latest.
        Past slots belong to the data log and its export.  Other kinds are
        ignored likewise.
        """
        if record.get("kind") not in (None, "fixed"):
            return
        for suffix, payload in payloads.state_payloads(record, when):
            data = payloads.dumps(payload)
            self._last[suffix] = data
            self._put(suffix, data)

    def metrics(self) -> list:
        """
        @return: the publisher's L{Figure}s, for C{/metrics}.
        """
        return [
            Figure("smartmeter_mqtt_connected", "gauge",
                   "1 while the MQTT broker has accepted us", 1 if self.connected else 0),
            Figure("smartmeter_mqtt_queued_messages", "gauge",
                   "MQTT messages not yet acknowledged by the broker", len(self.outbox)),
            Figure("smartmeter_mqtt_published", "counter",
                   "MQTT messages the broker acknowledged", self.outbox.delivered),
            Figure("smartmeter_mqtt_dropped", "counter",
                   "MQTT messages dropped, oldest first, because the queue was full",
                   self.outbox.dropped),
        ]

    # -- the service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.connection.resume()
        self._misc.start(1.0, now=True).addErrback(self._loop_failed, "loop")
        self._link_loop.start(self.LINK_INTERVAL, now=False).addErrback(self._loop_failed, "link")

    def stopService(self):
        """
        Say C{offline} under the meter's id and disconnect.

        @return: a Deferred that fires when the broker saw the goodbye, or
            after L{BrokerConnection.STOP_TIMEOUT}; C{None} when no
            connection was open.
        """
        super().stopService()
        self._halt()
        return self.connection.stop()

    def _halt(self) -> None:
        for loop in (self._misc, self._link_loop):
            if loop.running:
                loop.stop()
        if self._birth_call is not None and self._birth_call.active():
            self._birth_call.cancel()
        self._birth_call = None

    def _fatal(self, message: str) -> None:
        self._halt()
        if self.on_fatal is not None:
            self.on_fatal(message)
        else:
            self.log.critical("{why}", why=message)

    def _loop_failed(self, failure, which):
        self.log.failure("MQTT {which} loop failed", failure, which=which)

    # -- the connection's hooks -------------------------------------------------------

    def _meter_id(self) -> Optional[str]:
        return payloads.meter_id(self.view.store.identity)

    def _topic(self, mid: str, suffix: str) -> str:
        return f"{self.config.topic_prefix}/{mid}/{suffix}"

    def _will(self) -> Optional[str]:
        """The Last Will's topic for the meter now, noted as the one published under."""
        mid = self._meter_id()
        if mid is None:
            return None
        self._will_id = mid
        return self._topic(mid, "availability")

    def _tick(self) -> None:
        self.driver.tick()
        mid = self._meter_id()
        if mid is None:
            return
        if self._will_id is None:
            self.connection.connect()
        elif mid != self._will_id and self.connected:
            # Another meter: say goodbye under the old id, and come back with a new will.
            self.log.info("MQTT: the meter is now {mid}; reconnecting", mid=mid)
            self.connection.goodbye()
        if self.connected:
            self._publish_link(False)

    def _on_up(self) -> None:
        self.log.info("MQTT: connected to {url} as meter {mid}", url=self.config.display_url,
                      mid=self._will_id)
        self._mids.clear()
        self._queue("availability", b"online", latest_only=True, urgent=True)
        if self.config.discovery_prefix is not None:
            self.driver.subscribe(f"{self.config.discovery_prefix}/status")
        self._announce()

    def _on_down(self) -> None:
        # What was in flight may not have arrived: it goes back to the front of its topic.
        self._mids.clear()
        self._count_drops(self.outbox.requeue())

    def _announce(self) -> None:
        """
        Discovery, the newest states again (a broker without persistence
        lost them) and the link; sent after what was queued to go first.
        """
        assert self._will_id is not None  # connected: the connection took our will first
        if self.config.discovery_prefix is not None:
            for topic, payload in self.discovery(self._will_id).items():
                self._queue(topic, payloads.dumps(payload), latest_only=True, urgent=True)
        for suffix, payload in self._last.items():
            if not self.outbox.holds(suffix):
                self._queue(suffix, payload)
        self._publish_link(True)
        self._pump()

    def _on_message(self, topic: str, payload: bytes) -> None:
        prefix = self.config.discovery_prefix
        if prefix is None or topic != f"{prefix}/status":
            return
        if payload.strip().lower() != b"online":
            return
        if self._birth_call is not None and self._birth_call.active():
            return
        # Many devices answer HA's birth at once: a random delay spreads them.
        delay = self.rng.uniform(0, self.BIRTH_DELAY_MAX)
        self._birth_call = self.reactor.callLater(delay, self._birth)

    def _birth(self) -> None:
        self._birth_call = None
        if self.connected:
            self._announce()

    # -- publishing -------------------------------------------------------------------

    def _queue(self, key: str, payload: bytes, latest_only: bool = False,
               urgent: bool = False) -> None:
        """
        Queue a message in the outbox (see L{Outbox.put}).

        @param key: a topic under the meter's id (C{"state"}), resolved when
            sent, or a whole topic (it holds a C{/}).
        """
        self._count_drops(self.outbox.put(key, payload, latest_only, urgent))

    def _put(self, key: str, payload: bytes, latest_only: bool = False) -> None:
        """Queue a message, then hand the connection what may go now."""
        self._queue(key, payload, latest_only)
        self._pump()

    def _pump(self) -> None:
        if not self.connected:
            return
        assert self._will_id is not None  # connected: the connection took our will first
        for key, payload in self.outbox.take_ready():
            topic = key if "/" in key else self._topic(self._will_id, key)
            self._mids[self.driver.publish(topic, payload, True)] = key

    def _on_publish(self, mid: int) -> None:
        key = self._mids.pop(mid, None)
        if key is None:
            return
        self.outbox.acknowledged(key)
        self._pump()
        if self._dropping and not self.outbox:
            self.log.warn("MQTT: caught up with {url}; {n} messages had been dropped",
                          url=self.config.display_url, n=self._dropping)
            self._dropping = 0

    def _count_drops(self, dropped: int) -> None:
        if dropped and not self._dropping:
            self.log.warn("MQTT: {limit} messages wait for {url}; dropping the oldest",
                          limit=self.outbox.limit, url=self.config.display_url)
        self._dropping += dropped

    def link_payload(self) -> dict:
        """The link's health as the C{link} topic carries it."""
        store = self.view.store
        return payloads.link_payload(self.view.state, store.age(self.view.clock.seconds()),
                                     store.stats.polls_failed)

    def _publish_link(self, always: bool) -> None:
        if not self.connected:
            return
        payload = self.link_payload()
        changed = {k: v for k, v in payload.items() if k != "reading_age_s"}
        if not always and changed == self._link_sent:
            return
        self._link_sent = changed
        payload["time"] = round(self.wall_clock(), 3)
        self._put("link", payloads.dumps(payload), latest_only=True)

    def discovery(self, mid: str) -> dict:
        """
        @return: C{{config topic: payload dict}} of every entity of meter C{mid}.
        """
        prefix = self.config.discovery_prefix
        assert prefix is not None  # asked for only with discovery on
        return payloads.discovery_configs(
            prefix, self.config.topic_prefix, mid,
            self.view.store.identity, self.view.interval, smartmeter_tx.__version__)
