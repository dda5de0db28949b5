"""
A stand-in for the part of Home Assistant's Supervisor an add-on talks to,
on loopback, for the add-on's tests:

 - C{GET /services/mqtt} with the add-on's token: the broker it is given;
 - C{/core/...}: forwarded to a real Home Assistant with C{/core} taken off
   the path (HTTP and the websocket alike), as the Supervisor's proxy does.
   The real Supervisor checks the add-on's token and logs in to HA with its
   own; here the add-on is given a token HA itself takes, and it is passed on;
 - C{/api/hassio_ingress/<token>/...}: forwarded to the add-on's page with
   that prefix taken off and C{X-Ingress-Path} set, as HA's ingress does.

Each connection carries one request (C{Connection: close} is asked of the
page), then bytes are relayed both ways unchanged.
"""

from __future__ import annotations

import json
from typing import Optional

from twisted.internet import protocol, reactor
from twisted.internet.interfaces import IListeningPort

_HEAD_LIMIT = 65536


class _Back(protocol.Protocol):
    """The connection to where a request is forwarded."""

    def __init__(self, front: "_Front", head: bytes) -> None:
        self.front, self.head = front, head

    def connectionMade(self) -> None:
        self.front.back = self
        self.transport.write(self.head)
        if self.front.pending:
            self.transport.write(self.front.pending)
            self.front.pending = b""

    def dataReceived(self, data: bytes) -> None:
        self.front.transport.write(data)

    def connectionLost(self, reason=None) -> None:
        self.front.transport.loseConnection()


class _BackFactory(protocol.ClientFactory):
    def __init__(self, front: "_Front", head: bytes) -> None:
        self.front, self.head = front, head

    def buildProtocol(self, addr) -> _Back:
        return _Back(self.front, self.head)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.front.answer(502, {"result": "error", "message": "cannot connect"})


class _Front(protocol.Protocol):
    """A connection from the add-on (or a browser): one request, routed."""

    def __init__(self, standin: "SupervisorStandIn") -> None:
        self.standin = standin
        self.buffer = b""
        self.pending = b""
        self.back: Optional[_Back] = None
        self.routed = False

    def dataReceived(self, data: bytes) -> None:
        if self.back is not None:
            self.back.transport.write(data)
            return
        if self.routed:
            self.pending += data
            return
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > _HEAD_LIMIT:
                self.transport.loseConnection()
            return
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        self.routed, self.pending = True, rest
        line, *fields = head.split(b"\r\n")
        method, path, version = line.split(b" ", 2)
        headers = {}
        for field in fields:
            name, _, value = field.partition(b":")
            headers[name.strip().lower()] = value.strip()
        self.standin.requests.append((method.decode(), path.decode()))
        self.route(method, path, version, fields, headers)

    def route(self, method, path, version, fields, headers) -> None:
        standin = self.standin
        if path == b"/services/mqtt":
            if headers.get(b"authorization") != f"Bearer {standin.token}".encode():
                return self.answer(401, {"result": "error", "message": "Unauthorized"})
            if standin.mqtt is None:
                return self.answer(400, {"result": "error",
                                         "message": "No mqtt service available"})
            return self.answer(200, {"result": "ok", "data": standin.mqtt})
        if path.startswith(b"/core/"):
            return self.forward(standin.core_port, method, path[len(b"/core"):], version,
                                fields, {})
        prefix = standin.ingress_prefix.encode()
        if path.startswith(prefix + b"/") and standin.addon_port is not None:
            return self.forward(standin.addon_port, method, path[len(prefix):], version, fields,
                                {b"x-ingress-path": prefix, b"connection": b"close"})
        self.answer(404, {"result": "error", "message": "not found"})

    def forward(self, port: int, method, path, version, fields, replace: dict) -> None:
        kept = [f for f in fields if f.partition(b":")[0].strip().lower() not in
                set(replace) | {b"host"}]
        kept += [b"Host: 127.0.0.1:" + str(port).encode()]
        kept += [name.title() + b": " + value for name, value in replace.items()]
        head = b"\r\n".join([b" ".join([method, path, version]), *kept]) + b"\r\n\r\n"
        reactor.connectTCP("127.0.0.1", port, _BackFactory(self, head), timeout=10)

    def answer(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.transport.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (status, len(data))
                             + data)
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        if self.back is not None:
            self.back.transport.loseConnection()


class SupervisorStandIn(protocol.Factory):
    """
    @ivar mqtt: the MQTT service's data (as the Supervisor gives it), or
        C{None} for none.
    @ivar requests: C{(method, path)} of each request, in order.
    """

    def __init__(self, token: str, core_port: int, mqtt: Optional[dict],
                 ingress_prefix: str = "/api/hassio_ingress/7d3f0c1e") -> None:
        self.token, self.core_port, self.mqtt = token, core_port, mqtt
        self.ingress_prefix = ingress_prefix
        self.addon_port: Optional[int] = None
        self.requests: list = []
        self.port: Optional[IListeningPort] = None

    def buildProtocol(self, addr) -> _Front:
        return _Front(self)

    def listen(self) -> int:
        """Listen on a free loopback port; @return: the port."""
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        return self.port.getHost().port
