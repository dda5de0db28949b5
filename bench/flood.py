#!/usr/bin/env python
"""
Flood benchmark: how C{twist smartmeter} answers under a flood of HTTP
connections with a low open-file limit, against the same service idle.

The service runs as in L{tests.cli.test_flood} (which has the helpers): a
subprocess on the built-in emulator (time scale 0.01), C{--data-log},
C{--state-file}, C{--interval} (default 2 s), under C{ulimit -n}
C{--open-files} (default 64, so a cap of 32 HTTP connections).  Two windows of
C{--window} seconds each, one after the other:

 - idle: C{/metrics} is scraped C{--scrapes} times, evenly spread;
 - flood: C{--flood} connections (half idle, half sending a request line and
   no more) are opened at once at the start, and a quarter as many again at
   each of the window's next three quarters; C{/metrics} is scraped as in
   the idle window.

It prints, for each window, the latency of the scrapes (median and max, and
how many failed: reset or timed out), the ratio flood / idle, the polls
answered per poll interval in each window and their ratio, the connections
the service evicted, refused and timed out (and so took in: a burst over the
listen queue has the kernel drop the idle ones' handshake, which the service
then never sees), the most HTTP connections its C{/metrics} showed, the most
descriptors it had open (C{/proc/PID/fd}), the handshakes the kernel dropped
at a full listen queue (the whole host's C{ListenDrops}: a scrape whose
handshake is dropped waits 1 s for its retry), and whether the service's log
has EMFILE or a traceback.  C{--check} exits 1 unless no scrape failed, the slowest took
under 2 s, the polls went on at 3/4 of their idle pace or more, the cap
held, and the log is clean.

    venv/bin/python bench/flood.py                     # 300 connections, 8 s windows
    venv/bin/python bench/flood.py --flood 1000 --window 20 --check
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from smartmeter_tx.outputs.guard import default_max_connections  # noqa: E402
from tests.cli.test_flood import (  # noqa: E402
    ANSWERED, BAD_SIGNS, CLOSES, Flood, Twist, metrics,
)

#: Seconds to wait for the service's first reading before giving up.
START_TIMEOUT = 60.0
#: Seconds a scrape may take before it counts as failed.
SCRAPE_TIMEOUT = 10.0


def descriptors(pid: int) -> int:
    """@return: the descriptors process C{pid} has open now (0 once it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def listen_drops() -> int:
    """
    @return: the handshakes the kernel dropped at a full listen queue, all
        sockets together (C{TcpExt ListenDrops} of C{/proc/net/netstat}), or
        -1 where that is not there.
    """
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return -1
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split())).get("ListenDrops", -1))
    return -1


def scrape(twist):
    """@return: C{(seconds, figures)} of one C{/metrics}, or C{(None, error name)}."""
    t0 = time.monotonic()
    try:
        figures = metrics(twist.port, SCRAPE_TIMEOUT)
    except OSError as e:
        return None, type(e).__name__
    return time.monotonic() - t0, figures


def window(twist, args, flood=None) -> dict:
    """
    Scrape C{/metrics} C{args.scrapes} times over C{args.window} seconds;
    with C{flood} (a L{Flood}), open C{args.flood} connections at the start
    and a quarter as many at each quarter.

    @return: the window's figures.
    """
    start = metrics(twist.port, SCRAPE_TIMEOUT)
    drops = listen_drops()
    latencies, failures, connections, fds = [], [], [], []
    t0 = time.monotonic()
    quarters = 0
    for n in range(args.scrapes):
        if flood is not None:
            due = int((time.monotonic() - t0) / (args.window / 4))
            while quarters <= min(due, 3):
                flood.open(args.flood if quarters == 0 else args.flood // 4)
                quarters += 1
            flood.prune()  # the sockets the service closed: this process has limits too
        seconds, figures = scrape(twist)
        fds.append(descriptors(twist.process.pid))
        if seconds is None:
            failures.append(f"{figures} at {time.monotonic() - t0:.1f} s")
        else:
            latencies.append(seconds)
            connections.append(figures["smartmeter_http_connections"])
        time.sleep(max(0.0, t0 + (n + 1) * args.window / args.scrapes - time.monotonic()))
    elapsed = time.monotonic() - t0
    drops = listen_drops() - drops
    end = metrics(twist.port, SCRAPE_TIMEOUT)
    return dict(latencies=latencies, failures=failures, elapsed=elapsed, drops=drops,
                polls=end[ANSWERED] - start[ANSWERED],
                closes={name: end[name] - start[name] for name in CLOSES},
                connections=max(connections, default=0), fds=max(fds),
                opened=0 if flood is None else flood.opened)


def run(args, directory) -> dict:
    twist = Twist(directory, interval=args.interval, open_files=args.open_files)
    twist.start()
    flood = Flood(twist.port, default_max_connections(args.open_files))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while twist.answered(1.0) < 1:
            if time.monotonic() > deadline or twist.process.poll() is not None:
                raise RuntimeError("the service gave no reading; see " + twist.log)
            time.sleep(0.2)
        idle = window(twist, args)
        flooded = window(twist, args, flood)
    finally:
        flood.close()
        status = twist.stop()
    text = twist.log_text()
    return dict(idle=idle, flood=flooded, status=status,
                signs={sign: text.count(sign) for sign in BAD_SIGNS})


def ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def ratio(a, b) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def summary(w) -> dict:
    """The median and max latency of a window, C{None} when no scrape answered."""
    got = w["latencies"]
    return dict(median=statistics.median(got) if got else None, max=max(got, default=None))


def report(r, args, cap) -> bool:
    """Print the figures; @return: whether the targets are met."""
    idle, flood = r["idle"], r["flood"]
    a, b = summary(idle), summary(flood)
    rate = {k: w["polls"] / (w["elapsed"] / args.interval) for k, w in r.items()
            if k in ("idle", "flood")}
    print(f"== twist smartmeter, ulimit -n {args.open_files} (cap {cap} HTTP connections), "
          f"--interval {args.interval:g}, {args.window:g} s windows, {args.scrapes} scrapes each")
    for name, w, s in (("idle", idle, a), ("flood", flood, b)):
        failed = ", ".join(w["failures"]) or "none"
        print(f"/metrics {name:14s}  median {ms(s['median'])}, max {ms(s['max'])} "
              f"({len(w['latencies'])} answered; failed: {failed})")
    print(f"latency ratio           {ratio(b['median'], a['median'])} median, "
          f"{ratio(b['max'], a['max'])} max (flood / idle)")
    print(f"polls answered          idle {idle['polls']:g} in {idle['elapsed']:.1f} s "
          f"({rate['idle']:.2f} per interval), flood {flood['polls']:g} in "
          f"{flood['elapsed']:.1f} s ({rate['flood']:.2f} per interval), "
          f"ratio {ratio(rate['flood'], rate['idle'])}")
    closes = flood["closes"]
    taken = sum(closes.values())
    print(f"connections             {flood['opened']} opened, {taken:g} closed by the service: "
          + ", ".join(f"{name[len('smartmeter_http_'):-len('_total')]} {value:g}"
                     for name, value in closes.items()))
    print(f"listen queue drops      flood {flood['drops']}, idle {idle['drops']} (the whole "
          "host's; a dropped handshake is retried after 1 s)")
    slow = sum(1 for t in flood["latencies"] if t >= 0.5)
    print(f"slow scrapes            {slow} of the flood's took 0.5 s or more")
    print(f"max connections seen    {flood['connections']:g} (cap {cap}); idle "
          f"{idle['connections']:g}")
    print(f"max descriptors         flood {flood['fds']}, idle {idle['fds']} "
          f"(of {args.open_files})")
    print("log                     " + ", ".join(f"{k} {v}" for k, v in r["signs"].items())
          + f"; exit status {r['status']}")
    return (not flood["failures"] and b["max"] is not None and b["max"] < 2.0
            and rate["flood"] >= 0.75 * rate["idle"] and flood["connections"] <= cap
            and not any(r["signs"].values()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flood", type=int, default=300,
                    help="connections opened at the flood's start (a quarter as many again at "
                    "each of the window's next three quarters; default 300)")
    ap.add_argument("--window", type=float, default=8.0,
                    help="seconds of each window, idle and flood (default 8)")
    ap.add_argument("--scrapes", type=int, default=20,
                    help="/metrics scrapes in each window (default 20)")
    ap.add_argument("--interval", type=float, default=2.0,
                    help="the service's poll interval, seconds (default 2)")
    ap.add_argument("--open-files", type=int, default=64,
                    help="the service's open-file limit (default 64)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every scrape answered, within 2 s, the polls kept 3/4 "
                    "of their pace, the cap held and the log is clean")
    args = ap.parse_args(argv)
    if args.flood < 4 or args.window <= 0 or args.scrapes < 1 or args.interval < 1:
        ap.error("--flood must be >= 4, --window > 0, --scrapes >= 1, --interval >= 1")
    # SIGTERM ends the run through the finally clauses, which stop the service.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    directory = tempfile.mkdtemp(prefix="bench-flood-")
    t0 = time.monotonic()
    try:
        r = run(args, directory)
    finally:
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    good = report(r, args, default_max_connections(args.open_files))
    print(f"wall time               {time.monotonic() - t0:.1f} s")
    print("targets                 " + ("met" if good else "MISSED"))
    return 1 if args.check and not good else 0


if __name__ == "__main__":
    sys.exit(main())
