"""
Reading the meter's own 30-minute record through a session: which record it
keeps (E2/E4, or EC/ED too), its clock (slots are dated by it, not by the
host's), a day of E2/E4 chosen with E5, and EC from a time set in ED.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Callable, Optional

from twisted.logger import Logger

from smartmeter_tx import model
from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import history as H
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.errors import ReadFailed, SmartMeterError
from smartmeter_tx.session.steps import Budget

if TYPE_CHECKING:  # the client imports this module
    from smartmeter_tx.session.client import BRouteClient

__all__ = ["HistoryReader"]


class HistoryReader:
    """
    The history reads of one connection, through its client's request
    policy (L{smartmeter_tx.session.client.BRouteClient.exchange}).
    """

    log = Logger()

    def __init__(self, client: BRouteClient) -> None:
        """
        @param client: the L{smartmeter_tx.session.client.BRouteClient}.
        """
        self.client = client
        self._source: Optional[str] = None
        self._clock_offset: Optional[float] = None
        #: The day E5 was last set to on this connection, or None if unknown.
        self._day: Optional[int] = None
        #: When (the client's clock) a frame last told the meter's clock.
        self.clock_read_at: Optional[float] = None

    async def history_source(self, budget: Optional[Budget] = None) -> str:
        """
        Which history the meter keeps: C{"EC"} when its Get property map
        (0x9F) lists EC and ED, else C{"E2"} (E2/E4, which every meter has).
        Asked once per connection.
        """
        if self._source is None:
            frame = await self.client.read((M.GET_MAP,), budget)
            edt = frame.get(M.GET_MAP)
            try:
                epcs = M.decode_property_map(edt) if edt else frozenset()
            except SmartMeterError:
                epcs = frozenset()
            self._source = "EC" if {M.HISTORY2, M.HISTORY2_TIME} <= epcs else "E2"
        return self._source

    async def meter_clock(self, budget: Optional[Budget] = None) -> datetime.datetime:
        """
        The meter's own date and time (0x97, 0x98); slots are dated by it, not
        by the host's clock.

        @return: a naive datetime in the meter's local time (JST).
        """
        frame = await self.client.read((M.METER_TIME, M.METER_DATE), budget)
        return self._learn_clock(frame)

    def _learn_clock(self, frame: F.Frame) -> datetime.datetime:
        time_edt, date_edt = frame.get(M.METER_TIME), frame.get(M.METER_DATE)
        if time_edt is None or date_edt is None:
            raise ReadFailed("the meter did not tell its date and time (0x97/0x98)")
        clock = M.decode_meter_clock(time_edt, date_edt)
        # The meter's clock has minutes only: keep the offset to the host's
        # clock so that later reads can tell the meter's time without a frame.
        now = self.client.clock.seconds()
        self._clock_offset = clock.replace(tzinfo=model.JST).timestamp() - now
        self.clock_read_at = now
        return clock

    def _clock_of(self, frame: F.Frame) -> Optional[datetime.datetime]:
        """The meter's clock from a frame that carries 0x97/0x98, else C{None}."""
        try:
            return self._learn_clock(frame)
        except ReadFailed:
            return None
        except SmartMeterError as e:  # a clock that is not a date
            self.log.warn("ignoring the meter's clock: {error}", error=e)
            return None

    def meter_now(self) -> Optional[datetime.datetime]:
        """
        The meter's time now, from the last clock read (to the minute), or
        C{None} before the first.
        """
        return None if self._clock_offset is None else self._now()

    def _now(self) -> datetime.datetime:
        """L{meter_now}, once a clock read has set the offset."""
        if self._clock_offset is None:
            raise ReadFailed("the meter's clock was not read")
        when = datetime.datetime.fromtimestamp(self.client.clock.seconds() + self._clock_offset,
                                               model.JST)
        return when.replace(tzinfo=None)

    async def _setc(self, epc: int, edt: bytes, budget: Optional[Budget]) -> None:
        frame = await self.client.exchange(lambda tid: F.setc_request(tid, [(epc, edt)]), budget)
        if frame.esv != F.SET_RES:
            raise ReadFailed(f"the meter refused to set {epc:02X} (SetC_SNA)")

    async def read_history(self, day: int, budget: Optional[Budget] = None) -> tuple:
        """
        One day of the meter's 30-minute record: SetC E5 (and wait for its
        Set_Res: a Get right after a SetI reads the previous day) unless that
        day is selected already, then E2, E4 and the meter's clock in one Get.
        A read that straddled the meter's midnight is done again, and one
        that answers for another day is done again with SetC.

        @param day: 0 = today, n = n days ago.
        @return: C{(readings, meter clock)}: C{{boundary: (normal raw, reverse
            raw)}} for the 48 boundaries of that day (naive, meter time).
        @raise ReadFailed: the meter refused or answered for another day.
        @raise SendsHeld: a hold (EVENT 32) stops it.
        """
        return await self._read_day(lambda today: day, budget)

    async def read_history_of(self, date: datetime.date, budget: Optional[Budget] = None) -> tuple:
        """
        L{read_history} of the meter's day C{date}: the E5 day is worked out
        from the meter's clock at each try, so a read redone after the
        meter's midnight still reads C{date}.
        """
        return await self._read_day(lambda today: (today - date).days, budget)

    async def _read_day(self, day_of: Callable[[datetime.date], int],
                        budget: Optional[Budget]) -> tuple:
        midnights = 0
        while midnights < 2:
            if self._clock_offset is None:
                await self.meter_clock(budget)
            before = self._now()
            day = day_of(before.date())
            # E5 stays as set: a day already selected on this connection costs
            # no SetC (one frame per new slot in continuous operation).
            selected = self._day == day
            if not selected:
                self._day = None
                await self._setc(M.HISTORY_DAY, H.encode_history_day(day), budget)
                self._day = day
            normal, reverse, clocks = await self._get_day(budget)
            if normal is None or reverse is None:
                raise ReadFailed("the meter did not give its history (E2/E4)")
            known = [c for c in clocks if c is not None] or [self._now()]
            clock = known[-1]
            if any(c.date() != before.date() for c in known):
                self.log.info("the meter's midnight passed during a history read; reading again")
                midnights += 1
                continue
            normal_day, reverse_day = H.decode_history(normal), H.decode_history(reverse)
            if normal_day.day != day:
                if selected:
                    # Another controller (a HEMS) chose another day since: choose ours again.
                    self._day = None
                    continue
                raise ReadFailed(f"the meter gave the history of day {normal_day.day}, not {day}")
            date = clock.date() - datetime.timedelta(days=day)
            return H.day_readings(normal_day, reverse_day, date), clock
        raise ReadFailed("the meter's midnight passed during two history reads")

    async def _get_day(self, budget: Optional[Budget]) -> tuple:
        """
        E2, E4 and the meter's clock of the selected day.

        @return: C{(E2 EDT or None, E4 EDT or None, [clock or None, ...])}.
        """
        frame = await self.client.read((M.HISTORY_NORMAL, M.HISTORY_REVERSE, M.METER_TIME,
                                        M.METER_DATE), budget)
        normal, reverse = frame.get(M.HISTORY_NORMAL), frame.get(M.HISTORY_REVERSE)
        clocks = [self._clock_of(frame)]
        if normal is not None and reverse is None:
            # Some meters give one history per frame (Get_SNA for E4): the
            # second Get carries the clock too, for the midnight check.
            second = await self.client.read((M.HISTORY_REVERSE, M.METER_TIME, M.METER_DATE),
                                            budget)
            reverse = second.get(M.HISTORY_REVERSE)
            clocks.append(self._clock_of(second))
        return normal, reverse, clocks

    async def read_history_at(self, end: datetime.datetime, count: int,
                              budget: Optional[Budget] = None) -> dict:
        """
        C{count} readings (1-12) of the meter's record ending at the boundary
        C{end} (meter time): SetC ED, wait for Set_Res, Get EC.

        @return: C{{boundary: (normal raw, reverse raw)}}.
        @raise ReadFailed: the meter refused or answered for another time.
        """
        await self._setc(M.HISTORY2_TIME, H.encode_history2_time(end, count), budget)
        frame = await self.client.read((M.HISTORY2,), budget)
        edt = frame.get(M.HISTORY2)
        if edt is None:
            raise ReadFailed("the meter did not give its history (EC)")
        history = H.decode_history2(edt)
        if history.start != end:
            raise ReadFailed(f"the meter gave EC from {history.start}, not {end}")
        return history.by_time()
