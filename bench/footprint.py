#!/usr/bin/env python
"""
What C{twist smartmeter} costs a small board while it runs: CPU per reading,
wake-ups between polls, and memory.

The service runs as users run it (C{--data-log}, C{--http} on loopback, no
MQTT and no Home Assistant unless C{--with} adds them) against a
C{smartmeter-emulator} process at calibrated radio latency (C{--time-scale
1}) on a pty, or against the device given with C{--device}.  A first,
untimed start makes the state file; the measured start reuses it, as every
start after the first does.  After the backfill is done and one more reading
is logged, the script reads the service's counters from C{/proc} (nothing
that wakes it) for C{--polls} readings:

 - CPU per reading: the CPU time of all its threads (C{schedstat}, in ns)
   over the readings logged meanwhile; the idle time between polls included;
 - wake-ups a minute between polls: voluntary context switches (each time
   the process goes back to sleep) in the windows from 1 s after a reading
   was logged to 2 s before the next poll is due;
 - RSS at the start and at the end of the window (growth shows here);
 - the first reading: seconds from the start to the first reading logged.

Each run is repeated C{--runs} times (median, min, max).  With C{--profile}
a further run at zero latency and C{--interval 1} is profiled (cProfile,
switched on and off by signals once the backfill is done), and the script
prints Python function calls per reading and the functions that make them.
With C{--imports} it prints what each layer of the service's imports adds
to the RSS (one child a row), and what MQTT, HA and TLS would add.
C{--python} runs the service with another interpreter: a venv with the plain
install, as users have it (the test extras bring pyOpenSSL, which Twisted
loads along with TCP).

    venv/bin/python bench/footprint.py [--polls 24] [--interval 10] [--runs 2]
        [--device PATH] [--python PY] [--checkout DIR] [--profile] [--imports]
        [--check]

C{--check} exits 1 unless the median CPU per reading is at most
C{--cpu-target} ms (2.5: the Go exporter measured the same way), there are no
wake-ups between polls, the RSS is at most C{--rss-target} MB (30) and did
not grow, and the first reading came within 5 s.
"""

from __future__ import annotations

import argparse
import atexit
import glob
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import oneshot  # noqa: E402
from oneshot import PY, Emulator, _cleanup, _spawn, _stop, free_port  # noqa: E402

#: Seconds the window between two polls keeps clear of each: a poll at this
#: latency takes under a second, and its log line and fsync follow it.
AFTER_READING = 1.0
BEFORE_POLL = 2.0

#: What the service imports, in layers (each row on top of the rows before),
#: for --imports.
IMPORTS = [
    ("python -c pass", ""),
    ("+ twisted.internet.reactor (epoll)", "import twisted.internet.reactor"),
    ("+ twisted.internet.serialport", "import twisted.internet.serialport"),
    ("+ twisted.web.server", "import twisted.web.server"),
    ("+ twisted.web.template", "import twisted.web.template"),
    ("+ the service's modules", "import smartmeter_tx.cli.tap, smartmeter_tx.service.tree, "
     "smartmeter_tx.service.backfill, smartmeter_tx.outputs.web"),
    ("+ twist's runner and plugins", "import twisted.application.twist._twist\n"
     "from twisted.plugin import getPlugins\n"
     "from twisted.application.service import IServiceMaker\n"
     "list(getPlugins(IServiceMaker))"),
]
#: What an optional part adds on top of all of IMPORTS, each alone.
OPTIONAL = [
    ("+ paho.mqtt (--mqtt)", "import paho.mqtt.client, smartmeter_tx.outputs.mqtt.publisher"),
    ("+ autobahn (--ha-url)", "import smartmeter_tx.outputs.homeassistant.importer"),
    ("+ Twisted's TLS (pyOpenSSL, with [homeassistant])", "import twisted.internet.ssl"),
    ("+ prometheus_client (not used since /metrics is written here)", "import prometheus_client"),
]

PROFILED = r"""
import cProfile, signal, sys
profile = cProfile.Profile()
path = sys.argv.pop(1)
def on(*_):
    profile.enable()
def off(*_):
    profile.disable()
    profile.dump_stats(path)
signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
sys.argv[0] = "twist"
from twisted.application.twist._twist import Twist
Twist.main()
"""


def cpu_ns(pid: int) -> int:
    """The CPU time of every thread of C{pid}, in ns."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def switches(pid: int) -> int:
    """Voluntary context switches of every thread of C{pid}."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def readings(data: str) -> int:
    """Reading records in the data log (history records have a C{kind})."""
    n = 0
    for path in glob.glob(os.path.join(data, "*.jsonl")):
        with open(path, encoding="utf-8", errors="replace") as f:
            n += sum(1 for line in f if line.endswith("\n") and '"kind"' not in line)
    return n


class Service:
    """C{twist smartmeter} in a child process, its log in a file."""

    def __init__(self, tmp, device, interval, checkout, extra=(), profile=None, python=PY):
        self.data = os.path.join(tmp, "data")
        self.log = os.path.join(tmp, f"twist-{time.monotonic_ns()}.log")
        self.port = free_port()
        args = ["smartmeter", "--device", device, "--interval", str(interval),
                "--state-file", os.path.join(tmp, "state.json"), "--data-log", self.data,
                "--http", f"tcp:{self.port}:interface=127.0.0.1", *extra]
        if profile:
            cmd = [python, "-c", PROFILED, profile, *args]
        else:
            cmd = [python, "-m", "twisted", *args]
        self.out = open(self.log, "ab")
        self.started = time.monotonic()
        self.p = _spawn(cmd, root=checkout, stdout=self.out, stderr=subprocess.STDOUT)

    def said(self, fragment: str) -> bool:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return fragment in f.read()

    def wait(self, predicate, what: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.p.poll() is not None:
                raise RuntimeError(f"the service exited ({self.p.returncode}) while waiting for "
                                   f"{what}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} within {timeout:.0f} s; see {self.log}")
            time.sleep(0.02)
        return time.monotonic()

    def stop(self):
        _stop(self.p, 10.0)
        self.out.close()


def measure(tmp, device, args, extra=()) -> dict:
    """One measured start of the service (the state file made before)."""
    service = Service(tmp, device, args.interval, args.checkout, extra, python=args.python)
    try:
        before = readings(service.data)
        first = service.wait(lambda: readings(service.data) > before, "first reading", 60)
        first_s = first - service.started
        service.wait(lambda: service.said("backfill done"), "end of the backfill", 600)
        base = readings(service.data)
        service.wait(lambda: readings(service.data) > base, "reading after the backfill", 60)
        pid = service.p.pid
        n0, cpu0, rss0 = readings(service.data), cpu_ns(pid), rss_mb(pid)
        seen = n0
        last_at = time.monotonic()
        idle_s, idle_switches = 0.0, 0
        while seen < n0 + args.polls:
            # One window a poll: from just after the reading to before the next poll.
            start = last_at + AFTER_READING
            end = last_at + args.interval - BEFORE_POLL
            time.sleep(max(0.0, start - time.monotonic()))
            if end - start > 1.0 and readings(service.data) == seen:
                at = switches(pid)
                time.sleep(max(0.0, end - time.monotonic()))
                if readings(service.data) == seen:  # no poll came early
                    idle_switches += switches(pid) - at
                    idle_s += end - start
            last_at = service.wait(lambda: readings(service.data) > seen, "next reading",
                                   args.interval * 3 + 30)
            seen = readings(service.data)
        cpu1, n1 = cpu_ns(pid), readings(service.data)
        result = {
            "first_s": first_s,
            "cpu_ms": (cpu1 - cpu0) / 1e6 / (n1 - n0),
            "wakeups_min": idle_switches / idle_s * 60 if idle_s else float("nan"),
            "idle_s": idle_s,
            "rss0": rss0,
            "rss1": rss_mb(pid),
            "readings": n1 - n0,
        }
        return result
    finally:
        service.stop()


def prime(tmp, device, args, extra=()):
    """Start once to make the state file (a scan), untimed."""
    service = Service(tmp, device, args.interval, args.checkout, extra, python=args.python)
    try:
        service.wait(lambda: readings(service.data) >= 1, "first reading", 120)
    finally:
        service.stop()


def profile(tmp, args) -> None:
    """Python calls per reading at zero latency, in the steady state."""
    emu = Emulator(tmp, 0)
    out = os.path.join(tmp, "service.prof")
    try:
        service = Service(tmp, emu.link, 1, args.checkout, profile=out, python=args.python)
        try:
            service.wait(lambda: service.said("backfill done"), "end of the backfill", 600)
            base = readings(service.data)
            service.wait(lambda: readings(service.data) > base, "reading after the backfill", 30)
            n0 = readings(service.data)
            cpu0 = cpu_ns(service.p.pid)
            os.kill(service.p.pid, signal.SIGUSR1)
            service.wait(lambda: readings(service.data) >= n0 + args.profile_polls,
                         "profiled readings", args.profile_polls * 3 + 30)
            os.kill(service.p.pid, signal.SIGUSR2)
            cpu1 = cpu_ns(service.p.pid)
            n1 = readings(service.data)
            service.wait(lambda: os.path.exists(out), "profile", 30)
            time.sleep(0.5)  # dump_stats writes in one go; let it finish
        finally:
            service.stop()
    finally:
        emu.stop()
    stats = pstats.Stats(out)
    n = n1 - n0
    print(f"profiled at zero latency, --interval 1: {n} readings, "
          f"{stats.total_calls / n:.0f} Python calls per reading, "
          f"{(cpu1 - cpu0) / 1e6 / n:.2f} ms CPU per reading (under the profiler)")
    print("  the 12 functions with the most own time:")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    for (path, line, name), (cc, nc, tt, ct, _) in rows:
        where = path.replace(ROOT + os.sep, "").replace(sys.prefix + os.sep, "")
        print(f"    {nc / n:7.1f} calls {tt / n * 1e3:6.3f} ms  {name} ({where}:{line})")


def _rss_after(python: str, checkout: str, statements: list) -> Optional[float]:
    code = "\n".join(statements) + (
        "\nprint(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True,
                         cwd=checkout, env=oneshot._env(checkout))
    return int(out.stdout.split()[-1]) / 1024 if out.returncode == 0 else None


def imports(python: str, checkout: str) -> None:
    """What each layer of the service's imports adds to the RSS (one child a row)."""
    print(f"memory of the imports (RSS after them, one child a row; {python}):")
    # Bytecode compiled first: compiling leaves garbage that an RSS would count.
    for _, statement in OPTIONAL:
        _rss_after(python, checkout, [s for _, s in IMPORTS] + [statement])
    done: list = []
    last = None
    for label, statement in IMPORTS:
        done.append(statement)
        mb = _rss_after(python, checkout, done)
        if mb is None:
            print(f"  {label}: failed")
            return
        print(f"  {label}: {mb:.1f} MB" + (f" ({mb - last:+.1f})" if last is not None else ""))
        last = mb
    for label, statement in OPTIONAL:
        mb = _rss_after(python, checkout, done + [statement])
        print(f"  {label}: " + ("not installed" if mb is None or last is None
                                else f"{mb - last:+.1f} MB"))


def median(values, fmt="{:.2f}"):
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    return (f"{fmt.format(statistics.median(values))} "
            f"({fmt.format(min(values))}-{fmt.format(max(values))})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--polls", type=int, default=24, help="readings measured per run (default 24)")
    ap.add_argument("--interval", type=int, default=10, help="--interval of the service (default 10)")
    ap.add_argument("--runs", type=int, default=2, help="measured runs (default 2)")
    ap.add_argument("--device", help="a real module's path instead of the emulator")
    ap.add_argument("--python", default=PY,
                    help="the interpreter that runs the service (default this one); e.g. "
                         "that of a venv with the plain install, as users have it: the test "
                         "extras bring pyOpenSSL, which Twisted loads with TCP")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="the emulator's latency (default 1: calibrated)")
    ap.add_argument("--checkout", default=ROOT,
                    help="run the service of another checkout (default this one)")
    ap.add_argument("--with", dest="extra", action="append", default=[],
                    help="one more argument for the service (repeat), e.g. --with=--mqtt=...")
    ap.add_argument("--profile", action="store_true",
                    help="also profile a run at zero latency: Python calls per reading")
    ap.add_argument("--profile-polls", type=int, default=100,
                    help="readings in the profiled run (default 100)")
    ap.add_argument("--imports", action="store_true", help="also print the memory of each import")
    ap.add_argument("--cpu-target", type=float, default=2.5, help="ms per reading (default 2.5)")
    ap.add_argument("--rss-target", type=float, default=30.0, help="MB (default 30)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    args.checkout = os.path.abspath(args.checkout)
    if args.device and not os.path.exists(args.device):
        ap.error(f"--device {args.device}: no such file")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    atexit.register(_cleanup)
    tmp = tempfile.mkdtemp(prefix="bench-footprint-")
    if not args.keep:
        atexit.register(shutil.rmtree, tmp, True)
    oneshot.PYCACHE = os.path.join(tmp, "pycache")
    results = []
    print(f"python: {args.python} (OpenSSL "
          f"{'importable' if _rss_after(args.python, args.checkout, ['import OpenSSL']) else 'not installed'})")
    print(f"twist smartmeter of {args.checkout}: --interval {args.interval}, --data-log, --http"
          + (f", {' '.join(args.extra)}" if args.extra else "")
          + f"; {args.device or f'smartmeter-emulator --time-scale {args.time_scale:g}'}; "
          f"{args.polls} readings a run")
    for run in range(args.runs):
        where = os.path.join(tmp, f"run{run}")
        os.makedirs(where)
        emu = None if args.device else Emulator(where, args.time_scale)
        device = args.device or emu.link
        try:
            prime(where, device, args, args.extra)
            r = measure(where, device, args, args.extra)
        finally:
            if emu is not None:
                emu.stop()
        results.append(r)
        print(f"run {run + 1}: {r['cpu_ms']:.2f} ms CPU per reading, {r['wakeups_min']:.1f} "
              f"wake-ups a minute between polls (in {r['idle_s']:.0f} s), RSS {r['rss0']:.1f} -> "
              f"{r['rss1']:.1f} MB, first reading {r['first_s']:.1f} s after the start")
    if not results:  # --runs 0: the profile or the imports alone
        if args.profile:
            os.makedirs(os.path.join(tmp, "profile"))
            profile(os.path.join(tmp, "profile"), args)
        if args.imports:
            imports(args.python, args.checkout)
        return 0
    print(f"CPU ms per reading: {median([r['cpu_ms'] for r in results])}")
    print(f"wake-ups a minute between polls: {median([r['wakeups_min'] for r in results], '{:.1f}')}")
    print(f"RSS MB at the end: {median([r['rss1'] for r in results], '{:.1f}')}; growth over the "
          f"window: {median([r['rss1'] - r['rss0'] for r in results], '{:+.1f}')}")
    print(f"first reading s (saved state): {median([r['first_s'] for r in results], '{:.1f}')}")
    if args.profile:
        os.makedirs(os.path.join(tmp, "profile"))
        profile(os.path.join(tmp, "profile"), args)
    if args.imports:
        imports(args.python, args.checkout)
    missed = []
    cpu = statistics.median([r["cpu_ms"] for r in results])
    if cpu > args.cpu_target:
        missed.append(f"CPU {cpu:.2f} ms per reading > {args.cpu_target}")
    if any(r["wakeups_min"] > 0.5 for r in results):
        missed.append("wake-ups between polls")
    if any(r["rss1"] > args.rss_target for r in results):
        missed.append(f"RSS over {args.rss_target} MB")
    if any(r["rss1"] - r["rss0"] > 1.0 for r in results):
        missed.append("RSS grew")
    if any(r["first_s"] > 5.0 for r in results):
        missed.append("first reading later than 5 s")
    print("targets: " + ("met" if not missed else "missed: " + "; ".join(missed)))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
