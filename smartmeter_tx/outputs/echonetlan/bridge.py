"""
The ECHONET Lite node on UDP 3610 (C{twist smartmeter --echonet-lan}): the
meter the service reads, served to every controller on the LAN from the
service's one session.

It joins the group 224.0.23.0 on the address it serves, announces its
instance list when it starts, answers from what the meter last said
(L{smartmeter_tx.outputs.echonetlan.node}), relays what only the meter can
answer through L{smartmeter_tx.service.relay.MeterRelay} (one request every
L{LIMIT} seconds per source address), and sends the meter's own half-hourly
INF (EA/EB) on to the group as a meter on the LAN would.  ECHONET Lite has
no authentication: it is for a trusted LAN.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Optional, Union

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IMulticastTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.errors import SmartMeterError
from smartmeter_tx.outputs.echonetlan.node import (
    Answer, Drop, Freshness, LanNode, Relay, SourceLimiter)
from smartmeter_tx.service.interfaces import Figure, IMetricsSource, IRecordReceiver
from smartmeter_tx.service.relay import MeterRelay
from smartmeter_tx.service.view import ServiceView

__all__ = ["EchonetLanBridge", "PORT", "GROUP"]

PORT = 3610
GROUP = "224.0.23.0"
#: Seconds between two relayed requests of one source address.
LIMIT = 3.0
OUTCOMES = ("cache", "relay", "shared", "refused")
DROPS = ("malformed", "own", "unknown_object", "unknown_esv", "not_request")


class _Node(DatagramProtocol):
    """The socket's side: datagrams in, to the bridge; frames out."""

    noisy = False  # the bridge says once that it listens

    def __init__(self, bridge: "EchonetLanBridge") -> None:
        self.bridge = bridge

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        self.bridge.received(data, addr)


@implementer(IRecordReceiver, IMetricsSource)
class EchonetLanBridge(service.Service):
    """
    @ivar answered: requests answered, by C{(ESV name, outcome)}: C{cache},
        C{relay}, C{shared} (another's relay answered it) or C{refused}.
    @ivar dropped: datagrams not answered, by reason.
    @ivar sent: frames this node sent to the group (announcements, INFs).
    """

    log = Logger()

    def __init__(self, address: str, view: ServiceView, relay: MeterRelay, reactor,
                 freshness: Freshness = Freshness(), port: int = PORT,
                 group: str = GROUP,
                 cannot_listen: Optional[Callable[[str], None]] = None,
                 wall: Callable[[], float] = time.time) -> None:
        """
        @param address: the IPv4 address of the interface to serve on, or
            C{0.0.0.0} for the system's default.
        @param wall: the wall clock (which half-hour an EA/EB is of).
        @param cannot_listen: called with why when the port is taken (the
            service ends); by default the error is raised.
        """
        self.cannot_listen = cannot_listen
        self.address = address
        self.view = view
        self.relay = relay
        self.reactor = reactor
        self.port_number = port
        self.group = group
        self.node = LanNode(view.store.properties, view.clock.seconds, freshness, wall=wall,
                            mac=lambda: view.link.mac if view.link is not None else None)
        self.limiter = SourceLimiter(LIMIT)
        # An INF_REQ is answered to the whole group: one a source every 3 s.
        self.announcing = SourceLimiter(LIMIT)
        # Zeros from the start, so that a rate over them is defined at once.
        self.answered: Counter = Counter({("Get", o): 0 for o in OUTCOMES})
        self.dropped: Counter = Counter({r: 0 for r in DROPS})
        self.sent = 0
        self._tid = 0
        self._port: Optional[IListeningPort] = None
        self._proto = _Node(self)

    # -- service -------------------------------------------------------------------

    def startService(self) -> None:
        """
        Listen on UDP 3610, join the group and announce the instance list.

        @raise twisted.internet.error.CannotListenError: the port is taken.
        """
        interface = "" if self.address == "0.0.0.0" else self.address
        # Bound to every address (a socket bound to one unicast address gets
        # no multicast), without sharing the port: another node on it is an error.
        try:
            self._port = self.reactor.listenMulticast(self.port_number, self._proto,
                                                      listenMultiple=False)
        except CannotListenError as e:
            if self.cannot_listen is None:
                raise
            self.cannot_listen(str(e.socketError))
            return
        transport = IMulticastTransport(self._port)
        transport.setLoopbackMode(False)  # never hear ourselves
        if interface:
            transport.setOutgoingInterface(interface).addErrback(
                lambda f: self.log.warn("cannot send multicast from {address}: {error}",
                                        address=interface, error=f.getErrorMessage()))
        transport.joinGroup(self.group, interface or "0.0.0.0").addErrback(
            lambda f: self.log.warn("cannot join {group}: {error}", group=self.group,
                                    error=f.getErrorMessage()))
        super().startService()
        self._send(self.node.announcement(self._next_tid()), (self.group, self.port_number))
        self.log.info("ECHONET Lite node on UDP {port} ({address}): the meter as 0x028801",
                      port=self.port_number, address=self.address)

    def stopService(self) -> Optional[defer.Deferred]:
        super().stopService()
        self.relay.stop()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None

    # -- the meter's INFs ------------------------------------------------------------------

    def recordReceived(self, record: dict, when: float) -> None:
        """The meter's half-hourly EA/EB (a C{fixed} record): sent on to the group."""
        if record.get("kind") != "fixed" or self._port is None:
            return
        said = [(e, self.view.store.properties.get(e)) for e in (M.FIXED_NORMAL,
                                                                 M.FIXED_REVERSE)]
        newest = max((s.at for _, s in said if s is not None), default=None)
        epcs = [e for e, s in said if s is not None and s.at == newest]
        frame = self.node.mirror(self._next_tid(), epcs)
        if frame is not None:
            self._send(frame, (self.group, self.port_number))

    # -- requests ---------------------------------------------------------------------

    def received(self, data: bytes, addr: tuple) -> None:
        """One datagram from C{addr}: answered, relayed or dropped (counted)."""
        source = addr[0]
        if (source, addr[1]) == (self.address, self.port_number):
            self.dropped["own"] += 1
            return
        decision = self.node.decide(data)
        if isinstance(decision, Drop):
            self.dropped[decision.reason] += 1
            return
        esv = F.ESV_NAMES.get(data[10], "?")
        now = self.view.clock.seconds()
        if isinstance(decision, Answer):
            if decision.multicast and not self.announcing.allow(source, now):
                decision = self.node.refused(decision)
            self._reply(decision, esv, addr)
        elif self.relay.busy_with(decision.epcs) or self.limiter.allow(source, now):
            self._relay(decision, esv, addr)
        else:
            # Past its source's limit: what is not fresh is refused (PDC 0).
            self._reply(self.node.answer(decision, None, "refused"), esv, addr)

    def _relay(self, relay: Relay, esv: str, addr: tuple) -> None:
        d = defer.Deferred.fromCoroutine(self._relayed(relay, esv, addr))
        d.addErrback(lambda f: None if f.check(defer.CancelledError)  # stopping
                     else self.log.failure("answering a relayed request", f))

    async def _relayed(self, relay: Relay, esv: str, addr: tuple) -> None:
        """Ask the meter, then answer with what it said (PDC 0 where it said nothing)."""
        # An INF_REQ is asked as a Get too: the meter's answer comes back to
        # us alone, and the INF to the group is ours to send.
        outcome = "shared" if self.relay.busy_with(relay.epcs) else "relay"
        meter: Optional[F.Frame] = None
        try:
            meter = await self.relay.request(relay.epcs)
        except SmartMeterError as e:
            self.log.debug("relayed request unanswered: {error}", error=e)
            outcome = "refused"
        self._reply(self.node.answer(relay, meter, outcome), esv, addr)

    def _reply(self, answer: Answer, esv: str, addr: tuple) -> None:
        self.answered[(esv, answer.outcome)] += 1
        if answer.multicast:
            self._send(answer.frame, (self.group, self.port_number))
            return
        # Answers go to the asker's ECHONET Lite port: controllers such as
        # npm's echonet-lite send from a socket they close at once and
        # listen on 3610 only.  One that asked from a port of its own (a
        # script, a tool) listens there: it gets the answer there too; on
        # this host, where 3610 is ours, only there.
        if addr[1] != self.port_number:
            self._send(answer.frame, addr)
            if addr[0].startswith("127.") or addr[0] == self.address:
                return
        self._send(answer.frame, (addr[0], self.port_number))

    def _send(self, frame: Union[F.Frame, bytes], to: tuple) -> None:
        if self._port is None:
            return
        data = frame if isinstance(frame, bytes) else frame.encode()
        try:
            IMulticastTransport(self._port).write(data, to)
        except OSError as e:  # no route now (the interface went down): said, not raised
            self.log.warn("cannot send to {to}: {error}", to=to[0], error=e)
            return
        if to[0] == self.group:
            self.sent += 1

    def _next_tid(self) -> int:
        self._tid = self._tid % 0xFFFF + 1
        return self._tid

    # -- metrics -----------------------------------------------------------------------

    def metrics(self) -> list[Figure]:
        """@return: requests by ESV and outcome, drops by reason, frames relayed and sent."""
        figures = [Figure("smartmeter_echonet_lan_requests", "counter",
                          "ECHONET Lite requests from the LAN answered, by ESV and outcome "
                          "(cache, relay, shared, refused)", count,
                          (("esv", esv), ("outcome", outcome)))
                   for (esv, outcome), count in sorted(self.answered.items())]
        figures += [Figure("smartmeter_echonet_lan_dropped", "counter",
                           "ECHONET Lite datagrams from the LAN not answered, by reason", count,
                           (("reason", reason),))
                    for reason, count in sorted(self.dropped.items())]
        figures.append(Figure("smartmeter_echonet_lan_relay_frames", "counter",
                              "Frames sent to the meter for requests from the LAN",
                              self.relay.frames))
        figures.append(Figure("smartmeter_echonet_lan_notifications", "counter",
                              "ECHONET Lite frames sent to the LAN's group (announcements, "
                              "the meter's INFs)", self.sent))
        return figures

