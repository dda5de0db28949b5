#!/usr/bin/env python3
"""
Throughput of the protocol + ECHONET stack against the emulator in
zero-latency mode, in one process, on one core.

The product's client stack (SKStackProtocol, EchonetRequester, BRouteClient)
talks to the emulator's module (ModuleProtocol + Emulator, time_scale=0)
through a minimal in-memory transport pair, on a task.Clock: no pty, no
reactor, no sleeping.  Each reading is one BRouteClient.read() of E7+E8 (one
SKSENDTO, EVENT 21, OK, binary ERXUDP Get_Res), decoded with
echonet.meter.decode_reading exactly as the service does, then checked against
the emulator's ground truth for that TID (raw EDT bytes and decoded values).

Harness notes (not client cost):
 - The emulator's ground-truth list (Emulator.truth) would grow without bound:
   the bench consumes each record through Emulator.truth_sinks and clears the
   list after every reading, so RSS growth is the client's (and the harness's).
 - Simulated time advances --step seconds per reading (default 10 ms), and the
   emulator's ARIB budget is made effectively unlimited with a window of one
   step: with a frozen clock (or a long window) its per-send budget accounting
   keeps every send and sums them all on each send, and 100,000 sends exceed
   the real 360 s/h budget (EVENT 32).

Run:  python bench/throughput.py [--readings 100000] [--check]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # run from a checkout without installing too

from twisted.internet import defer  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.logger import (  # noqa: E402
    FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner,
)
from twisted.python.failure import Failure  # noqa: E402

from smartmeter_tx.session import client as C  # noqa: E402
from smartmeter_tx.session import join  # noqa: E402
from smartmeter_tx.echonet import meter as M  # noqa: E402
from smartmeter_tx.emulator.module import (  # noqa: E402
    DEFAULT_ID, DEFAULT_PASSWORD, Emulator, EmulatorConfig, ModuleProtocol,
)
from smartmeter_tx.sk.protocol import SKStackProtocol  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_now_kb() -> int:
    """Current resident set size (from /proc/self/statm), KiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE // 1024
    except OSError:
        return -1


def rss_max_kb() -> int:
    """Peak resident set size (getrusage ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Pipe:
    """One direction of an in-memory byte link: the writer's transport."""

    disconnecting = False

    def __init__(self) -> None:
        self.chunks: list = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def writeSequence(self, seq) -> None:
        self.chunks.extend(seq)

    def loseConnection(self) -> None:
        self.closed = True

    abortConnection = loseConnection

    def getPeer(self):
        return None

    def getHost(self):
        return None

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


class Harness:
    """The client stack wired to the emulated module."""

    def __init__(self, step: float, seed: int = 0) -> None:
        self.clock = Clock()
        self.step = step
        # An ARIB window of one step: the emulator's budget accounting keeps
        # one or two sends instead of all of them (see the module docstring).
        config = EmulatorConfig(time_scale=0.0, seed=seed, tx_budget=1e12,
                                tx_window=step if step > 0 else 1.0)
        self.emulator = Emulator(config, self.clock)
        self.truth: dict = {}
        self.emulator.truth_sinks.append(self._sink)
        self.module = ModuleProtocol(self.emulator)
        self.sk = SKStackProtocol(clock=self.clock)
        self.to_module = Pipe()   # the host's transport: bytes for the module
        self.to_host = Pipe()     # the module's transport: bytes for the host
        self.sk.makeConnection(self.to_module)
        self.module.makeConnection(self.to_host)
        creds = join.Credentials(DEFAULT_ID, DEFAULT_PASSWORD)
        self.client = C.BRouteClient(self.sk, creds, self.clock)
        # The client keeps no list of unsolicited frames: count them here.
        self.unsolicited = 0
        self.client.add_frame_listener(self._unsolicited)
        self.wrong = 0
        self.missing_truth = 0
        self.stalled = 0
        self.errors = 0

    def _unsolicited(self, frame, rxudp) -> None:
        self.unsolicited += 1

    def _sink(self, record) -> None:
        self.truth.setdefault(record.tid, {})[record.epc] = record

    def pump(self) -> None:
        to_module, to_host = self.to_module, self.to_host
        while to_module.chunks or to_host.chunks:
            if to_module.chunks:
                self.module.dataReceived(to_module.take())
            if to_host.chunks:
                self.sk.dataReceived(to_host.take())

    def run(self, coro, limit: float = 600.0):
        """Run a coroutine of the client to its end (pumping, and jumping
        simulated time to the next timer only when nothing else moves)."""
        box = []
        d = defer.Deferred.fromCoroutine(coro)
        d.addBoth(box.append)
        end = self.clock.seconds() + limit
        while not box:
            self.pump()
            if box:
                break
            calls = [c.getTime() for c in self.clock.getDelayedCalls()]
            if not calls or min(calls) > end:
                d.cancel()
                break
            self.clock.advance(max(0.0, min(calls) - self.clock.seconds()))
        result = box[0] if box else None
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def setup(self) -> None:
        """First reading: SKINFO, echo off, scan, join, Get (as a cold client)."""
        frame = self.run(self.client.read(C.POWER_EPCS))
        self.check(frame)

    def check(self, frame) -> None:
        records = self.truth.pop(frame.tid, None)
        self.emulator.truth.clear()
        if records is None:
            self.missing_truth += 1
            self.wrong += 1
            return
        reading = M.decode_reading(frame.properties, self.client.scale)
        ok = True
        for p in frame.properties:
            r = records.get(p.epc)
            if r is None or r.edt != p.edt:
                ok = False
        e7, e8 = records.get(M.POWER), records.get(M.CURRENT)
        if e7 is None or reading.power_w != e7.value:
            ok = False
        if e8 is None or [reading.current_r_a, reading.current_t_a] != list(e8.value):
            ok = False
        if not ok:
            self.wrong += 1

    def readings(self, n: int) -> None:
        """n readings, each one client.read() driven to completion."""
        client, clock, pump, step = self.client, self.clock, self.pump, self.step
        epcs = C.POWER_EPCS
        check = self.check
        for _ in range(n):
            box = []
            d = defer.Deferred.fromCoroutine(client.read(epcs))
            d.addBoth(box.append)
            pump()
            if not box:
                # Not expected at time_scale 0: let timers run (counts as stalled).
                self.stalled += 1
                d.addErrback(lambda f: None)
                while not box and clock.getDelayedCalls():
                    clock.advance(min(c.getTime() for c in clock.getDelayedCalls())
                                  - clock.seconds())
                    pump()
                if not box:
                    d.cancel()
                    continue
            result = box[0]
            if isinstance(result, Failure):
                self.errors += 1
            else:
                check(result)
            if step:
                clock.advance(step)


LOG_COUNTS: dict = {}


def start_logging() -> None:
    """
    Begin logging as a deployed process does (twist logs at level info), to
    an observer that only counts.  Without this, Twisted buffers every event
    (up to 65,536) until logging begins, which would count as growth.
    """
    def count(event):
        level = event.get("log_level")
        name = level.name if level is not None else "?"
        LOG_COUNTS[name] = LOG_COUNTS.get(name, 0) + 1

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(count, [predicate])],
                                     discardBuffer=True, redirectStandardIO=False)


def fmt_kb(kb: float) -> str:
    return f"{kb / 1024:.1f} MiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=100_000, help="readings measured (default 100000)")
    p.add_argument("--warmup", type=int, default=5_000, help="readings before measuring (default 5000)")
    p.add_argument("--runs", type=int, default=3, help="timed runs the readings are split into (default 3)")
    p.add_argument("--step", type=float, default=0.01,
                   help="simulated seconds between readings (default 0.01)")
    p.add_argument("--cpu", type=int, default=None,
                   help="pin to this CPU (default: the first CPU this process may use)")
    p.add_argument("--trace-readings", type=int, default=20_000,
                   help="afterwards, readings measured under tracemalloc to attribute memory "
                        "growth by package (0 = skip; default 20000)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="afterwards, profile N readings with cProfile and print the top costs")
    p.add_argument("--check", action="store_true",
                   help="exit 1 unless >= 500 readings/s, RSS growth < 2 MB per 100,000 "
                        "readings and 0 wrong values")
    args = p.parse_args(argv)
    if args.readings < args.runs or args.runs < 1:
        p.error("--readings must be at least --runs")

    cpu = None
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        cpu = args.cpu if args.cpu is not None else allowed[0]
        os.sched_setaffinity(0, {cpu})
    print(f"python {sys.version.split()[0]}, pinned to CPU {cpu} (single-threaded: one core)")

    start_logging()
    gc.collect()
    rss_start, max_start = rss_now_kb(), rss_max_kb()
    h = Harness(args.step)
    t0 = time.perf_counter()
    h.setup()
    print(f"setup (SKINFO, scan, join, first Get, simulated): {time.perf_counter() - t0:.3f} s wall, "
          f"{len(h.client.steps)} SK steps")
    h.readings(args.warmup)
    gc.collect()
    rss_warm, max_warm = rss_now_kb(), rss_max_kb()

    rates, cpu_per = [], []
    per_run = [args.readings // args.runs] * args.runs
    per_run[-1] += args.readings - sum(per_run)
    for n in per_run:
        c0, w0 = time.process_time(), time.perf_counter()
        h.readings(n)
        w1, c1 = time.perf_counter(), time.process_time()
        rates.append(n / (w1 - w0))
        cpu_per.append((c1 - c0) / n * 1e6)
    gc.collect()
    rss_end, max_end = rss_now_kb(), rss_max_kb()
    total = args.warmup + args.readings + 1
    growth = (rss_end - rss_warm) / args.readings * 100_000

    print(f"readings measured: {args.readings} in {args.runs} runs "
          f"(+{args.warmup} warm-up, +1 setup); simulated time {h.clock.seconds():.0f} s")
    print(f"readings/s: median {statistics.median(rates):.0f} min {min(rates):.0f} "
          f"max {max(rates):.0f} (n={len(rates)}; in order: "
          f"{' '.join(f'{r:.0f}' for r in rates)})")
    print(f"CPU us/reading: median {statistics.median(cpu_per):.0f} min {min(cpu_per):.0f} "
          f"max {max(cpu_per):.0f}")
    print(f"frames sent (SKSENDTO) by the requester: {h.client.requester.frames_sent} "
          f"for {total} readings")
    print(f"wrong values: {h.wrong} (missing truth {h.missing_truth}); failed reads: {h.errors}; "
          f"reads needing a timer: {h.stalled}")
    print("RSS counts the whole process: client stack, emulator (its ground-truth list is "
          "consumed and cleared per reading), harness, interpreter")
    print(f"RSS current: start {fmt_kb(rss_start)}, after warm-up {fmt_kb(rss_warm)}, "
          f"after {args.readings} readings {fmt_kb(rss_end)}")
    print(f"RSS peak (ru_maxrss): start {fmt_kb(max_start)}, after warm-up {fmt_kb(max_warm)}, "
          f"end {fmt_kb(max_end)}")
    print(f"RSS growth per 100,000 readings (current, after warm-up -> end): {growth / 1024:.2f} MiB"
          + (" (extrapolated from a short run: RSS moves in pages and arena steps, use "
             ">= 50000 readings)" if args.readings < 50_000 else ""))
    print(f"log events at info and above: {dict(sorted(LOG_COUNTS.items())) or 'none'}")
    steps = h.client.steps
    print(f"client lists: BRouteClient.steps {len(steps)} entries "
          f"({sys.getsizeof(steps) / 1024:.0f} KiB), "
          f"unsolicited frames seen {h.unsolicited}, requester pending {h.client.requester.pending}")

    if args.trace_readings:
        trace(h, args.trace_readings)

    if args.profile:
        profile(h, args.profile)

    failed = []
    if statistics.median(rates) < 500:
        failed.append("throughput < 500 readings/s")
    if args.readings < 100_000:
        # A page or two of allocator growth over a short run extrapolates to
        # megabytes: the memory target is only judged on a full run.
        print("(RSS growth extrapolated from a short run: not judged; use --readings 100000)")
    elif growth >= 2_000_000 / 1024:  # KiB per 100k vs 2 MB
        failed.append("RSS growth >= 2 MB per 100,000 readings")
    if h.wrong or h.errors:
        failed.append("wrong values or failed reads")
    print("targets: >= 500 readings/s, RSS growth < 2 MB/100k, 0 wrong values: "
          + ("met" if not failed else "MISSED: " + "; ".join(failed)))
    return 1 if (args.check and failed) else 0


GROUPS = (
    ("client stack (smartmeter_tx/sk, echonet, session, model, redact)",
     ("smartmeter_tx/sk/", "smartmeter_tx/echonet/", "smartmeter_tx/session/",
      "smartmeter_tx/model.py", "smartmeter_tx/redact.py")),
    ("emulator (smartmeter_tx/emulator)", ("smartmeter_tx/emulator/",)),
    ("twisted", ("/twisted/",)),
)


def trace(h: Harness, n: int) -> dict:
    """Net memory still allocated after n more readings, by where it was allocated."""
    import tracemalloc
    tracemalloc.start(1)
    gc.collect()
    before = tracemalloc.take_snapshot()
    t0 = time.perf_counter()
    h.readings(n)
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    stats = after.compare_to(before, "lineno")
    sums = {name: 0 for name, _ in GROUPS}
    sums["other (stdlib, bench harness)"] = 0
    top = []
    for s in stats:
        fname = s.traceback[0].filename.replace(os.sep, "/")
        for name, parts in GROUPS:
            if any(part in fname for part in parts):
                sums[name] += s.size_diff
                break
        else:
            sums["other (stdlib, bench harness)"] += s.size_diff
        if s.size_diff > 0:
            top.append(s)
    print(f"tracemalloc: {n} more readings traced ({elapsed:.1f} s); allocations still live "
          "afterwards minus before, by the file that allocated them (a list that grew shows "
          "its whole reallocated buffer):")
    for name, size in sums.items():
        print(f"  {name}: {size / 1024:+.1f} KiB")
    top.sort(key=lambda s: -s.size_diff)
    for s in top[:5]:
        frame = s.traceback[0]
        where = frame.filename.replace(os.sep, "/")
        where = where[where.find("smartmeter_tx/"):] if "smartmeter_tx/" in where else where
        print(f"  top: {where}:{frame.lineno} {s.size_diff / 1024:+.1f} KiB "
              f"({s.count_diff:+d} blocks)")
    return sums


def profile(h: Harness, n: int) -> None:
    import cProfile
    import io
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    h.readings(n)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
    print(f"cProfile of {n} readings, top 20 by own time:")
    print(out.getvalue())


if __name__ == "__main__":
    sys.exit(main())
