"""
The publisher's broker connection: connecting with the Last Will, reconnecting
with backoff and jitter (never more than a minute apart), connecting again at
once to change the Last Will, saying goodbye, and telling the failures that
no retry can cure (L{faults}) from those that pass; and the L{Sender}, which
hands the connection what the L{Outbox} lets go.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger

from smartmeter_tx.outputs.mqtt import faults
from smartmeter_tx.outputs.mqtt.config import MqttConfig
from smartmeter_tx.outputs.mqtt.outbox import Outbox
from smartmeter_tx.service.backoff import Backoff

__all__ = ["BrokerConnection", "Sender"]


class BrokerConnection:
    """
    One broker connection at a time, made again whenever it is lost, until
    L{halt}.

    @ivar connected: whether the broker has accepted us (CONNACK) and not gone.
    @ivar connects: successful connections so far.
    @ivar rebinds: connections ended on purpose by L{rebind}.
    @ivar rebinding: whether L{rebind} has asked the connection to end.
    @ivar will_topic: the Last Will's topic of the current connection.
    @ivar driver: the L{PahoDriver}.
    """

    log = Logger()

    #: Reconnect backoff: base and cap, in seconds.  L{Backoff}'s jitter (x0.5 to x1.5)
    #: makes the longest wait 1.5 times the cap: under a minute, as the Home Assistant
    #: importer's, so that a broker that comes back is found within 60 s.
    BACKOFF_BASE = 1.0
    BACKOFF_CAP = 40.0
    #: How long L{stop} waits for the broker to see our goodbye.
    STOP_TIMEOUT = 2.0

    def __init__(self, config: MqttConfig, reactor, rng, driver_factory, client_id: str,
                 will: Callable[[], str], on_up: Callable[[], None],
                 on_down: Callable[[], None], on_message: Callable[[str, bytes], None],
                 on_publish: Callable[[int], None], on_fatal: Callable[[str], None]) -> None:
        """
        @param will: called before each connection: the Last Will's topic.
        @param on_up: called once the broker accepted a connection.
        @param on_down: called when an accepted connection is lost.
        @param on_fatal: called with one line when the broker cannot be used
            as configured; the connection has halted.
        """
        self.config = config
        self.reactor = reactor
        self.will = will
        self.on_up, self.on_down, self.on_fatal = on_up, on_down, on_fatal
        self.connected = False
        self.connects = 0
        self.rebinds = 0
        self.rebinding = False
        self.will_topic: Optional[str] = None
        self._answered = False
        self._suspects = 0
        self._halted = False
        self._retry = None
        self._stopped_d: Optional[defer.Deferred] = None
        self._backoff = Backoff(self.BACKOFF_BASE, self.BACKOFF_CAP, rng)
        self.driver = driver_factory(config, reactor, client_id, self._on_connect,
                                     self._on_disconnect, on_message, on_publish)

    @property
    def retry_time(self) -> Optional[float]:
        """When the next try to connect is due, or C{None}."""
        return self._retry.getTime() if self._retry is not None and self._retry.active() else None

    def connect(self) -> None:
        """Connect now, unless connected or halted."""
        if self._halted or not self.driver.idle:
            return
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self.will_topic = self.will()
        self._answered = False
        d = self.driver.connect(self.will_topic)
        d.addCallbacks(self._connect_sent, self._connect_failed)

    def goodbye(self) -> None:
        """
        C{offline} on the Last Will's topic, straight to the connection; then
        disconnect.  Nothing is said while L{rebind} disconnects: it has
        said what it had to.
        """
        if self.connected and self.will_topic is not None and not self.rebinding:
            self.driver.publish(self.will_topic, b"offline", True)
        self.driver.disconnect()

    def rebind(self, farewell: bool) -> None:
        """
        End the connection on purpose and make it again at once, with the
        Last Will that L{will} gives then: no warning, no backoff, not
        counted as a reconnection.

        @param farewell: say C{offline} on the current Last Will's topic
            first (L{goodbye}); without it the broker forgets the Last Will
            unsaid, as on every clean disconnection.
        """
        if not self.connected or self.rebinding:
            return
        if farewell:
            self.goodbye()
        else:
            self.driver.disconnect()
        self.rebinding = True

    def resume(self) -> None:
        """Connect again after L{halt} (the service is started again)."""
        self._halted = False

    def halt(self) -> None:
        """Connect no more."""
        self._halted = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def stop(self) -> Optional[defer.Deferred]:
        """
        Halt, say goodbye and disconnect.

        @return: a Deferred that fires when the broker saw the goodbye, or
            after L{STOP_TIMEOUT}; C{None} when no connection was open.
        """
        self.halt()
        if not self.driver.has_socket:
            return None
        self._stopped_d = defer.Deferred()
        self.goodbye()
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

    def _connect_sent(self, rc) -> None:
        if self._halted:
            self.driver.disconnect()
            self.reactor.callLater(0, self.driver.drop_socket)

    def _connect_failed(self, failure) -> None:
        self.driver.drop_socket()
        kind, why = faults.connect_error(failure.value, self.config.tls, self.config.port)
        if self._judge(kind, why):
            return
        self.log.warn("MQTT: cannot connect to {url}: {why}", url=self.config.display_url, why=why)
        self._schedule_reconnect()

    def _judge(self, kind: str, why: str) -> bool:
        """
        A failure that may be the configuration's: before any connection
        has succeeded, a certain one (or L{faults.SUSPECT_LIMIT} likely ones
        in a row) halts the connection and goes to C{on_fatal}.

        @return: whether it did.
        """
        if kind == faults.TRANSIENT or self.connects > 0:
            self._suspects = 0
            return False
        if kind == faults.SUSPECT:
            self._suspects += 1
            if self._suspects < faults.SUSPECT_LIMIT:
                return False
        self.halt()
        self.on_fatal(f"--mqtt {self.config.display_url}: {why}")
        return True

    def _schedule_reconnect(self) -> None:
        if self._halted or (self._retry is not None and self._retry.active()):
            return
        delay = self._backoff.next_delay()
        self.log.info("MQTT: reconnecting in {delay:.1f} s", delay=delay)
        self._retry = self.reactor.callLater(delay, self.connect)

    def _on_connect(self, reason_code) -> None:
        self._answered = True
        if reason_code.is_failure:
            refusal = faults.connack_refusal(getattr(reason_code, "value", 0))
            if refusal is not None and self._judge(faults.FATAL, refusal):
                return
            # The broker closes the connection and _on_disconnect schedules the next try.
            self.log.warn("MQTT: {url} refused us: {reason}", url=self.config.display_url,
                          reason=refusal or str(reason_code))
            return
        self.connected = True
        self._backoff.reset()
        self._suspects = 0
        self.connects += 1
        self.on_up()

    @property
    def reconnects(self) -> int:
        """Connections made again after one was lost (L{rebind}'s are not)."""
        return max(0, self.connects - 1 - self.rebinds)

    def _on_disconnect(self, reason_code) -> None:
        was = self.connected
        rebinding, self.rebinding = self.rebinding, False
        self.connected = False
        if was:
            self.on_down()
        if self._halted:
            if self._stopped_d is not None:
                d, self._stopped_d = self._stopped_d, None
                self.reactor.callLater(0, d.callback, None)
            return
        if was and rebinding:
            self.rebinds += 1
            self._retry = self.reactor.callLater(0, self.connect)
            return
        if was:
            self.log.warn("MQTT: lost the connection to {url}: {reason}",
                          url=self.config.display_url, reason=str(reason_code))
        elif not self._answered:
            kind, why = faults.closed_before_connack(self.config.tls, self.config.port,
                                                     getattr(reason_code, "value", 128))
            if self._judge(kind, why):
                return
            self.log.warn("MQTT: {url}: {why}", url=self.config.display_url, why=why)
        self._schedule_reconnect()


class Sender:
    """
    The outbox on the connection: what may go now is handed to the driver,
    at most one message per topic unacknowledged (L{Outbox}); the broker's
    acknowledgements; the drops of a full outbox, counted and said once when
    they begin and once when the outbox has caught up.
    """

    log = Logger()

    def __init__(self, outbox: Outbox, connection: BrokerConnection,
                 topic_of: Callable[[str], Optional[str]], url: str) -> None:
        """
        @param topic_of: the topic of an outbox key now, or C{None} while
            its messages must wait.
        @param url: the broker's URL as the log says it (no secret).
        """
        self.outbox = outbox
        self.connection = connection
        self.topic_of = topic_of
        self.url = url
        #: message id (paho's) -> the outbox key of the message in flight.
        self._mids: dict = {}
        self._dropping = 0

    def queue(self, key: str, payload: bytes, latest_only: bool = False,
              urgent: bool = False) -> None:
        """Queue a message in the outbox (see L{Outbox.put}); L{pump} sends it."""
        self._count_drops(self.outbox.put(key, payload, latest_only, urgent))

    def pump(self) -> None:
        """Hand the connection what may go now, if it is up and staying."""
        connection = self.connection
        if not connection.connected or connection.rebinding:
            return
        for key, payload in self.outbox.take_ready(self._sendable):
            topic = self.topic_of(key)
            assert topic is not None  # taken only when it has one
            self._mids[connection.driver.publish(topic, payload, True)] = key

    def _sendable(self, key: str) -> bool:
        return self.topic_of(key) is not None

    def acknowledged(self, mid: int) -> None:
        """The broker acknowledged message C{mid}: the next of its topic may go."""
        key = self._mids.pop(mid, None)
        if key is None:
            return
        self.outbox.acknowledged(key)
        self.pump()
        if self._dropping and not self.outbox:
            self.log.warn("MQTT: caught up with {url}; {n} messages had been dropped",
                          url=self.url, n=self._dropping)
            self._dropping = 0

    def up(self) -> None:
        """A new connection: no message id of an earlier one will be acknowledged."""
        self._mids.clear()

    def down(self) -> None:
        """
        The connection is lost: what was in flight may not have arrived, and
        goes back to the front of its topic.
        """
        self._mids.clear()
        self._count_drops(self.outbox.requeue())

    def _count_drops(self, dropped: int) -> None:
        if dropped and not self._dropping:
            self.log.warn("MQTT: {limit} messages wait for {url}; dropping the oldest",
                          limit=self.outbox.limit, url=self.url)
        self._dropping += dropped
