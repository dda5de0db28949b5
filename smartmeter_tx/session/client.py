"""
The B-route session with one meter: the one request policy of the product,
and the values read through it.  The one-shot plugin and the service both
read through L{BRouteClient.exchange}.

The policy: query first, because the module may still hold its PANA session
from the last run; on EVENT 21 02 or lasting silence, authenticate (skipping
the scan when the channel, PAN ID and address are known) and query again.
Every step is bounded by the caller's L{Budget}.  Joining is
L{smartmeter_tx.session.join.Joiner}'s, the meter's record
L{smartmeter_tx.session.history.HistoryReader}'s.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Callable, Iterable, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from smartmeter_tx import model
from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.echonet.requester import EchonetRequester
from smartmeter_tx.errors import ReadFailed, SmartMeterError
from smartmeter_tx.session.discovery import MeterDiscovery
from smartmeter_tx.session.history import HistoryReader
from smartmeter_tx.session.join import Credentials, Joiner
from smartmeter_tx.session.linkstate import WARNING_EVENTS, LinkState
from smartmeter_tx.session.requests import MeterRequests
from smartmeter_tx.session.state import MeterLink
from smartmeter_tx.session.steps import Budget, ModuleSteps
from smartmeter_tx.sk import values as V
from smartmeter_tx.sk.protocol import SKStackProtocol

__all__ = ["BRouteClient", "POWER_EPCS", "ENERGY_EPCS"]

POWER_EPCS = (M.POWER, M.CURRENT)
ENERGY_EPCS = (M.ENERGY_NORMAL, M.ENERGY_REVERSE)
SCALE_EPCS = (M.COEFFICIENT, M.UNIT, M.DIGITS)

#: The budget of a call that was given none: long, but not for ever.
_NO_BUDGET = 3600.0


class BRouteClient:
    """
    One module, one meter.

    @ivar link: what is known about the meter; updated as the session learns it,
        for the caller to save.
    @ivar state: the L{LinkState} (session, holds, link quality) this client
        keeps up to date from the module's events.
    @ivar steps: names of the last SK commands sent (for tests and benchmarks).
    @ivar joiner: the L{Joiner} (credentials, scan, SKJOIN) of this connection.
    @ivar requests: the L{MeterRequests}, the one request policy.
    @ivar history: the L{HistoryReader} of the meter's 30-minute record.
    """

    log = Logger()

    def __init__(self, sk: SKStackProtocol, credentials: Optional[Credentials],
                 clock: IReactorTime, link: Optional[MeterLink] = None,
                 dialect: Optional[V.Dialect] = None, state: Optional[LinkState] = None,
                 rssi: bool = False, dialect_flag: Optional[str] = None) -> None:
        """
        @param link: the saved link, with the user's overrides already applied
            (L{MeterLink.with_overrides}).
        @param dialect: a dialect the user forced; else learnt from the module.
        @param dialect_flag: the option that forced C{dialect}, as the front
            end spells it (named when the module speaks the other dialect).
        @param state: a L{LinkState} to keep up to date (the service keeps one
            across connections); a fresh one by default.
        @param rssi: ask a DSE module for the RSSI of each frame (SA2=1).
        """
        self.sk = sk
        self.credentials = credentials
        self.clock = clock
        self.link = link or MeterLink()
        self.state = state or LinkState()
        self.rssi = rssi
        saved = V.Dialect(self.link.dialect) if self.link.dialect else None
        self.module = ModuleSteps(sk, clock, dialect=saved, fixed_dialect=dialect,
                                  on_dialect=self._dialect_changed, dialect_flag=dialect_flag)
        self.steps = self.module.steps
        self.discovery = MeterDiscovery(self.module, self.link,
                                        credentials.rbid if credentials else None)
        self.requester = EchonetRequester(sk, self.module.dialect or V.Dialect.STANDARD,
                                          self.link.ipaddr, clock=clock)
        self.requester.add_unsolicited_listener(self._on_frame)
        self.joiner = Joiner(self.module, self.discovery, self.link, self.requester, credentials,
                             clock, self.prepare)
        self.requests = MeterRequests(sk, clock, self.state, self.link, self.module,
                                      self.discovery, self.joiner, self.requester, self.prepare)
        self.history = HistoryReader(self)
        sk.add_listener(self._on_line)

    @property
    def dialect(self) -> Optional[V.Dialect]:
        return self.module.dialect

    @property
    def prepared(self) -> bool:
        return self.module.prepared

    @property
    def frames(self) -> int:
        """Frames this connection put on the air (SKSENDTOs the module took)."""
        return self.requester.frames_sent

    @property
    def junk_dropped(self) -> int:
        """Garbage lines from the module dropped on this connection."""
        return self.sk.junk_dropped

    @property
    def busy_retries(self) -> int:
        """SKSENDTOs sent again on this connection after the module was busy (ER10)."""
        return self.requests.busy_retries

    def add_frame_listener(self, listener: Callable[[F.Frame, V.RxUdp], None]) -> None:
        """
        Call C{listener(frame, rxudp)} for every unsolicited ECHONET frame from the
        meter (INF, INFC, late answers), with any number of other listeners.
        """
        self.requester.add_unsolicited_listener(listener)

    def remove_frame_listener(self, listener: Callable[[F.Frame, V.RxUdp], None]) -> None:
        self.requester.remove_unsolicited_listener(listener)

    def add_answer_listener(self, listener: Callable[[F.Frame], None]) -> None:
        """
        Call C{listener(frame)} with every frame from the meter that answers
        a request of this connection (success or SNA), before the request's
        caller gets it.  It must not raise.
        """
        self.requests.answer_listeners.append(listener)

    def add_fixed_listener(self, listener: Callable[[model.FixedReading], None]) -> None:
        """
        Call C{listener(fixed)} with the L{model.FixedReading} of every EA/EB
        the meter pushes (INF or INFC, after each :00 and :30), in kWh once the
        scale is known.  A malformed value is logged and dropped.
        """
        def heard(frame: F.Frame, rx: V.RxUdp) -> None:
            if frame.seoj != F.METER or frame.esv not in (F.INF, F.INFC):
                return
            try:
                fixed = M.decode_fixed_reading(frame.properties, self.scale)
            except SmartMeterError as e:
                self.log.warn("dropping a malformed EA/EB value: {error}", error=e)
                return
            if fixed is not None:
                listener(fixed)
        self.requester.add_unsolicited_listener(heard)

    def close(self) -> None:
        self.sk.remove_listener(self._on_line)
        self.joiner.close()
        self.requester.close()

    # -- what the module says -----------------------------------------------------

    def _on_line(self, value: object) -> None:
        now = self.clock.seconds()
        if isinstance(value, V.Event):
            change = self.state.event(value.num, now)
            if change is not None:
                level = self.log.warn if value.num in WARNING_EVENTS else self.log.info
                level("{change} (EVENT {num:02X}: {name})", change=change, num=value.num,
                      name=value.name)
        elif isinstance(value, V.RxUdp):
            if value.rssi is not None:
                self.state.rssi(V.lqi_to_dbm(value.rssi))
        elif isinstance(value, V.PanDesc):
            self.state.scanned(value.lqi, value.rssi_dbm)

    def _on_frame(self, frame: F.Frame, rx: V.RxUdp) -> None:
        self.log.info("unsolicited frame from the meter: {frame}", frame=frame.describe())

    def _dialect_changed(self, dialect: V.Dialect) -> None:
        self.link.dialect = dialect.value
        self.requester.dialect = dialect

    # -- session ------------------------------------------------------------------

    async def prepare(self, budget: Optional[Budget] = None) -> None:
        """Dialect and echo, once per connection.  No radio."""
        await self.module.prepare(budget or Budget(self.clock, _NO_BUDGET), rssi=self.rssi)

    async def read(self, epcs: Iterable[int] = POWER_EPCS, budget: Optional[Budget] = None,
                   may_join: bool = True) -> F.Frame:
        """
        Read C{epcs} in one Get frame; see L{exchange}.

        @return: the answering frame.
        """
        return await self.requests.exchange(lambda tid: F.get_request(tid, epcs),
                                            budget or Budget(self.clock, _NO_BUDGET), may_join)

    async def exchange(self, build: Callable[[int], F.Frame], budget: Optional[Budget] = None,
                       may_join: bool = True) -> F.Frame:
        """
        The one request policy of the product (L{MeterRequests.exchange}).

        @return: the answering frame (success or SNA).
        """
        return await self.requests.exchange(build, budget or Budget(self.clock, _NO_BUDGET),
                                            may_join)

    async def read_values(self, energy: bool = False,
                          budget: Optional[Budget] = None, may_join: bool = True) -> model.Reading:
        """
        Read power and current (and, with C{energy}, the cumulative counters)
        in one frame; the energy scale (D3/E1/D7) travels in the same frame
        until it is known.

        @return: a L{model.Reading}; see L{read} for its failures.
        """
        epcs = list(POWER_EPCS)
        need_scale = energy and (self.link.unit is None or self.link.coefficient is None)
        if energy:
            epcs += ENERGY_EPCS
            if need_scale:
                epcs += SCALE_EPCS
        frame = await self.read(tuple(epcs), budget, may_join=may_join)
        if need_scale:
            self.learn_scale(frame)
        elif energy and self.scale is None:
            # The scan during this read found another meter: its scale first.
            await self.ensure_scale(budget)
        return M.decode_reading(frame.properties, self.scale)

    async def identity(self, budget: Optional[Budget] = None) -> dict:
        """
        Who the meter is: its maker code (0x8A) and serial number (0x8D, when
        it has one) in one Get, with the MAC the session knows.

        @return: C{{"mac": ..., "maker": ..., "maker_name": ..., "serial": ...}}
            (C{None} where unknown; C{maker} is the raw code).
        """
        frame = await self.read((M.MAKER_CODE, M.SERIAL_NUMBER), budget)
        maker = frame.get(M.MAKER_CODE)
        serial = frame.get(M.SERIAL_NUMBER)
        code = M.decode_maker_code(maker) if maker else None
        return {"mac": self.link.mac, "maker": code, "maker_name": M.maker_name(code),
                "serial": M.decode_serial_number(serial) if serial else None}

    async def ensure_scale(self, budget: Optional[Budget] = None) -> M.EnergyScale:
        """
        The energy scale, read from the meter (D3, E1, D7 in one frame) unless
        the link knows it already.
        """
        scale = self.scale
        if scale is None:
            scale = self.learn_scale(await self.read(SCALE_EPCS, budget))
        return scale

    def learn_scale(self, frame: F.Frame) -> M.EnergyScale:
        """
        Take the energy scale (E1, D3, D7) from a frame that carried it.

        @return: the scale learnt.
        @raise ReadFailed: the unit is missing.
        """
        unit = frame.get(M.UNIT)
        if unit is None:
            raise ReadFailed("the meter did not report the energy unit (E1)")
        self.link.unit = str(M.decode_unit(unit))
        self.link.scale_mac = self.link.mac
        self.link.coefficient = M.decode_coefficient(frame.get(M.COEFFICIENT))
        digits = frame.get(M.DIGITS)
        self.link.digits = M.decode_digits(digits) if digits else None
        return self._scale_of(self.link.unit)

    @property
    def scale(self) -> Optional[M.EnergyScale]:
        """The energy scale, or C{None} until the meter told it."""
        return None if self.link.unit is None else self._scale_of(self.link.unit)

    def _scale_of(self, unit: str) -> M.EnergyScale:
        return M.EnergyScale(self.link.coefficient or 1, Decimal(unit), self.link.digits)
