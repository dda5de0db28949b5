#!/usr/bin/env python
"""
Backfill benchmark: what it costs the service to fill N days of 30-minute
slots from the meter's own record (L{smartmeter_tx.service.backfill.Backfill} driven
by L{smartmeter_tx.service.poller.MeterPoller}), against the built-in emulator at its
calibrated latency (C{time_scale=1}: SKSENDTO to the answer 0.34-0.81 s).

For each of C{--days} (default 7 and 45), each meter (C{ec}: a meter with
EC/ED; C{e2}: a meter with E2/E4 only) and each dialect (standard, DSE), a
fresh emulator and a poller with an empty data log run on a
L{twisted.internet.task.Clock} through L{smartmeter_tx.emulator.loopback}
until C{backfill.missing == 0} after the first step (or C{--limit-hours}).
Simulated time jumps from timer to timer, so a run takes about a second.

It reports:

 - slots written (and that they are exactly the window, each once);
 - frames: C{backfill.frames} and the history SKSENDTO counted on the wire
   (EPCs E5/E2/E4/ED/EC/97/98/9F), with frames per day;
 - simulated wall time from the poller's start to C{missing == 0}, and from
   the first history frame;
 - the mean exchange time seen (SKSENDTO to the Get answer at the host);
 - airtime: the history frames' own airtime (the emulator's
   L{smartmeter_tx.emulator.radio.airtime} of each payload), its busiest
   rolling hour and share of the 360 s an hour ARIB STD-T108 allows, and the
   module's whole use (C{emulator.budget.used}) at its highest;
 - wrong values: every slot's energies and cumulative counts in the data log
   against C{emulator.meter.slot_truth} of both boundaries (energy = (n1 - n0)
   mod 10^digits x unit; no data -> null);
 - pacing: poll ticks, polls answered, and the delay from each tick to its
   Get SKSENDTO (the one carrying E7) from the first history frame on;
 - the steady state: C{--after-hours} (default 2) more simulated hours, in
   which a new slot is due every half hour.

C{--start} sets the meter's clock at the start (a start just before midnight
exercises the history reads across the meter's midnight).  C{--check} exits 1
unless every run filled its window with 0 wrong values, each slot once, every
poll answered and its Get within 1 s of its tick.

    venv/bin/python bench/backfill.py                  # 7 and 45 days, both meters, both dialects
    venv/bin/python bench/backfill.py --days 45 --seed 3 --meter e2 --dialect dse
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import random
import shutil
import sys
import tempfile
import time
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet.task import Clock  # noqa: E402
from twisted.logger import LogLevel, globalLogBeginner  # noqa: E402

from smartmeter_tx.session import join  # noqa: E402
from smartmeter_tx.session.config import SessionConfig  # noqa: E402
from smartmeter_tx.service.backfill import Backfill  # noqa: E402
from smartmeter_tx.service.datalog import DataLog  # noqa: E402
from smartmeter_tx.echonet import frame as F  # noqa: E402
from smartmeter_tx.echonet import meter as M  # noqa: E402
from smartmeter_tx import model  # noqa: E402
from smartmeter_tx.emulator.loopback import Loopback  # noqa: E402
from smartmeter_tx.emulator.module import (  # noqa: E402
    DEFAULT_ID, DEFAULT_PASSWORD, Emulator, EmulatorConfig,
)
from smartmeter_tx.emulator.radio import airtime  # noqa: E402
from smartmeter_tx.service.poller import MeterPoller, PollSchedule  # noqa: E402
from smartmeter_tx.sk.values import Dialect  # noqa: E402

HOUR = 3600.0
#: The meter's clock at the start: away from the :00/:30 INF and boundaries.
START = datetime.datetime(2024, 6, 1, 12, 5)
#: EPCs only the history reads ask for (E5 day, E2/E4, ED/EC, clock, map).
HISTORY_EPCS = {M.HISTORY_DAY, M.HISTORY_NORMAL, M.HISTORY_REVERSE, M.HISTORY2,
                M.HISTORY2_TIME, M.METER_TIME, M.METER_DATE, M.GET_MAP}
#: ARIB STD-T108: seconds of transmit time per rolling hour.
ARIB_BUDGET = 360.0


class Wire:
    """
    Every SKSENDTO the host writes: its time, TID, EPCs and airtime, split
    into history frames and the rest; and each Get answer's arrival (from the
    emulator's truth sink) for the exchange time.
    """

    def __init__(self, loop: Loopback, dialect: Dialect) -> None:
        self.clock = loop.clock
        self.emulator = loop.emulator
        self.fields = 6 if dialect is Dialect.STANDARD else 7  # tokens before the payload
        self.sends = []          # (time, tid, kind, airtime)
        self.sent_at = {}        # tid -> time of its last SKSENDTO
        self.answers = {}        # tid -> time its Get answer reached the host
        self.poll_gets = []      # times of SKSENDTO carrying E7
        self.commands = collections.Counter()
        loop.write_observers.append(self.write)
        self.emulator.truth_sinks.append(self.truth)

    def write(self, data: bytes) -> None:
        head = data.split(b" ", 1)[0].split(b"\r", 1)[0]
        self.commands[head.decode("ascii", "replace")] += 1
        if head != b"SKSENDTO":
            return
        parts = data.split(b" ", self.fields)
        length = int(parts[self.fields - 1], 16)
        payload = parts[self.fields][:length]
        now = self.clock.seconds()
        try:
            frame = F.Frame.decode(payload)
        except Exception:
            self.sends.append((now, None, "other", airtime(length)))
            return
        epcs = {p.epc for p in frame.properties}
        kind = "history" if epcs & HISTORY_EPCS else "poll"
        self.sends.append((now, frame.tid, kind, airtime(length)))
        self.sent_at[frame.tid] = now
        if b"\xe7\x00" in payload:
            self.poll_gets.append(now)

    def truth(self, record) -> None:
        self.emulator.truth.clear()  # the sink has it
        if record.esv in (F.GET_RES, F.GET_SNA) and record.tid not in self.answers:
            self.answers[record.tid] = record.at

    def exchanges(self) -> list:
        """SKSENDTO -> Get answer at the host, seconds, for each answered Get."""
        return [at - self.sent_at[tid] for tid, at in self.answers.items()
                if tid in self.sent_at and at >= self.sent_at[tid]]

    def busiest_hour(self, kind: str) -> tuple:
        """C{(airtime, frames)} of C{kind} frames in their busiest rolling hour."""
        times = [(t, a) for t, _, k, a in self.sends if k == kind]
        best, frames, lo, total = 0.0, 0, 0, 0.0
        for hi, (t, a) in enumerate(times):
            total += a
            while times[lo][0] <= t - HOUR:
                total -= times[lo][1]
                lo += 1
            if total > best:
                best, frames = total, hi - lo + 1
        return best, frames


def check_slots(records: list, meter, unit: Decimal) -> tuple:
    """
    @return: C{(wrong, nulls, problems)}: records whose energies or cumulative
        counts differ from the emulated meter's truth.
    """
    wrong, nulls, problems = 0, 0, []
    modulus = 10 ** meter.digits

    def num(v):
        return None if v is None else Decimal(str(v))

    for r in records:
        start = datetime.datetime.fromisoformat(r["slot"]).replace(tzinfo=None)
        (n0, r0), (n1, r1) = meter.slot_truth(start), meter.slot_truth(start + model.SLOT)
        if n0 is None or n1 is None:
            want = {"energy_normal_kwh": None, "energy_reverse_kwh": None}
            nulls += 1
        else:
            want = {"energy_normal_kwh": (n1 - n0) % modulus * unit,
                    "energy_reverse_kwh": (r1 - r0) % modulus * unit}
        if n0 is not None:
            want["cumulative_normal_kwh"] = n0 * unit
            want["cumulative_reverse_kwh"] = r0 * unit
        bad = [k for k, v in want.items() if num(r.get(k)) != v]
        if bad:
            wrong += 1
            if len(problems) < 5:
                problems.append("%s: %s" % (r["slot"], ", ".join(
                    "%s %s != %s" % (k, r.get(k), want[k]) for k in bad)))
    return wrong, nulls, problems


def expected_slots(meter_now: datetime.datetime, days: int) -> list:
    last_end = meter_now.replace(minute=meter_now.minute - meter_now.minute % 30, second=0,
                                 microsecond=0)
    t = datetime.datetime.combine(meter_now.date() - datetime.timedelta(days=days),
                                  datetime.time())
    out = []
    while t + model.SLOT <= last_end:
        out.append(t.replace(tzinfo=model.JST).isoformat())
        t += model.SLOT
    return out


def run_one(days: int, ec: bool, dialect: Dialect, seed: int, limit_hours: float,
            start: datetime.datetime = START, after_hours: float = 0.0) -> dict:
    clock = Clock()
    config = EmulatorConfig(dialect=dialect, seed=seed, time_scale=1.0,
                            history_days=max(45, days), history2=ec, start=start)
    loop = Loopback(Emulator(config, clock), clock)
    wire = Wire(loop, dialect)
    logdir = tempfile.mkdtemp(prefix="bench-backfill-")
    wall0 = start.replace(tzinfo=model.JST).timestamp()

    def wall():
        return wall0 + clock.seconds()

    datalog = DataLog(logdir)
    backfill = Backfill(days, clock, datalog.write, wall, known=())
    poller = MeterPoller(loop.connect, SessionConfig(join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)),
                         clock, PollSchedule(interval=30, energy_interval=300),
                         on_reading=datalog.write, rng=random.Random(seed),
                         wall_clock=wall, backfill=backfill)
    ticks = []
    original = poller.poll

    def poll():
        ticks.append(clock.seconds())
        return original()
    poller.poll = poll

    cpu0 = time.process_time()
    t0 = clock.seconds()
    poller.startService()
    poller._loop.f = poll  # the running LoopingCall's function
    peak_used = 0.0
    done_at = None
    end = t0 + limit_hours * HOUR
    at_done = None
    while clock.seconds() < end:
        loop.flush()
        peak_used = max(peak_used, loop.emulator.budget.used(loop.emulator.device_time()))
        if done_at is None and backfill.frames and backfill.missing == 0 and backfill.written:
            done_at = clock.seconds()
            # Then the steady state: a new slot every half hour.
            at_done = (backfill.frames, backfill.written, len(wire.sends), len(ticks))
            cpu_done = time.process_time() - cpu0
            end = done_at + after_hours * HOUR
        calls = [c.getTime() for c in clock.getDelayedCalls()]
        if not calls:
            break
        clock.advance(max(0.0, min(min(calls), end) - clock.seconds()))
    loop.flush()
    cpu = time.process_time() - cpu0
    meter_now = loop.emulator.meter_now()
    stats = poller.stats
    # Taken before stopping: a poll in flight at the end is not a failure.
    answered, failed, skipped = stats.polls_answered, stats.polls_failed, stats.polls_skipped
    in_flight = poller._polling
    poller.stopService()
    datalog.close()
    loop.flush()
    loop.stop()

    records = []
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), encoding="utf-8") as f:
            records += [r for r in map(json.loads, f) if r.get("kind") == "history"]
    shutil.rmtree(logdir, ignore_errors=True)
    unit = M.UNITS[config.unit] * (config.coefficient or 1)
    wrong, nulls, problems = check_slots(records, loop.emulator.meter, unit)
    slots = [r["slot"] for r in records]
    # The window as of 5 minutes before the end: a slot that ended in the
    # last seconds of the run may not have been read yet.
    want = expected_slots(meter_now - datetime.timedelta(minutes=5), days)

    after = {}
    if at_done is not None:
        later = wire.sends[at_done[2]:]
        after = {"hours": (clock.seconds() - done_at) / HOUR,
                 "frames": backfill.frames - at_done[0], "written": backfill.written - at_done[1],
                 "history_sksendto": sum(1 for s in later if s[2] == "history"),
                 "poll_sksendto": sum(1 for s in later if s[2] == "poll"),
                 "sources": dict(collections.Counter(r.get("source") for r in records[at_done[1]:]))}
    history = [(t, a) for t, _, k, a in wire.sends[:at_done[2] if at_done else None]
               if k == "history"]
    first_history = history[0][0] if history else None
    stop = clock.seconds()  # pacing: over the backfill and the steady state after it
    # Pacing: each tick's first E7 Get at or after it, for ticks while the
    # backfill ran (from its first frame to the end).
    delays = []
    for tick in ticks:
        if first_history is None or not first_history <= tick <= stop - 5:
            continue
        later = [g for g in wire.poll_gets if g >= tick]
        delays.append(later[0] - tick if later and later[0] < tick + 30 else None)
    exchanges = wire.exchanges()
    air_hour, frames_hour = wire.busiest_hour("history")
    sources = collections.Counter(r.get("source") for r in records)
    return {
        "days": days, "meter": "ec" if ec else "e2", "dialect": dialect.value, "seed": seed,
        "written": backfill.written, "records": len(records), "distinct": len(set(slots)),
        "expected": len(want), "missing_in_window": len(set(want) - set(slots)),
        "sources": dict(sources), "nulls": nulls,
        "logged_nulls": sum(1 for r in records if r.get("energy_normal_kwh") is None),
        "frames": at_done[0] if at_done else backfill.frames, "history_sksendto": len(history),
        "sksendto": len(wire.sends[:at_done[2] if at_done else None]),
        "poll_sksendto": sum(1 for s in wire.sends[:at_done[2] if at_done else None]
                             if s[2] == "poll"),
        "done_s": None if done_at is None else done_at - t0,
        "first_history_s": None if first_history is None else first_history - t0,
        "exchanges": len(exchanges),
        "exchange_mean": sum(exchanges) / len(exchanges) if exchanges else None,
        "exchange_min": min(exchanges, default=None), "exchange_max": max(exchanges, default=None),
        "after": after, "cpu_backfill_s": cpu_done if at_done else None,
        "airtime": sum(a for _, a in history), "airtime_hour": air_hour,
        "frames_hour": frames_hour, "module_peak_used": peak_used,
        "wrong": wrong, "problems": problems,
        "ticks": len(ticks), "ticks_to_done": at_done[3] if at_done else None,
        "expected_ticks_to_done": int((done_at - t0) // 30) + 1 if at_done else None,
        "ticks_backfill": len(delays),
        "expected_ticks": int((stop - t0) // 30) + 1,
        "polls_answered": answered, "polls_failed": failed, "polls_skipped": skipped,
        "poll_in_flight": int(in_flight),
        "delay_max": max((d for d in delays if d is not None), default=None),
        "delay_mean": (sum(d for d in delays if d is not None) / max(1, sum(d is not None for d in delays))),
        "undelivered": sum(d is None for d in delays),
        "cpu_s": cpu,
    }


def report(r: dict) -> None:
    def f(v, fmt="%.1f"):
        return "n/a" if v is None else fmt % v
    print("== %d days, %s meter, %s dialect, seed %d" % (r["days"], r["meter"].upper(),
                                                      r["dialect"], r["seed"]))
    print("slots written             %d (log %d, distinct %d; window %d, missing %d); sources %s;"
          " null energy %d (truth: %d)" % (
              r["written"], r["records"], r["distinct"], r["expected"], r["missing_in_window"],
              ", ".join("%s %d" % kv for kv in sorted(r["sources"].items())), r["logged_nulls"],
              r["nulls"]))
    print("frames to missing == 0    backfill.frames %d, history SKSENDTO %d (%.2f a day); "
          "all SKSENDTO %d (polls %d)" % (r["frames"], r["history_sksendto"],
                                          r["history_sksendto"] / r["days"], r["sksendto"],
                                          r["poll_sksendto"]))
    print("wall time (simulated)     %s s to missing == 0 (first history frame at %s s: %s s of"
          " backfill)" % (f(r["done_s"]), f(r["first_history_s"]),
                          f(None if r["done_s"] is None or r["first_history_s"] is None
                            else r["done_s"] - r["first_history_s"])))
    print("exchange time             mean %s s (%s-%s s, %d Gets answered)"
          % (f(r["exchange_mean"], "%.3f"), f(r["exchange_min"], "%.3f"),
             f(r["exchange_max"], "%.3f"), r["exchanges"]))
    print("airtime (history)         %.3f s to missing == 0; busiest rolling hour %.3f s (%d frames) = %.3f %%"
          " of %g s; module's whole use at most %.3f s = %.3f %%"
          % (r["airtime"], r["airtime_hour"], r["frames_hour"],
             100 * r["airtime_hour"] / ARIB_BUDGET, ARIB_BUDGET, r["module_peak_used"],
             100 * r["module_peak_used"] / ARIB_BUDGET))
    print("ground truth              %d slots checked (backfill and after), wrong %d  [target 0]"
          % (r["records"], r["wrong"]))
    for p in r["problems"]:
        print("  WRONG " + p)
    a = r["after"]
    if a:
        print("steady state after        %.1f h: %d slots written, backfill.frames %d, history"
              " SKSENDTO %d (%.2f a slot), poll SKSENDTO %d; sources %s"
              % (a["hours"], a["written"], a["frames"], a["history_sksendto"],
                 a["history_sksendto"] / max(1, a["written"]), a["poll_sksendto"],
                 ", ".join("%s %d" % kv for kv in sorted(a["sources"].items())) or "none"))
    print("polls                     to missing == 0: %s ticks (%s expected at 30 s); whole run:"
          " %d ticks (%d expected), answered %d, failed %d, skipped %d, in flight at the end %d"
          % (r["ticks_to_done"], r["expected_ticks_to_done"], r["ticks"], r["expected_ticks"],
             r["polls_answered"], r["polls_failed"], r["polls_skipped"], r["poll_in_flight"]))
    print("poll delay                %d ticks from the first history frame on: tick -> E7 SKSENDTO"
          " max %s s, mean %s s; no Get %d" % (r["ticks_backfill"], f(r["delay_max"], "%.3f"),
                                              f(r["delay_mean"], "%.3f"), r["undelivered"]))
    print("CPU                       %s s to missing == 0, %.2f s in all"
          % (f(r["cpu_backfill_s"], "%.2f"), r["cpu_s"]))


def ok(r: dict) -> bool:
    return (r["done_s"] is not None and r["wrong"] == 0 and r["missing_in_window"] == 0
            and r["distinct"] == r["records"] and r["undelivered"] == 0
            and r["delay_max"] is not None and r["delay_max"] < 1.0
            and r["polls_answered"] + r["poll_in_flight"] == r["ticks"] == r["expected_ticks"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=lambda s: [int(x) for x in s.split(",") if x], default=[7, 45],
                    help="comma-separated backfill windows in days (default 7,45)")
    ap.add_argument("--seed", type=int, default=1, help="emulator and poller seed (default 1)")
    ap.add_argument("--meter", choices=("ec", "e2", "both"), default="both",
                    help="ec: a meter with EC/ED; e2: E2/E4 only (default both)")
    ap.add_argument("--dialect", choices=("standard", "dse", "both"), default="both")
    ap.add_argument("--start", type=datetime.datetime.fromisoformat, default=START,
                    help="the meter's clock at the start (default %s)" % START.isoformat())
    ap.add_argument("--after-hours", type=float, default=2.0,
                    help="keep running this many simulated hours after missing == 0 for the"
                         " steady state (default 2)")
    ap.add_argument("--limit-hours", type=float, default=6.0,
                    help="give up after this many simulated hours (default 6)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every run finished with 0 wrong values, every slot once,"
                         " every poll answered and its Get within 1 s of its tick")
    args = ap.parse_args(argv)
    levels = collections.Counter()
    globalLogBeginner.beginLoggingTo(
        [lambda e: levels.update([e.get("log_level", LogLevel.info).name])],
        redirectStandardIO=False, discardBuffer=True)
    meters = {"ec": [True], "e2": [False], "both": [True, False]}[args.meter]
    dialects = {"standard": [Dialect.STANDARD], "dse": [Dialect.DSE],
                "both": [Dialect.STANDARD, Dialect.DSE]}[args.dialect]
    results = []
    for days in args.days:
        for ec in meters:
            for dialect in dialects:
                r = run_one(days, ec, dialect, args.seed, args.limit_hours, args.start,
                             args.after_hours)
                report(r)
                results.append(r)
    print("log events                %s" % ", ".join("%s %d" % kv for kv in sorted(levels.items())))
    good = all(ok(r) for r in results)
    print("targets                   %s" % ("met" if good else "MISSED"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
    return 0 if good or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
