#!/usr/bin/env python3
"""
The one-shot plugin as mackerel-agent runs it, against the emulator at its
calibrated latency (--time-scale 1): wall time, the child's own CPU time
(user + sys from os.wait4) and radio use per run.

Run kinds:
  first  no state file, fresh emulator: scan + join + Get
  cold   state file present, fresh emulator (module has no PANA session):
         join without a scan + Get
  warm   one emulator for all runs (the module keeps its session): one Get
  service  'python -m twisted smartmeter --device emulator:' is started once;
         each run is 'mackerel-plugin-smartmeter --service http://127.0.0.1:PORT'

Radio use is counted from the plugin's '--verbosity 3' transcript on stderr
(lines '> SKSENDTO', '> SKJOIN', '> SKSCAN').  The printed power is checked
against the emulator's ground truth (--truth-log) for every serial run.

Run:  python bench/oneshot.py [--warm 10 --cold 3 --first 2 --service-runs 10] [--check]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
PLUGIN = [PY, "-c", "import sys; from smartmeter_tx.cli.plugin import main; sys.exit(main())"]
EMULATOR = [PY, "-m", "smartmeter_tx.emulator.cli"]
SERVICE = [PY, "-m", "twisted", "smartmeter"]
DEFAULT_ID = "00112233445566778899AABBCCDDEEFF"
DEFAULT_PASSWORD = "0123456789AB"

_children: list = []
#: Where the children keep compiled bytecode (see --pycache); None: as inherited.
PYCACHE = None
WARM_IMPORTS = ("import smartmeter_tx.cli.plugin, smartmeter_tx.session.client, smartmeter_tx.session.state, "
                "smartmeter_tx.outputs.mackerel, smartmeter_tx.sk.protocol, smartmeter_tx.echonet.requester, "
                "smartmeter_tx.emulator.cli, smartmeter_tx.emulator.device, smartmeter_tx.cli.tap, "
                "smartmeter_tx.service.poller, smartmeter_tx.outputs.web, twisted.internet.serialport, "
                "twisted.web.client, twisted.application.twist._twist, twisted.plugins.smartmeter_plugin")


def _env(root: str = ROOT) -> dict:
    env = dict(os.environ)
    if PYCACHE:
        # Bytecode cached as after an ordinary install, in a private directory
        # (nothing is written into the checkout).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = PYCACHE
    env.pop("MACKEREL_AGENT_PLUGIN_META", None)
    env["SMARTMETER_ID"] = DEFAULT_ID
    env["SMARTMETER_PASSWORD"] = DEFAULT_PASSWORD
    # Works from a checkout whether or not it was pip-installed.
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _spawn(cmd, root: str = ROOT, **kw) -> subprocess.Popen:
    """Start C{cmd} in the checkout C{root}, with its modules first on the path."""
    p = subprocess.Popen(cmd, cwd=root, env=_env(root), **kw)
    _children.append(p)
    return p


def _stop(p: subprocess.Popen, grace: float = 5.0) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in _children:
        _children.remove(p)


def _cleanup() -> None:
    for p in list(_children):
        try:
            _stop(p, 2.0)
        except Exception:
            pass


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


class Emulator:
    """A 'smartmeter-emulator' process serving a pty at TMP/wisun."""

    def __init__(self, tmp: str, time_scale: float) -> None:
        self.link = os.path.join(tmp, "wisun")
        self.truth_path = os.path.join(tmp, "truth.jsonl")
        self.err = open(os.path.join(tmp, "emulator.err"), "ab")
        self.p = _spawn(EMULATOR + ["--link", self.link, "--time-scale", str(time_scale),
                                    "--truth-log", self.truth_path],
                        stdout=subprocess.PIPE, stderr=self.err)
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 20
        line = b""
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or self.p.poll() is not None:
                self.stop()
                raise RuntimeError("the emulator did not start (see emulator.err)")
            if sel.select(0.1):
                chunk = os.read(self.p.stdout.fileno(), 4096)
                if not chunk:
                    continue
                line += chunk
        sel.close()
        if not os.path.exists(self.link):
            raise RuntimeError(f"the emulator printed {line!r} but {self.link} does not exist")

    def last_power(self):
        """The last E7 value the meter put on the air, from the truth log."""
        value = None
        try:
            with open(self.truth_path, encoding="utf-8") as f:
                for line in f:
                    rec = json.loads(line)
                    if rec.get("epc") == "E7" and rec.get("seoj") == "028801":
                        value = rec.get("value")
        except OSError:
            pass
        return value

    def stop(self) -> None:
        _stop(self.p)
        self.p.stdout.close()
        self.err.close()


class Run:
    def __init__(self, code, wall, cpu, maxrss_kb, out, err) -> None:
        self.code, self.wall, self.cpu, self.maxrss_kb = code, wall, cpu, maxrss_kb
        self.out, self.err = out, err
        self.sent = re.findall(r"^> (\S+)", err, re.M)

    def count(self, name: str) -> int:
        return self.sent.count(name)

    def power(self):
        m = re.search(r"^\S+\.power\.value\t(-?\d+)\t\d+$", self.out, re.M)
        return int(m.group(1)) if m else None


def run_child(cmd, limit: float) -> Run:
    """Run cmd to its end; wall time, and user+sys CPU of that child from wait4."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = _spawn(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    killer = threading.Timer(limit, lambda: p.kill())
    killer.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        killer.cancel()
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    _children.remove(p)
    out.seek(0)
    err.seek(0)
    text_out = out.read().decode("utf-8", "replace")
    text_err = err.read().decode("utf-8", "replace")
    out.close()
    err.close()
    return Run(p.returncode, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, text_out, text_err)


def stats(values, fmt="{:.3f}") -> str:
    if not values:
        return "n/a (n=0)"
    return (f"median {fmt.format(statistics.median(values))} min {fmt.format(min(values))} "
            f"max {fmt.format(max(values))} (n={len(values)})")


def report(title: str, runs: list, radio: bool = True) -> None:
    print(f"{title}:")
    ok = [r for r in runs if r.code == 0]
    print(f"  wall s: {stats([r.wall for r in runs])}")
    print(f"  cpu s (user+sys): {stats([r.cpu for r in runs])}")
    print(f"  child max RSS MiB: {stats([r.maxrss_kb / 1024 for r in runs], '{:.1f}')}")
    if radio:
        for name in ("SKSENDTO", "SKJOIN", "SKSCAN"):
            print(f"  {name} per run: {stats([r.count(name) for r in runs], '{:.0f}')}")
    bad = [r.code for r in runs if r.code != 0]
    print(f"  exit 0: {len(ok)}/{len(runs)}" + (f" (others: {bad})" if bad else ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warm", type=int, default=10, help="warm runs (default 10)")
    ap.add_argument("--cold", type=int, default=3, help="cold runs with a state file (default 3)")
    ap.add_argument("--first", type=int, default=2, help="first runs: no state file (default 2)")
    ap.add_argument("--service-runs", type=int, default=10,
                    help="runs of --service against 'twist smartmeter' (default 10; 0 skips)")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="emulator time scale (default 1: calibrated latency)")
    ap.add_argument("--plugin-timeout", type=float, default=25.0,
                    help="the plugin's --timeout (default 25, as mackerel-agent users run it)")
    ap.add_argument("--baseline", type=int, default=5,
                    help="runs of 'python -c pass' and of importing the plugin, for the CPU "
                         "floor (default 5; 0 skips)")
    ap.add_argument("--pycache", choices=("private", "inherit"), default="private",
                    help="private (default): children cache bytecode under the temporary "
                         "directory (warmed before timing), as an installed package has it; "
                         "inherit: leave PYTHONDONTWRITEBYTECODE etc. as they are")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every warm run sent exactly one SKSENDTO and no "
                         "SKJOIN/SKSCAN, the median CPU time of each run kind is <= 0.3 s, "
                         "every run exited 0 and printed the meter's true power")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(_cleanup)
    tmp = tempfile.mkdtemp(prefix="bench-oneshot-")
    global PYCACHE
    if args.pycache == "private":
        PYCACHE = os.path.join(tmp, "pycache")
    state = os.path.join(tmp, "state.json")
    limit = args.plugin_timeout + 20
    plugin = PLUGIN + ["--device", os.path.join(tmp, "wisun"), "--state-file", state,
                       "--verbosity", "3", "--timeout", str(args.plugin_timeout)]
    failures = []
    wrong = 0
    try:
        import twisted
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
        except OSError:
            pass
        print(f"machine: nproc {os.cpu_count()}, CPU {cpu}, Python {platform.python_version()}, "
              f"Twisted {twisted.__version__}; emulator --time-scale {args.time_scale:g}")
        if PYCACHE:
            warmed = run_child([PY, "-c", WARM_IMPORTS], 60)
            print(f"bytecode: private cache (PYTHONPYCACHEPREFIX), warmed in {warmed.wall:.1f} s"
                  + ("" if warmed.code == 0 else f" (exit {warmed.code}: "
                     f"{warmed.err.strip().splitlines()[-1:]})"))
        else:
            print("bytecode: as inherited (PYTHONDONTWRITEBYTECODE="
                  f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r})")

        if args.baseline:
            base = [run_child([PY, "-c", "pass"], 30) for _ in range(args.baseline)]
            imp = [run_child([PY, "-c", "import smartmeter_tx.cli.plugin, smartmeter_tx.session.client, "
                              "twisted.internet.reactor, twisted.internet.serialport"], 30)
                   for _ in range(args.baseline)]
            print(f"baseline 'python -c pass': cpu s {stats([r.cpu for r in base])}")
            print(f"baseline import plugin+client+reactor+serialport: cpu s "
                  f"{stats([r.cpu for r in imp])}, wall s {stats([r.wall for r in imp])}")

        def checked(run, emu, kind):
            nonlocal wrong
            truth = emu.last_power() if emu else None
            if run.code == 0 and emu is not None and run.power() != truth:
                wrong += 1
                print(f"  ! {kind}: printed power {run.power()} but the meter said {truth}")
            if run.code != 0:
                tail = run.err.strip().splitlines()[-3:]
                print(f"  ! {kind}: exit {run.code}: {' | '.join(tail)}")
            return run

        first = []
        for _ in range(args.first):
            if os.path.exists(state):
                os.remove(state)
            emu = Emulator(tmp, args.time_scale)
            try:
                first.append(checked(run_child(plugin, limit), emu, "first"))
            finally:
                emu.stop()
        if first:
            report("first run (no state file: scan + join + Get; fresh emulator each)", first)

        if args.cold or args.warm:
            if not os.path.exists(state):  # make one, untimed
                emu = Emulator(tmp, args.time_scale)
                try:
                    checked(run_child(plugin, limit), emu, "state-making run")
                finally:
                    emu.stop()
        cold = []
        for _ in range(args.cold):
            emu = Emulator(tmp, args.time_scale)
            try:
                cold.append(checked(run_child(plugin, limit), emu, "cold"))
            finally:
                emu.stop()
        if cold:
            report("cold run (state file, module without session: join + Get; fresh emulator each)",
                   cold)

        warm = []
        if args.warm:
            emu = Emulator(tmp, args.time_scale)
            try:
                prime = checked(run_child(plugin, limit), emu, "priming")
                print(f"warm-up run (gives the module its session, not counted): wall "
                      f"{prime.wall:.2f} s, exit {prime.code}")
                for _ in range(args.warm):
                    warm.append(checked(run_child(plugin, limit), emu, "warm"))
            finally:
                emu.stop()
            report("warm run (one emulator, module keeps its session)", warm)

        svc = []
        if args.service_runs:
            port = free_port()
            log = open(os.path.join(tmp, "service.log"), "ab")
            before = set(os.listdir(tempfile.gettempdir()))
            t0 = time.perf_counter()
            service = _spawn(SERVICE + ["--device", "emulator:", "--http",
                                        f"tcp:{port}:interface=127.0.0.1", "--interval", "5",
                                        "--state-file", os.path.join(tmp, "service-state.json")],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}"
                ready = None
                while time.perf_counter() - t0 < 120:
                    if service.poll() is not None:
                        raise RuntimeError(f"the service exited with {service.returncode} "
                                           f"(see {tmp}/service.log; --keep to keep it)")
                    try:
                        with urllib.request.urlopen(url + "/latest", timeout=2) as r:
                            if r.status == 200:
                                ready = time.perf_counter() - t0
                                break
                    except (urllib.error.URLError, ConnectionError, OSError):
                        pass
                    time.sleep(0.2)  # polling the service's readiness, not timing anything
                if ready is None:
                    raise RuntimeError("the service gave no reading within 120 s")
                print(f"service: first reading on /latest {ready:.1f} s after start "
                      "(emulator in the service process: scan + join)")
                for _ in range(args.service_runs):
                    svc.append(checked(run_child(PLUGIN + ["--service", url], limit), None,
                                       "service"))
            finally:
                _stop(service)
                log.close()
            report("one-shot through --service (HTTP GET /latest, no serial port)", svc,
                   radio=False)
            left = sorted(d for d in set(os.listdir(tempfile.gettempdir())) - before
                          if d.startswith("smartmeter-emu-"))
            if left:
                print(f"note: the service left {len(left)} temporary director"
                      f"{'y' if len(left) == 1 else 'ies'} behind: {', '.join(left)}")

        # -- targets --------------------------------------------------------------
        print("targets:")
        one = all(r.count("SKSENDTO") == 1 and not r.count("SKJOIN") and not r.count("SKSCAN")
                  for r in warm) and bool(warm)
        print(f"  warm run = one SKSENDTO, no SKJOIN/SKSCAN: {'met' if one else 'MISSED'}")
        if not one:
            failures.append("warm radio")
        for kind, runs in (("first", first), ("cold", cold), ("warm", warm), ("service", svc)):
            if not runs:
                continue
            med = statistics.median(r.cpu for r in runs)
            met = med <= 0.3
            print(f"  one-shot CPU <= 0.3 s ({kind}): median {med:.3f} s, max "
                  f"{max(r.cpu for r in runs):.3f} s: {'met' if met else 'MISSED'}")
            if not met:
                failures.append(f"{kind} cpu")
        bad = sum(r.code != 0 for r in first + cold + warm + svc)
        print(f"  runs failed: {bad}; printed power != emulator truth: {wrong}")
        if bad or wrong:
            failures.append("runs failed or wrong values")
    finally:
        _cleanup()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if (args.check and failures) else 0


if __name__ == "__main__":
    sys.exit(main())
