"""
Filling the log from the meter's own record: every 30-minute slot of the
last N days that the data log does not hold yet is read from the meter (E2/E4
by day, or EC by time on meters that have it), oldest first, and written once.

A new slot becomes due every half hour, so this is also how the service logs
slots in normal operation; after an outage (service down, port lost, radio
trouble) the same loop fills the hole.  It is paced: one exchange at a time,
only while no poll runs (a poll's command queues behind at most one SK command
of ours), at most L{Backfill.FRAMES_PER_HOUR} frames an hour, and never while
a hold (EVENT 29/32) is on.

A fill of more than the routine slot or two is said in the log
(L{FillReport}): what it will read, how far it got every half minute, and
what it logged in how long.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartmeter_tx.echonet import history as H
from smartmeter_tx import model
from smartmeter_tx.errors import SmartMeterError
from smartmeter_tx.service.radio import FrameWindow
from smartmeter_tx.session.steps import Budget

if TYPE_CHECKING:
    from smartmeter_tx.echonet.meter import EnergyScale
    from smartmeter_tx.session.client import BRouteClient

__all__ = ["Backfill", "FillReport"]


def _run_length(starts: list) -> int:
    """How many slots from the first of C{starts} follow each other."""
    n = 1
    while n < len(starts) and starts[n] - starts[n - 1] == model.SLOT:
        n += 1
    return n


class Backfill:
    """
    @param days: how many days back to keep complete (0 disables).
    @param on_slot: called with C{(record, when)} for each slot to log; it
        returns C{False} when the slot could not be written (the slot then
        stays missing, and the backfill pauses).
    @param writable: whether slots can be logged now; while they cannot (a
        full disk), the backfill reads nothing from the meter.
    @param known: the history records the data log already holds.

    @ivar slots: slot start (aware, JST) -> L{model.HistorySlot}, the slots logged
        within the window (for C{/history}).
    @ivar written: slots logged by this process.
    @ivar frames: frames spent on the meter's record.
    @ivar missing: slots still missing at the last look, or C{None} before
        the first (the window is known once the meter's clock is).
    @ivar report: what the log says of a fill (L{FillReport}).
    """

    log = Logger()

    #: Frames an hour at most: each is well under 0.1 s of air time, so this
    #: stays within about 3 % of the 360 s an hour ARIB STD-T108 allows.
    FRAMES_PER_HOUR = 120
    #: Seconds between two steps, so that the radio is never hogged.
    GAP = 2.0
    #: The budget of one step (a SetC and a Get or two, with their resends).
    STEP_BUDGET = 20.0
    #: E5 takes 0-99 days; meters keep about 45.
    MAX_DAYS = 45
    #: Seconds after which the meter's clock is read again.
    CLOCK_AGE = 3600.0

    def __init__(self, days: int, clock: IReactorTime,
                 on_slot: Callable[[dict, float], Optional[bool]],
                 wall_clock: Callable[[], float], known: Iterable[dict] = (),
                 writable: Callable[[], bool] = lambda: True,
                 read_log: Optional[Callable[[datetime.date], list]] = None,
                 window: Optional[FrameWindow] = None) -> None:
        """
        @param window: the hour's frames beyond the polls, shared with what
            else reads the meter on request (the LAN bridge); one of
            L{FRAMES_PER_HOUR} by default.
        @param read_log: the data log's history records of the files dated
            on or after a day (L{DataLog.history_records}): what
            L{logged_since} reads beyond the slots held here.
        """
        self.days = min(days, self.MAX_DAYS)
        self.read_log = read_log
        self._clock_apart = False
        self.clock = clock
        self.on_slot = on_slot
        self.writable = writable
        self.wall_clock = wall_clock
        self.slots: dict = {}
        for record in known:
            try:
                slot = model.HistorySlot.from_record(record)
            except SmartMeterError:
                continue
            self.slots[slot.start] = slot
        self._readings: dict = {}  # naive boundary -> (normal raw, reverse raw)
        self.window = window or FrameWindow(self.FRAMES_PER_HOUR)
        self.written = 0
        self.frames = 0
        self.missing: Optional[int] = None
        self.wanted = Wanted(self.days, self.MAX_DAYS, self.slots)
        self.report = FillReport(clock, self.log)
        self._running: Optional[defer.Deferred] = None

    # -- what is missing -------------------------------------------------------------

    def due(self, meter_now: datetime.datetime) -> list:
        """L{Wanted.due}."""
        return self.wanted.due(meter_now)

    def reach_back(self, since: datetime.datetime, until: datetime.datetime,
                   have: Iterable[datetime.datetime] = ()) -> None:
        """L{Wanted.reach_back}."""
        self.wanted.reach_back(since, until, have)

    def read_logged(self, day: Optional[datetime.date]) -> list:
        """
        The data log's history records of the files dated C{day} or later
        (all for C{None}).  A blocking read of files: the caller keeps it
        off the reactor for a long log.
        """
        if self.read_log is None:
            return []
        return self.read_log(datetime.date(1970, 1, 1) if day is None else day)

    def logged_since(self, since: Optional[datetime.datetime], records: list) -> list:
        """
        Every slot logged from C{since} on (all for C{None}), oldest first:
        those of C{records} (L{read_logged}) and those held here.
        """
        found: dict = {}
        for record in records:
            try:
                slot = model.HistorySlot.from_record(record)
            except SmartMeterError:
                continue
            found[slot.start] = slot
        found.update(self.slots)
        return [found[s] for s in sorted(found) if since is None or s >= since]

    # -- running -------------------------------------------------------------------

    def kick(self, client: BRouteClient,
             busy: Callable[[], Optional[defer.Deferred[None]]]) -> None:
        """
        Start filling, unless already running.

        @param busy: returns a Deferred that fires when the poll now running
            is over, or C{None} when none runs.
        """
        if self.days <= 0 or self._running is not None:
            return
        self._running = defer.Deferred.fromCoroutine(self._run(client, busy))
        self._running.addErrback(self._failed)
        self._running.addBoth(self._done)

    def _failed(self, failure: Failure) -> None:
        if not failure.check(defer.CancelledError):  # stop() while running
            self.log.failure("backfill stopped", failure)

    def _done(self, _: object) -> None:
        self._running = None

    def stop(self) -> None:
        if self._running is not None:
            self._running.cancel()

    async def _run(self, client: BRouteClient,
                   busy: Callable[[], Optional[defer.Deferred[None]]]) -> None:
        while True:
            waiting = busy()
            if waiting is not None:
                await waiting  # a poll first: it never waits behind us
            if client.scale is None:
                return  # slot energies need E1/D3/D7: the poller learns them first
            if not self.window.room(self.clock.seconds()):
                return  # the next poll kicks us again
            if not self.writable():
                # Nothing read now could be logged: no frame for it.  The
                # data log says when it fails and when it recovers.
                return
            budget = Budget(self.clock, self.STEP_BUDGET)
            try:
                more = await budget.bound(self.step(client, budget),
                                          "reading the meter's record")
            except SmartMeterError as e:  # holds, no session, lost frames
                self.log.info("backfill paused: {error}", error=e)
                return
            if not more:
                return
            await task.deferLater(self.clock, self.GAP, lambda: None)

    async def step(self, client: BRouteClient, budget: Optional[Budget] = None) -> bool:
        """
        Read what the oldest missing slot needs, and log every slot that
        became complete.

        @param budget: the step's (default L{STEP_BUDGET} from now).
        @return: whether slots are still missing.
        @raise SmartMeterError: the read failed (the caller pauses).
        """
        budget = budget or Budget(self.clock, self.STEP_BUDGET)
        before = budget.frames
        try:
            meter_now = client.history.meter_now()
            read_at = client.history.clock_read_at
            stale = read_at is None or self.clock.seconds() - read_at > self.CLOCK_AGE
            if meter_now is None or stale:
                # The host's clock may jump (a Pi without RTC at boot): ask the
                # meter's own now and then (an E2/E4 read tells it too); slots
                # are dated by the meter anyway.
                meter_now = await client.history.meter_clock(budget)
                self._compare_clocks(meter_now)
            due = self.due(meter_now)
            self.missing = len(due)
            self.report.begin(due)
            if not due:
                return False
            start = due[0]
            need = start if start not in self._readings else start + model.SLOT
            source = await client.history.history_source(budget)
            until = model.slot_start(meter_now)
            if source == "EC" and _run_length(due) >= H.HISTORY2_MAX:
                # A day of E2/E4 (48 readings, two frames) beats EC's twelve
                # readings a read for a long hole; EC is cheaper for a few slots.
                source = "E2"
            if source == "EC":
                # EC counts back from ED: cover `need` and what follows it.
                end = min(until, need + (H.HISTORY2_MAX - 1) * model.SLOT)
                count = int((end - need) / model.SLOT) + 1
                readings = await client.history.read_history_at(end, count, budget)
            else:
                readings, meter_now = await client.history.read_history_of(need.date(), budget)
                until = model.slot_start(meter_now)
        finally:
            spent = budget.frames - before  # its own (a relay may go out meanwhile)
            self.frames += spent
            # (each poll's step that finds nothing missing sends nothing)
            self.window.spend(self.clock.seconds(), spent)
        self._readings.update((t, v) for t, v in readings.items() if t <= until)
        if need not in self._readings:
            if need.date() not in {t.date() for t in readings}:
                # The read answered for another day (its midnight passed):
                # nothing is known of `need` yet; the next step asks again.
                return True
            # The meter has no reading for it at all (before its memory):
            # log the slot as "no data" rather than asking for ever.
            self._readings[need] = (model.NO_DATA, model.NO_DATA)
        self._emit(set(due), client.scale, source, until)
        self._forget_before(due[0])
        still = self.due(meter_now)
        self.missing = len(still)
        self.report.stepped(still)
        return self.missing > 0

    def _emit(self, due: set[datetime.datetime], scale: Optional[EnergyScale], source: str,
              until: datetime.datetime) -> None:
        wanted = {t: v for t, v in self._readings.items()}
        for slot in H.history_slots(wanted, scale, source, until):
            naive = slot.start.replace(tzinfo=None)
            if naive not in due or slot.start in self.slots:
                continue
            # Held before it goes out: whoever gets it may read the slots.
            self.slots[slot.start] = slot
            if self.on_slot(slot.to_record(), self.wall_clock()) is False:
                del self.slots[slot.start]
                return  # not written: it stays missing, and so do the later ones
            self.written += 1
            self.report.logged(slot)
            self.wanted.reached(naive)

    def _forget_before(self, oldest: datetime.datetime) -> None:
        # Bounded memory: readings before the oldest missing slot are done with.
        for t in [t for t in self._readings if t < oldest]:
            del self._readings[t]
        # Slots are kept for the window and the current month (the dashboard's
        # "this month"): at most about 45 days of 48, small.
        window = oldest - datetime.timedelta(days=self.days + 1)
        horizon = min(window, oldest.replace(day=1, hour=0, minute=0)).replace(tzinfo=model.JST)
        for start in [s for s in self.slots if s < horizon]:
            del self.slots[start]

    def _compare_clocks(self, meter_now: datetime.datetime) -> None:
        """Say once when the meter's clock and the host's are more than an hour apart."""
        host = datetime.datetime.fromtimestamp(self.wall_clock(), model.JST).replace(tzinfo=None)
        apart = abs((meter_now - host).total_seconds()) > 3600
        if apart and not self._clock_apart:
            self.log.warn("the meter's clock says {meter:%Y-%m-%d %H:%M} and the host's "
                          "{host:%Y-%m-%d %H:%M} (Japan time): slots are dated by the "
                          "meter's clock, so they still reach the data log and Home Assistant "
                          "under its dates; check both clocks", meter=meter_now, host=host)
        self._clock_apart = apart

    # -- serving -------------------------------------------------------------------

    def between(self, since: datetime.datetime, until: datetime.datetime) -> list:
        """@return: the logged slots starting in [since, until), oldest first."""
        return [self.slots[s] for s in sorted(self.slots) if since <= s < until]



class Wanted:
    """
    The slots a backfill wants: those of its window of days that the log
    does not hold, and once those of a reach further back.
    """

    def __init__(self, days: int, max_days: int, slots: dict) -> None:
        """
        @param slots: the logged slots by start (aware), which the backfill
            adds to (a slot within the window is never dropped).
        """
        self.days = days
        self.max_days = max_days
        self.slots = slots
        #: [since, until) (naive, meter time) to read beyond the window, once.
        self._reach: Optional[tuple] = None
        self._reached: set = set()
        #: The end of the window when it was last found complete.
        self._complete_to: Optional[datetime.datetime] = None

    def due(self, meter_now: datetime.datetime) -> list:
        """
        @return: the starts (naive, meter time) of the complete slots in the
            window that the log does not hold, oldest first.
        """
        if self.days <= 0:
            return []
        last_end = model.slot_start(meter_now)
        if self._reach is None and self._complete_to == last_end:
            # Every poll asks; the answer changes only when a slot ends
            # (slots within the window are never dropped): no need to go
            # through the window's hundreds of slots each time.
            return []
        first = datetime.datetime.combine(meter_now.date() - datetime.timedelta(days=self.days),
                                          datetime.time())
        due = [start for start in model.slot_range(first, last_end)
               if start.replace(tzinfo=model.JST) not in self.slots]
        if not due and self._reach is None:
            self._complete_to = last_end
        if self._reach is not None:
            oldest = datetime.datetime.combine(
                meter_now.date() - datetime.timedelta(days=self.max_days), datetime.time())
            since, until = max(self._reach[0], oldest), min(self._reach[1], first)
            older = [start for start in model.slot_range(since, until)
                     if start not in self._reached
                     and start.replace(tzinfo=model.JST) not in self.slots]
            if not older:
                self._reach, self._reached = None, set()
            due = older + due
        return due

    def reach_back(self, since: datetime.datetime, until: datetime.datetime,
                   have: Iterable[datetime.datetime] = ()) -> None:
        """
        Read the meter's record for [C{since}, C{until}) too (aware times),
        once, though it is older than the window: as far back as the meter
        keeps it.  The slots go out as any other (the data log first).

        @param have: slots the data log holds already there (not read again).
        """
        self._reach = (since.astimezone(model.JST).replace(tzinfo=None),
                       until.astimezone(model.JST).replace(tzinfo=None))
        self._reached = {t.astimezone(model.JST).replace(tzinfo=None) for t in have}

    def reached(self, naive: datetime.datetime) -> None:
        """The slot starting at C{naive} (meter time) is logged."""
        if self._reach is not None:
            self._reached.add(naive)  # memory lets it go; the log has it


class FillReport:
    """
    What the log says of a fill from the meter's record, at info level: a
    line when it starts (the slots and days it will read), one at most every
    L{PROGRESS_EVERY} seconds while it runs (none for a shorter fill), and
    one when nothing is missing any more (the slots logged, those the meter
    had no data for, how long it took).  The routine new slot or two of each
    half hour is no fill to tell of.  Times are on the service's clock.
    """

    #: Seconds between two progress lines.
    PROGRESS_EVERY = 30.0
    #: Missing slots a fill must start with to be told of: up to this many
    #: is the routine half-hourly slot (and the one after a short restart).
    QUIET_SLOTS = 2

    def __init__(self, clock: IReactorTime, log: Logger) -> None:
        self.clock = clock
        self.log = log
        self._started: Optional[float] = None  # on the clock, while a fill runs
        self._said = 0.0  # when the last line was said
        self._days: set = set()  # the dates the fill started with missing slots in
        self._logged = self._nodata = 0

    def begin(self, due: list) -> None:
        """The slots missing before a step (naive starts): a fill starts if they are many."""
        if self._started is not None:
            if not due:  # the window moved past what was missing
                self.stepped(due)
            return
        if len(due) <= self.QUIET_SLOTS:
            return
        self._started = self._said = self.clock.seconds()
        self._days = {start.date() for start in due}
        self._logged = self._nodata = 0
        self.log.info("backfill: reading {slots} missing 30-minute slots ({days} days) from "
                      "the meter's record", slots=len(due), days=len(self._days))

    def logged(self, slot: model.HistorySlot) -> None:
        """A slot went to the data log."""
        self._logged += 1
        self._nodata += model.is_absent(slot.energy_normal_kwh)

    def stepped(self, still: list) -> None:
        """The slots still missing after a step: say the progress, or the end."""
        if self._started is None:
            return
        now = self.clock.seconds()
        if not still:
            self.log.info("backfill done: {logged} slots logged ({nodata} without data from "
                          "the meter), none missing, in {seconds:.0f} s", logged=self._logged,
                          nodata=self._nodata, seconds=now - self._started)
            self._started = None
        elif now - self._said >= self.PROGRESS_EVERY:
            self._said = now
            left = self._days & {start.date() for start in still}
            self.log.info("backfill: {done} of {days} days read, {logged} slots logged, "
                          "{missing} missing ({seconds:.0f} s so far)",
                          done=len(self._days) - len(left), days=len(self._days),
                          logged=self._logged, missing=len(still), seconds=now - self._started)
