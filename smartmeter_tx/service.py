"""
The long-running service behind C{twist smartmeter}: it owns the serial port,
keeps one PANA session for as long as it runs, polls the meter, logs every
reading and keeps the latest one for the HTTP endpoints.

Nothing a module or meter does ends the service: a lost session is rejoined
with exponential backoff and jitter (rescanning only after repeated failures),
a vanished serial port is reopened with backoff, and the ARIB transmit-time
limit (EVENT 32) holds all sends until it is released (EVENT 33).
"""

from __future__ import annotations

import random
import time
from typing import Callable, Optional

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from smartmeter_tx import client as C
from smartmeter_tx.echonet import frame as F
from smartmeter_tx.echonet import meter as M
from smartmeter_tx.requester import EchonetTimeout, NotSent, SendFailed
from smartmeter_tx.errors import SmartMeterError
from smartmeter_tx.sk import lines as L
from smartmeter_tx.sk.protocol import SKCommandError, SKStackProtocol
from smartmeter_tx.state import MeterLink, save_state

__all__ = ["MeterPoller", "Backoff", "Stats"]


class Backoff:
    """
    Exponential backoff with jitter: C{base * 2^n}, capped, times a random
    factor in [0.5, 1.5) so that many clients do not retry in step.
    """

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.failures)
        self.failures += 1
        return delay * (0.5 + self.rng.random())

    def reset(self) -> None:
        self.failures = 0


class Stats:
    """
    Counters and gauges of link health, exported on /metrics.
    """

    def __init__(self) -> None:
        self.polls_answered = 0
        self.polls_failed = 0
        self.polls_skipped = 0
        self.rejoins = 0
        self.join_failures = 0
        self.reopens = 0
        self.rate_limited_count = 0
        self.rate_limited = False
        self.session_since: Optional[float] = None
        self.last_event: Optional[int] = None
        self.last_rssi: Optional[float] = None
        self.last_lqi: Optional[int] = None
        self.frames_sent = 0


class MeterPoller(service.Service):
    """
    The service that talks to the module.

    @param open_port: C{open_port(protocol)} connects C{protocol} to the module
        (SerialPort in production, a pty or a loopback in tests); it raises
        when the device is missing.
    @param on_reading: called with C{(record, when)} for each reading: a dict
        of field name to value, and the epoch seconds it was taken.
    """

    log = Logger()

    #: Longest wait for the module's own re-authentication after EVENT 29
    #: (it takes a few to about 15 s) before the service joins itself.
    EXPIRY_HOLD_MAX = 60.0
    #: While EVENT 32 holds sends, read the send-restricted flag this often, in
    #: case EVENT 33 was missed (e.g. printed while the port was closed).
    RATE_CHECK_INTERVAL = 300.0
    #: Unanswered polls in a row, with a session believed up, before rejoining.
    REJOIN_AFTER_SILENT = 3
    #: Seconds to wait for the answer to one Get before sending it again.
    ATTEMPT_TIMEOUT = 3.0

    def __init__(self, open_port: Callable, credentials: Optional[C.Credentials], clock,
                 link: Optional[MeterLink] = None, state_path: Optional[str] = None,
                 dialect: Optional[L.Dialect] = None, interval: float = 30.0,
                 energy_interval: float = 300.0, poll_timeout: float = 10.0,
                 on_reading: Optional[Callable] = None, rng: Optional[random.Random] = None,
                 join_timeout: float = 120.0, wall_clock: Callable[[], float] = time.time,
                 channel: Optional[int] = None) -> None:
        self.open_port = open_port
        self.fixed_channel = channel  # --channel: never scan other channels
        self.credentials = credentials
        self.clock = clock
        self.link = link or MeterLink()
        self.state_path = state_path
        self.dialect = dialect
        self.interval = interval
        self.energy_interval = energy_interval
        self.poll_timeout = poll_timeout
        self.join_timeout = join_timeout
        self.on_reading = on_reading or (lambda record, when: None)
        self.wall_clock = wall_clock
        rng = rng or random.Random()
        self.join_backoff = Backoff(10.0, 600.0, rng)
        # Opening a device path costs no air time, so retry often: a replugged
        # dongle should be read again within two poll intervals.
        self.reopen_backoff = Backoff(1.0, 10.0, rng)
        self.stats = Stats()
        self.latest: Optional[dict] = None
        self.last_frame: Optional[F.Frame] = None  # the frame behind `latest`
        self.energy: dict = {}
        self.energy_time: Optional[float] = None
        self.latest_time: Optional[float] = None
        self.proto: Optional[SKStackProtocol] = None
        self.client: Optional[C.BRouteClient] = None
        self.session = False      # we know a PANA session is up
        self.expired_hold = False  # EVENT 29 seen, waiting for the module's own re-auth
        self._next_join = 0.0
        self._next_energy = 0.0
        self._polling = False
        self._silent_polls = 0
        self._expired_at = 0.0
        self._next_rate_check = 0.0
        self._frames_base = 0
        self._joining: Optional[defer.Deferred] = None
        self._reopen_call = None
        self._loop: Optional[task.LoopingCall] = None
        self._stopping = False

    # -- service -----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self._open()
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True).addErrback(
            lambda f: self.log.failure("poll loop stopped", f))

    def stopService(self):
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._reopen_call is not None and self._reopen_call.active():
            self._reopen_call.cancel()
        self._save()
        if self.proto is not None and self.proto.connected_now:
            self.proto.transport.loseConnection()
        return super().stopService()

    # -- serial port --------------------------------------------------------------

    def _open(self) -> None:
        self._reopen_call = None
        proto = SKStackProtocol(clock=self.clock)
        if self.credentials is not None:
            proto.add_secret(self.credentials.rbid)
            proto.add_secret(self.credentials.password)
        try:
            self.open_port(proto)
        except Exception as e:
            delay = self.reopen_backoff.next_delay()
            self.log.warn("cannot open the module ({error}); retrying in {delay:.0f} s",
                          error=str(e).splitlines()[0] if str(e) else type(e).__name__,
                          delay=delay)
            self._reopen_call = self.clock.callLater(delay, self._reopen)
            return
        self.proto = proto
        if self.client is not None:
            self._frames_base += self.client.frames
            self.client.close()
        self.client = C.BRouteClient(proto, self.credentials, self.clock, link=self.link,
                                     dialect=self.dialect, channel=self.fixed_channel)
        self.link = self.client.link
        proto.add_listener(self._on_line)
        self.client.requester.on_unsolicited = self._on_unsolicited
        # Whether the module still holds a session is unknown: the next poll
        # tries a Get first and joins only on EVENT 21 02 or silence.  Holds
        # belong to the old connection: a replugged dongle was power-cycled,
        # and a module still under the ARIB limit says so through SFB.
        self.session = None
        self.expired_hold = False
        self.stats.rate_limited = False
        self._next_rate_check = 0.0
        proto.when_disconnected().addCallback(self._lost)

    def _reopen(self) -> None:
        self._open()
        if self.proto is not None:
            self.stats.reopens += 1
            self.reopen_backoff.reset()
            self.log.info("serial port reopened")
            # Do not wait for the next tick: the readings have a gap already.
            self._reopen_call = self.clock.callLater(0, self.poll)

    def _lost(self, reason) -> None:
        self.proto = None
        self.session = False
        if self._stopping:
            return
        delay = self.reopen_backoff.next_delay()
        self.log.warn("serial link lost ({why}); reopening in {delay:.1f} s",
                      why=str(reason) or type(reason).__name__, delay=delay)
        self._reopen_call = self.clock.callLater(delay, self._reopen)

    # -- events -------------------------------------------------------------------

    def _on_line(self, value) -> None:
        if isinstance(value, L.Event):
            self.stats.last_event = value.num
            num = value.num
            if num == 0x25:
                self._session_up()
            elif num == 0x29:
                # The module re-authenticates by itself: hold sends until 25/24.
                self.expired_hold = True
                self._expired_at = self.clock.seconds()
                self.log.info("PANA session lifetime expired; waiting for re-authentication")
            elif num in (0x24, 0x26, 0x27, 0x28):
                self.expired_hold = False
                if self.session:
                    self.log.warn("session lost (EVENT {num:02X}: {name}); rejoining",
                                  num=num, name=value.name)
                self._session_down()
            elif num == 0x32:
                self.stats.rate_limited = True
                self._next_rate_check = self.clock.seconds() + self.RATE_CHECK_INTERVAL
                self.stats.rate_limited_count += 1
                self.log.warn("transmit-time limit reached (EVENT 32); holding sends")
            elif num == 0x33:
                self.stats.rate_limited = False
                self.log.info("transmit-time limit released (EVENT 33)")
        elif isinstance(value, L.RxUdp):
            if value.rssi is not None:
                self.stats.last_rssi = L.lqi_to_dbm(value.rssi)
        elif isinstance(value, L.PanDesc):
            self.stats.last_lqi = value.lqi
            self.stats.last_rssi = value.rssi_dbm

    def _session_up(self) -> None:
        if not self.session:
            self.stats.session_since = self.clock.seconds()
        self.session = True
        self.expired_hold = False
        self.join_backoff.reset()
        self.stats.join_failures = 0

    def _session_down(self) -> None:
        self.session = False
        self.stats.session_since = None

    def _on_unsolicited(self, frame: F.Frame, rx: L.RxUdp) -> None:
        if frame.seoj != F.METER or frame.esv not in (F.INF, F.INFC):
            return
        record = {"kind": "fixed"}
        for epc, name in ((M.FIXED_NORMAL, "normal"), (M.FIXED_REVERSE, "reverse")):
            edt = frame.get(epc)
            if edt is None:
                continue
            try:
                fixed = M.decode_fixed_time(edt)
            except SmartMeterError as e:
                self.log.warn("dropping a malformed EA/EB value: {error}", error=e)
                return
            record[f"energy_{name}_kwh"] = self.client.scale.to_kwh(fixed.raw) if (
                self.link.unit is not None) else None
            record[f"energy_{name}_raw"] = fixed.raw
            record["meter_time"] = fixed.timestamp
        if len(record) > 1:
            self.on_reading(record, self.wall_clock())

    # -- polling ------------------------------------------------------------------

    @property
    def held(self) -> Optional[str]:
        """Why sends are held now, or C{None}."""
        if self.stats.rate_limited:
            return "transmit-time limit (EVENT 32)"
        if self.expired_hold:
            return "session re-authentication (EVENT 29)"
        return None

    def poll(self) -> defer.Deferred:
        """
        One poll; never fails (errors are counted and logged).

        @return: a Deferred that fires when the poll is over.
        """
        if self._polling:
            self.stats.polls_skipped += 1
            return defer.succeed(None)
        self._polling = True
        d = defer.Deferred.fromCoroutine(self._poll())

        def done(result):
            self._polling = False
            return None

        def failed(failure):
            self.stats.polls_failed += 1
            self.log.failure("unexpected error in a poll", failure)

        return d.addErrback(failed).addBoth(done)

    async def _poll(self) -> None:
        if self.proto is None or self.client is None:
            self.stats.polls_failed += 1
            return
        await self._review_holds()
        if self.held:
            self.stats.polls_skipped += 1
            self.log.debug("poll held: {why}", why=self.held)
            return
        client = self.client
        try:
            if not client.prepared:
                await client.prepare()  # dialect and echo, once per connection; no radio
                if client.dialect is L.Dialect.DSE:
                    # DSE modules add the RSSI of each frame to ERXUDP when SA2=1:
                    # free link-quality data for /metrics (the parser reads both).
                    try:
                        await self.proto.command(L.sk_sreg("SA2", "1"))
                    except SKCommandError as e:
                        self.log.info("module does not take SA2 (no RSSI): {e}", e=e)
        except SmartMeterError as e:  # SK errors included
            self.stats.polls_failed += 1
            self.log.warn("the module does not answer: {error}", error=e)
            return
        if self.session is False or self.link.ipaddr is None:
            if not await self._join():
                self.stats.polls_failed += 1
                return
        now = self.clock.seconds()
        energy = now >= self._next_energy
        epcs = list(C.POWER_EPCS)
        need_scale = energy and self.link.unit is None
        if energy:
            epcs += C.ENERGY_EPCS
            if need_scale:
                epcs += C.SCALE_EPCS
        frame = await self._request(tuple(epcs))
        if frame is None:
            self.stats.polls_failed += 1
            if self.held:
                return  # EVENT 29/32 came during the poll: not the meter's silence
            self._silent_polls += 1
            if self.session and self._silent_polls >= self.REJOIN_AFTER_SILENT:
                # The module believes in its session but the meter no longer
                # answers (e.g. the meter dropped it): start a new one.
                self.log.warn("{n} polls unanswered; joining the meter again",
                              n=self._silent_polls)
                self._session_down()
            return
        self._silent_polls = 0
        if self.session is None:
            self._session_up()
        self.last_frame = frame
        try:
            if need_scale:
                self.client.learn_scale(frame)
                self._save()
            reading = M.decode_reading(frame.properties, self.client.scale)
        except SmartMeterError as e:
            self.stats.polls_failed += 1
            self.log.warn("meter answer not usable: {error}", error=e)
            return
        if energy:
            # Half an interval of slack keeps energy on every n-th poll even
            # when polls drift by a few seconds.
            self._next_energy = now + self.energy_interval - self.interval / 2
        self.stats.polls_answered += 1
        self.stats.frames_sent = self._frames_base + self.client.frames
        self._record(reading, energy)

    async def _review_holds(self) -> None:
        """
        End holds whose releasing event may never come: the module's own
        re-authentication after EVENT 29 is given EXPIRY_HOLD_MAX, and the
        EVENT 32 hold is checked against the module's SFB flag now and then.
        """
        now = self.clock.seconds()
        if self.expired_hold and now - self._expired_at > self.EXPIRY_HOLD_MAX:
            self.log.warn("no re-authentication {s:.0f} s after EVENT 29; joining",
                          s=now - self._expired_at)
            self.expired_hold = False
            self._session_down()
        if self.stats.rate_limited and now >= self._next_rate_check:
            self._next_rate_check = now + self.RATE_CHECK_INTERVAL
            try:
                reply = await self.proto.command(L.sk_sreg("SFB"))
            except SmartMeterError:
                return
            flag = reply.first(L.SReg)
            if flag is not None and flag.value.strip("0") == "":
                self.log.info("transmit-time limit over (SFB 0) though no EVENT 33 was seen")
                self.stats.rate_limited = False
                self.client.rate_limited = False

    async def _request(self, epcs) -> Optional[F.Frame]:
        """
        One Get, re-sent while the poll's budget lasts (a lost frame costs one
        resend, not the reading); joins when the module has no session.

        @return: the answering frame, or C{None}.
        """
        client = self.client
        end = self.clock.seconds() + self.poll_timeout
        attempt = 0
        try:
            while True:
                left = end - self.clock.seconds()
                if left <= 0.5 or self.held:
                    return None  # out of time, or EVENT 29/32 came during the poll
                attempt += 1
                client.deadline = end
                try:
                    # The meter answers within about a second (captures §19):
                    # waiting longer than ATTEMPT_TIMEOUT wastes the budget.
                    return await client.get(epcs, timeout=min(self.ATTEMPT_TIMEOUT, left))
                except NotSent:
                    if self.held:
                        return None  # re-authenticating after EVENT 29: let it finish
                    self._session_down()  # no session in the module (EVENT 21 02)
                except (EchonetTimeout, SendFailed) as e:
                    self.log.info("poll attempt {n} failed: {error}", n=attempt, error=e)
                    if self.session is not None or attempt > 1:
                        continue
                    # Silence with the session state unknown: probably none.
                    self._session_down()
                except SmartMeterError as e:  # step timeout, rate limit, SK errors
                    self.log.info("poll failed: {error}", error=e)
                    return None
                client.deadline = None
                if self.held or not await self._join():
                    return None
                end = self.clock.seconds() + self.poll_timeout
        finally:
            client.deadline = None

    def _record(self, reading: M.Reading, energy: bool) -> None:
        record = {
            "power_w": reading.power_w,
            "current_r_a": reading.current_r_a,
            "current_t_a": reading.current_t_a,
        }
        when = self.wall_clock()
        if energy:
            record["energy_normal_kwh"] = reading.energy_normal_kwh
            record["energy_reverse_kwh"] = reading.energy_reverse_kwh
            self.energy = {"normal": reading.energy_normal_kwh,
                           "reverse": reading.energy_reverse_kwh}
            self.energy_time = when
        latest = dict(record)
        if self.energy_time is not None:
            latest["energy_normal_kwh"] = self.energy["normal"]
            latest["energy_reverse_kwh"] = self.energy["reverse"]
            latest["energy_time"] = round(self.energy_time, 3)
        self.latest = latest
        self.latest_time = when
        self.on_reading(record, when)

    async def _join(self) -> bool:
        """
        Join, once the backoff delay has passed.

        @return: whether a session is up.
        """
        if self._joining is not None:
            return False
        now = self.clock.seconds()
        if now < self._next_join:
            return False
        if self.credentials is None:
            self.log.warn("the module has no session and no B-route credentials were given")
            self._next_join = now + self.join_backoff.next_delay()
            return False
        client = self.client
        # After repeated failures the client itself scans for the meter anew
        # (it counts failed joins in the state file).
        self.stats.rejoins += 1
        client.deadline = now + self.join_timeout
        self._joining = defer.Deferred()
        try:
            await client.authenticate()
        except (SmartMeterError, defer.CancelledError) as e:
            self.stats.join_failures += 1
            delay = self.join_backoff.next_delay()
            self._next_join = self.clock.seconds() + delay
            self.log.warn("joining the meter failed ({error}); next try in {delay:.0f} s",
                          error=e, delay=delay)
            return False
        finally:
            client.deadline = None
            self._joining = None
        self._session_up()
        self._save()
        self.log.info("session with the meter is up")
        return True

    def _save(self) -> None:
        if self.state_path is None:
            return
        try:
            save_state(self.state_path, self.link)
        except OSError as e:
            self.log.warn("cannot write the state file: {error}", error=e)
