"""
The long-running service behind C{twist smartmeter}: it polls the meter on a
schedule, joins when the session is gone, logs every reading and keeps the
latest one for the HTTP endpoints.

Who does what:
  - L{smartmeter_tx.service.port.PortKeeper} keeps the serial port open and reopens
    it with backoff (an unplugged dongle);
  - L{smartmeter_tx.session.client.BRouteClient} is the only thing that talks to the
    meter, with the one read policy of the product;
  - L{smartmeter_tx.session.linkstate.LinkState} owns the session and the holds
    (EVENT 29/25, 24/26/27/28, 32/33, SFB);
  - L{smartmeter_tx.service.store.LatestStore} keeps the newest readings and counters;
  - L{MeterPoller}, here, decides when to poll and when to join.

Nothing a module or meter does ends the service: a lost session is rejoined
with exponential backoff and jitter (rescanning only after repeated failures),
and the holds are respected until they are released.
"""

from __future__ import annotations

import datetime
import random
import time
from dataclasses import dataclass
from typing import Callable, Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from smartmeter_tx.echonet import frame as F
from smartmeter_tx.service.backfill import Backfill
from smartmeter_tx.service.backoff import Backoff
from smartmeter_tx.service.clock import WallClockSteps
from smartmeter_tx.service.joins import JoinPolicy
from smartmeter_tx.session.client import BRouteClient
from smartmeter_tx.session.steps import Budget
from smartmeter_tx.session.config import SERVICE_DIALECT_FLAGS, Connection, SessionConfig
from smartmeter_tx import model
from smartmeter_tx.errors import ConfigError, NoSession, SendsHeld, SmartMeterError
from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.service.port import PortKeeper
from smartmeter_tx.session.state import MeterLink, save_state
from smartmeter_tx.service.store import LatestStore, Stats
from smartmeter_tx.service.view import ServiceView

__all__ = ["MeterPoller", "PollSchedule"]

#: The meter's frames whose properties are its values: answers to a Get,
#: and what it announces by itself.
_SAID = frozenset((F.GET_RES, F.GET_SNA, F.INF, F.INFC))


@dataclass(frozen=True)
class PollSchedule:
    """
    @ivar interval: seconds between power/current polls.
    @ivar energy_interval: seconds between reads of the energy counters.
    @ivar poll_timeout: the budget of one poll (its Gets and their resends).
    @ivar join_timeout: the budget of one join (scan included).
    """

    interval: float = 30.0
    energy_interval: float = 300.0
    poll_timeout: float = 10.0
    join_timeout: float = 120.0


class MeterPoller(service.Service):
    """
    The service that reads the meter.

    @param open_port: see L{PortKeeper}.
    @param config: the credentials, the link and the dialect (L{SessionConfig}).
    @param on_reading: called with C{(record, when)} for each reading: its
        record form (L{model.Reading.to_record}, or L{model.FixedReading.to_record} for
        the meter's half-hourly EA/EB) and the epoch seconds it was taken.
    @param state_path: where to save the link when it changes, or C{None}.
    @param backfill: fills the log's 30-minute slots from the meter's own
        record (L{Backfill}); its slots are logged through C{on_reading}.
    @param identify: ask the meter who it is (maker, serial) once a session,
        into C{store.identity}: the MQTT publisher names its topics by it.
        One frame, spent only when something needs it.
    @param on_fatal: called with a one-line message when the service cannot
        do its job at all and should end (no credentials, and the module has
        no session to read through).

    @ivar state: the L{LinkState}, kept across connections.
    @ivar store: the L{LatestStore}.
    """

    log = Logger()

    def __init__(self, open_port: Callable[[Connection], object], config: SessionConfig,
                 clock: IReactorTime, schedule: PollSchedule = PollSchedule(),
                 on_reading: Optional[Callable[[dict, float], object]] = None,
                 state_path: Optional[str] = None, rng: Optional[random.Random] = None,
                 wall_clock: Callable[[], float] = time.time,
                 on_fatal: Optional[Callable[[str], None]] = None,
                 backfill: Optional[Backfill] = None, identify: bool = False) -> None:
        self.config = config
        self.on_fatal = on_fatal or (lambda message: self.log.critical("{why}", why=message))
        self.clock = clock
        self.schedule = schedule
        self.on_reading = on_reading or (lambda record, when: None)
        self.state_path = state_path
        self.wall_clock = wall_clock
        rng = rng or random.Random()
        self.state = LinkState()
        self.store = LatestStore()
        self.joins = JoinPolicy(clock, config, Backoff(10.0, 600.0, rng), self.store,
                                schedule.join_timeout, self.on_fatal, self._save,
                                retry=lambda: self.poll(), running=lambda: bool(self.running))
        self.wall_steps = WallClockSteps(clock.seconds, wall_clock)
        self.backfill = backfill
        self.identify = identify
        # Opening a device path costs no air time, so retry often: a replugged
        # dongle should be read again within two poll intervals.
        self.port = PortKeeper(open_port, clock, lambda: config.new_protocol(clock),
                               self._make_client, self._connected,
                               Backoff(1.0, 10.0, rng), on_lost=self.state.port_lost)
        self._next_energy = 0.0
        self._polling = False
        #: when the data log's newest reading was taken (said at start), or C{None}.
        self.last_logged: Optional[float] = None
        self._loop: Optional[task.LoopingCall] = None
        self._poll_now: Optional[IDelayedCall] = None
        self._current: Optional[defer.Deferred[None]] = None  # the running poll's coroutine
        self._poll_over: list[defer.Deferred[None]] = []  # waiting for the running poll

    @property
    def link(self) -> MeterLink:
        return self.config.link

    @property
    def stats(self) -> Stats:
        return self.store.stats

    @property
    def client(self) -> Optional[BRouteClient]:
        return self.port.client

    def view(self) -> ServiceView:
        """@return: what the outputs read of this service (L{ServiceView})."""
        return ServiceView(self.store, self.state, self.clock, self.backfill,
                           self.config.device, self.schedule.interval, self.link)

    # -- service -----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.log.info("{line}", line=starting_line(self.config.device, self.link,
                                                   self.last_logged))
        self.port.start()
        self._loop = task.LoopingCall.withCount(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.schedule.interval, now=True).addErrback(
            lambda f: self.log.failure("poll loop stopped", f))

    def stopService(self) -> defer.Deferred:
        """
        Stop polling: cancel the running poll (its command dropped or
        abandoned: nothing more on the air), close the port, save the link.

        @return: a Deferred that fires once the running poll has ended and
            the port is closed, so that twist's shutdown waits for both.
        """
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.backfill is not None:
            self.backfill.stop()
        if self._poll_now is not None and self._poll_now.active():
            self._poll_now.cancel()
        self.joins.stop()
        over = self.running_poll()
        if self._current is not None:
            # A stop, not a failure: said once, and nothing retried.
            self.log.info("stopping: {what} abandoned",
                          what="join" if self.joins.joining else "poll")
            self._current.cancel()
        d = over if over is not None else defer.succeed(None)
        d.addCallback(lambda _: self.port.stop())
        d.addCallback(lambda _: self._save())
        return d

    # -- connections --------------------------------------------------------------

    def _make_client(self, proto: Connection) -> BRouteClient:
        return self.config.client(proto, self.clock, state=self.state, rssi=True,
                                  dialect_flags=SERVICE_DIALECT_FLAGS)

    def _connected(self, client: BRouteClient) -> None:
        # Whether the module still holds a session is unknown: the next poll
        # tries a Get first and joins only on EVENT 21 02 or silence.
        self.state.new_connection()
        # The meter's bytes kept first: whoever gets the EA/EB record may read them.
        client.add_answer_listener(self._heard)
        client.add_frame_listener(lambda frame, rx: self._heard(frame))
        client.add_fixed_listener(self._on_fixed)
        self.stats.reopens = self.port.reopens
        if self._loop is not None and self._loop.running:
            # A reopened port: do not wait for the next tick, the readings
            # have a gap already.
            self._poll_now = self.clock.callLater(0, self.poll)

    def _heard(self, frame: F.Frame) -> None:
        """Keep what the meter's object said, byte for byte (L{LatestStore.properties})."""
        if frame.seoj == F.METER and frame.esv in _SAID:
            self.store.properties.heard(((p.epc, p.edt) for p in frame.properties),
                                        self.clock.seconds(), self.link.mac)

    def _on_fixed(self, fixed: model.FixedReading) -> None:
        when = self.wall_clock()
        self.store.add_fixed(fixed, when, self.clock.seconds())
        self.on_reading(fixed.to_record(), when)

    # -- polling ------------------------------------------------------------------

    @property
    def held(self) -> Optional[str]:
        """Why sends are held now, or C{None}."""
        return self.state.held

    def _tick(self, count: int) -> defer.Deferred:
        # The loop waits for a poll to end: the count - 1 ticks due meanwhile
        # (a join, long retries) were not polled, nor is this one while the
        # poll after a reopen runs.
        self.stats.polls_skipped += count - 1 + self._polling
        self.store.last_poll_at = self.clock.seconds()
        self.wall_steps.say(self.log)
        return self.poll()

    def poll(self) -> defer.Deferred:
        """
        One poll, unless one runs; never fails (errors are counted and logged).

        @return: a Deferred that fires with C{None} when the poll is over.
        """
        if self._polling:
            return defer.succeed(None)
        self._polling = True
        d = self._current = defer.Deferred.fromCoroutine(self._poll())

        def failed(failure: Failure) -> None:
            if failure.check(defer.CancelledError) and not self.running:
                return  # stopped while it ran: nothing went wrong
            self.stats.polls_failed += 1
            self.log.failure("unexpected error in a poll", failure)

        def done(result: object) -> None:
            self._polling = False
            self._current = None
            waiting, self._poll_over = self._poll_over, []
            for w in waiting:
                w.callback(None)
            stats = self.stats
            stats.frames_sent = self.port.total("frames")
            stats.busy_retries = self.port.total("busy_retries")
            stats.junk_dropped = self.port.total("junk_dropped")

        return d.addErrback(failed).addBoth(done)

    async def _poll(self) -> None:
        """One poll's jobs, in order."""
        client = self.client
        if client is None:
            self.stats.polls_failed += 1
            return
        if not await self._may_poll(client):
            return
        started = self.clock.seconds()
        energy = started >= self._next_energy
        had_scale = client.scale is not None
        reading = await self._reading(client, energy)
        if reading is None:
            return
        self._answered(client, reading, energy, started, had_scale)
        if self.identify:
            await identify(self.store, client, self.clock, self.schedule.poll_timeout, self.log)
        if self.backfill is not None:
            self.backfill.kick(client, self.running_poll)

    async def _may_poll(self, client: BRouteClient) -> bool:
        """The holds reviewed: whether a poll may send now (held ones are skipped)."""
        await review_holds(self.state, client, self.clock, self.schedule.poll_timeout, self.log)
        if self.held:
            self.stats.polls_skipped += 1
            self.log.debug("poll held: {why}", why=self.held)
            return False
        return True

    async def _reading(self, client: BRouteClient, energy: bool) -> Optional[model.Reading]:
        """
        The poll's reading, or C{None} when there is none (each failure
        counted and said, silence taken to the link state).
        """
        try:
            reading = await self._read(client, energy)
        except ConfigError as e:  # a forced dialect the module does not speak
            self.stats.polls_failed += 1
            self.joins.fatal(str(e))
            return None
        except SmartMeterError as e:
            if self.running:  # else the port closed under a stop: no failure to tell
                poll_failed(e, self.stats, self.state, self.log)
            return None
        if reading is None:  # no session, and no join yet
            self.stats.polls_failed += 1
        return reading

    def _answered(self, client: BRouteClient, reading: model.Reading, energy: bool,
                  started: float, had_scale: bool) -> None:
        """
        Book an answered poll: the link, the schedule, the counters, the
        store and the outputs.

        @param started: when the poll began (the energy schedule counts from it).
        @param had_scale: whether the energy scale was known before the poll.
        """
        self.state.poll_answered()
        self.joins.had_session = True
        self.joins.session_up()
        if not had_scale and client.scale is not None:
            self._save()  # the scale is worth keeping across restarts
        if energy:
            # Half an interval of slack keeps energy on every n-th poll even
            # when polls drift by a few seconds.
            self._next_energy = (started + self.schedule.energy_interval
                                 - self.schedule.interval / 2)
        self.stats.polls_answered += 1
        if self.stats.polls_answered == 1:
            self.log.info("{line}", line=first_reading_line(reading, self.joins.joined,
                                                            client.link))
        when = self.wall_clock()
        self.store.add(reading, when, self.clock.seconds())
        self.on_reading(reading.to_record(), when)

    def running_poll(self) -> Optional[defer.Deferred[None]]:
        """A Deferred that fires when the running poll is over, or C{None}."""
        if not self._polling:
            return None
        d: defer.Deferred[None] = defer.Deferred()
        self._poll_over.append(d)
        return d

    async def _read(self, client: BRouteClient, energy: bool) -> Optional[model.Reading]:
        """
        One reading through the client's read policy; a join first when the
        module has no session and the join backoff allows one.

        @return: the reading, or C{None} when a join was needed but not made.
        """
        def read() -> defer.Deferred:
            # Serial-only steps (dialect, echo, neighbour table) sent again once
            # when a byte went missing: a poll lost costs a whole interval.
            budget = Budget(self.clock, self.schedule.poll_timeout, retries=1)
            return budget.bound(client.read_values(energy, budget, may_join=False),
                                "reading the meter")
        try:
            return await read()
        except NoSession:
            if not await self.joins.join(client):
                return None
        return await read()

    def _save(self) -> None:
        save_link(self.state_path, self.link, self.log)


def save_link(path: Optional[str], link: MeterLink, log: Logger) -> None:
    """Save C{link} to the state file at C{path} (none: nothing), saying when it cannot."""
    if path is None:
        return
    try:
        save_state(path, link)
    except OSError as e:
        log.warn("cannot write the state file: {error}", error=e)


def poll_failed(error: SmartMeterError, stats: Stats, state: LinkState, log: Logger) -> None:
    """Count and say a poll that got no reading; the meter's silence goes to the link state."""
    stats.polls_failed += 1
    if isinstance(error, SendsHeld):
        # EVENT 29/32 came during the poll: not the meter's silence.
        log.info("poll stopped: {error}", error=error)
        return
    log.info("poll failed: {error}", error=error)  # no answer, step timeouts, SK errors
    if not state.held:  # a hold that came during the poll is not silence
        gone = state.poll_unanswered()
        if gone is not None:
            log.warn("{why}; joining the meter again", why=gone)


async def identify(store: LatestStore, client: BRouteClient, clock: IReactorTime,
                   timeout: float, log: Logger) -> None:
    """
    Once a session: who the meter is (one frame), into C{store.identity},
    for MQTT's topics and HA's device.
    """
    if store.identity is not None and store.identity.get("mac") == client.link.mac:
        return
    budget = Budget(clock, timeout)
    try:
        store.identity = await budget.bound(client.identity(budget), "asking the meter who it is")
    except SmartMeterError as e:
        log.info("the meter did not tell who it is: {error}", error=e)


async def review_holds(state: LinkState, client: BRouteClient, clock: IReactorTime,
                       timeout: float, log: Logger) -> None:
    """
    End holds whose releasing event may never come: the module's own
    re-authentication after EVENT 29 is given a bounded time, and the EVENT
    32 hold is checked against the module's SFB flag now and then.
    """
    now = clock.seconds()
    ended = state.review(now)
    if ended is not None:
        log.warn("{why}; joining", why=ended)
    if state.rate_check_due(now):
        budget = Budget(clock, timeout)
        try:
            limited = await budget.bound(client.requests.check_send_restricted(budget),
                                         "reading the module's send-restricted flag")
        except SmartMeterError:
            return
        if not limited:
            log.info("transmit-time limit over (SFB 0) though no EVENT 33 was seen")


def starting_line(device: Optional[str], link: MeterLink, last_reading: Optional[float]) -> str:
    """What the service starts from, in one line for the log.  Pure."""
    if link.joinable:
        meter = (f"the saved meter on channel {link.channel:02X}, PAN ID {link.pan_id:04X}"
                 + (f" ({link.mac})" if link.mac else ""))
    else:
        meter = "no saved meter (the first poll looks for it)"
    text = f"reading {device or 'the module'} - {meter}"
    if last_reading is not None:
        stamp = datetime.datetime.fromtimestamp(last_reading, model.JST)
        text += f"; the data log's last reading is from {stamp:%Y-%m-%d %H:%M:%S} JST"
    return text


def first_reading_line(reading: model.Reading, joined: bool, link: MeterLink) -> str:
    """The service's first reading, in one line for the log.  Pure."""
    power = "no power value" if reading.power_w is None or model.is_absent(reading.power_w) \
        else f"{reading.power_w} W"
    how = ("after joining the meter" if joined
           else "through the session the module still held (no join)")
    channel = f" on channel {link.channel:02X}" if link.channel is not None else ""
    return f"first reading: {power}, {how}{channel}"
