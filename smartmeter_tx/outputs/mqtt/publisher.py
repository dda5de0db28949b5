"""
The publisher's policy: when to connect and reconnect (L{Backoff}, with
jitter), the Last Will under the meter's id, the records that wait while the
broker is away, what is sent again on reconnect and on Home Assistant's birth
message, and the link state on change or once a minute.

Nothing taken while the broker is away is lost, up to C{queue_limit} records:
they wait, oldest first, and are published in order (QoS 1) once the broker
is back; past the limit the oldest are dropped and counted in C{dropped}.
The broker connection itself is L{smartmeter_tx.outputs.mqtt.driver}'s; the
payloads are L{smartmeter_tx.outputs.mqtt.payloads}'.
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

import smartmeter_tx
from smartmeter_tx.outputs.mqtt import payloads
from smartmeter_tx.outputs.mqtt.config import MqttConfig
from smartmeter_tx.outputs.mqtt.driver import PahoDriver
from smartmeter_tx.service.backoff import Backoff
from smartmeter_tx.service.view import ServiceView

__all__ = ["MqttPublisher", "RecordQueue"]


class RecordQueue:
    """
    The records waiting for the broker, oldest first; past C{limit} the
    oldest are dropped.

    @ivar queued: records put in so far.
    @ivar dropped: records dropped because the queue was full.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued = 0
        self.dropped = 0
        self._items: deque = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, record: dict, when: float) -> None:
        self._items.append((record, when))
        self.queued += 1
        while len(self._items) > self.limit:
            self._items.popleft()
            self.dropped += 1

    def take(self) -> tuple:
        """@return: the oldest C{(record, when)}."""
        return self._items.popleft()


class MqttPublisher(service.Service):
    """
    Publish the service's records to an MQTT broker.

    @ivar published: messages handed to the broker connection (states,
        discovery, availability).
    @ivar waiting: the L{RecordQueue} of records that wait for the broker
        (away, or the meter not yet known).
    @ivar reconnects: successful connections after the first.
    @ivar connected: whether the broker has accepted us (CONNACK) and not gone.
    @ivar driver: the L{PahoDriver}, the broker connection.
    """

    log = Logger()

    #: Seconds between two publications of the link state (it is also sent on change).
    LINK_INTERVAL = 60.0
    #: The longest random delay before re-sending discovery on HA's birth message.
    BIRTH_DELAY_MAX = 5.0
    #: Reconnect backoff: base and cap, in seconds.
    BACKOFF_BASE = 1.0
    BACKOFF_CAP = 120.0
    #: How long stopService waits for the broker to see our goodbye.
    STOP_TIMEOUT = 2.0

    def __init__(self, config: MqttConfig, view: ServiceView, reactor, rng=None,
                 wall_clock=time.time, driver_factory=PahoDriver) -> None:
        """
        @param driver_factory: makes the broker connection, called as
            L{PahoDriver} is (tests give a stand-in).
        @raise ArgumentError: paho-mqtt is missing, or the TLS settings are
            unusable.
        """
        self.config = config
        self.view = view
        self.reactor = reactor
        self.rng = rng if rng is not None else random.Random()
        self.wall_clock = wall_clock
        self.published = 0
        self.reconnects = 0
        self.connected = False
        self.waiting = RecordQueue(config.queue_limit)
        #: suffix ("state", "energy", "fixed") -> the newest payload, republished on reconnect.
        self._last: dict = {}
        self._connects = 0
        self._retry = None
        self._birth_call = None
        self._stopping = False
        self._stopped_d: Optional[defer.Deferred] = None
        self._will_id: Optional[str] = None
        self._link_sent: Optional[dict] = None
        self._backoff = Backoff(self.BACKOFF_BASE, self.BACKOFF_CAP, self.rng)
        self._misc = task.LoopingCall(self._tick)
        self._misc.clock = reactor
        self._link_loop = task.LoopingCall(self._publish_link, True)
        self._link_loop.clock = reactor
        self.driver = driver_factory(
            config, reactor, f"smartmeter_tx-{self.rng.getrandbits(48):012x}",
            self._on_connect, self._on_disconnect, self._on_message)

    # -- what the service calls ---------------------------------------------------

    @property
    def backlog(self) -> int:
        """Records waiting to be published now."""
        return len(self.waiting)

    def publish_record(self, record: dict, when: float) -> None:
        """
        Publish one data-log record taken at C{when} (epoch seconds): an
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
        kind = record.get("kind")
        if kind not in (None, "fixed"):
            return
        if self.connected and self._meter_id() is not None:
            self._flush()
            self._publish_states(record, when)
            return
        self.waiting.put(record, when)

    # -- the service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._misc.start(1.0, now=True).addErrback(self._loop_failed, "loop")
        self._link_loop.start(self.LINK_INTERVAL, now=False).addErrback(self._loop_failed, "link")

    def stopService(self):
        """
        Say C{offline} under the meter's id and disconnect.

        @return: a Deferred that fires when the broker saw the goodbye, or
            after L{STOP_TIMEOUT}; C{None} when no connection was open.
        """
        super().stopService()
        self._stopping = True
        for loop in (self._misc, self._link_loop):
            if loop.running:
                loop.stop()
        for call in (self._retry, self._birth_call):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._birth_call = None
        if not self.driver.has_socket:
            return None
        self._stopped_d = defer.Deferred()
        if self.connected and self._will_id is not None:
            self._publish(self._topic(self._will_id, "availability"), b"offline")
        self.driver.disconnect()
        timeout = self.reactor.callLater(self.STOP_TIMEOUT, self._force_close)

        def done(result):
            if timeout.active():
                timeout.cancel()
            return None
        return self._stopped_d.addBoth(done)

    def _force_close(self) -> None:
        self.driver.drop_socket()
        if self._stopped_d is not None:
            d, self._stopped_d = self._stopped_d, None
            d.callback(None)

    def _loop_failed(self, failure, which):
        self.log.failure("MQTT {which} loop failed", failure, which=which)

    # -- connecting -------------------------------------------------------------------

    def _meter_id(self) -> Optional[str]:
        return payloads.meter_id(self.view.store.identity)

    def _topic(self, mid: str, suffix: str) -> str:
        return f"{self.config.topic_prefix}/{mid}/{suffix}"

    def _tick(self) -> None:
        self.driver.tick()
        mid = self._meter_id()
        if mid is None:
            return
        if self._will_id is None:
            self._connect()
        elif mid != self._will_id and self.connected:
            # Another meter: say goodbye under the old id, and come back with a new will.
            self.log.info("MQTT: the meter is now {mid}; reconnecting", mid=mid)
            self._publish(self._topic(self._will_id, "availability"), b"offline")
            self.driver.disconnect()
        if self.connected:
            self._publish_link(False)

    def _connect(self) -> None:
        if self._stopping or not self.driver.idle:
            return
        mid = self._meter_id()
        if mid is None:
            return
        self._retry = None
        self._will_id = mid
        d = self.driver.connect(self._topic(mid, "availability"))
        d.addCallbacks(self._connect_sent, self._connect_failed)

    def _connect_sent(self, rc) -> None:
        if self._stopping:
            self.driver.disconnect()
            self.reactor.callLater(0, self.driver.drop_socket)

    def _connect_failed(self, failure) -> None:
        error = failure.value
        why = getattr(error, "strerror", None) or str(error) or type(error).__name__
        self.log.warn("MQTT: cannot connect to {url}: {why}", url=self.config.display_url, why=why)
        self.driver.drop_socket()
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._stopping or (self._retry is not None and self._retry.active()):
            return
        delay = self._backoff.next_delay()
        self.log.info("MQTT: reconnecting in {delay:.1f} s", delay=delay)
        self._retry = self.reactor.callLater(delay, self._connect)

    def _on_connect(self, reason_code) -> None:
        if reason_code.is_failure:
            # Not authorised, bad user name or password...: the broker closes
            # the connection and _on_disconnect schedules the next try.
            self.log.warn("MQTT: {url} refused us: {reason}", url=self.config.display_url,
                          reason=str(reason_code))
            return
        self.connected = True
        self._backoff.reset()
        self._connects += 1
        if self._connects > 1:
            self.reconnects += 1
        mid = self._will_id
        self.log.info("MQTT: connected to {url} as meter {mid}", url=self.config.display_url, mid=mid)
        self._publish(self._topic(mid, "availability"), b"online")
        if self.config.discovery_prefix is not None:
            self.driver.subscribe(f"{self.config.discovery_prefix}/status")
            self._send_discovery()
        self._republish()
        self._flush()
        self._publish_link(True)

    def _on_disconnect(self, reason_code) -> None:
        was = self.connected
        self.connected = False
        if self._stopping:
            if self._stopped_d is not None:
                d, self._stopped_d = self._stopped_d, None
                self.reactor.callLater(0, d.callback, None)
            return
        if was:
            self.log.warn("MQTT: lost the connection to {url}: {reason}",
                          url=self.config.display_url, reason=str(reason_code))
        self._schedule_reconnect()

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
            self._send_discovery()
            self._republish()
            self._publish_link(True)

    # -- publishing -------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self.driver.publish(topic, payload, retain)
        self.published += 1

    def _republish(self) -> None:
        """The newest state of each kind again (a broker without persistence lost them)."""
        for suffix, payload in self._last.items():
            self._publish(self._topic(self._will_id, suffix), payload)

    def _flush(self) -> None:
        while self.waiting and self.connected:
            self._publish_states(*self.waiting.take())

    def _publish_states(self, record: dict, when: float) -> None:
        for suffix, payload in payloads.state_payloads(record, when):
            data = payloads.dumps(payload)
            self._last[suffix] = data
            self._publish(self._topic(self._will_id, suffix), data)

    def link_payload(self) -> dict:
        """The link's health as the C{link} topic carries it."""
        store = self.view.store
        return payloads.link_payload(self.view.state, store.age(self.wall_clock()),
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
        self._publish(self._topic(self._will_id, "link"), payloads.dumps(payload))

    def discovery(self, mid: str) -> dict:
        """
        @return: C{{config topic: payload dict}} of every entity of meter C{mid}.
        """
        return payloads.discovery_configs(
            self.config.discovery_prefix, self.config.topic_prefix, mid,
            self.view.store.identity, self.view.interval, smartmeter_tx.__version__)

    def _send_discovery(self) -> None:
        if self.config.discovery_prefix is None or not self.connected:
            return
        for topic, payload in self.discovery(self._will_id).items():
            self._publish(topic, payloads.dumps(payload))
