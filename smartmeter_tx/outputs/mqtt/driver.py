"""
paho-mqtt 2 driven by the reactor, the way Home Assistant drives it on
asyncio: the blocking connect (DNS, TCP, TLS) runs in the reactor's thread
pool, the socket is a reader/writer of the reactor (paho's C{on_socket_*}
callbacks), and C{loop_misc} runs when the owner ticks.  paho's own thread
and its own reconnecting are never used: when to connect is the
publisher's (L{smartmeter_tx.outputs.mqtt.publisher}).
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.python import threadable
from zope.interface import implementer

from smartmeter_tx.errors import ArgumentError
from smartmeter_tx.outputs.mqtt.config import PAHO_MISSING, MqttConfig

__all__ = ["PahoDriver"]


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


class PahoDriver:
    """
    One paho client on the reactor.

    @ivar client: the paho client.
    """

    def __init__(self, config: MqttConfig, reactor, client_id: str,
                 on_connect: Callable[[object], None], on_disconnect: Callable[[object], None],
                 on_message: Callable[[str, bytes], None]) -> None:
        """
        @param on_connect: called with paho's reason code on CONNACK.
        @param on_disconnect: called with paho's reason code when the
            connection ends (the socket is dropped first).
        @param on_message: called with C{(topic, payload)} of each message.
        @raise ArgumentError: paho-mqtt is not installed, or the CA file
            cannot be used.
        """
        try:
            from paho.mqtt import client as paho
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise ArgumentError(PAHO_MISSING) from None
        self.config = config
        self.reactor = reactor
        self._socket: Optional[_PahoSocket] = None
        self._connecting = False
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
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
        client.on_connect = lambda c, userdata, flags, reason, props: on_connect(reason)

        def disconnected(c, userdata, flags, reason, props):
            self.drop_socket()
            on_disconnect(reason)
        client.on_disconnect = disconnected
        client.on_message = lambda c, userdata, message: on_message(message.topic,
                                                                     message.payload)
        client.on_socket_open = self._from_any_thread(self._socket_open)
        client.on_socket_close = self._from_any_thread(self._socket_close)
        client.on_socket_register_write = self._from_any_thread(self._register_write)
        client.on_socket_unregister_write = self._from_any_thread(self._unregister_write)
        self.client = client

    @property
    def idle(self) -> bool:
        """Whether no connection is open or being opened."""
        return self._socket is None and not self._connecting

    @property
    def has_socket(self) -> bool:
        return self._socket is not None

    def connect(self, will_topic: str) -> defer.Deferred:
        """
        Connect, with C{offline} as the retained Last Will on C{will_topic}.

        @return: a Deferred that fires when the CONNECT was sent (the
            CONNACK comes later, to C{on_connect}), or fails with the error
            that kept it from being sent (DNS, TCP, TLS).
        """
        self._connecting = True
        self.client.will_set(will_topic, b"offline", qos=1, retain=True)
        config = self.config
        d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                      self.client.connect, config.host, config.port,
                                      config.keepalive)

        def done(result):
            self._connecting = False
            return result
        return d.addBoth(done)

    def tick(self) -> None:
        """paho's housekeeping (keepalive pings, retries), once a second."""
        if self._socket is not None:
            self.client.loop_misc()

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)

    def disconnect(self) -> None:
        self.client.disconnect()

    def drop_socket(self) -> None:
        """Stop watching the socket (it is closed, or given up)."""
        if self._socket is not None:
            self.reactor.removeReader(self._socket)
            self.reactor.removeWriter(self._socket)
            self._socket = None

    # -- paho's socket callbacks, on the reactor's thread ----------------------------

    def _from_any_thread(self, f):
        def call(*args):
            if threadable.isInIOThread():
                f(*args)
            else:
                self.reactor.callFromThread(f, *args)
        return call

    def _socket_open(self, client, userdata, sock) -> None:
        self.drop_socket()
        self._socket = _PahoSocket(client, sock)
        self.reactor.addReader(self._socket)

    def _socket_close(self, client, userdata, sock) -> None:
        if self._socket is not None and self._socket.sock is sock:
            self.drop_socket()

    def _register_write(self, client, userdata, sock) -> None:
        if self._socket is not None and self._socket.sock is sock:
            self.reactor.addWriter(self._socket)

    def _unregister_write(self, client, userdata, sock) -> None:
        if self._socket is not None and self._socket.sock is sock:
            self.reactor.removeWriter(self._socket)
