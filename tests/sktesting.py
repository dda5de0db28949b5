"""
Test helpers for the Twisted layer: connect an L{SKStackProtocol} to a
L{StringTransportWithDisconnection} and a L{Clock}, and feed it module output
whole, one byte at a time, or split in two at a given offset.

A serial port hands bytes over in arbitrary chunks (captures.py §4 shows
reads ending mid-line), so every parser-level test runs in every feeding mode.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from smartmeter_tx.sk.protocol import SKStackProtocol
from smartmeter_tx.sk.values import Dialect
from tests.fixtures import captures as cap

WHOLE = "whole"
BYTEWISE = "one byte at a time"
SPLIT = "split"

#: The two dialects, the line end, and the addresses the SK tests share (the
#: meter and module of captures.py §4; §1's zeroed address; all-nodes multicast).
STD = Dialect.STANDARD
DSE = Dialect.DSE
CRLF = b"\r\n"
METER = cap.S4_METER_IP
MODULE = cap.S4_MODULE_IP
MAC = cap.S4_METER_MAC
ZERO_IP = "0000:0000:0000:0000:0000:0000:0000:0000"
MULTICAST = "FF02:0000:0000:0000:0000:0000:0000:0001"


def send(proto, data: bytes) -> None:
    """
    Deliver C{data} to C{proto} in one piece, as one serial read.
    """
    proto.dataReceived(data)


def lines(*items: bytes) -> bytes:
    """
    Join device lines, each terminated with CR LF as the module prints them.
    """
    return b"".join(item + b"\r\n" for item in items)


def feed(proto, data: bytes, mode) -> None:
    """
    Deliver C{data} to C{proto} according to C{mode}: L{WHOLE}, L{BYTEWISE}, or
    C{(SPLIT, offset)} for two chunks cut at C{offset} (clipped to the data).
    """
    if mode == WHOLE:
        proto.dataReceived(data)
    elif mode == BYTEWISE:
        for i in range(len(data)):
            proto.dataReceived(data[i:i + 1])
    else:
        kind, offset = mode
        assert kind == SPLIT, mode
        offset = min(offset, len(data))
        if offset:
            proto.dataReceived(data[:offset])
        if data[offset:]:
            proto.dataReceived(data[offset:])


def modes(*pieces: bytes) -> list:
    """
    Every feeding mode for module output C{pieces}: whole, one byte at a time,
    and split in two at every offset of the longest piece.
    """
    longest = max((len(p) for p in pieces), default=0)
    return [WHOLE, BYTEWISE] + [(SPLIT, i) for i in range(1, longest)]


def describe(mode) -> str:
    if isinstance(mode, tuple):
        return f"split at offset {mode[1]}"
    return mode


def refusing_port(testcase, host: str = "127.0.0.1") -> int:
    """
    A TCP port on C{host} that refuses connections until C{testcase} ends: a
    socket bound to it but never listening, closed at cleanup.  Holding it
    bound is what keeps it refusing: a port merely freed again could be taken
    by any other process (another test run) before the test connects.

    @return: the port number.
    """
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    testcase.addCleanup(held.close)
    held.bind((host, 0))
    return held.getsockname()[1]


def connect(clock=None, payload_mode=None):
    """
    @return: C{(proto, transport, clock, heard)}: a connected L{SKStackProtocol}
        on a L{StringTransportWithDisconnection} with a L{Clock}, and the list
        its listener appends every asynchronous value to.
    """
    if clock is None:
        clock = Clock()
    proto = SKStackProtocol(clock=clock, payload_mode=payload_mode)
    transport = StringTransportWithDisconnection()
    transport.protocol = proto
    proto.makeConnection(transport)
    heard: list = []
    proto.add_listener(heard.append)
    return proto, transport, clock, heard


class ModeMixin:
    """
    Mixin for trial test cases: run a block once per feeding mode and say
    which mode failed; capture log events.
    """

    @contextmanager
    def inMode(self, mode):
        """
        Re-raise an assertion failure inside the block with the feeding mode
        in its message.
        """
        try:
            yield
        except self.failureException as e:
            raise self.failureException(f"[fed {describe(mode)}] {e}") from e

    def captureLogs(self) -> list:
        """
        @return: a list that receives every log event until the test ends.
        """
        events: list = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    @staticmethod
    def dropped(events: list) -> list[str]:
        """
        @return: the formatted text of the events that report dropped junk.
        """
        return [formatEvent(e) for e in events if formatEvent(e).startswith("dropping ")]

    @staticmethod
    def warnings(events: list) -> list[str]:
        """
        @return: the formatted text of the warning-or-worse events in C{events}.
        """
        return [formatEvent(e) for e in events
                if e.get("log_level") is not None and e["log_level"] >= LogLevel.warn]


def serve(testcase, root) -> str:
    """
    Serve the resource C{root} on 127.0.0.1 (a free port) with the real
    reactor until C{testcase} ends; cleanup waits for every server-side
    connection to close, so the reactor is left clean.

    @return: the base URL, C{http://127.0.0.1:PORT}.
    """
    from twisted.internet import defer, reactor

    from smartmeter_tx.outputs.web import QuietSite

    site = QuietSite(root)
    connections = []
    build = site.buildProtocol

    def buildProtocol(addr):
        proto = build(addr)
        lost = defer.Deferred()
        original = proto.connectionLost

        def connectionLost(reason):
            original(reason)
            lost.callback(None)

        proto.connectionLost = connectionLost
        connections.append(lost)
        return proto

    site.buildProtocol = buildProtocol
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    testcase.addCleanup(lambda: defer.gatherResults(connections))
    testcase.addCleanup(port.stopListening)
    return f"http://127.0.0.1:{port.getHost().port}"


def host_zone(testcase, zone: str) -> None:
    """Run the rest of C{testcase} as on a host in time zone C{zone} (restored after)."""
    import os
    import time

    if not hasattr(testcase, "_zone_restored"):
        old = os.environ.get("TZ")

        def restore():
            if old is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old
            time.tzset()
        testcase.addCleanup(restore)
        testcase._zone_restored = True
    os.environ["TZ"] = zone
    time.tzset()
