#!/usr/bin/env python
"""
Soak benchmark: the service's poller (L{smartmeter_tx.service.poller.MeterPoller})
against the built-in emulator for a day or more of simulated time, with the
faults a real installation sees:

 - frame loss (C{--loss}, default 10 %: the request or its answer is lost);
 - EVENT 29 every 6 simulated hours: the emulator grants a 6 h PANA session
   lifetime, so the module expires the session and re-authenticates by
   itself (EVENT 29, then EVENT 25) 6 h after every join;
 - two unplugs (hours 7 and 17, 2 minutes each): the port disappears (the
   host connection is lost and opening the device fails), the dongle is power
   cycled (registers, credentials and session gone), then it is plugged back;
 - one EVENT 32/33 episode (hour 11): the module's ARIB transmit-time budget
   is lowered below what it has spent in the last hour, so the module's own
   accounting raises EVENT 32 at the next transmission and EVENT 33 when the
   rolling window has drained (C{--rate-limit-minutes} later); the real budget
   is restored after EVENT 33;
 - stray lines and junk bytes on the serial line (C{--garbage}, 2 % of bursts).

Default mode: the poller and the emulator's module are wired through an
in-memory loopback on a L{twisted.internet.task.Clock} (the harness of
tests/emuloop.py, copied here so the bench does not import the tests), so
simulated time jumps from timer to timer: 24 h take well under a minute.
The real L{smartmeter_tx.service.datalog.DataLog} writes to a temporary directory.

Every reading is checked against the emulator's ground truth: the poller's
answer frame is matched by its TID to the truth record of that frame (the
emulator records every frame the meter puts on the air that reaches the
host); each of power, currents and energy must be equal.  EA/EB fixed-time
INF readings are matched by their meter timestamp.

    venv/bin/python bench/soak.py                 # 24 h, seed 1
    venv/bin/python bench/soak.py --seed 7 --json # machine-readable too
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import gc
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet.task import Clock  # noqa: E402
from twisted.logger import LogLevel, formatEvent, globalLogBeginner  # noqa: E402

from smartmeter_tx.session import client as C  # noqa: E402
from smartmeter_tx.session import join  # noqa: E402
from smartmeter_tx.session.config import SessionConfig  # noqa: E402
from smartmeter_tx.service.datalog import DataLog  # noqa: E402
from smartmeter_tx.echonet import frame as F  # noqa: E402
from smartmeter_tx.echonet import meter as M  # noqa: E402
from smartmeter_tx import model  # noqa: E402
from smartmeter_tx.emulator.loopback import Loopback  # noqa: E402
from smartmeter_tx.emulator.module import (  # noqa: E402
    DEFAULT_ID, DEFAULT_PASSWORD, Emulator, EmulatorConfig,
)
from smartmeter_tx.service.poller import MeterPoller, PollSchedule  # noqa: E402
from smartmeter_tx.sk.values import Dialect  # noqa: E402

HOUR = 3600.0
PAGE = os.sysconf("SC_PAGE_SIZE")
EVENT_NAMES = {0x24: "24 PANA failed", 0x25: "25 PANA up", 0x26: "26 peer ended",
               0x27: "27 ended", 0x28: "28 end timed out", 0x29: "29 lifetime expired",
               0x32: "32 tx limit on", 0x33: "33 tx limit off"}


def rss_now() -> int:
    """Resident set size of this process now, bytes (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def rss_max() -> int:
    """Peak resident set size of this process so far, bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mib(n: int) -> str:
    return "%.1f MiB" % (n / 1048576)


def hms(t: float) -> str:
    """Simulated seconds since the start as h:mm:ss."""
    t = int(round(t))
    return "%d:%02d:%02d" % (t // 3600, t // 60 % 60, t % 60)


# -- the loopback harness ---------------------------------------------------------------


class Loop(Loopback):
    """
    L{Loopback} counting what the host writes.

    @ivar sent: count of command names the host wrote.
    @ivar sent_tids: ECHONET TID -> simulated time of the last SKSENDTO carrying it.
    """

    def __init__(self, clock: Clock, config: EmulatorConfig) -> None:
        super().__init__(Emulator(config, clock), clock)
        self.sent: collections.Counter = collections.Counter()
        self.sent_tids: dict = {}
        self.write_observers.append(self._record)

    def _record(self, data: bytes) -> None:
        head = data.split(b" ", 1)[0].split(b"\r", 1)[0]
        name = head.decode("ascii", "replace")
        self.sent[name] += 1
        if name == "SKSENDTO":
            at = data.find(b"\x10\x81")  # EHD of the ECHONET Lite payload
            if at >= 0:
                now = self.clock.seconds()
                self.sent_tids[int.from_bytes(data[at + 2:at + 4], "big")] = now
                if len(self.sent_tids) > 512:  # bounded: only recent TIDs matter
                    for tid in [k for k, v in self.sent_tids.items() if v < now - 600]:
                        del self.sent_tids[tid]


# -- bookkeeping -------------------------------------------------------------------------


class FrameRecorder:
    """
    The frame each C{BRouteClient.read} returned last, so that a reading can
    be matched to the emulator's truth by TID.  The poller hands on only the
    decoded reading, so the harness wraps the client's C{read} (the one read
    policy: C{read_values} goes through it) for the length of the run.

    @ivar last: the frame the last successful read returned, or C{None}.
    """

    def __init__(self) -> None:
        self.last: Optional[F.Frame] = None

    @contextlib.contextmanager
    def installed(self):
        original = C.BRouteClient.read
        recorder = self

        async def read(client, *args, **kwargs):
            frame = await original(client, *args, **kwargs)
            recorder.last = frame
            return frame

        C.BRouteClient.read = read
        try:
            yield self
        finally:
            C.BRouteClient.read = original



class LogWatch:
    """
    The twisted.logger observer of the run: counts events by level and keeps
    the last few formatted lines (with simulated time) for diagnosing failures.
    """

    def __init__(self, clock: Clock, t0: float, echo: bool) -> None:
        self.clock = clock
        self.t0 = t0
        self.echo = echo
        self.levels: collections.Counter = collections.Counter()
        self.recent: collections.deque = collections.deque(maxlen=40)
        self.seq = 0

    def __call__(self, event) -> None:
        level = event.get("log_level", LogLevel.info)
        self.levels[level.name] += 1
        self.seq += 1
        text = formatEvent(event)
        if "log_failure" in event:
            text += "\n" + event["log_failure"].getTraceback()
        line = "%s %-5s %s" % (hms(self.clock.seconds() - self.t0), level.name, text)
        self.recent.append((self.seq, line))
        if self.echo:
            print(line, file=sys.stderr)

    def since(self, seq: int) -> list:
        return [line for s, line in self.recent if s > seq]


class Truth:
    """
    The emulator's ground truth, consumed through a truth sink so that
    C{emulator.truth} does not grow for the whole run.

    @ivar answers: TID -> (time, {EPC: TruthRecord}) of the last Get answer
        frame with that TID that reached the host.
    @ivar fixed: (EPC, meter timestamp) -> TruthRecord of EA/EB values.
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.answers: dict = {}
        self.fixed: dict = {}
        self.records = 0
        emulator.truth_sinks.append(self.sink)

    def sink(self, record) -> None:
        self.records += 1
        self.emulator.truth.clear()  # the sink has it; keep RSS honest
        if record.seoj != F.METER:
            return
        if record.esv in (F.GET_RES, F.GET_SNA):
            entry = self.answers.get(record.tid)
            if entry is None or entry[0] != record.at:
                entry = (record.at, {})
                self.answers[record.tid] = entry
                if len(self.answers) > 512:  # bounded: only recent answers matter
                    for tid in [k for k, v in self.answers.items() if v[0] < record.at - 600]:
                        del self.answers[tid]
            entry[1][record.epc] = record
        elif record.epc in (M.FIXED_NORMAL, M.FIXED_REVERSE):
            # Keyed as the data-log record gives the meter's time (ISO 8601).
            self.fixed[(record.epc, model.json_value(record.value["time"]))] = record
            if len(self.fixed) > 64:
                oldest = min(self.fixed, key=lambda k: self.fixed[k].at)
                del self.fixed[oldest]


class Checker:
    """
    Compares every reading the poller hands to on_reading with the truth: the
    decoded L{model.Reading} the poller just stored (exact Decimals) and the
    JSON-ready record it logs (numbers as L{model.json_value} gives them).
    """

    def __init__(self, poller: MeterPoller, frames: FrameRecorder, loop: Loop,
                 truth: Truth) -> None:
        self.poller = poller
        self.frames = frames
        self.loop = loop
        self.truth = truth
        self.checked = 0      # readings compared
        self.values = 0       # individual values compared
        self.wrong = 0
        self.unmatched = 0    # readings with no truth frame to compare with (counted wrong too)
        self.fixed_checked = 0
        self.problems: list = []

    def _bad(self, what: str) -> None:
        self.wrong += 1
        if len(self.problems) < 20:
            self.problems.append("%s %s" % (hms(self.loop.clock.seconds() - T0[0]), what))

    def poll_reading(self, record: dict) -> None:
        self.checked += 1
        frame = self.frames.last
        reading = self.poller.store.latest  # stored just before on_reading
        tid = frame.tid
        sent_at = self.loop.sent_tids.get(tid)
        entry = self.truth.answers.get(tid)
        now = self.loop.clock.seconds()
        if sent_at is None or entry is None or not sent_at <= entry[0] <= now:
            self.unmatched += 1
            self._bad("TID %04X: no answer of the meter to our request (sent %s, truth %s)"
                      % (tid, sent_at, entry and entry[0]))
            return
        truths = entry[1]
        for p in frame.properties:  # the bytes decoded are the bytes the meter sent
            t = truths.get(p.epc)
            self.values += 1
            if t is None and p.edt or t is not None and t.edt != p.edt:
                self._bad("TID %04X EPC %02X: frame bytes differ from the meter's" % (tid, p.epc))
        checks = [("power_w", M.POWER, lambda t: t.value)]
        checks.append(("current_r_a", M.CURRENT, lambda t: t.value[0]))
        checks.append(("current_t_a", M.CURRENT, lambda t: t.value[1]))
        if "energy_normal_kwh" in record:
            checks.append(("energy_normal_kwh", M.ENERGY_NORMAL, lambda t: t.kwh))
            checks.append(("energy_reverse_kwh", M.ENERGY_REVERSE, lambda t: t.kwh))
        for name, epc, want in checks:
            t = truths.get(epc)
            self.values += 1
            if t is None:
                self._bad("TID %04X: %s has no truth record" % (tid, name))
            elif getattr(reading, name) != want(t):
                self._bad("TID %04X: %s %r != meter %r"
                          % (tid, name, getattr(reading, name), want(t)))
            elif record.get(name) != model.json_value(want(t)):
                self._bad("TID %04X: logged %s %r != meter %r"
                          % (tid, name, record.get(name), want(t)))

    def fixed_reading(self, record: dict) -> None:
        self.checked += 1
        self.fixed_checked += 1
        for epc, name in ((M.FIXED_NORMAL, "normal"), (M.FIXED_REVERSE, "reverse")):
            if f"energy_{name}_raw" not in record:
                continue
            t = self.truth.fixed.get((epc, record["meter_time"]))
            self.values += 2
            if t is None:
                self.unmatched += 1
                self._bad("EA/EB at %s: no truth record" % record["meter_time"])
                continue
            if record[f"energy_{name}_raw"] != t.value["raw"]:
                self._bad("E%X raw %r != meter %r" % (epc & 0xF, record[f"energy_{name}_raw"],
                                                      t.value["raw"]))
            kwh = record.get(f"energy_{name}_kwh")
            if kwh is not None and kwh != model.json_value(t.kwh):
                self._bad("E%X kWh %r != meter %r" % (epc & 0xF, kwh, t.kwh))


T0 = [0.0]


class Timeline:
    """
    Reading times, kept online (no per-reading list): the longest gap, gaps
    longer than 1.5 intervals, and the first reading after marked moments
    (plug-back, EVENT 29).
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.count = 0
        self.fixed = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self.longest = (0.0, 0.0, 0.0)
        self.top: list = []  # the 3 longest gaps
        self.long_gaps = 0
        self.recovered: dict = {"plug": [], "e29": []}
        self._waiting: list = []

    def mark(self, what: str, t: float) -> None:
        entry = [t, None]
        self.recovered[what].append(entry)
        self._waiting.append(entry)

    def reading(self, t: float) -> None:
        self.count += 1
        if self.first is None:
            self.first = t
        if self.last is not None:
            gap = t - self.last
            self.longest = max(self.longest, (gap, self.last, t))
            self.top = sorted(self.top + [(gap, self.last, t)], reverse=True)[:3]
            if gap > 1.5 * self.interval:
                self.long_gaps += 1
        self.last = t
        for entry in self._waiting:
            entry[1] = t - entry[0]
        self._waiting = []


# -- the run -----------------------------------------------------------------------------


def run(args) -> dict:
    with FrameRecorder().installed() as frames:
        return _run(args, frames)


def _run(args, frames: FrameRecorder) -> dict:
    real0 = time.monotonic()
    cpu0 = time.process_time()
    rss_start, maxrss_start = rss_now(), rss_max()

    clock = Clock()
    # Simulated wall clock: 2024-06-01 12:00 JST, the emulated meter's own start time.
    start_epoch = datetime.datetime(2024, 6, 1, 3, 0, tzinfo=datetime.timezone.utc).timestamp()
    clock.advance(start_epoch)
    T0[0] = t0 = clock.seconds()
    logs = LogWatch(clock, t0, args.verbose)
    globalLogBeginner.beginLoggingTo([logs], discardBuffer=True, redirectStandardIO=False)

    config = EmulatorConfig(
        dialect=Dialect.DSE if args.dse else Dialect.STANDARD, seed=args.seed, time_scale=1.0,
        loss=args.loss, garbage=args.garbage, stale=args.stale, lifetime=args.lifetime_hours * HOUR)
    loop = Loop(clock, config)
    emu = loop.emulator
    truth = Truth(emu)

    # Watch what the module says (observation only: the call goes through unchanged).
    events: list = []
    module_event = emu._event

    def spy_event(num, sender, param=None):
        if num != 0x21 and num in EVENT_NAMES:
            now = clock.seconds() - t0
            events.append((now, num, loop.sk is not None and loop.sk.connected_now))
            if num == 0x29:
                timeline.mark("e29", now)
        return module_event(num, sender, param)
    emu._event = spy_event

    tmp = tempfile.mkdtemp(prefix="smartmeter-soak-")
    logdir = args.data_log or os.path.join(tmp, "datalog")
    datalog = DataLog(logdir)

    timeline = Timeline(args.interval)
    poller: MeterPoller

    def on_reading(record, when):
        if record.get("kind") == "fixed":
            timeline.fixed += 1
            checker.fixed_reading(record)
        else:
            timeline.reading(clock.seconds() - t0)
            checker.poll_reading(record)
        datalog.write(record, when)

    poller = MeterPoller(loop.connect,
                         SessionConfig(join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)), clock,
                         PollSchedule(interval=args.interval, energy_interval=args.energy_interval),
                         on_reading=on_reading, rng=random.Random(args.seed),
                         wall_clock=clock.seconds)
    checker = Checker(poller, frames, loop, truth)

    # Classify every poll (the LoopingCall's ticks and the immediate poll after a reopen).
    polls: collections.Counter = collections.Counter()
    failures: list = []
    failure_kinds: collections.Counter = collections.Counter()
    original_poll = poller.poll

    def poll():
        if poller._polling:
            kind = "overlap"
        elif poller.client is None:
            kind = "no_port"
        elif poller.held:
            kind = "held32" if poller.state.rate_limited else "held29"
        else:
            kind = "sent"
        polls["attempted"] += 1
        polls[kind] += 1
        before = poller.stats.polls_answered
        seq = logs.seq
        started = clock.seconds() - t0
        d = original_poll()

        def done(result):
            if kind == "sent":
                if poller.stats.polls_answered > before:
                    polls["answered"] += 1
                else:
                    polls["failed"] += 1
                    lines = logs.since(seq)
                    # The client logs each Get that went unanswered.
                    attempts = sum("request unanswered" in line for line in lines)
                    why = ("no answer to %d Get attempt(s)" % attempts if attempts else
                           "join" if any("join" in line for line in lines) else
                           lines[-1].split(None, 2)[-1][:60] if lines else "silent")
                    failure_kinds[why] += 1
                    failures.append((started, why, lines if len(failures) < 100 else []))
            elif kind == "no_port":
                failure_kinds["port missing (unplugged)"] += 1
                failures.append((started, "port missing", []))
            return result
        return d.addBoth(done)
    poller.poll = poll

    # -- the scenario ---------------------------------------------------------------
    hours = args.hours
    unplugs = [h * HOUR for h in args.unplug_at if h < hours]
    rate_at = args.rate_limit_at * HOUR if 0 < args.rate_limit_at < hours else None
    rate = {"shrunk_at": None, "restored_at": None, "limit": None}
    rss_samples = []

    poller.startService()
    end = t0 + hours * HOUR
    step = 10.0
    next_sample = t0
    todo = sorted([(t, "unplug") for t in unplugs] + ([(rate_at, "shrink")] if rate_at else []))
    while clock.seconds() < end:
        now = clock.seconds() - t0
        while todo and todo[0][0] <= now:
            _, action = todo.pop(0)
            if action == "unplug":
                loop.unplugged = True
                loop.disconnect()
                emu.power_cycle()
                todo.append((now + args.unplug_seconds, "plug"))
                todo.sort()
            elif action == "plug":
                loop.unplugged = False
                timeline.mark("plug", now)
            elif action == "shrink":
                # Lower the budget below what the module spent in the last hour:
                # its own accounting engages at the next transmission (EVENT 32)
                # and releases when `rate_limit_minutes` of that hour has drained.
                b = emu.budget
                used = b.used(emu.device_time())
                b.budget = used * (1 - args.rate_limit_minutes * 60 / b.window)
                rate.update(shrunk_at=now, limit=b.budget, used=used)
        if (rate["shrunk_at"] is not None and rate["restored_at"] is None
                and any(n == 0x33 for _, n, _ in events)):
            emu.budget.budget = config.tx_budget
            rate["restored_at"] = now
        if clock.seconds() >= next_sample:
            gc.collect()
            rss_samples.append((now, rss_now()))
            next_sample += HOUR
        loop.advance(min(step, end - clock.seconds()))
    # Let a poll that is still running finish (no new tick comes within 10 s).
    for _ in range(40):
        if not poller._polling:
            break
        loop.advance(0.5)
    poller.stopService()
    loop.advance(1)
    emu.stop()
    datalog.close()
    gc.collect()
    rss_end, maxrss_end = rss_now(), rss_max()

    # -- the data log, read back ------------------------------------------------------
    files = sorted(os.listdir(logdir))
    lines = bad_json = 0
    for name in files:
        with open(os.path.join(logdir, name), encoding="utf-8") as f:
            for line in f:
                lines += 1
                try:
                    obj = json.loads(line)
                    if not isinstance(obj, dict) or "time" not in obj:
                        bad_json += 1
                except ValueError:
                    bad_json += 1
    if args.data_log is None:
        shutil.rmtree(tmp, ignore_errors=True)

    # -- figures ------------------------------------------------------------------------
    longest = timeline.longest
    recoveries = timeline.recovered["plug"]
    e29_recovery = timeline.recovered["e29"]
    e32 = [t for t, n, _ in events if n == 0x32]
    e33 = [t for t, n, _ in events if n == 0x33]
    held = polls["held32"] + polls["held29"]
    denominator = polls["attempted"] - held
    answered = polls["answered"]
    result = {
        "simulated_hours": (clock.seconds() - t0) / HOUR,
        "seed": args.seed, "loss": args.loss, "garbage": args.garbage, "stale": args.stale,
        "dialect": config.dialect.value, "interval": args.interval,
        "energy_interval": args.energy_interval,
        "polls": dict(polls), "answered": answered,
        "failed": polls["failed"] + polls["no_port"],
        "held": held,
        "ratio_adjusted": answered / denominator if denominator else 0.0,
        "ratio_raw": answered / polls["attempted"] if polls["attempted"] else 0.0,
        "poller_stats": dict(dataclasses.asdict(poller.stats),
                             rate_limited_count=poller.state.rate_limited_count),
        "failure_kinds": dict(failure_kinds),
        "readings": timeline.count, "fixed_readings": timeline.fixed,
        "checked": checker.checked, "values_compared": checker.values,
        "wrong": checker.wrong, "unmatched": checker.unmatched, "problems": checker.problems,
        "truth_records": truth.records,
        "first_reading_s": timeline.first,
        "longest_gap_s": longest[0], "longest_gap_from": longest[1], "longest_gap_to": longest[2],
        "top_gaps": timeline.top,
        "gaps_over_interval": timeline.long_gaps, "recoveries": recoveries,
        "events": [(t, "%02X" % n, attached) for t, n, attached in events],
        "event29": e29_recovery, "event32": e32, "event33": e33, "rate_limit": rate,
        "sksendto": loop.sent["SKSENDTO"], "skjoin": loop.sent["SKJOIN"],
        "skscan": loop.sent["SKSCAN"], "connects": loop.connects,
        "rss_start": rss_start, "rss_end": rss_end, "maxrss_start": maxrss_start,
        "maxrss_end": maxrss_end, "rss_samples": rss_samples,
        "datalog_files": len(files), "datalog_lines": lines, "datalog_written": datalog.lines_written,
        "datalog_bad_json": bad_json,
        "log_levels": dict(logs.levels),
        "real_seconds": time.monotonic() - real0, "cpu_seconds": time.process_time() - cpu0,
        "failures": failures,
    }
    return result


def report(r: dict, args) -> None:
    p = r["polls"]
    st = r["poller_stats"]
    out = print
    out("smartmeter_tx soak: %.1f simulated hours, seed %d, loss %.0f %%, garbage %.0f %%, %s dialect,"
        " interval %g s, energy interval %g s" % (
            r["simulated_hours"], r["seed"], 100 * r["loss"], 100 * r["garbage"], r["dialect"],
            r["interval"], r["energy_interval"]))
    out("polls attempted           %d  (LoopingCall ticks plus the immediate poll after each reopen)"
        % p.get("attempted", 0))
    out("  answered                %d" % r["answered"])
    out("  failed                  %d  (sent but no usable answer: %d; port missing while unplugged: %d)"
        % (r["failed"], p.get("failed", 0), p.get("no_port", 0)))
    out("  held (not sent)         %d  (EVENT 32 hold: %d; EVENT 29 hold: %d)"
        % (r["held"], p.get("held32", 0), p.get("held29", 0)))
    out("  overlapping (skipped)   %d" % p.get("overlap", 0))
    out("answered ratio            %.2f %%  = answered / (attempted - held by EVENT 32/29)  [target >= 99 %%]"
        % (100 * r["ratio_adjusted"]))
    out("raw answered ratio        %.2f %%  = answered / attempted" % (100 * r["ratio_raw"]))
    out("failure causes            %s" % (", ".join("%s: %d" % kv for kv in sorted(
        r["failure_kinds"].items(), key=lambda kv: -kv[1])) or "none"))
    out("poller stats              answered %d, failed %d, skipped %d, rejoins %d, reopens %d,"
        " rate-limited episodes %d, frames %d" % (
            st["polls_answered"], st["polls_failed"], st["polls_skipped"], st["rejoins"],
            st["reopens"], st["rate_limited_count"], st["frames_sent"]))
    out("host commands             SKSENDTO %d, SKJOIN %d, SKSCAN %d, port opens %d"
        % (r["sksendto"], r["skjoin"], r["skscan"], r["connects"]))
    out("readings                  %d polled + %d EA/EB INF; first reading at %.1f s"
        % (r["readings"], r["fixed_readings"], r["first_reading_s"] or -1))
    out("ground truth              %d readings checked (%d values compared), wrong %d, unmatched %d"
        "  [target 0 wrong]" % (r["checked"], r["values_compared"], r["wrong"], r["unmatched"]))
    for line in r["problems"]:
        out("  WRONG " + line)
    out("longest gap               %.1f s between readings at %s and %s; %d gaps > 1.5 intervals"
        % (r["longest_gap_s"], hms(r["longest_gap_from"]), hms(r["longest_gap_to"]),
           r["gaps_over_interval"]))
    out("3 longest gaps            " + "; ".join(
        "%.1f s from %s" % (g, hms(a)) for g, a, _ in r["top_gaps"]))
    for plug, rec in r["recoveries"]:
        out("unplug recovery           plugged back at %s, next reading %s  [target <= %g s]"
            % (hms(plug), "%.1f s later" % rec if rec is not None else "NEVER",
               2 * r["interval"]))
    for t, rec in r["event29"]:
        out("EVENT 29                  at %s, next reading %s"
            % (hms(t), "%.1f s later" % rec if rec is not None else "never"))
    rl = r["rate_limit"]
    if rl["shrunk_at"] is not None:
        out("EVENT 32/33               budget lowered at %s (%.3f s used, limit %.3f s); "
            "EVENT 32 at %s; EVENT 33 at %s; held polls %d"
            % (hms(rl["shrunk_at"]), rl["used"], rl["limit"],
               ", ".join(hms(t) for t in r["event32"]) or "never",
               ", ".join(hms(t) for t in r["event33"]) or "never", p.get("held32", 0)))
    ev = collections.Counter(n for _, n, _ in r["events"])
    out("module events             %s" % ", ".join(
        "%s x%d" % (EVENT_NAMES[int(n, 16)], c) for n, c in sorted(ev.items())))
    out("RSS start                 %s (statm), ru_maxrss %s" % (mib(r["rss_start"]), mib(r["maxrss_start"])))
    out("RSS end                   %s (statm), ru_maxrss %s; growth %+.2f MiB"
        % (mib(r["rss_end"]), mib(r["maxrss_end"]), (r["rss_end"] - r["rss_start"]) / 1048576))
    out("RSS by hour               " + " ".join("%.1f" % (v / 1048576) for _, v in r["rss_samples"])
        + " MiB")
    out("data log                  %d lines in %d files (%d written), invalid JSON %d"
        % (r["datalog_lines"], r["datalog_files"], r["datalog_written"], r["datalog_bad_json"]))
    out("log events                %s" % ", ".join("%s %d" % kv for kv in sorted(r["log_levels"].items())))
    out("real elapsed              %.1f s (CPU %.1f s)" % (r["real_seconds"], r["cpu_seconds"]))
    if args.failures:
        for started, why, lines in r["failures"]:
            out("-- failed poll at %s: %s" % (hms(started), why))
            for line in lines:
                out("     " + line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    ap.add_argument("--seed", type=int, default=1, help="emulator and backoff seed (default 1)")
    ap.add_argument("--loss", type=float, default=0.1, help="frame loss probability (default 0.1)")
    ap.add_argument("--garbage", type=float, default=0.02,
                    help="stray line / junk probability per output burst (default 0.02)")
    ap.add_argument("--stale", type=float, default=0.0,
                    help="probability an answer is held back past the next request (default 0)")
    ap.add_argument("--lifetime-hours", type=float, default=6.0,
                    help="PANA session lifetime: EVENT 29 this long after each join (default 6)")
    ap.add_argument("--unplug-at", type=lambda s: [float(x) for x in s.split(",") if x],
                    default=[7.0, 17.0], help="hours at which the dongle is unplugged (default 7,17)")
    ap.add_argument("--unplug-seconds", type=float, default=120.0,
                    help="how long each unplug lasts (default 120)")
    ap.add_argument("--rate-limit-at", type=float, default=11.0,
                    help="hour of the EVENT 32/33 episode, 0 for none (default 11)")
    ap.add_argument("--rate-limit-minutes", type=float, default=15.0,
                    help="about how long the EVENT 32 hold lasts (default 15)")
    ap.add_argument("--interval", type=float, default=30.0)
    ap.add_argument("--energy-interval", type=float, default=300.0)
    ap.add_argument("--dse", action="store_true", help="emulate a DSE (BP35C2-like) module")
    ap.add_argument("--data-log", help="keep the data log in this directory (default: a temp dir)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--failures", action="store_true", help="print the log around each failed poll")
    ap.add_argument("--verbose", action="store_true", help="echo the service's log to stderr")
    args = ap.parse_args(argv)
    r = run(args)
    report(r, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1, default=str)
    ok = (r["ratio_adjusted"] >= 0.99 and r["wrong"] == 0 and r["datalog_bad_json"] == 0
          and all(rec is not None and rec <= 2 * args.interval for _, rec in r["recoveries"]))
    print("targets                   %s" % ("met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
