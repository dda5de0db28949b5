"""
The publisher's policy: which id the topics and the Last Will go under, what
is sent on connect and on Home Assistant's birth message, the link state on
change or once a minute.  When to reconnect, and which failures end the
start, is L{smartmeter_tx.outputs.mqtt.connection}'s.

The publisher connects when the service starts, not when the meter is known:
a broker that refuses the credentials ends the start at once, and whoever
watches the broker sees the service, and a missing module or meter, before
any reading.  Until the meter's id is known (an unplugged dongle, a meter not
yet found) the connection's Last Will and the link state go to the service's
own topics, C{PREFIX/availability} and C{PREFIX/link}; nothing goes under a
meter's id, and no Home Assistant entity is announced, since an entity under
a temporary id would be left behind once the real one is known.  When the
meter is known the service's topics are cleared (what they said held only
without a meter) and the connection is made again with the Last Will under
the meter's id, where everything goes from then on.  The meter's id is its MAC
(L{payloads.meter_id}); what a version before that left retained under the
serial number, or under the old entity keys, is found on every connection
and cleared (L{EarlierTopics}).

Every message goes through the L{Outbox} and its L{Sender}: in the order it
was made, at most one per topic unacknowledged, so a broker that stalls or
comes back never receives an older state after a newer one; up to
C{queue_limit} messages wait while the broker is away, past that the oldest
are dropped, counted and said (once when drops begin, once when the outbox
has caught up).  The broker connection itself is
L{smartmeter_tx.outputs.mqtt.driver}'s; the payloads are
L{smartmeter_tx.outputs.mqtt.payloads}'.
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
from smartmeter_tx.outputs.mqtt.connection import BrokerConnection, Sender
from smartmeter_tx.outputs.mqtt.driver import PahoDriver
from smartmeter_tx.outputs.mqtt.outbox import Outbox
from smartmeter_tx.service.interfaces import Figure, IMetricsSource, IRecordReceiver, figures
from smartmeter_tx.service.view import ServiceView

__all__ = ["MqttPublisher"]



def _states(record: dict, when: float, bill: Optional[IMetricsSource]) -> list:
    """
    The topics a record publishes: its states, and with C{--tariff} the
    bill's figures on the C{bill} topic with each reading.
    """
    states = payloads.state_payloads(record, when)
    if bill is not None and record.get("kind") is None:
        payload = payloads.bill_payload(figures([bill]), when)
        if payload is not None:
            states.append(("bill", payload))
    return states

@implementer(IRecordReceiver, IMetricsSource)
class MqttPublisher(service.Service):
    """
    Publish the service's records to an MQTT broker.

    @ivar outbox: the L{Outbox} of messages not yet acknowledged.
    @ivar connection: the L{BrokerConnection}.
    """

    log = Logger()

    #: How often, in keepalives, the connection is looked after while no
    #: record comes: paho pings the broker once a keepalive without traffic,
    #: and the broker drops a client silent for one and a half.
    LOOK_PER_KEEPALIVE = 4
    #: The longest random delay before re-sending discovery on HA's birth message.
    BIRTH_DELAY_MAX = 5.0

    def __init__(self, config: MqttConfig, view: ServiceView, reactor, rng=None,
                 wall_clock=time.time, driver_factory=PahoDriver,
                 on_fatal: Optional[Callable[[str], None]] = None,
                 bill: Optional[IMetricsSource] = None, contract: bool = False) -> None:
        """
        @param driver_factory: makes the broker connection, called as
            L{PahoDriver} is (tests give a stand-in).
        @param bill: with C{--tariff}, the bill's figures (L{_states}).
        @param on_fatal: called with one line when the broker cannot be
            used as configured (see L{faults}); without it that is logged.
        @raise ArgumentError: paho-mqtt is missing.
        @raise ConfigError: the TLS files are unusable.
        """
        self.config, self.view = config, view
        self.bill, self.contract = bill, contract
        self.reactor = reactor
        self.rng = rng if rng is not None else random.Random()
        self.wall_clock = wall_clock
        self.on_fatal = on_fatal
        self.outbox = Outbox(config.queue_limit)
        #: suffix ("state", "energy", "fixed") -> the newest payload, republished on reconnect.
        self._last: dict = {}
        self.birth = BirthWatch(config.discovery_prefix, reactor, self.rng,
                                self.BIRTH_DELAY_MAX, self._birth)
        #: The meter id the connection's topics go under; C{None}: the service's own.
        self._will_id: Optional[str] = None
        self._service_cleared = False
        self._misc = task.LoopingCall(self._tick)
        self._misc.clock = reactor
        self.link = LinkTopic(view, reactor, wall_clock)
        self.connection = BrokerConnection(
            config, reactor, self.rng, driver_factory,
            f"smartmeter_tx-{self.rng.getrandbits(48):012x}", will=self._will,
            on_up=self._on_up, on_down=lambda: self.sender.down(),
            on_message=lambda topic, payload: self.earlier.message(topic, payload),
            on_publish=self._acknowledged, on_fatal=self._fatal)
        self.driver = self.connection.driver
        self.sender = Sender(self.outbox, self.connection, self._topic_of,
                             config.display_url)
        self.earlier = EarlierTopics(config, self.driver, self.sender, self.birth.message)

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

        History records (backfilled 30-minute slots) are ignored on purpose:
        an MQTT state is "the value now", and HA books a state when it gets
        it, so a slot of yesterday would be dated wrongly (and a retained one
        shown as the latest).  Past slots belong to the data log and HA's
        statistics.  Other kinds are ignored likewise.
        """
        if record.get("kind") not in (None, "fixed"):
            return
        if self.running:
            self._tick()  # a new meter id or link state goes out with the record
        for suffix, payload in _states(record, when, self.bill):
            data = payloads.dumps(payload)
            self._last[suffix] = data
            self.sender.queue(suffix, data)
        self.sender.pump()

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
        # At once, not once the meter is known: refused credentials end the start now, and
        # the service's availability and link say what holds the meter up.
        self.connection.connect()
        # Not every second: a record (every poll) looks after the connection
        # too, so this wakes the service only when the polls stop.
        self.link.started()
        self._misc.start(self.look_every, now=True).addErrback(
            lambda f: self.log.failure("MQTT loop failed", f))

    def stopService(self):
        """
        Say C{offline} on the Last Will's topic (the meter's, or the
        service's while no meter is known) and disconnect.

        @return: a Deferred that fires when the broker saw the goodbye, or
            after L{BrokerConnection.STOP_TIMEOUT}; C{None} when no
            connection was open.
        """
        super().stopService()
        self._halt()
        return self.connection.stop()

    def _halt(self) -> None:
        if self._misc.running:
            self._misc.stop()
        self.birth.cancel()

    def _fatal(self, message: str) -> None:
        self._halt()
        if self.on_fatal is not None:
            self.on_fatal(message)
        else:
            self.log.critical("{why}", why=message)

    # -- the connection's hooks -------------------------------------------------------

    def _meter_id(self) -> Optional[str]:
        return payloads.meter_id(self.view.store.identity)

    def _topic(self, mid: Optional[str], suffix: str) -> str:
        """The topic of C{suffix} under meter C{mid}, or the service's own (C{mid} C{None})."""
        if mid is None:
            return f"{self.config.topic_prefix}/{suffix}"
        return f"{self.config.topic_prefix}/{mid}/{suffix}"

    def _will(self) -> str:
        """
        The Last Will's topic for a connection made now: the meter's
        availability, or the service's while no meter is known; the id is
        noted as the one the connection's topics go under.
        """
        self._will_id = self._meter_id()
        return self._topic(self._will_id, "availability")

    @property
    def look_every(self) -> float:
        """Seconds between two looks after the connection while no record comes."""
        return min(max(1.0, self.config.keepalive / self.LOOK_PER_KEEPALIVE), LinkTopic.INTERVAL)

    def _acknowledged(self, mid: int) -> None:
        self.sender.acknowledged(mid)
        if self._will_id is None and self._service_cleared and self.running:
            # The service's topics may be gone now: on to the meter's.  Not
            # paho's housekeeping: this runs inside paho's callback, whose
            # lock its disconnect would take again.
            self._look()

    def _tick(self) -> None:
        """Look after the connection: paho's keepalive, the meter's id, the link state."""
        self.driver.tick()
        self._look()

    def _look(self) -> None:
        mid = self._meter_id()
        if mid is not None and mid != self._will_id and self.connected:
            self._rebind(mid)
        if self.connected:
            self._publish_link(False)

    def _rebind(self, mid: str) -> None:
        """Make the connection again with the Last Will under C{mid}, known now or another."""
        if self.connection.rebinding:
            return
        if self._will_id is not None:
            # Another meter: say goodbye under the old id, and come back with a new will.
            self.log.info("MQTT: the meter is now {mid}; reconnecting", mid=mid)
            self.connection.rebind(farewell=True)
            return
        # The meter is found: the service's topics are cleared first, on this connection,
        # then it is made again with the meter's will (no offline: the service goes on).
        self._clear_service_topics()
        self.sender.pump()
        if not any(self.outbox.holds(self._topic(None, s)) for s in ("availability", "link")):
            self.log.info("MQTT: the meter is {mid}; reconnecting with its Last Will", mid=mid)
            self.connection.rebind(farewell=False)

    def _clear_service_topics(self) -> None:
        """
        Once: queue an empty retained message (the broker forgets the
        retained one) on each of the service's topics, which hold only while
        no meter is known; also an earlier run's, when this one first
        connects with the meter known.
        """
        if self._service_cleared:
            return
        self._service_cleared = True
        for suffix in ("availability", "link"):
            self.sender.queue(self._topic(None, suffix), b"", latest_only=True)

    def _on_up(self) -> None:
        self.sender.up()
        if self._will_id is None:
            self.log.info("MQTT: connected to {url}; the meter is not known yet",
                          url=self.config.display_url)
            self.sender.queue(self._topic(None, "availability"), b"online", latest_only=True,
                              urgent=True)
            self._publish_link(True)
            return
        self.log.info("MQTT: connected to {url} as meter {mid}", url=self.config.display_url,
                      mid=self._will_id)
        self.sender.queue("availability", b"online", latest_only=True, urgent=True)
        self._clear_service_topics()
        if self.birth.topic is not None:
            self.driver.subscribe(self.birth.topic)
        self.earlier.watch(self.view.store.identity, self._will_id)
        self._announce()

    def _announce(self) -> None:
        """
        Discovery, the newest states again (a broker without persistence
        lost them) and the link; sent after what was queued to go first.
        """
        assert self._will_id is not None  # connected: the connection took our will first
        prefix = self.config.discovery_prefix
        if prefix is not None:
            configs = payloads.discovery_configs(
                prefix, self.config.topic_prefix, self._will_id, self.view.store.identity,
                self.view.interval, smartmeter_tx.__version__,
                None if self.bill is None else self.contract)
            for topic, payload in configs.items():
                self.sender.queue(topic, payloads.dumps(payload), latest_only=True, urgent=True)
        for suffix, payload in self._last.items():
            if not self.outbox.holds(suffix):
                self.sender.queue(suffix, payload)
        self._publish_link(True)
        self.sender.pump()

    def _birth(self) -> None:
        """Home Assistant has started: it hears the discovery and states again."""
        if self.connected and self._will_id is not None:
            self._announce()

    # -- publishing -------------------------------------------------------------------

    def _topic_of(self, key: str) -> Optional[str]:
        """
        The topic of an outbox key now: a whole topic (it holds a C{/}) as
        it is, a suffix (C{"state"}) under the meter's id; C{None} while the
        connection is not under one (the meter's states wait for it).
        """
        if "/" in key:
            return key
        if self._will_id is None:
            return None
        return self._topic(self._will_id, key)

    def _publish_link(self, always: bool) -> None:
        """The link state, under the meter's id or on the service's C{link} topic."""
        if not self.connected:
            return
        if self._will_id is None and self._service_cleared:
            return  # the service's topics are being left for the meter's (see _rebind)
        data = self.link.due(always)
        if data is None:
            return
        key = "link" if self._will_id is not None else self._topic(None, "link")
        self.sender.queue(key, data, latest_only=True)
        self.sender.pump()


class LinkTopic:
    """
    What the C{link} topic says and when: the link's health, sent when it
    changes (the reading's age aside) and once a minute anyway.
    """

    #: Seconds between two publications of the link state (it is also sent on change).
    INTERVAL = 60.0

    def __init__(self, view: ServiceView, clock, wall_clock: Callable[[], float]) -> None:
        self.view = view
        self.clock = clock
        self.wall_clock = wall_clock
        self._sent: Optional[dict] = None
        self._due = 0.0  # when it is next sent even unchanged

    def started(self) -> None:
        self._due = self.clock.seconds() + self.INTERVAL

    def payload(self) -> dict:
        """The link's health as the C{link} topic carries it."""
        store = self.view.store
        return payloads.link_payload(self.view.state, store.age(self.view.clock.seconds()),
                                     store.stats.polls_failed)

    def due(self, always: bool) -> Optional[bytes]:
        """
        @param always: send it even unchanged (a new connection).
        @return: the message to send now, or C{None} when nothing is due.
        """
        now = self.clock.seconds()
        if now >= self._due:
            always, self._due = True, now + self.INTERVAL
        payload = self.payload()
        changed = {k: v for k, v in payload.items() if k != "reading_age_s"}
        if not always and changed == self._sent:
            return None
        self._sent = changed
        payload["time"] = round(self.wall_clock(), 3)
        return payloads.dumps(payload)


class BirthWatch:
    """
    Home Assistant's birth message (C{online} on C{PREFIX/status}, sent when
    HA starts): the publisher announces again after a random delay, once per
    burst of births.

    @ivar topic: the birth message's topic, or C{None} without discovery.
    """

    def __init__(self, discovery_prefix: Optional[str], reactor, rng: random.Random,
                 delay_max: float, on_birth: Callable[[], None]) -> None:
        """
        @param delay_max: the longest random delay before C{on_birth}.
        """
        self.topic = None if discovery_prefix is None else f"{discovery_prefix}/status"
        self.reactor = reactor
        self.rng = rng
        self.delay_max = delay_max
        self.on_birth = on_birth
        self._call = None

    def message(self, topic: str, payload: bytes) -> None:
        """Take a message of a subscribed topic; only HA's C{online} counts."""
        if self.topic is None or topic != self.topic or payload.strip().lower() != b"online":
            return
        if self._call is not None and self._call.active():
            return
        # Many devices answer HA's birth at once: a random delay spreads them.
        self._call = self.reactor.callLater(self.rng.uniform(0, self.delay_max), self._fire)

    def _fire(self) -> None:
        self._call = None
        self.on_birth()

    def cancel(self) -> None:
        """No announcement is due any more (the publisher stops)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class EarlierTopics:
    """
    What a version before the MAC became the meter's one id left retained
    on the broker for this meter (L{payloads.earlier_topics}): discovery
    configs under the serial number or the old keys, and states under the
    old id.  Subscribed to on each connection under the meter; each one the
    broker still holds is cleared with an empty retained message (HA
    deletes the entity of a config), and that is said once per meter.
    Only what is there is cleared: a handful of messages, once.
    """

    log = Logger()

    def __init__(self, config: MqttConfig, driver, sender: Sender,
                 then: Callable[[str, bytes], None]) -> None:
        """
        @param driver: what subscribes (L{PahoDriver}).
        @param then: given every message not of an earlier topic.
        """
        self.config = config
        self.driver = driver
        self.sender = sender
        self.then = then
        self._topics: set = set()
        self._old: Optional[str] = None
        self._mid: Optional[str] = None
        self._said: set = set()

    def watch(self, identity: Optional[dict], mid: str) -> None:
        """
        A connection under meter C{mid} is up: subscribe to its earlier
        topics (the broker answers with those it holds).

        @param identity: the meter's identity, unless it is another meter's by now.
        """
        if payloads.meter_id(identity) != mid:
            identity = None
        self._old, topics = payloads.earlier_topics(
            self.config.discovery_prefix, self.config.topic_prefix, identity)
        self._topics, self._mid = set(topics), mid
        for topic in topics:
            self.driver.subscribe(topic)

    def message(self, topic: str, payload: bytes) -> None:
        """Clear an earlier topic the broker holds; pass any other message on."""
        if topic not in self._topics:
            self.then(topic, payload)
            return
        if not payload:
            return  # gone already (our own empty message, heard back)
        if self._old not in self._said:
            self._said.add(self._old)
            self.log.info("MQTT: clearing what an earlier version published for this meter "
                          "under {old}; Home Assistant removes those entities (the meter's id "
                          "is its MAC now, {mid})", old=self._old, mid=self._mid)
        self.sender.queue(topic, b"", latest_only=True)
        self.sender.pump()
