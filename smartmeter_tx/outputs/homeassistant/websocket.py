"""
Home Assistant's websocket API on Twisted, with autobahn's websocket client
(the C{[homeassistant]} extra): HA speaks nothing but websocket JSON for the
recorder's statistics, and autobahn is the websocket implementation that runs
on Twisted's reactor itself (no thread, no second event loop).

One L{HaSession} is one authenticated connection: C{auth_required}, our
C{auth} with a long-lived access token, C{auth_ok}; then commands with
increasing ids, each answered by a C{result} carrying the same id.  A
connection that ends before the websocket is open says why when it can
(L{_unopened}): TLS against plain HTTP, plain against TLS, or an HTTP answer
that is not a websocket.
"""

from __future__ import annotations

import itertools
import json
import urllib.parse
from typing import Optional

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartmeter_tx.errors import ConfigError, SmartMeterError
from smartmeter_tx.outputs import tlshint

__all__ = ["HaError", "HaAuthError", "HaUnreachable", "HaWrongScheme", "HaSession", "connect",
           "websocket_url"]


class HaUnreachable(SmartMeterError):
    """HA could not be reached, or the connection ended before an answer."""


class HaWrongScheme(HaUnreachable):
    """C{https://} (C{wss://}) for an HA that answers plain HTTP: no retry can cure it."""


class HaAuthError(ConfigError):
    """HA refused the access token (C{auth_invalid})."""


class HaError(SmartMeterError):
    """A C{result} with C{success: false}: HA's error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"Home Assistant answered {code}: {message}")
        self.code = code
        self.message = message


def websocket_url(text: str) -> str:
    """
    The websocket endpoint for C{--ha-url}: C{http://host:8123} as the
    browser shows it (any page's path, such as C{/lovelace/0}, is dropped:
    HA's API is at C{/api/websocket} of its address), or a
    C{ws://.../api/websocket} URL itself (a proxy's own path kept).

    @raise ConfigError: not an http(s) or ws(s) URL with a host.
    """
    parts = urllib.parse.urlsplit(text.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    try:
        parts.port
    except ValueError:
        scheme = None
    if scheme is None or not parts.hostname:
        raise ConfigError(f"--ha-url must be Home Assistant's address, such as "
                          f"http://homeassistant.local:8123, not {text!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/api/websocket"):
        path = "/api/websocket"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


class _Protocol(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened = True
        self.factory.session._opened(self)

    def dataReceived(self, data):
        # The start of an answer that may not be a websocket's, to name it.
        factory = self.factory
        if not factory.opened and len(factory.head) < _HEAD:
            factory.head += data[:_HEAD - len(factory.head)]
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.error = reason.value
        super().connectionLost(reason)

    def onMessage(self, payload, isBinary):
        try:
            message = None if isBinary else json.loads(payload)
        except (ValueError, RecursionError):
            message = None
        self.factory.session._received(message)

    def onClose(self, wasClean, code, reason):
        self.factory.session._closed(reason or f"closed ({code})")


class _Factory(WebSocketClientFactory):
    """
    autobahn's client factory, carrying the session its protocol serves and
    what tells why a connection ended before the websocket was open.
    """

    session: HaSession
    opened = False
    head = b""
    error: Optional[BaseException] = None
    noisy = False  # no "Starting factory" line per connection: ours say what matters


# autobahn's own lines about a connection ("SSL error: wrong version number (in
# )", "dropping connection ... abort=True") come before ours, which say the
# same in the user's words: only its critical ones are let through.
txaio.set_global_log_level("critical")  # type: ignore[attr-defined]

#: How much of the server's first answer is kept (its status line).
_HEAD = 256
#: The first byte of a TLS record: handshake, alert.
_TLS_RECORDS = (0x16, 0x15)


def _unopened(url: str, secure: bool, port: int, factory: _Factory) -> Optional[HaUnreachable]:
    """
    Why a connection ended before the websocket was open, when it can be
    told: one line naming the cause, or C{None}.
    """
    if factory.opened:
        return None
    scheme = urllib.parse.urlsplit(url.strip()).scheme
    head, error = factory.head, factory.error
    if secure and error is not None and tlshint.speaks_no_tls(error):
        plain = {"https": "http", "wss": "ws"}.get(scheme, "http")
        return HaWrongScheme(f"cannot reach Home Assistant at {url}: "
                             f"{tlshint.not_tls(port, plain)}")
    if not secure and head[:1] and head[0] in _TLS_RECORDS:
        return HaUnreachable(f"cannot reach Home Assistant at {url}: port {port} speaks TLS; "
                             "use https://")
    if head.startswith(b"HTTP/"):
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 1)[-1]
        status = "".join(c for c in line if c.isprintable())[:80]
        if not status.startswith("101"):
            return HaUnreachable(
                f"{factory.url} is not Home Assistant's API: it answered HTTP {status} instead "
                "of a websocket (is --ha-url HA's address? does a proxy before it pass "
                "websockets on?)")
    if not secure and not head:
        return HaUnreachable(f"Home Assistant at {url} closed the connection before answering; "
                             f"{tlshint.tls_port(port, 'https')}")
    return None


class HaSession:
    """
    One connection to HA.  Every command has a deadline, and the connection
    is pinged (L{PING_EVERY}): an HA that takes the token and then stops
    answering, or that answers with something that is not JSON (a proxy's
    page), ends the session, and every command waiting on it fails with
    L{HaUnreachable}.

    @ivar version: HA's version, from its C{auth_required}.
    @ivar clock: what waits on HA use (the reactor it connected with).
    """

    log = Logger()

    #: Seconds HA may take to answer a command (an import of 45 days takes
    #: well under one).
    COMMAND_WITHIN = 60.0
    #: Seconds between websocket pings while connected, and for the pong.
    PING_EVERY = 60.0
    PING_WITHIN = 30.0

    def __init__(self, token: str, clock) -> None:
        self._token = token
        self.clock = clock
        self._protocol: Optional[_Protocol] = None
        self._ids = itertools.count(1)
        self._waiting: dict = {}  # id -> (Deferred, its deadline)
        self._why: Optional[str] = None
        self.ready: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()
        self.version: Optional[str] = None
        self.closed = False

    def __repr__(self) -> str:  # never the token
        return f"<HaSession version={self.version}>"

    def call(self, kind: str, **fields) -> defer.Deferred:
        """
        Send the command C{kind} with C{fields}.

        @return: a Deferred firing with its C{result}; failing with L{HaError}
            (HA's code and message) or L{HaUnreachable} (the connection ended,
            or HA did not answer within L{COMMAND_WITHIN}: the session is
            dropped then).
        """
        if self.closed or self._protocol is None:
            return defer.fail(HaUnreachable("not connected to Home Assistant"))
        ident = next(self._ids)
        d: defer.Deferred = defer.Deferred()
        deadline = self.clock.callLater(self.COMMAND_WITHIN, self._drop,
                                        f"Home Assistant did not answer {kind} within "
                                        f"{self.COMMAND_WITHIN:g} s")
        self._waiting[ident] = (d, deadline)
        self._send(dict(fields, id=ident, type=kind))
        return d

    def _drop(self, why: str) -> None:
        """End the session at once: HA cannot be trusted to answer any more."""
        if self.closed:
            return
        self._why = why
        if self._protocol is not None:
            self._protocol.dropConnection(abort=True)
        else:
            self._closed(why)

    def close(self) -> None:
        if self._protocol is not None and not self.closed:
            self._protocol.sendClose()

    def close_and_wait(self, clock, seconds: float = 2.0) -> defer.Deferred:
        """
        Close, and wait for the connection to end, C{seconds} at most.

        @return: a Deferred firing with C{None} either way (L{lost} itself
            is left untouched for its other listeners).
        """
        self.close()
        done: defer.Deferred = defer.Deferred()

        def fire():
            if not done.called:
                done.callback(None)
        call = clock.callLater(seconds, fire)

        def ended(result):
            if call.active():
                call.cancel()
            fire()
            return result
        self.lost.addBoth(ended)
        return done

    def _send(self, message: dict) -> None:
        assert self._protocol is not None
        self._protocol.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)

    def _opened(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    def _received(self, message) -> None:
        if not isinstance(message, dict):
            self._drop("Home Assistant sent a frame that is not a JSON object (is a proxy "
                       "answering in its place?)")
            return
        kind = message.get("type")
        if kind == "auth_required":
            self.version = message.get("ha_version")
            self._send({"type": "auth", "access_token": self._token})
        elif kind == "auth_ok":
            if not self.ready.called:
                self.ready.callback(self)
        elif kind == "auth_invalid":
            if not self.ready.called:
                self.ready.errback(HaAuthError(
                    "Home Assistant refused the access token (auth_invalid): make a new "
                    "long-lived access token in your user profile"))
        elif kind == "result":
            waiting = self._waiting.pop(message.get("id"), None)
            if waiting is None:
                return
            d, deadline = waiting
            if deadline.active():
                deadline.cancel()
            if message.get("success"):
                d.callback(message.get("result"))
            else:
                error = message.get("error") or {}
                d.errback(HaError(str(error.get("code", "unknown_error")),
                                  str(error.get("message", ""))))

    def _closed(self, reason) -> None:
        self.closed = True
        failure = HaUnreachable(self._why or f"the connection to Home Assistant ended: {reason}")
        if not self.ready.called:
            self.ready.errback(failure)
        waiting, self._waiting = self._waiting, {}
        for d, deadline in waiting.values():
            if deadline.active():
                deadline.cancel()
            d.errback(failure)
        if not self.lost.called:
            self.lost.callback(None)


def connect(reactor, url: str, token: str, timeout: float = 10.0) -> defer.Deferred:
    """
    Connect to HA at C{url} and authenticate with C{token}.

    @return: a Deferred firing with the L{HaSession} once HA said C{auth_ok};
        failing with L{HaAuthError} (the token is refused), L{HaUnreachable}
        (no connection, no answer within C{timeout}) or L{ConfigError} (a bad URL).
    """
    try:
        ws_url = websocket_url(url)
    except ConfigError as e:
        return defer.fail(e)
    parts = urllib.parse.urlsplit(ws_url)
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname
    assert host is not None  # websocket_url checked that it has one
    endpoint: IStreamClientEndpoint = endpoints.HostnameEndpoint(reactor, host, port,
                                                                 timeout=timeout)
    if secure:
        from twisted.internet import ssl  # needs twisted[tls], as the extra installs
        endpoint = endpoints.wrapClientTLS(ssl.optionsForClientTLS(host), endpoint)
    session = HaSession(token, reactor)
    factory = _Factory(ws_url)
    factory.protocol = _Protocol
    factory.session = session
    # A peer that stops answering is noticed even between commands.
    factory.setProtocolOptions(autoPingInterval=HaSession.PING_EVERY,
                               autoPingTimeout=HaSession.PING_WITHIN)
    connecting = endpoint.connect(factory)

    def unreachable(failure):
        if not session.ready.called:
            factory.opened = True  # no connection: nothing to tell from one
            session.ready.errback(HaUnreachable(
                f"cannot reach Home Assistant at {url}: {failure.getErrorMessage()}"))
    connecting.addErrback(unreachable)

    def named(failure):
        failure.trap(HaUnreachable)
        why = _unopened(url, secure, port, factory)
        if why is None:
            return failure
        raise why

    def timed_out(failure):
        failure.trap(defer.TimeoutError)
        session.close()
        raise HaUnreachable(f"Home Assistant at {url} did not answer within {timeout:g} s")
    return session.ready.addErrback(named).addTimeout(timeout, reactor).addErrback(timed_out)
