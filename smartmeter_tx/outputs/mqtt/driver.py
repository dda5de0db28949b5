"""
paho-mqtt 2 driven by the reactor, the way Home Assistant drives it on
asyncio: the blocking connect (DNS, TCP, TLS) runs in the reactor's thread
pool, the socket is a reader/writer of the reactor (paho's C{on_socket_*}
callbacks), and C{loop_misc} runs when the owner ticks.  paho's own thread
and its own reconnecting are never used: when to connect is the
publisher's (L{smartmeter_tx.outputs.mqtt.publisher}).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Callable, Optional

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.python import threadable
from zope.interface import implementer

from smartmeter_tx.errors import ArgumentError, ConfigError
from smartmeter_tx.outputs.mqtt.config import PAHO_MISSING, MqttConfig

if TYPE_CHECKING:  # paho-mqtt is optional: imported when a driver is made
    from paho.mqtt.client import Client

__all__ = ["PahoDriver", "tls_context"]


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
    The broker connection: a fresh paho client for each connection on the
    reactor, so that nothing paho queued on a lost connection is ever sent
    on the next one (what is still to send is the outbox's, which knows
    the order).

    @ivar client: the paho client of the current connection, or C{None}.
    """

    def __init__(self, config: MqttConfig, reactor, client_id: str,
                 on_connect: Callable[[object], None], on_disconnect: Callable[[object], None],
                 on_message: Callable[[str, bytes], None],
                 on_publish: Callable[[int], None]) -> None:
        """
        @param on_connect: called with paho's reason code on CONNACK.
        @param on_disconnect: called with paho's reason code when the
            connection ends (the socket is dropped first).
        @param on_message: called with C{(topic, payload)} of each message.
        @param on_publish: called with the message id that L{publish}
            returned once the broker acknowledged it (PUBACK).
        @raise ArgumentError: paho-mqtt is not installed.
        @raise ConfigError: a TLS file cannot be used.
        """
        try:
            from paho.mqtt import client as paho
        except ImportError:
            raise ArgumentError(PAHO_MISSING) from None
        self._paho = paho
        self.config = config
        self.reactor = reactor
        self.client_id = client_id
        self._callbacks = (on_connect, on_disconnect, on_message, on_publish)
        self._tls = (tls_context(config.ca_file, config.cert_file, config.key_file)
                     if config.tls else None)
        self._socket: Optional[_PahoSocket] = None
        self._connecting = False
        self.client: Optional[Client] = None

    def _new_client(self, will_topic: str) -> Client:
        """A paho client whose callbacks reach us only while it is the current one."""
        from paho.mqtt.enums import CallbackAPIVersion

        paho = self._paho
        on_connect, on_disconnect, on_message, on_publish = self._callbacks
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv311, clean_session=True,
                             reconnect_on_failure=False)
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self.config.password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.will_set(will_topic, b"offline", qos=1, retain=True)

        def current(f):
            return lambda c, *args: f(*args) if c is self.client else None

        def disconnected(flags, reason, props):
            self.drop_socket()
            on_disconnect(reason)
        client.on_connect = current(lambda userdata, flags, reason, props: on_connect(reason))
        client.on_disconnect = current(lambda userdata, *rest: disconnected(*rest))
        client.on_message = current(lambda userdata, message: on_message(message.topic,
                                                                          message.payload))
        client.on_publish = current(lambda userdata, mid, reason, props: on_publish(mid))
        client.on_socket_open = self._from_any_thread(self._socket_open)
        client.on_socket_close = self._from_any_thread(self._socket_close)
        client.on_socket_register_write = self._from_any_thread(self._register_write)
        client.on_socket_unregister_write = self._from_any_thread(self._unregister_write)
        return client

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
        self._discard_client()
        self._connecting = True
        self.client = self._new_client(will_topic)
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
            assert self.client is not None  # a socket is watched for the current client only
            self.client.loop_misc()

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> int:
        """
        Publish with QoS 1 on the current connection.

        @return: the message id that C{on_publish} will be called with.
        """
        assert self.client is not None  # connected: set from the first connect on
        return self.client.publish(topic, payload, qos=1, retain=retain).mid

    def subscribe(self, topic: str) -> None:
        assert self.client is not None  # connected: set from the first connect on
        self.client.subscribe(topic, qos=1)

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.disconnect()

    def _discard_client(self) -> None:
        """Close the previous client's socket, if it is still open: it is never used again."""
        self.drop_socket()
        sock = self.client.socket() if self.client is not None else None
        self.client = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

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
        if client is not self.client:
            return
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


def tls_context(ca_file: Optional[str], cert_file: Optional[str] = None,
                key_file: Optional[str] = None) -> ssl.SSLContext:
    """
    The TLS context of C{mqtts://}: the system's trusted CAs, or those of
    C{ca_file}; a client certificate when given.

    @return: an C{ssl.SSLContext} that verifies the broker's certificate and
        name.
    @raise ConfigError: a file is missing, unreadable or not PEM; the message
        names the option.
    """
    for flag, path in (("--mqtt-ca", ca_file), ("--mqtt-cert", cert_file),
                       ("--mqtt-key", key_file)):
        if path is not None:
            _readable(flag, path)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError:
            raise ConfigError(f"--mqtt-ca {ca_file}: no PEM certificate in it") from None
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError:
            raise ConfigError(f"--mqtt-cert {cert_file}: not a PEM certificate and its key "
                              "(a key in a file of its own goes to --mqtt-key)") from None
    return context


def _readable(flag: str, path: str) -> None:
    """@raise ConfigError: C{path} cannot be opened for reading."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConfigError(f"{flag} {path}: {e.strerror}") from None
