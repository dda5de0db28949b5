#!/usr/bin/env python
"""
Home Assistant import benchmark: what importing N days of the meter's
record into HA's statistics costs on the radio, against what reading the
same days costs without HA.

For each of C{--days} (default 1, 7 and 45) it runs C{smartmeter-history}
(the real command, in this process) against the built-in emulator on a pty
(C{--time-scale}, default 0.01) twice, once printing the CSV and once with
C{--ha-url} into the strict fake of HA 2024.x (C{tests/hafake.py}) on
loopback, and reports for each: the module's transmissions (register S07,
every frame it sent: Gets and their retries), frames per day, hours
imported, and the run's wall time.  A warm-up run joins first, so neither
measured run pays for the join.  The HA import must cost no frame beyond
the history reads themselves: C{--check} exits 1 otherwise, or when the
hours imported are not the complete hours of the days asked.

    venv/bin/python bench/ha.py
    venv/bin/python bench/ha.py --days 45 --check
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

TOKEN = "bench-admin-token"


async def _run(reactor, argv, env):
    from smartmeter_tx.cli import history
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    code = await history.run(reactor, argv, environ=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - started


async def main(reactor, args) -> int:
    from smartmeter_tx.emulator.device import DEFAULT_ID, DEFAULT_PASSWORD, start_emulator
    from tests.hafake import FakeHomeAssistant

    directory = tempfile.mkdtemp(prefix="bench-ha-")
    env = {"SMARTMETER_ID": DEFAULT_ID, "SMARTMETER_PASSWORD": DEFAULT_PASSWORD,
           "SMARTMETER_HA_TOKEN": TOKEN}
    failed = False
    print(f"{'days':>4} {'mode':>5} {'frames':>6} {'frames/day':>10} {'hours':>5} {'seconds':>7}")
    for days in args.days:
        handle = start_emulator(f"emulator:?time-scale={args.time_scale}&seed={args.seed}",
                                reactor, link=os.path.join(directory, f"wisun{days}"))
        ha = FakeHomeAssistant({TOKEN: True})
        port = ha.listen(reactor)
        url = f"http://127.0.0.1:{port.getHost().port}"
        state = os.path.join(directory, f"state{days}.json")
        base = ["--device", handle.path, "--state-file", state, "--days", str(days)]
        try:
            await _run(reactor, base[:4] + ["--days", "1"], env)  # warm-up: the join
            figures = {}
            for mode, extra in (("csv", []), ("ha", ["--ha-url", url])):
                before = handle.emulator.registers[0x07]
                code, out, err, seconds = await _run(reactor, base + extra, env)
                frames = handle.emulator.registers[0x07] - before
                sid = f"smartmeter_tx:{handle.emulator.meter_mac.lower()}_energy_import"
                hours = len(ha.sums(sid)) if mode == "ha" else None
                figures[mode] = frames
                print(f"{days:>4} {mode:>5} {frames:>6} {frames / days:>10.1f} "
                      f"{'' if hours is None else hours:>5} {seconds:>7.2f}")
                if code != 0:
                    print(f"     exit {code}: {err.strip()}")
                    failed = True
            if figures["ha"] != figures["csv"]:
                print(f"     the import cost {figures['ha'] - figures['csv']} frames more")
                failed = True
        finally:
            await port.stopListening()
            handle.stop()
    return 1 if failed and args.check else 0


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, nargs="+", default=[1, 7, 45])
    p.add_argument("--time-scale", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="exit 1 unless the import costs no "
                   "frame beyond the history reads")
    return p.parse_args(argv)


if __name__ == "__main__":
    from twisted.internet import defer, task

    arguments = parse()

    def done(code):
        if code:
            raise SystemExit(code)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, arguments))
               .addCallback(done))
