"""
The ECHONET Lite node the service is on the LAN: a node profile (0x0EF001)
and one low-voltage smart meter (0x028801) whose values are the meter's own
bytes.  What answers what, decided without a network.  Pure.

A request to the meter's object is answered from what the meter last said
while that is fresh (L{Freshness}), and anything else is for the meter
itself: the caller relays it through the session and merges the meter's
answer with L{LanNode.answer}.  Nothing here invents a value: a property
neither fresh nor given by the meter is answered with PDC 0 (an SNA), and a
Set of any kind is refused, for the bridge never changes the meter.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Union

from smartmeter_tx import model
from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.errors import FrameError
from smartmeter_tx.service.meterprops import MeterProperties

__all__ = ["Freshness", "LanNode", "Answer", "Relay", "Drop", "SourceLimiter",
           "encode_property_map", "identification_number"]

#: Our node's maker code (0x8A): none is assigned to this project.
MAKER_CODE = b"\xff\xff\xff"
#: 0x82 of the node profile: ECHONET Lite 1.13, message format 1.
NODE_VERSION = b"\x01\x0d\x01\x00"
#: 0x8C, the product code (12 ASCII bytes), which controllers ask with 8A
#: and 83 when they meet a node.
PRODUCT_CODE = b"smartmeterTX"
#: The meter's object as EOJ bytes, for the instance and class lists.
_METER_EOJ = F.METER.to_bytes(3, "big")
#: Properties the bridge answers from what the meter last said; all others
#: (the record E2/E4/EC and the like) go to the meter.
LIVE = frozenset((M.POWER, M.CURRENT))
ENERGY = frozenset((M.ENERGY_NORMAL, M.ENERGY_REVERSE))
FIXED = frozenset((M.FIXED_NORMAL, M.FIXED_REVERSE))
#: What a meter never changes while it is the same meter: its scale, who
#: it is, its maps.
STATIC = frozenset((M.COEFFICIENT, M.UNIT, M.DIGITS, M.OPERATION_STATUS, M.MAKER_CODE,
                    M.SERIAL_NUMBER, 0x82, 0x9D, M.GET_MAP))
_SET_MAP = 0x9E
_NODE_PROFILES = (F.NODE_PROFILE, F.NODE_PROFILE & ~0xFF)
_METERS = (F.METER, F.METER & ~0xFF)
#: Answers by request: (success, refusal).
_ANSWERS = {F.GET: (F.GET_RES, F.GET_SNA), F.INF_REQ: (F.INF, F.INF_SNA)}
_REFUSALS = {F.SETC: F.SETC_SNA, F.SETI: F.SETI_SNA}
_SETGET_ANSWERS = frozenset((F.SETGET_RES, F.SETGET_SNA))
#: Every ESV ECHONET Lite defines (for telling "unknown" from "not a request").
_KNOWN_ESVS = frozenset(F.ESV_NAMES)


def encode_property_map(epcs) -> bytes:
    """
    A property map (0x9D/0x9E/0x9F): a count, then the EPCs below 16 of
    them, else the 16-byte bitmap (byte i, bit b: EPC 0x80 + 0x10 b + i).
    """
    epcs = sorted(set(epcs))
    if len(epcs) < 16:
        return bytes([len(epcs)] + epcs)
    bitmap = bytearray(16)
    for epc in epcs:
        bitmap[epc & 0x0F] |= 1 << ((epc >> 4) - 8)
    return bytes([len(epcs)]) + bytes(bitmap)


def identification_number(mac: Optional[str]) -> bytes:
    """
    0x83 of the node profile: 0xFE, our maker code, and 13 bytes unique to
    the node, here C{smtx} and the meter's MAC, so that a controller knows
    the same node across restarts (zeros until the MAC is known).
    """
    tail = bytes.fromhex(mac) if mac and len(mac) == 16 else bytes(8)
    return b"\xfe" + MAKER_CODE + b"smtx\x00" + tail


@dataclass(frozen=True)
class Freshness:
    """
    How long what the meter said stands for what it would say now, in
    seconds on the service's clock.

    @ivar live: power and current (E7, E8): the polls renew them.
    @ivar energy: the cumulative counters (E0, E3).
    @ivar fixed: the counters at the last :00 or :30 (EA, EB), and only
        while the half-hour they are of is the current one (L{LanNode}).
    """

    live: float = 60.0
    energy: float = 330.0
    fixed: float = 1800.0
    #: What the meter could not give (PDC 0) is asked again after this long.
    refused: float = 3600.0

    @classmethod
    def for_schedule(cls, interval: float, energy_interval: float) -> "Freshness":
        """Two polls for the live values, one energy read (and a poll) for the counters."""
        return cls(live=2 * interval, energy=energy_interval + interval)

    def max_age(self, epc: int) -> Optional[float]:
        """@return: seconds C{epc} stays fresh, C{inf} for a static one, C{None}: never cached."""
        if epc in LIVE:
            return self.live
        if epc in ENERGY:
            return self.energy
        if epc in FIXED:
            return self.fixed
        return float("inf") if epc in STATIC else None


class Answer(NamedTuple):
    """
    A frame to send now.

    @ivar outcome: C{"cache"} (answered from what the meter said, or the
        node's own properties) or C{"refused"} (a Set).
    @ivar multicast: whether it goes to the group (an INF) or back to the sender.
    """

    frame: Union[F.Frame, bytes]
    outcome: str
    multicast: bool = False


class Relay(NamedTuple):
    """
    A request that needs the meter: ask it C{epcs}, then L{LanNode.answer}.

    @ivar known: the properties answered without the meter, by EPC.
    """

    request: F.Frame
    epcs: tuple[int, ...]
    known: dict


class Drop(NamedTuple):
    """A frame not answered: C{reason} names why, for C{/metrics}."""

    reason: str


Decision = Union[Answer, Relay, Drop]


@dataclass
class LanNode:
    """
    @ivar properties: the meter's last words (L{MeterProperties}).
    @ivar now: the service's clock.
    @ivar freshness: see L{Freshness}.
    @ivar wall: the wall clock (epoch seconds): an EA/EB is fresh while its
        own time is the start of Japan's current half-hour.
    @ivar mac: the meter's MAC, where the node's 0x83 comes from.
    """

    properties: MeterProperties
    now: Callable[[], float]
    freshness: Freshness = field(default_factory=Freshness)
    #: Japan's time now, as epoch seconds (for EA/EB's half-hour).
    wall: Callable[[], float] = field(default=lambda: 0.0)
    #: The meter's MAC as the service knows it (its state file), for 0x83.
    mac: Callable[[], Optional[str]] = field(default=lambda: None)

    def node_profile(self) -> dict[int, bytes]:
        """The node profile's properties, by EPC."""
        values = {
            0x80: b"\x30", 0x82: NODE_VERSION,
            0x83: identification_number(self.mac() or self.properties.mac), 0x8A: MAKER_CODE,
            0x8C: PRODUCT_CODE,
            0x9D: encode_property_map((0x80, M.INSTANCE_LIST)), 0x9E: encode_property_map(()),
            0xD3: b"\x00\x00\x01", 0xD4: b"\x00\x02",
            M.INSTANCE_LIST: b"\x01" + _METER_EOJ, M.SELF_INSTANCE_LIST: b"\x01" + _METER_EOJ,
            0xD7: b"\x01" + _METER_EOJ[:2],
        }
        values[M.GET_MAP] = encode_property_map(list(values) + [M.GET_MAP])
        return values

    def announcement(self, tid: int) -> F.Frame:
        """The INF of the instance list (D5) a node sends to the group when it starts."""
        return F.Frame(tid, F.NODE_PROFILE, F.NODE_PROFILE, F.INF,
                       (F.Property(M.INSTANCE_LIST, self.node_profile()[M.INSTANCE_LIST]),))

    def mirror(self, tid: int, epcs) -> Optional[F.Frame]:
        """
        The meter's own INF of C{epcs} (EA/EB) as this node's, to the group:
        what the meter said, or C{None} when it said none of them.
        """
        said = [(epc, self.properties.get(epc)) for epc in epcs]
        props = tuple(F.Property(epc, s.edt) for epc, s in said if s is not None and s.edt)
        if not props:
            return None
        return F.Frame(tid, F.METER, F.NODE_PROFILE, F.INF, props)

    def decide(self, data: bytes) -> Decision:
        """What to do with the datagram C{data} from a controller."""
        if len(data) >= 12 and data[:2] == F.EHD and data[10] in _SETGET_ANSWERS:
            return Drop("not_request")  # (Frame.decode takes no SetGet frames)
        if len(data) >= 12 and data[:2] == F.EHD and data[10] == F.SETGET:
            return self._setget(data)
        try:
            request = F.Frame.decode(data)
        except FrameError:
            return Drop("malformed")
        if request.esv not in _KNOWN_ESVS:
            return Drop("unknown_esv")
        if request.esv not in F.REQUESTS:
            return Drop("not_request")
        if request.deoj in _NODE_PROFILES:
            ours, values = F.NODE_PROFILE, self.node_profile()
        elif request.deoj in _METERS:
            ours, values = F.METER, {}
        else:
            return Drop("unknown_object")
        if request.esv in _REFUSALS:
            return Answer(F.Frame(request.tid, ours, request.seoj, _REFUSALS[request.esv],
                                  request.properties), "refused")
        if ours == F.NODE_PROFILE:
            return self._answered(request, ours, {e: values[e] for e in request.epcs
                                                  if e in values})
        return self._meter(request)

    def fresh(self, epc: int) -> Optional[bytes]:
        """
        @return: what the meter said of C{epc} while it still stands for
            what it would say now (empty: it could not give it), else C{None}.
        """
        if epc == _SET_MAP:
            return encode_property_map(())  # nothing is set through us
        said = self.properties.get(epc)
        age = self.freshness.max_age(epc)
        if said is None or age is None:
            return None
        if not said.edt:
            age = min(age, self.freshness.refused)
        elif epc in FIXED and not self._this_half_hour(said.edt):
            return None
        return said.edt if self.now() - said.at <= age else None

    def _this_half_hour(self, edt: bytes) -> bool:
        """Whether an EA/EB is of the half-hour that began last (Japan's time)."""
        try:
            stamp = M.decode_fixed_time(edt).timestamp
        except FrameError:
            return False
        now = datetime.datetime.fromtimestamp(self.wall(), model.JST).replace(tzinfo=None)
        return stamp == model.slot_start(now)

    def _meter(self, request: F.Frame) -> Decision:
        known: dict = {}
        wanted = []
        for epc in request.epcs:
            edt = self.fresh(epc)
            if edt is not None:
                known[epc] = edt
            elif epc not in wanted:
                wanted.append(epc)
        if wanted:
            # A controller reads who the meter is and its maps right after
            # it found it: one frame now for all of those not yet said
            # spares a relay (and a refusal past its limit) for each.
            wanted += [e for e in sorted(STATIC) if self.properties.get(e) is None
                       and e not in wanted]
            return Relay(request, tuple(wanted), known)
        return self._answered(request, F.METER, known)

    def answer(self, relay: Relay, meter: Optional[F.Frame], outcome: str = "cache") -> Answer:
        """
        The answer to C{relay.request}: what was known, and what the meter
        answered (C{None}: it did not, and those properties get PDC 0).

        @param outcome: how it came about, for C{/metrics} (L{Answer.outcome}).
        """
        # What was fresh when the request came may not be by now (the
        # relay waited for a poll): taken again, as it stands now.
        known = {epc: edt for epc in relay.known if (edt := self.fresh(epc)) is not None}
        if meter is not None:
            for p in meter.properties:
                if p.epc in relay.epcs:
                    known[p.epc] = p.edt
        return self._answered(relay.request, F.METER, known)._replace(outcome=outcome)

    def refused(self, answer: Answer) -> Answer:
        """C{answer} (an INF to the group) refused instead: INF_SNA to the asker, PDC 0."""
        frame = answer.frame
        assert isinstance(frame, F.Frame)
        return Answer(F.Frame(frame.tid, frame.seoj, frame.deoj, F.INF_SNA,
                              tuple(F.Property(p.epc) for p in frame.properties)), "refused")

    def _answered(self, request: F.Frame, ours: int, known: dict) -> Answer:
        props = tuple(F.Property(epc, known.get(epc, b"")) for epc in request.epcs)
        success, refusal = _ANSWERS[request.esv]
        whole = all(p.edt for p in props)
        esv = success if whole else refusal
        return Answer(F.Frame(request.tid, ours, request.seoj, esv, props), "cache",
                      multicast=esv == F.INF)

    def _setget(self, data: bytes) -> Decision:
        """A SetGet: refused whole (SetGet_SNA), its Sets and Gets echoed."""
        deoj = int.from_bytes(data[7:10], "big")
        if deoj not in _NODE_PROFILES + _METERS:
            return Drop("unknown_object")
        try:
            sets, rest = _property_list(data, 11)
            gets, end = _property_list(data, rest)
        except FrameError:
            return Drop("malformed")
        if end != len(data):
            return Drop("malformed")
        ours = F.NODE_PROFILE if deoj in _NODE_PROFILES else F.METER
        out = bytearray(data[:4]) + ours.to_bytes(3, "big") + data[4:7]
        out += bytes((F.SETGET_SNA,)) + data[11:rest]
        out += bytes((len(gets),)) + b"".join(bytes((epc, 0)) for epc in gets)
        return Answer(bytes(out), "refused")


def _property_list(data: bytes, pos: int) -> tuple[list, int]:
    """The EPCs of the property list at C{pos} (count first), and where it ends."""
    if pos >= len(data):
        raise FrameError("frame ends before a property count")
    epcs = []
    count, pos = data[pos], pos + 1
    for _ in range(count):
        if pos + 2 > len(data) or pos + 2 + data[pos + 1] > len(data):
            raise FrameError("frame ends inside a property")
        epcs.append(data[pos])
        pos += 2 + data[pos + 1]
    return epcs, pos


class SourceLimiter:
    """
    At most one relayed request per source address every L{interval}
    seconds, remembering at most L{capacity} sources (a flood of forged
    addresses is refused, not remembered).
    """

    def __init__(self, interval: float = 3.0, capacity: int = 256) -> None:
        self.interval = interval
        self.capacity = capacity
        self._last: dict[str, float] = {}

    def allow(self, source: str, now: float) -> bool:
        """@return: whether C{source} may have a request relayed at C{now} (counted if so)."""
        last = self._last.get(source)
        if last is not None and now - last < self.interval:
            return False
        if last is None and len(self._last) >= self.capacity:
            self._last = {s: t for s, t in self._last.items() if now - t < self.interval}
            if len(self._last) >= self.capacity:
                return False
        self._last[source] = now
        return True
