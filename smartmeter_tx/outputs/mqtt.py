"""
The service's MQTT publisher: the readings, the meter's own half-hourly EA/EB
and the link's health as retained JSON states, plus Home Assistant discovery.

Topics (C{PREFIX} = C{--mqtt-topic}, default C{smartmeter}; C{ID} = the
meter's serial number (0x8D) if it has one, else its MAC)::

    PREFIX/ID/availability  online | offline (retained; the Last Will says offline)
    PREFIX/ID/state         {"power_w", "current_r_a", "current_t_a", "time"}
    PREFIX/ID/energy        {"energy_normal_kwh", "energy_reverse_kwh", "time"}
    PREFIX/ID/fixed         {"meter_time", "energy_normal_kwh", "energy_reverse_kwh", ..., "time"}
    PREFIX/ID/link          {"session", "session_up", "rate_limited", "held", "rssi_dbm",
                             "lqi", "reading_age_s", "polls_failed", "last_event", "time"}

Every state is retained and published with QoS 1; C{time} is the epoch
seconds at which the service took the reading (C{meter_time} is the meter's
own clock, ISO 8601 with +09:00).  A value the meter did not give is C{null}.

The client is paho-mqtt 2 driven by the reactor, the way Home Assistant drives
it on asyncio: the blocking connect (DNS, TCP, TLS) runs in the reactor's
thread pool, the socket is a reader/writer of the reactor (paho's
C{on_socket_*} callbacks), C{loop_misc} runs every second from a
L{LoopingCall}, and reconnecting is ours (L{Backoff}, with jitter), never
paho's own thread.

Nothing taken while the broker is away is lost, up to C{queue_limit} records:
they wait, oldest first, and are published in order (QoS 1) once the broker
is back; past the limit the oldest are dropped and counted in L{dropped}.
"""

from __future__ import annotations

import datetime
import json
import math
import random
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from twisted.application import service
from twisted.internet import task, threads
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.logger import Logger
from twisted.python import threadable
from zope.interface import implementer

import smartmeter_tx
from smartmeter_tx.service.backoff import Backoff
from smartmeter_tx.model import JST
from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.service.view import ServiceView

__all__ = ["MqttConfig", "MqttPublisher", "PAHO_MISSING"]

PAHO_MISSING = "MQTT needs paho-mqtt: pip install 'smartmeter_tx[mqtt]'"

MODEL = "Low-voltage smart electric energy meter"

_INSTANT = ("power_w", "current_r_a", "current_t_a")
_ENERGY = ("energy_normal_kwh", "energy_reverse_kwh")
_TOPIC_FORBIDDEN = set("+#\0")


def _check_prefix(prefix: str, what: str) -> str:
    prefix = prefix.strip().strip("/")
    if not prefix or _TOPIC_FORBIDDEN & set(prefix):
        raise ArgumentError(f"{what} must be a non-empty MQTT topic without + or #")
    return prefix


@dataclass(frozen=True)
class MqttConfig:
    """
    Where and how to publish.  Build it with L{from_options}.

    @ivar discovery_prefix: Home Assistant's discovery prefix, or C{None} for
        no discovery.
    @ivar queue_limit: the most records kept while the broker is away.
    """

    host: str
    port: int
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    topic_prefix: str = "smartmeter"
    discovery_prefix: Optional[str] = "homeassistant"
    ca_file: Optional[str] = None
    queue_limit: int = 10000
    keepalive: int = 60

    @classmethod
    def from_options(cls, url: str, password: Optional[str], topic_prefix: str = "smartmeter",
                     discovery_prefix: Optional[str] = "homeassistant",
                     ca_file: Optional[str] = None, queue_limit: int = 10000) -> "MqttConfig":
        """
        Parse C{mqtt://[user@]host[:port]} or C{mqtts://[user@]host[:port]}.

        @param discovery_prefix: C{None} or C{"none"} disables discovery.
        @raise ArgumentError: a one-line message (it never holds the password).
        """
        try:
            parts = urllib.parse.urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise ArgumentError("--mqtt: not a URL of the form mqtt://[user@]host[:port]") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ArgumentError("--mqtt: the URL must start with mqtt:// or mqtts://")
        if parts.password is not None:
            raise ArgumentError("--mqtt: no password in the URL; use --mqtt-password-file "
                                "or SMARTMETER_MQTT_PASSWORD")
        if not parts.hostname:
            raise ArgumentError("--mqtt: the URL has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ArgumentError("--mqtt: the URL must be mqtt://[user@]host[:port], nothing after it")
        tls = parts.scheme == "mqtts"
        if ca_file is not None and not tls:
            raise ArgumentError("--mqtt-ca needs an mqtts:// URL")
        if isinstance(discovery_prefix, str) and discovery_prefix.strip().lower() == "none":
            discovery_prefix = None
        if discovery_prefix is not None:
            discovery_prefix = _check_prefix(discovery_prefix, "--ha-discovery")
        if queue_limit < 0:
            raise ArgumentError("the MQTT queue limit must be 0 or more")
        username = urllib.parse.unquote(parts.username) if parts.username else None
        return cls(host=parts.hostname, port=port or (8883 if tls else 1883), tls=tls,
                   username=username, password=password or None,
                   topic_prefix=_check_prefix(topic_prefix, "--mqtt-topic"),
                   discovery_prefix=discovery_prefix, ca_file=ca_file,
                   queue_limit=queue_limit)

    @property
    def display_url(self) -> str:
        """The broker's URL for logs: the user part, never the password."""
        user = f"{urllib.parse.quote(self.username)}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"


def meter_id(identity: Optional[dict]) -> Optional[str]:
    """
    The meter's stable id for topics and unique ids: its serial number if it
    has one, else its MAC; characters other than letters, digits, C{-} and
    C{_} become C{_}.  C{None} while the identity is not known.
    """
    if not identity:
        return None
    raw = identity.get("serial") or identity.get("mac")
    if not raw:
        return None
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in str(raw))


def _aware_meter_time(value):
    """The meter's naive JST wall-clock time as ISO 8601 with +09:00."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=JST)
    return when.isoformat()


def _dumps(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


@implementer(IReadDescriptor, IWriteDescriptor)
class _PahoSocket:
    """paho's socket as a reactor reader/writer: readable -> loop_read, writable -> loop_write."""

    def __init__(self, client, sock) -> None:
        self.client = client
        self.sock = sock

    def fileno(self) -> int:
        try:
            return self.sock.fileno()
        except Exception:
            return -1

    def doRead(self):
        self.client.loop_read()

    def doWrite(self):
        self.client.loop_write()

    def connectionLost(self, reason) -> None:
        pass

    def logPrefix(self) -> str:
        return "mqtt"


class MqttPublisher(service.Service):
    """
    Publish the service's records to an MQTT broker.

    @ivar published: messages handed to the broker connection (states,
        discovery, availability).
    @ivar queued: records that had to wait (broker away, meter not yet known).
    @ivar dropped: waiting records dropped because the queue was full.
    @ivar reconnects: successful connections after the first.
    @ivar connected: whether the broker has accepted us (CONNACK) and not gone.
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
                 wall_clock=time.time) -> None:
        try:
            from paho.mqtt import client as paho
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise ArgumentError(PAHO_MISSING) from None
        self._paho = paho
        self.config = config
        self.view = view
        self.reactor = reactor
        self.rng = rng if rng is not None else random.Random()
        self.wall_clock = wall_clock
        self.published = 0
        self.queued = 0
        self.dropped = 0
        self.reconnects = 0
        self.connected = False
        self._queue: deque = deque()
        #: suffix ("state", "energy", "fixed") -> the newest payload, republished on reconnect.
        self._last: dict = {}
        self._connects = 0
        self._connecting = False
        self._retry = None
        self._birth_call = None
        self._stopping = False
        self._stopped_d = None
        self._socket: Optional[_PahoSocket] = None
        self._will_id: Optional[str] = None
        self._link_sent: Optional[dict] = None
        self._backoff = Backoff(self.BACKOFF_BASE, self.BACKOFF_CAP, self.rng)
        self._misc = task.LoopingCall(self._tick)
        self._misc.clock = reactor
        self._link_loop = task.LoopingCall(self._publish_link, True)
        self._link_loop.clock = reactor

        client = paho.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"smartmeter_tx-{self.rng.getrandbits(48):012x}",
                             protocol=paho.MQTTv311, clean_session=True,
                             reconnect_on_failure=False)
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls:
            try:
                client.tls_set(ca_certs=config.ca_file)
            except (OSError, ValueError) as e:
                raise ArgumentError(f"--mqtt-ca: cannot use {config.ca_file}: "
                                    f"{getattr(e, 'strerror', None) or e}") from None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._from_any_thread(self._socket_open)
        client.on_socket_close = self._from_any_thread(self._socket_close)
        client.on_socket_register_write = self._from_any_thread(self._register_write)
        client.on_socket_unregister_write = self._from_any_thread(self._unregister_write)
        self.client = client

    # -- what the service calls ---------------------------------------------------

    @property
    def backlog(self) -> int:
        """Records waiting to be published now."""
        return len(self._queue)

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
        self._queue.append((record, when))
        self.queued += 1
        while len(self._queue) > self.config.queue_limit:
            self._queue.popleft()
            self.dropped += 1

    # -- the service ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._misc.start(1.0, now=True).addErrback(self._loop_failed, "loop")
        self._link_loop.start(self.LINK_INTERVAL, now=False).addErrback(self._loop_failed, "link")

    def stopService(self):
        super().stopService()
        self._stopping = True
        for loop in (self._misc, self._link_loop):
            if loop.running:
                loop.stop()
        for call in (self._retry, self._birth_call):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._birth_call = None
        if self._socket is None:
            return None
        from twisted.internet import defer
        self._stopped_d = defer.Deferred()
        if self.connected and self._will_id is not None:
            self._publish(self._topic(self._will_id, "availability"), b"offline")
        self.client.disconnect()
        timeout = self.reactor.callLater(self.STOP_TIMEOUT, self._force_close)

        def done(result):
            if timeout.active():
                timeout.cancel()
            return None
        return self._stopped_d.addBoth(done)

    def _force_close(self) -> None:
        self._drop_socket()
        if self._stopped_d is not None:
            d, self._stopped_d = self._stopped_d, None
            d.callback(None)

    def _loop_failed(self, failure, which):
        self.log.failure("MQTT {which} loop failed", failure, which=which)

    # -- connecting -------------------------------------------------------------------

    def _meter_id(self) -> Optional[str]:
        return meter_id(self.view.store.identity)

    def _topic(self, mid: str, suffix: str) -> str:
        return f"{self.config.topic_prefix}/{mid}/{suffix}"

    def _tick(self) -> None:
        if self._socket is not None:
            self.client.loop_misc()
        mid = self._meter_id()
        if mid is None:
            return
        if self._will_id is None:
            self._connect()
        elif mid != self._will_id and self.connected:
            # Another meter: say goodbye under the old id, and come back with a new will.
            self.log.info("MQTT: the meter is now {mid}; reconnecting", mid=mid)
            self._publish(self._topic(self._will_id, "availability"), b"offline")
            self.client.disconnect()
        if self.connected:
            self._publish_link(False)

    def _connect(self) -> None:
        if self._stopping or self._connecting or self._socket is not None:
            return
        mid = self._meter_id()
        if mid is None:
            return
        self._retry = None
        self._connecting = True
        self._will_id = mid
        self.client.will_set(self._topic(mid, "availability"), b"offline", qos=1, retain=True)
        host, port, keepalive = self.config.host, self.config.port, self.config.keepalive
        d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                      self.client.connect, host, port, keepalive)
        d.addCallbacks(self._connect_sent, self._connect_failed)

    def _connect_sent(self, rc) -> None:
        self._connecting = False
        if self._stopping:
            self.client.disconnect()
            self.reactor.callLater(0, self._drop_socket)

    def _connect_failed(self, failure) -> None:
        self._connecting = False
        error = failure.value
        why = getattr(error, "strerror", None) or str(error) or type(error).__name__
        self.log.warn("MQTT: cannot connect to {url}: {why}", url=self.config.display_url, why=why)
        self._drop_socket()
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._stopping or (self._retry is not None and self._retry.active()):
            return
        delay = self._backoff.next_delay()
        self.log.info("MQTT: reconnecting in {delay:.1f} s", delay=delay)
        self._retry = self.reactor.callLater(delay, self._connect)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
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
            client.subscribe(f"{self.config.discovery_prefix}/status", qos=1)
            self._send_discovery()
        for suffix, payload in self._last.items():
            self._publish(self._topic(mid, suffix), payload)
        self._flush()
        self._publish_link(True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected
        self.connected = False
        self._drop_socket()
        if self._stopping:
            if self._stopped_d is not None:
                d, self._stopped_d = self._stopped_d, None
                self.reactor.callLater(0, d.callback, None)
            return
        if was:
            self.log.warn("MQTT: lost the connection to {url}: {reason}",
                          url=self.config.display_url, reason=str(reason_code))
        self._schedule_reconnect()

    def _on_message(self, client, userdata, message) -> None:
        prefix = self.config.discovery_prefix
        if prefix is None or message.topic != f"{prefix}/status":
            return
        if message.payload.strip().lower() != b"online":
            return
        if self._birth_call is not None and self._birth_call.active():
            return
        delay = self.rng.uniform(0, self.BIRTH_DELAY_MAX)
        self._birth_call = self.reactor.callLater(delay, self._birth)

    def _birth(self) -> None:
        self._birth_call = None
        if self.connected:
            self._send_discovery()
            for suffix, payload in self._last.items():
                self._publish(self._topic(self._will_id, suffix), payload)
            self._publish_link(True)

    # -- the socket on the reactor --------------------------------------------------

    def _from_any_thread(self, f):
        def call(*args):
            if threadable.isInIOThread():
                f(*args)
            else:
                self.reactor.callFromThread(f, *args)
        return call

    def _socket_open(self, client, userdata, sock) -> None:
        self._drop_socket()
        self._socket = _PahoSocket(client, sock)
        self.reactor.addReader(self._socket)

    def _socket_close(self, client, userdata, sock) -> None:
        if self._socket is not None and self._socket.sock is sock:
            self._drop_socket()

    def _register_write(self, client, userdata, sock) -> None:
        if self._socket is not None and self._socket.sock is sock:
            self.reactor.addWriter(self._socket)

    def _unregister_write(self, client, userdata, sock) -> None:
        if self._socket is not None and self._socket.sock is sock:
            self.reactor.removeWriter(self._socket)

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self.reactor.removeReader(self._socket)
            self.reactor.removeWriter(self._socket)
            self._socket = None

    # -- publishing -------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)
        self.published += 1

    def _flush(self) -> None:
        while self._queue and self.connected:
            record, when = self._queue.popleft()
            self._publish_states(record, when)

    def _publish_states(self, record: dict, when: float) -> None:
        mid = self._will_id
        stamp = round(when, 3)
        out = []
        if record.get("kind") == "fixed":
            payload = {k: v for k, v in record.items() if k != "kind"}
            payload["meter_time"] = _aware_meter_time(record.get("meter_time"))
            for name in _ENERGY:
                payload.setdefault(name, None)
            payload["time"] = stamp
            out.append(("fixed", payload))
        else:
            if any(name in record for name in _INSTANT):
                payload = {name: record.get(name) for name in _INSTANT}
                payload["time"] = stamp
                out.append(("state", payload))
            if any(name in record for name in _ENERGY):
                payload = {name: record.get(name) for name in _ENERGY}
                payload["time"] = stamp
                out.append(("energy", payload))
        for suffix, payload in out:
            data = _dumps(payload)
            self._last[suffix] = data
            self._publish(self._topic(mid, suffix), data)

    def link_payload(self) -> dict:
        """The link's health as the C{link} topic carries it."""
        state = self.view.state
        store = self.view.store
        age = store.age(self.wall_clock())
        return {
            "session": state.session.value,
            "session_up": bool(state.session_up),
            "rate_limited": bool(state.rate_limited),
            "held": state.held,
            "rssi_dbm": state.last_rssi,
            "lqi": state.last_lqi,
            "reading_age_s": None if age is None else round(age, 1),
            "polls_failed": store.stats.polls_failed,
            "last_event": None if state.last_event is None else f"{state.last_event:02X}",
        }

    def _publish_link(self, always: bool) -> None:
        if not self.connected:
            return
        payload = self.link_payload()
        changed = {k: v for k, v in payload.items() if k != "reading_age_s"}
        if not always and changed == self._link_sent:
            return
        self._link_sent = changed
        payload["time"] = round(self.wall_clock(), 3)
        self._publish(self._topic(self._will_id, "link"), _dumps(payload))

    # -- Home Assistant discovery -----------------------------------------------------

    def discovery(self, mid: str) -> dict:
        """
        @return: C{{config topic: payload dict}} of every entity of meter C{mid}.
        """
        prefix = self.config.discovery_prefix
        identity = self.view.store.identity or {}
        maker = identity.get("maker")
        device = {"identifiers": [f"smartmeter_tx_{mid}"], "name": f"Smart meter {mid}",
                  "manufacturer": f"maker {maker}" if maker else "unknown maker",
                  "model": MODEL}
        if identity.get("serial"):
            device["serial_number"] = identity["serial"]
        origin = {"name": "smartmeter_tx", "sw_version": smartmeter_tx.__version__}
        interval = float(self.view.interval)
        expire = int(math.ceil(3 * interval))
        avail = self._topic(mid, "availability")

        def v(name):
            return "{{ value_json.%s }}" % name

        def on(name):
            return "{{ 'ON' if value_json.%s else 'OFF' }}" % name

        entities = [
            # key, component, name, topic, template, extra
            ("power", "sensor", "Power", "state", v("power_w"),
             dict(unit_of_measurement="W", device_class="power", state_class="measurement",
                  expire_after=expire)),
            ("current_r", "sensor", "Current R", "state", v("current_r_a"),
             dict(unit_of_measurement="A", device_class="current", state_class="measurement",
                  expire_after=expire)),
            ("current_t", "sensor", "Current T", "state", v("current_t_a"),
             dict(unit_of_measurement="A", device_class="current", state_class="measurement",
                  expire_after=expire)),
            ("energy_normal", "sensor", "Energy normal", "energy", v("energy_normal_kwh"),
             dict(unit_of_measurement="kWh", device_class="energy",
                  state_class="total_increasing")),
            ("energy_reverse", "sensor", "Energy reverse", "energy", v("energy_reverse_kwh"),
             dict(unit_of_measurement="kWh", device_class="energy",
                  state_class="total_increasing")),
            ("fixed_energy_normal", "sensor", "Fixed-time energy normal", "fixed",
             v("energy_normal_kwh"),
             dict(unit_of_measurement="kWh", device_class="energy",
                  state_class="total_increasing")),
            ("fixed_energy_reverse", "sensor", "Fixed-time energy reverse", "fixed",
             v("energy_reverse_kwh"),
             dict(unit_of_measurement="kWh", device_class="energy",
                  state_class="total_increasing")),
            ("fixed_time", "sensor", "Fixed-time reading time", "fixed", v("meter_time"),
             dict(device_class="timestamp")),
            ("rssi", "sensor", "RSSI", "link", v("rssi_dbm"),
             dict(unit_of_measurement="dBm", device_class="signal_strength",
                  state_class="measurement", entity_category="diagnostic")),
            ("lqi", "sensor", "LQI", "link", v("lqi"),
             dict(state_class="measurement", entity_category="diagnostic")),
            ("session", "binary_sensor", "Session", "link", on("session_up"),
             dict(device_class="connectivity", entity_category="diagnostic")),
            ("rate_limited", "binary_sensor", "Rate limited", "link", on("rate_limited"),
             dict(device_class="problem", entity_category="diagnostic")),
            ("reading_age", "sensor", "Reading age", "link", v("reading_age_s"),
             dict(unit_of_measurement="s", device_class="duration", state_class="measurement",
                  entity_category="diagnostic")),
            ("polls_failed", "sensor", "Polls failed", "link", v("polls_failed"),
             dict(state_class="total_increasing", entity_category="diagnostic")),
        ]
        configs = {}
        for key, component, name, suffix, template, extra in entities:
            unique = f"smartmeter_tx_{mid}_{key}"
            payload = {"name": name, "unique_id": unique, "object_id": unique,
                       "state_topic": self._topic(mid, suffix), "value_template": template,
                       "availability_topic": avail, "payload_available": "online",
                       "payload_not_available": "offline", "qos": 1,
                       "device": device, "origin": origin}
            payload.update(extra)
            configs[f"{prefix}/{component}/{unique}/config"] = payload
        return configs

    def _send_discovery(self) -> None:
        if self.config.discovery_prefix is None or not self.connected:
            return
        for topic, payload in self.discovery(self._will_id).items():
            self._publish(topic, _dumps(payload))
