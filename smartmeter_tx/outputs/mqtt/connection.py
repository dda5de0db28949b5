"""
The publisher's broker connection: connecting with the Last Will, reconnecting
with backoff and jitter, saying goodbye, and telling the failures that no
retry can cure (L{faults}) from those that pass.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger

from smartmeter_tx.outputs.mqtt import faults
from smartmeter_tx.outputs.mqtt.config import MqttConfig
from smartmeter_tx.service.backoff import Backoff

__all__ = ["BrokerConnection"]


class BrokerConnection:
    """
    One broker connection at a time, made again whenever it is lost, until
    L{halt}.

    @ivar connected: whether the broker has accepted us (CONNACK) and not gone.
    @ivar connects: successful connections so far.
    @ivar will_topic: the Last Will's topic of the current connection.
    @ivar driver: the L{PahoDriver}.
    """

    log = Logger()

    #: Reconnect backoff: base and cap, in seconds.
    BACKOFF_BASE = 1.0
    BACKOFF_CAP = 120.0
    #: How long L{stop} waits for the broker to see our goodbye.
    STOP_TIMEOUT = 2.0

    def __init__(self, config: MqttConfig, reactor, rng, driver_factory, client_id: str,
                 will: Callable[[], Optional[str]], on_up: Callable[[], None],
                 on_down: Callable[[], None], on_message: Callable[[str, bytes], None],
                 on_publish: Callable[[int], None], on_fatal: Callable[[str], None]) -> None:
        """
        @param will: called before each connection: the Last Will's topic,
            or C{None} when it is too early to connect.
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
        """Connect now, unless connected, halted or too early (L{will})."""
        if self._halted or not self.driver.idle:
            return
        will_topic = self.will()
        if will_topic is None:
            return
        self._retry = None
        self.will_topic = will_topic
        self._answered = False
        d = self.driver.connect(will_topic)
        d.addCallbacks(self._connect_sent, self._connect_failed)

    def goodbye(self) -> None:
        """C{offline} on the Last Will's topic, straight to the connection; then disconnect."""
        if self.connected and self.will_topic is not None:
            self.driver.publish(self.will_topic, b"offline", True)
        self.driver.disconnect()

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
        return max(0, self.connects - 1)

    def _on_disconnect(self, reason_code) -> None:
        was = self.connected
        self.connected = False
        if was:
            self.on_down()
        if self._halted:
            if self._stopped_d is not None:
                d, self._stopped_d = self._stopped_d, None
                self.reactor.callLater(0, d.callback, None)
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
