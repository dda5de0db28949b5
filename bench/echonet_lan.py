#!/usr/bin/env python
"""
ECHONET Lite on the LAN: what C{twist smartmeter --echonet-lan} costs a
controller in time and the meter in radio frames.

The script runs in a private network namespace of its own: when it is not in
one, it runs itself again under C{unshare --net} (C{--map-root-user} too when
not root), brings C{lo} up and routes the multicast range (C{224.0.0.0/4}) on
it.  So neither the host's UDP 3610 nor another copy of this script is in
the way.  In there it starts C{twist smartmeter} on the built-in emulator
(C{--device emulator:?time-scale=F}, default 1: the calibrated radio
latency), with C{--echonet-lan 0.0.0.0}, C{--http} on a Unix socket,
C{--data-log}, C{--state-file} and C{--backfill-days 0} (no backfill frames
among the ones counted) in a temporary directory, C{--interval 10}.  Its
C{/metrics} is read through the socket.  The controllers are UDP sockets on
ephemeral ports of 127.0.0.1 that send to the node's unicast address.

It measures, once the first reading is in:

 1. cached answers: right after a poll, C{--requests} sequential Gets of
    E7, E8, E0 and E3 to the meter (0x028801), then as many Gets of D6 to the
    node profile, and C{--searches} more to the group 224.0.23.0 (a search:
    answered to the asker), each answer checked; the round
    trip's median, p90, p99 and max, and the relay frames (which must not
    grow).  Then C{--relays} Gets of E2 (the meter's record: relayed), one
    every 3.2 s (the node relays one request per source address every 3 s),
    timed the same way;
 2. radio frames per 100 LAN requests: C{--mix} Gets from C{--controllers}
    sockets (all of one address in here, so one per-source limit for them
    all), paced over C{--window} seconds, of (a) the live values and (b) E2;
    the frames from C{/metrics} deltas between two polls: the relay frames,
    and the service's frames sent minus one a poll (a poll is one frame).
    The outcomes by ESV and outcome, and the drops, of each mix.  Against
    (c): a controller on the B-route itself, one frame a request;
 3. the service's CPU time (utime + stime of C{/proc/PID/stat}, which
    include the emulator: it runs in the service's process) over
    C{--cpu-requests} more cached Gets (still before the next poll), less
    that of an idle stretch as long, per 1000 answers.

C{--check} exits 1 unless the cached answers' median is under 5 ms and their
p99 under 20 ms, every answer was right, mix (a) cost no frame and mix (b)
at most 10 frames a 100 requests.

    venv/bin/python bench/echonet_lan.py                 # about 80 s
    venv/bin/python bench/echonet_lan.py --requests 5000 --check
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.cli.test_twist import twist_env  # noqa: E402
from tests.emuloop import pinned  # noqa: E402
from tests.test_echonet_lan import UnixHTTPConnection  # noqa: E402

#: Set when the script runs itself again in a new namespace: the namespace it left.
FROM = "BENCH_ECHONET_LAN_FROM"
PORT, GROUP, NODE_ADDRESS = 3610, "224.0.23.0", "127.0.0.1"
#: ECHONET Lite objects: the controller we are, the node profile, the meter.
CONTROLLER, NODE, METER = 0x05FF01, 0x0EF001, 0x028801
GET, GET_RES, GET_SNA = 0x62, 0x72, 0x52
ESV_NAMES = {GET: "Get", GET_RES: "Get_Res", GET_SNA: "Get_SNA"}
#: What a controller reads: power, currents, the two counters (4 bytes each).
LIVE = (0xE7, 0xE8, 0xE0, 0xE3)
SIZES = {0xE7: 4, 0xE8: 4, 0xE0: 4, 0xE3: 4}
RECORD = 0xE2
#: Seconds between two relays for one source address, and a little more.
LIMIT, SPACING = 3.0, 3.2
#: Seconds: the first reading (a scan and a join at time scale 1 take about
#: 15), a poll, an answer (a relay waits for the poll under way and may take
#: 10 s), the stop.
START_WITHIN, POLL_WITHIN, ANSWER_WITHIN, STOP_WITHIN = 180.0, 60.0, 30.0, 20.0
ANSWERED = "smartmeter_polls_answered_total"
SENT = "smartmeter_frames_sent_total"
RELAYED = "smartmeter_echonet_lan_relay_frames_total"
REQUESTS = "smartmeter_echonet_lan_requests_total"
DROPPED = "smartmeter_echonet_lan_dropped_total"
_SAMPLE = re.compile(r'^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# -- the namespace -----------------------------------------------------------------------


def _namespace() -> str:
    return os.readlink("/proc/self/ns/net")


def enter_namespace(argv: list) -> None:
    """
    Run this script again in a network namespace of its own (C{unshare}
    execs it: the PID stays, signals reach it), unless it already runs in
    the one made for it; there, bring C{lo} up with the multicast route.

    @raise RuntimeError: no namespace could be made or set up.
    """
    left = os.environ.get(FROM)
    if left is None:
        if shutil.which("unshare") is None:
            raise RuntimeError("needs unshare (util-linux) for a private network namespace")
        os.environ[FROM] = _namespace()
        user = [] if os.geteuid() == 0 else ["--map-root-user"]
        os.execvp("unshare", ["unshare", "--net", *user, "--", sys.executable,
                              os.path.abspath(__file__), *argv])
    if left == _namespace():
        raise RuntimeError("unshare --net left the script in the namespace it came from")
    # Multicast from lo's own address: the route's default would be 0.0.0.0.
    for command in (["link", "set", "lo", "up"],
                    ["route", "add", "224.0.0.0/4", "dev", "lo", "src", NODE_ADDRESS]):
        done = subprocess.run(["ip", *command], capture_output=True, text=True, timeout=30,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(command)}: {done.stderr.strip()}")


# -- ECHONET Lite, written apart from the product's own code ------------------------------


def get_frame(tid: int, deoj: int, epcs) -> bytes:
    """@return: a Get of C{epcs} from our controller object to C{deoj}."""
    head = b"\x10\x81" + tid.to_bytes(2, "big") + CONTROLLER.to_bytes(3, "big")
    body = deoj.to_bytes(3, "big") + bytes((GET, len(epcs)))
    return head + body + b"".join(bytes((epc, 0)) for epc in epcs)


def parse(data: bytes) -> Optional[dict]:
    """
    @return: C{{tid, seoj, deoj, esv, props}} of an ECHONET Lite format 1
        frame (C{props}: a list of C{(EPC, EDT)}), or C{None} when it is not one.
    """
    if len(data) < 12 or data[:2] != b"\x10\x81":
        return None
    frame = dict(tid=int.from_bytes(data[2:4], "big"), seoj=int.from_bytes(data[4:7], "big"),
                 deoj=int.from_bytes(data[7:10], "big"), esv=data[10], props=[])
    pos = 12
    for _ in range(data[11]):
        if pos + 2 > len(data) or pos + 2 + data[pos + 1] > len(data):
            return None
        frame["props"].append((data[pos], data[pos + 2:pos + 2 + data[pos + 1]]))
        pos += 2 + data[pos + 1]
    return frame if pos == len(data) else None


def wrong(answer: Optional[dict], tid: int, seoj: int, epcs, sizes: dict) -> Optional[str]:
    """@return: what is wrong with a Get_Res expected for C{epcs}, or C{None}."""
    if answer is None:
        return "not an ECHONET Lite frame"
    if (answer["tid"], answer["seoj"], answer["deoj"]) != (tid, seoj, CONTROLLER):
        return f"TID/EOJ {answer['tid']:04X} {answer['seoj']:06X}->{answer['deoj']:06X}"
    if answer["esv"] != GET_RES:
        return f"ESV {answer['esv']:02X}"
    if [epc for epc, _ in answer["props"]] != list(epcs):
        return "EPCs " + " ".join(f"{epc:02X}" for epc, _ in answer["props"])
    for epc, edt in answer["props"]:
        if len(edt) != sizes.get(epc, len(edt)) or not edt:
            return f"EPC {epc:02X} with {len(edt)} bytes"
    return None


class Controllers:
    """
    UDP sockets on ephemeral ports of this namespace's one address, all
    talking to the node's unicast address.

    @ivar pending: C{{tid: (send time, EPCs)}} of requests not yet answered.
    @ivar answers: C{(round trip, EPCs, parsed answer)} of each answered one.
    """

    def __init__(self, count: int) -> None:
        self.sockets = []
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((NODE_ADDRESS, 0))
            self.sockets.append(s)
        self.tid = 0
        self.pending: dict = {}
        self.answers: list = []

    def send(self, n: int, deoj: int, epcs, to: tuple = (NODE_ADDRESS, PORT)) -> int:
        """Send a Get from socket C{n}; @return: its TID."""
        self.tid = self.tid % 0xFFFF + 1
        self.pending[self.tid] = (time.perf_counter(), tuple(epcs))
        self.sockets[n].sendto(get_frame(self.tid, deoj, epcs), to)
        return self.tid

    def receive(self, until: float, tid: Optional[int] = None) -> None:
        """
        Take in answers until C{until} (monotonic), or until none is pending
        (with C{tid}: until that one is answered).
        """
        while self.pending and (tid is None or tid in self.pending):
            left = until - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select(self.sockets, [], [], left)
            for s in readable:
                try:
                    data = s.recv(65536)
                except OSError:  # an ICMP error for an earlier datagram
                    continue
                t = time.perf_counter()
                answer = parse(data)
                sent = self.pending.pop(answer["tid"], None) if answer else None
                if sent is not None:
                    self.answers.append((t - sent[0], sent[1], answer))

    def close(self) -> None:
        for s in self.sockets:
            s.close()


# -- the service -------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the service's process: SIGKILL when this script dies, so it never outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Service:
    """C{twist smartmeter --echonet-lan 0.0.0.0} on the emulator, its files in C{directory}."""

    def __init__(self, directory: str, interval: float, time_scale: float) -> None:
        self.directory = directory
        self.log = os.path.join(directory, "twist.log")
        # Relative to the working directory (a Unix socket's path is short);
        # reached through a descriptor of the directory.
        self._fd: Optional[int] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        self.argv = [sys.executable, "-m", "twisted", "--log-format", "text", "smartmeter",
                     "--device", pinned(f"emulator:?time-scale={time_scale:g}"),
                     "--echonet-lan", "0.0.0.0", "--http", "unix:http.sock",
                     "--state-file", "state.json", "--data-log", "log",
                     "--backfill-days", "0", "--interval", f"{interval:g}"]
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.argv, env=twist_env(), cwd=self.directory,
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            preexec_fn=_die_with_parent)

    def stop(self) -> Optional[int]:
        """SIGTERM, then SIGKILL past the deadline; @return: the exit status."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_WITHIN)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return None if self.process is None else self.process.returncode

    def metrics(self, timeout: float = 5.0) -> dict:
        """@return: C{{(name, ((label, value), ...)): value}} of C{/metrics}."""
        connection = UnixHTTPConnection(f"/proc/self/fd/{self._fd}/http.sock", timeout)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode("utf-8")
        finally:
            connection.close()
        values = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match and not line.startswith("#"):
                labels = tuple(sorted(_LABEL.findall(match.group(2) or "")))
                values[(match.group(1), labels)] = float(match.group(3))
        return values

    def cpu(self) -> float:
        """@return: the process's CPU seconds so far (utime + stime)."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def after_poll(self, polls: float, within: float = POLL_WITHIN) -> dict:
        """
        Wait for a poll answered beyond C{polls}, and a moment for its end.

        @return: C{/metrics} then.
        @raise RuntimeError: none came within C{within} seconds, or the service ended.
        """
        deadline = time.monotonic() + within
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service ended ({self.process.returncode}); see "
                                   + self.log)
            try:
                now = self.metrics()
            except OSError:
                now = {}
            if now.get((ANSWERED, ()), 0) > polls:
                time.sleep(0.1)  # its frames are counted when the poll is over
                return self.metrics()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no poll answered within {within:g} s; see " + self.log)
            time.sleep(0.05)

    def log_text(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()


def value(figures: dict, name: str, **labels) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def deltas(before: dict, after: dict, name: str) -> dict:
    """@return: C{{labels: increase}} of C{name}'s samples that grew."""
    return {labels: after[key] - before.get(key, 0.0) for key in after
            for n, labels in [key] if n == name and after[key] != before.get(key, 0.0)}


# -- 1. cached answers -------------------------------------------------------------------


def sequential(controllers: Controllers, count: int, deoj: int, epcs, sizes: dict,
               to: tuple = (NODE_ADDRESS, PORT)) -> dict:
    """
    C{count} Gets one after the other from socket 0, each answer checked.

    @return: C{{times, wrong, unanswered, seconds}}.
    """
    controllers.answers = []
    faults, unanswered = [], 0
    t0 = time.monotonic()
    for _ in range(count):
        tid = controllers.send(0, deoj, epcs, to)
        controllers.receive(time.monotonic() + ANSWER_WITHIN, tid)
        if controllers.pending.pop(tid, None) is not None:
            unanswered += 1
            continue
        _, _, answer = controllers.answers[-1]
        fault = wrong(answer, tid, deoj, epcs, sizes)
        if fault:
            faults.append(fault)
    return dict(times=[t for t, _, _ in controllers.answers], wrong=faults,
                unanswered=unanswered, seconds=time.monotonic() - t0)


def cached(service: Service, controllers: Controllers, args) -> dict:
    """Figure 1 and 3: the cached Gets right after a poll, and their CPU."""
    start = service.after_poll(value(service.metrics(), ANSWERED))
    meter = sequential(controllers, args.requests, METER, LIVE, SIZES)
    middle = service.metrics()
    node = sequential(controllers, args.requests, NODE, (0xD6,), {0xD6: 4})
    search = sequential(controllers, args.searches, NODE, (0xD6,), {0xD6: 4},
                        to=(GROUP, PORT))
    cpu = service.cpu()
    load = sequential(controllers, args.cpu_requests, METER, LIVE, SIZES)
    load["cpu"] = service.cpu() - cpu
    cpu = service.cpu()
    time.sleep(load["seconds"])
    idle = service.cpu() - cpu
    end = service.metrics()
    return dict(meter=meter, node=node, search=search, load=load, idle=idle,
                relayed=value(middle, RELAYED) - value(start, RELAYED),
                relayed_all=value(end, RELAYED) - value(start, RELAYED),
                polls=value(end, ANSWERED) - value(start, ANSWERED))


def relayed(service: Service, controllers: Controllers, args) -> dict:
    """Figure 1's scale: Gets of E2, one every L{SPACING} seconds, each timed."""
    before = service.metrics()
    controllers.answers = []
    esvs, lengths, unanswered = [], [], 0
    for n in range(args.relays):
        due = time.monotonic() + SPACING
        tid = controllers.send(0, METER, (RECORD,))
        controllers.receive(time.monotonic() + ANSWER_WITHIN, tid)
        if controllers.pending.pop(tid, None) is not None:
            unanswered += 1
        else:
            _, _, answer = controllers.answers[-1]
            esvs.append(ESV_NAMES.get(answer["esv"], f"{answer['esv']:02X}"))
            lengths.append(len(answer["props"][0][1]) if answer["props"] else 0)
        if n + 1 < args.relays:
            time.sleep(max(0.0, due - time.monotonic()))
    after = service.metrics()
    return dict(times=[t for t, _, _ in controllers.answers], esvs=esvs, lengths=lengths,
                unanswered=unanswered, relayed=value(after, RELAYED) - value(before, RELAYED))


# -- 2. radio frames per 100 requests ----------------------------------------------------


def mix(service: Service, controllers: Controllers, args, epcs) -> dict:
    """
    C{args.mix} Gets of C{epcs} over C{args.window} seconds, the sockets in
    turn, from just after one poll; the frames counted up to the first poll
    after the last answer.
    """
    start = service.after_poll(value(service.metrics(), ANSWERED))
    controllers.answers = []
    t0 = time.monotonic()
    for n in range(args.mix):
        controllers.send(n % len(controllers.sockets), METER, epcs)
        due = t0 + (n + 1) * args.window / args.mix
        controllers.receive(due)
        time.sleep(max(0.0, due - time.monotonic()))
    controllers.receive(time.monotonic() + ANSWER_WITHIN)
    unanswered = len(controllers.pending)
    controllers.pending.clear()
    elapsed = time.monotonic() - t0
    last = service.metrics()
    end = service.after_poll(value(last, ANSWERED))
    polls = value(end, ANSWERED) - value(start, ANSWERED)
    esvs = {}
    for _, _, answer in controllers.answers:
        name = ESV_NAMES.get(answer["esv"], f"{answer['esv']:02X}")
        esvs[name] = esvs.get(name, 0) + 1
    return dict(elapsed=elapsed, unanswered=unanswered, esvs=esvs, polls=polls,
                relayed=value(end, RELAYED) - value(start, RELAYED),
                extra=value(end, SENT) - value(start, SENT) - polls,
                outcomes=deltas(start, end, REQUESTS), dropped=deltas(start, end, DROPPED),
                times=sorted(t for t, _, _ in controllers.answers))


# -- report ------------------------------------------------------------------------------


def percentile(times: list, p: float) -> float:
    """The nearest-rank C{p}th percentile of C{times}."""
    ordered = sorted(times)
    return ordered[max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))]


def spread(times: list) -> str:
    if not times:
        return "no answer"
    ms = [t * 1000 for t in times]
    return (f"median {statistics.median(ms):.2f} ms, p90 {percentile(ms, 90):.2f}, "
            f"p99 {percentile(ms, 99):.2f}, max {max(ms):.2f}")


def checked(run: dict) -> str:
    faults = run["wrong"]
    text = (f"{len(run['times'])} answered, {run['unanswered']} unanswered, "
            f"{len(faults)} wrong")
    if faults:
        text += " (first: " + faults[0] + ")"
    return text


def report_cached(c: dict, r: dict, args) -> bool:
    """Print figures 1 and 3; @return: whether their targets are met."""
    meter, node, search = c["meter"], c["node"], c["search"]
    print(f"== cached answers (right after a poll; {args.requests} sequential Gets each, "
          "one socket)")
    print(f"meter E7 E8 E0 E3       {spread(meter['times'])}")
    print(f"                        {checked(meter)}; relay frames +{c['relayed']:g}")
    print(f"node profile D6         {spread(node['times'])}")
    print(f"                        {checked(node)}")
    print(f"search D6, to the group {spread(search['times'])}")
    print(f"                        {checked(search)} ({args.searches} Gets to {GROUP})")
    print(f"relay frames, all runs  +{c['relayed_all']:g} (polls meanwhile: {c['polls']:g})")
    each = f"{r['lengths'][0]}-byte " if r["lengths"] else ""
    print(f"relayed Get of E2       {spread(r['times'])} ({len(r['times'])} of {args.relays}, "
          f"{SPACING:g} s apart: {', '.join(r['esvs']) or 'none'}, {each}EDT; relay frames "
          f"+{r['relayed']:g})")
    load = c["load"]
    per = 1000 / max(1, len(load["times"]))
    print(f"== service CPU (utime+stime of /proc/PID/stat, {1000 / os.sysconf('SC_CLK_TCK'):g} "
          "ms ticks; the emulator runs in the service's process)")
    print(f"per 1000 cached answers {(load['cpu'] - c['idle']) * per * 1000:.1f} ms "
          f"({load['cpu']:.2f} s for {len(load['times'])} sequential E7 E8 E0 E3 Gets in "
          f"{load['seconds']:.2f} s, {checked(load)}; idle over as long: "
          f"{c['idle'] * 1000:.0f} ms, taken off)")
    times = meter["times"]
    right = all(not run["wrong"] and not run["unanswered"]
                for run in (meter, node, search, load))
    return bool(times) and right and c["relayed_all"] == 0 and \
        statistics.median(times) < 0.005 and percentile(times, 99) < 0.020


def report_mix(name: str, m: dict, args) -> None:
    per = 100 / max(1, args.mix)
    print(f"mix {name:20s}{args.mix} Gets in {m['elapsed']:.1f} s: answers "
          + ", ".join(f"{k} {v}" for k, v in sorted(m["esvs"].items()))
          + f", {m['unanswered']} unanswered; round trip {spread(m['times'])}")
    print(f"    radio frames        relay {m['relayed']:g}, sent beyond the polls "
          f"{m['extra']:g} (polls {m['polls']:g}): {m['extra'] * per:g} per 100 requests; "
          f"ratio to the B-route's 100: {m['extra'] * per / 100:.2f}")
    if m["relayed"] > m["extra"]:
        print(f"    (relay - beyond the polls = {m['relayed'] - m['extra']:g}: a poll's frame "
              "sent while a relay was on the air counts as the relay's)")
    outcomes = ", ".join(f"{dict(k)['esv']}/{dict(k)['outcome']} {v:g}"
                         for k, v in sorted(m["outcomes"].items())) or "none"
    dropped = ", ".join(f"{dict(k)['reason']} {v:g}" for k, v in m["dropped"].items())
    print(f"    /metrics outcomes   {outcomes}; dropped: {dropped or 'none'}")
    own = sum(v for k, v in m["dropped"].items() if dict(k)["reason"] == "not_request")
    if own:
        print(f"    (not_request: the node sends each answer to port {PORT} of the asker's "
              f"address too, {NODE_ADDRESS} here, so it hears its own: "
              f"{len(m['times'])} answers)")


def report(c: dict, r: dict, a: dict, b: dict, args) -> bool:
    """Print the figures; @return: whether the targets are met."""
    good = report_cached(c, r, args)
    print(f"== radio frames per {args.mix} LAN requests ({args.controllers} controllers on one "
          f"address, so one per-source limit of {LIMIT:g} s; --interval {args.interval:g})")
    report_mix("(a) E7 E8 E0 E3", a, args)
    report_mix("(b) E2", b, args)
    print(f"mix (c) B-route         {args.mix} Gets = {args.mix} frames (a controller on the "
          "meter itself: one frame a request)")
    per = 100 / max(1, args.mix)
    return (good and a["relayed"] == 0 and a["extra"] == 0 and not a["unanswered"]
            and b["extra"] * per <= 10 and b["relayed"] * per <= 10)


def run(args, directory: str) -> dict:
    service = Service(directory, args.interval, args.time_scale)
    controllers = Controllers(args.controllers)
    service.start()
    try:
        service.after_poll(0, START_WITHIN)
        c = cached(service, controllers, args)
        r = relayed(service, controllers, args)
        a = mix(service, controllers, args, LIVE)
        b = mix(service, controllers, args, (RECORD,))
    except RuntimeError:
        service.stop()
        # The directory goes at the end (unless --keep): the log's end now.
        sys.stderr.write("".join(service.log_text().splitlines(True)[-30:]))
        raise
    finally:
        controllers.close()
        status = service.stop()
    text = service.log_text()
    return dict(c=c, r=r, a=a, b=b, status=status, tracebacks=text.count("Traceback"),
                errors=len(re.findall(r"#(error|critical)\]", text)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000,
                    help="sequential Gets for each cached-answer figure (default 1000)")
    ap.add_argument("--cpu-requests", type=int, default=10000,
                    help="sequential cached Gets over which the service's CPU is taken "
                    "(default 10000: utime and stime count in ticks of 10 ms)")
    ap.add_argument("--searches", type=int, default=100,
                    help="Gets of D6 sent to the group, as a search does (default 100)")
    ap.add_argument("--relays", type=int, default=3,
                    help=f"relayed Gets of E2, {SPACING:g} s apart (default 3)")
    ap.add_argument("--mix", type=int, default=100, help="Gets in each mix (default 100)")
    ap.add_argument("--controllers", type=int, default=3,
                    help="sockets the mixes' Gets come from in turn (default 3)")
    ap.add_argument("--window", type=float, default=10.0,
                    help="seconds each mix's Gets are spread over (default 10)")
    ap.add_argument("--interval", type=float, default=10.0,
                    help="the service's --interval (default 10)")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="the emulator's time scale: 1 = calibrated radio latency (default)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless the cached answers' median is < 5 ms and p99 < 20 ms, "
                    "all right, mix (a) costs 0 frames and mix (b) <= 10 per 100 requests")
    args = ap.parse_args(argv)
    counts = (args.requests, args.cpu_requests, args.searches, args.relays, args.mix,
              args.controllers)
    if min(counts) < 1 or args.window <= 0 or args.interval < 1 or args.time_scale < 0:
        ap.error("counts must be >= 1, --window > 0, --interval >= 1, --time-scale >= 0")
    try:
        enter_namespace(sys.argv[1:] if argv is None else list(argv))
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"bench/echonet_lan.py: {e}", file=sys.stderr)
        return 1
    # SIGTERM ends the run through the finally clauses, which stop the service.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    directory = tempfile.mkdtemp(prefix="bench-echonet-lan-")
    t0 = time.monotonic()
    try:
        r = run(args, directory)
    finally:
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    good = report(r["c"], r["r"], r["a"], r["b"], args)
    print(f"log                     {r['tracebacks']} tracebacks, {r['errors']} errors; "
          f"exit status {r['status']}")
    # twist stops in order on SIGTERM, then ends by that signal.
    good = good and not r["tracebacks"] and not r["errors"] and r["status"] in (0, -15)
    print(f"wall time               {time.monotonic() - t0:.1f} s (in this namespace)")
    print("targets                 " + ("met" if good else "MISSED"))
    return 1 if args.check and not good else 0


if __name__ == "__main__":
    sys.exit(main())
