#!/usr/bin/env python
"""
Fault campaign: C{twist smartmeter} as an operator runs it (a subprocess on the
built-in emulator, C{--data-log}, C{--mqtt} to a real mosquitto, C{ulimit -n
64}), put through what a small, long-lived host meets, one fault after the
other:

 1. connection flood: hundreds of idle and slow HTTP connections; C{/metrics}
    must answer within 2 s and the polls go on;
 2. broker stall: mosquitto is stopped (SIGSTOP) for C{--stall} seconds and
    resumed; a subscriber must see every state in the order it was taken and
    the newest retained;
 3. disk full: the service's file-size limit is lowered under the day's file
    (C{prlimit RLIMIT_FSIZE}, the writes fail as on a full disk) for
    C{--full} seconds, then lifted;
 4. directory swap: the data-log directory is moved away while the service runs;
 5. torn line: the service is killed (SIGKILL) and half a line appended, as a
    power cut mid-write leaves it; the service is started again.

Then a second service run imports the meter's record into Home Assistant
(C{--ha-url} to the strict fake of C{tests/hafake.py} on this script's
reactor, C{--ha-token-file}), one more hour every 18 s, through HA's faults
(HA answers again at a login after the drop at which it lacks an hour, so
that the refill has something to bring):

 6. HA stall: HA takes the token, then answers no command and no ping, until
    the service dropped the session and logged in again;
 7. non-JSON: HA answers commands with a proxy's HTML page, until the service
    dropped the session and logged in twice since;
 8. flapping: HA logs the service in and drops the connection at every
    import, for C{--flapping} seconds;
 9. revoked token: HA refuses the token for C{--revoked} seconds, then a new
    one is written to the token file;

and a third run, its wall clock moved by libfaketime (the monotonic one left
alone), through:

 10. clock step: the host's clock steps back 300 s, then forward 2 h.

It prints, per fault, what was lost or duplicated and whether the service said
so in its log; then the totals of each part.  C{--check} exits 1 unless every
reading is in the log once (but the records lost while the disk was full,
which the service counts and reports, and the torn line), no MQTT state went
back in time, no fault went unsaid or was said more than once, every
complete hour of the data log is in HA once with continuous sums, HA's
faults bring no reconnect storm (under 10 connections a minute while it
flaps; at most 2 logins with a revoked token), and the polls keep their
schedule across the clock's steps.

    venv/bin/python bench/faults.py [--stall 150] [--full 10] [--flapping 60]
        [--revoked 60] [--part all|first|second] [--check]
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import defer, task  # noqa: E402

from tests.cli.test_flood import metrics  # noqa: E402
from tests.mosquitto import MOSQUITTO, Broker, Subscriber, free_port, paho, wait_for  # noqa: E402

try:
    from tests.hafake import FakeHomeAssistant  # noqa: E402
except ImportError:  # autobahn, of the [homeassistant] extra
    FakeHomeAssistant = object

OPEN_FILES = 64
#: The emulated meter's clock: fixed, so that runs are alike.
START = "2024-06-01T12:00:00"


def sleep(reactor, seconds):
    return task.deferLater(reactor, seconds, lambda: None)


class Service:
    """C{twist smartmeter} in a subprocess, restartable."""

    def __init__(self, directory, mqtt_port, checkout=ROOT, device=None, extra=(), env=None):
        """
        @param mqtt_port: the broker's port, or C{None} for a run without MQTT.
        @param device: the C{--device} (default the emulator at time scale 0.01).
        @param extra: more arguments for C{twist smartmeter}.
        @param env: more environment for the process (a faked clock).
        """
        self.directory = directory
        self.checkout = checkout
        self.data = os.path.join(directory, "data")
        self.state = os.path.join(directory, "state.json")
        self.port = free_port()
        self.mqtt_port = mqtt_port
        self.device = device or f"emulator:?time-scale=0.01&start={START}"
        self.extra = list(extra)
        self.env = dict(env or {})
        self.process = None
        self.logs = []

    def start(self):
        log = os.path.join(self.directory, f"twist-{len(self.logs)}.log")
        self.logs.append(log)
        env = dict(os.environ,
                   PYTHONPATH=self.checkout + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env = {k: v for k, v in env.items() if not k.startswith("SMARTMETER_")}
        env.update(self.env)
        args = [sys.executable, "-m", "twisted", "--log-format", "text", "smartmeter",
                "--device", self.device,
                "--http", f"tcp:{self.port}:interface=127.0.0.1", "--data-log", self.data,
                "--state-file", self.state, "--interval", "2", "--energy-interval", "10",
                "--backfill-days", "1"]
        if self.mqtt_port is not None:
            args += ["--mqtt", f"mqtt://127.0.0.1:{self.mqtt_port}"]
        args += self.extra
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                args, env=env, cwd=self.directory, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                      (OPEN_FILES, OPEN_FILES)))

    def stop(self, sig=signal.SIGTERM):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self):
        text = ""
        for path in self.logs:
            with open(path, encoding="utf-8", errors="replace") as f:
                text += f.read()
        return text

    def metrics(self, timeout=2.0):
        return metrics(self.port, timeout)

    def latest(self, timeout=2.0):
        """@return: the service's C{/latest}, parsed."""
        url = f"http://127.0.0.1:{self.port}/latest"
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return json.loads(answer.read())

    async def stop_on(self, reactor, deadline=20.0):
        """
        L{stop} without blocking the reactor: the fake HA runs on it, and a
        service that says goodbye to HA must get its answer.
        """
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await wait(reactor, lambda: self.process.poll() is not None, "the service to stop",
                       deadline)
        except AssertionError:
            self.process.kill()
            self.process.wait()


def wait(reactor, predicate, what, timeout=30.0):
    """L{tests.mosquitto.wait_for} on this script's reactor, every 0.1 s."""
    return wait_for(predicate, what, timeout, 0.1)


def answering(service):
    try:
        return service.metrics(1.0).get("smartmeter_polls_answered_total", 0) >= 1
    except OSError:
        return False


def said(service, *fragments):
    text = service.log_text()
    return all(f in text for f in fragments)


async def flood(reactor, service, report):
    sockets = []
    try:
        before = service.metrics()
        for n in range(300):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", service.port))
            sockets.append(s)
            if n % 2:
                try:
                    s.send(b"GET /latest HTTP/1.1\r\n")
                except OSError:
                    pass
        await sleep(reactor, 0.5)
        t0 = time.monotonic()
        during = service.metrics()
        latency = time.monotonic() - t0
        await sleep(reactor, 8)
        after = service.metrics()
    finally:
        for s in sockets:
            s.close()
    polled = after["smartmeter_polls_answered_total"] - before["smartmeter_polls_answered_total"]
    report["flood"] = dict(metrics_s=round(latency, 3), polls_in_8s=polled,
                           evicted=during.get("smartmeter_http_evicted_total"),
                           reading_age_s=after["smartmeter_reading_age_seconds"],
                           ok=latency < 2.0 and polled >= 3)


async def stall(reactor, service, broker, seconds, report):
    topic = "smartmeter/+/state"
    sub = Subscriber(broker.port, [topic], client_id="campaign", clean=False)
    try:
        await sleep(reactor, 3)
        broker.process.send_signal(signal.SIGSTOP)
        stopped = time.time()
        await sleep(reactor, seconds)
        connected = service.metrics().get("smartmeter_mqtt_connected")
        broker.process.send_signal(signal.SIGCONT)
        if connected is not None:
            await wait(reactor, lambda: service.metrics().get("smartmeter_mqtt_queued_messages")
                       == 0 and service.metrics().get("smartmeter_mqtt_connected") == 1,
                       "the MQTT queue to drain", 180)
        await sleep(reactor, 10)
        times = [json.loads(m)["time"] for _, m, retain in sub.got() if not retain]
    finally:
        sub.close()
    late = Subscriber(broker.port, [topic])
    try:
        await wait(reactor, late.got, "the retained state", 10)
        retained = json.loads(late.got()[-1][1])["time"]
    finally:
        late.close()
    back = sum(1 for a, b in zip(times, times[1:]) if b < a)
    during = [t for t in times if stopped <= t <= stopped + seconds]
    report["broker stall"] = dict(connected_at_end_of_stall=connected, states=len(times),
                                  taken_during_stall=len(during),
                                  went_back=back, duplicates=len(times) - len(set(times)),
                                  retained_is_newest=retained == max(times),
                                  ok=back == 0 and retained == max(times) and len(during) > 0)


async def disk_full(reactor, service, seconds, report):
    before = service.metrics()
    today = max(glob.glob(os.path.join(service.data, "*.jsonl")), key=os.path.getmtime)
    size = os.path.getsize(today)
    pid = service.process.pid
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, hard))
    await sleep(reactor, seconds)
    during = service.metrics()
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    await sleep(reactor, 6)
    after = service.metrics()
    lost = (after.get("smartmeter_datalog_lost_total", 0)
            - before.get("smartmeter_datalog_lost_total", 0))
    text = service.log_text()
    warned = (text.count("cannot write the data log") == 1
              and text.count(f"the data log is written again; {int(lost)} records were lost") == 1)
    report["disk full"] = dict(lost_reported=lost,
                               failing_during=during.get("smartmeter_datalog_failing"),
                               backfill_frames_during=(during["smartmeter_backfill_frames_total"]
                                                       - before["smartmeter_backfill_frames_total"]),
                               warned_once_each=warned, ok=warned and lost > 0)


async def swap(reactor, service, report):
    moved = service.data + ".moved"
    os.rename(service.data, moved)
    swapped = time.time()
    await sleep(reactor, 6)
    fresh = glob.glob(os.path.join(service.data, "*.jsonl"))
    after = [json.loads(line)["time"] for path in fresh for line in open(path, "rb")]
    late = [json.loads(line)["time"] for path in glob.glob(os.path.join(moved, "*.jsonl"))
            for line in open(path, "rb") if json.loads(line)["time"] > swapped + 1]
    warned = said(service, "was deleted, replaced or moved away; opening it again there")
    report["directory swap"] = dict(lines_in_new_directory=len(after),
                                    lines_into_moved_files=len(late), warned=warned,
                                    ok=bool(after) and not late and warned)


async def torn(reactor, service, report):
    report["_lines_first_run"] = service.metrics().get("smartmeter_datalog_lines_total", 0)
    service.stop(signal.SIGKILL)
    today = max(glob.glob(os.path.join(service.data, "*.jsonl")), key=os.path.getmtime)
    with open(today, "ab") as f:
        f.write(b'{"current_r_a":1.2,"pow')
    service.start()
    await wait(reactor, lambda: answering(service), "the restarted service")
    await sleep(reactor, 6)
    with open(today, "rb") as f:
        lines = f.read().split(b"\n")
    bad = [n for n, line in enumerate(lines) if line and not _json(line)]
    warned = said(service, "skipping line")
    report["torn line"] = dict(bad_lines=len(bad), next_record_whole=bool(bad) and
                               _json(lines[bad[0] + 1]) is not None, warned=warned,
                               ok=len(bad) == 1 and warned)


def _json(line):
    try:
        return json.loads(line)
    except ValueError:
        return None


def totals(service, written):
    """
    Every line of the data log, in the configured directory and in the one
    moved away: readings or slots written twice (within a directory: after
    the swap the service fills its window again where it was told to log),
    torn lines, and lines the service counted as written but that are not
    there (lost without a word).
    """
    lines, bad, duplicated_readings, duplicated_slots = 0, 0, 0, 0
    for directory in (service.data, service.data + ".moved"):
        readings, slots = [], []
        for path in glob.glob(os.path.join(directory, "*.jsonl")):
            with open(path, "rb") as f:
                for line in f:
                    record = _json(line)
                    if record is None:
                        bad += 1
                        continue
                    lines += 1
                    if record.get("kind") == "history":
                        slots.append(record["slot"])
                    elif record.get("kind") is None:
                        readings.append(record["time"])
        duplicated_readings += len(readings) - len(set(readings))
        duplicated_slots += len(slots) - len(set(slots))
    return dict(lines=lines, counted_written=written,
                unaccounted=None if written is None else int(written) - lines,
                duplicated_readings=duplicated_readings, duplicated_slots=duplicated_slots,
                bad_lines=bad)


# -- the second run: Home Assistant -----------------------------------------------

TOKEN = "campaign-admin-token"
NEW_TOKEN = "campaign-new-admin-token"
#: The second run's meter: its clock runs 200 times the host's, and its pty is
#: unplugged (the module keeping its session) every emulated hour, 18 s.  The
#: service reads the meter's clock at each new connection to the module (and
#: else hourly, on its own clock: a real meter's clock runs at the host's
#: pace), so each unplug brings the hour the meter completed meanwhile to the
#: data log, and HA gets one more hour every 18 s, as it gets one every hour
#: of a real meter.
HA_DEVICE = (f"emulator:?time-scale=0.005&start={START}&unplug-after=3600&unplug-for=100"
             "&unplug-keeps-session=on")
#: A proxy's answer in HA's place (nginx's, while HA restarts behind it).
PAGE = ("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
        "Gateway</h1></center><hr><center>nginx</center></body></html>")
#: What the service says when HA goes away (once an outage), and when it is back.
AWAY = "trying again, at least once a minute, and refilling then"
BACK = "Home Assistant is back after"
REFUSED = "Home Assistant refused the access token"
TAKEN = "Home Assistant took the access token"
#: Seconds between two new hours in the second run (one emulated hour).
HOUR_EVERY = 18.0
#: The service's websocket ping: every 60 s, 30 s for the pong (its
#: C{HaSession}); a command waits 60 s at most.  So a hung HA is seen
#: within the next hour's command plus 60 s, or a ping's 90 s: whichever
#: comes first, and 2 s for the scheduling.
PING_EVERY, PING_WITHIN = 60.0, 30.0
DROP_WITHIN = PING_EVERY + PING_WITHIN + 2.0
#: Seconds between the service's looks at a refused token's file (README: "a new
#: token written to the file is used within 5 minutes").
TOKEN_LOOK = 300.0


class _Received(list):
    """The fake's C{received}, noting when each login came and with which token."""

    def __init__(self, ha):
        super().__init__()
        self.ha = ha

    def append(self, message):
        super().append(message)
        if isinstance(message, dict) and message.get("type") == "auth":
            self.ha.logins.append((time.monotonic(), message.get("access_token")))
            if self.ha.on_login is not None:
                self.ha.on_login()


class CampaignHA(FakeHomeAssistant):
    """
    The strict fake of HA, keeping the bench's own accounts.

    @ivar logins: C{(monotonic time, token)} of every login (one a connection).
    @ivar closes: the monotonic time each connection ended.
    @ivar written: C{(monotonic time, statistic id, start)} of every hour of
        every accepted import.
    @ivar on_login: called at each login, before HA answers it (or C{None}).
    """

    def __init__(self, tokens):
        super().__init__(tokens)
        self.logins = []
        self.closes = []
        self.written = []
        self.on_login = None
        self.received = _Received(self)

    def listen(self, reactor):
        port = super().listen(reactor)
        ha, server = self, port.factory.protocol

        class Server(server):
            def onClose(self, wasClean, code, reason):
                ha.closes.append(time.monotonic())
                super().onClose(wasClean, code, reason)
        port.factory.protocol = Server
        return port

    def import_statistics(self, msg, admin):
        refused = super().import_statistics(msg, admin)
        if refused is None:
            sid = msg["metadata"]["statistic_id"]
            now = time.monotonic()
            self.written += [(now, sid, datetime.datetime.fromisoformat(stat["start"]))
                             for stat in msg["stats"]]
        return refused

    def drop_all(self):
        """End every connection at once, as an HA restart does."""
        for protocol in list(self.protocols):
            protocol.dropConnection(abort=True)


class HaRun:
    """
    The second service run: C{twist smartmeter} on L{HA_DEVICE} with C{--ha-url}
    to a L{CampaignHA} on this script's reactor and C{--ha-token-file}.

    @ivar sid: the import statistic's id, once the meter is known.
    """

    def __init__(self, reactor, directory, checkout):
        os.makedirs(directory)
        self.ha = CampaignHA({TOKEN: True})
        self.listening = self.ha.listen(reactor)
        self.token_file = os.path.join(directory, "ha-token")
        self.write_token(TOKEN)
        url = f"http://127.0.0.1:{self.listening.getHost().port}"
        self.service = Service(directory, None, checkout, device=HA_DEVICE,
                               extra=["--ha-url", url, "--ha-token-file", self.token_file])
        self.sid = None

    def write_token(self, token):
        """Put C{token} in the token file at once (no moment with an empty file)."""
        fd, path = tempfile.mkstemp(dir=os.path.dirname(self.token_file))
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(path, self.token_file)

    def mark(self):
        return len(self.service.log_text())

    def said(self, mark, fragment):
        """@return: the lines holding C{fragment} the service logged after C{mark}."""
        return [line for line in self.service.log_text()[mark:].splitlines()
                if fragment in line]

    def connected(self):
        return self.service.metrics(1.0).get("smartmeter_ha_connected")

    def logins_since(self, since):
        return [(t, token) for t, token in self.ha.logins if t >= since]

    def hours(self):
        """
        The test's oracle, apart from the product's: the complete hours of the
        data log (both half hours of bought energy known), C{{start: kWh}}.
        """
        slots = {}
        for path in glob.glob(os.path.join(self.service.data, "*.jsonl")):
            with open(path, "rb") as f:
                for line in f:
                    record = _json(line)
                    if record and record.get("kind") == "history" \
                            and record.get("energy_normal_kwh") is not None:
                        slot = datetime.datetime.fromisoformat(record["slot"])
                        slots[slot] = record["energy_normal_kwh"]
        half = datetime.timedelta(minutes=30)
        return {start: energy + slots[start + half] for start, energy in slots.items()
                if start.minute == 0 and start + half in slots}

    def rows(self):
        """HA's rows of the import statistic: C{{start: sum}}."""
        return {start: row.get("sum") for start, row in self.ha.rows.get(self.sid, {}).items()}

    def written_since(self, since):
        """@return: the hours of the import statistic HA accepted since C{since}."""
        return {start for t, sid, start in self.ha.written if t >= since and sid == self.sid}

    def behind(self):
        """@return: how many complete hours of the data log HA lacks."""
        return len(set(self.hours()) - set(self.rows()))

    def caught_up(self, mark):
        """Whether the service said HA is back after C{mark} and HA has every hour."""
        return bool(self.said(mark, BACK)) and self.behind() == 0


async def ha_start(reactor, run):
    """Start the second run; wait for the meter's MAC, the backfill done, HA up to date."""
    run.service.start()
    await wait(reactor, lambda: answering(run.service), "the HA run's first reading", 60)
    mac = run.service.latest()["meter_mac"]
    run.sid = f"smartmeter_tx:{mac.lower()}_energy_import"
    await wait(reactor, lambda: run.service.metrics().get("smartmeter_backfill_missing_slots")
               == 0 and run.rows() and run.behind() == 0 and run.connected() == 1,
               "the backfill and the first import into HA", 60)


def _why(lines):
    """The reason the service gave for HA being away, in a word or two."""
    text = " ".join(lines)
    for fragment, word in (("did not answer", "deadline"), ("not a JSON", "not JSON"),
                           ("ping", "ping"), ("ended", "connection ended")):
        if fragment in text:
            return word
    return None


async def _scraping(reactor, run, done, what, timeout, scrapes):
    """
    Scrape C{smartmeter_ha_connected} every 0.5 s, as a monitor would, into
    C{scrapes} until C{done()}; fail after C{timeout} s.
    """
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        scrapes.append(run.connected())
        await sleep(reactor, 0.5)


async def _outage(reactor, run, switch, on, tries):
    """
    Turn the fault C{switch} of the fake HA on; turn it off at a login, before
    HA answers it, once the service dropped its session, logged in C{tries}
    times since, and HA lacks an hour (something to refill); wait for the
    refill, scraping C{/metrics} all along as a monitor would.

    @return: the figures of the fault.
    """
    mark, began, off = run.mark(), time.monotonic(), getattr(run.ha, switch)
    released = []

    def login():
        drops = [t for t in run.ha.closes if t >= began]
        if drops and len(run.logins_since(drops[0])) >= tries and run.behind() > 0:
            setattr(run.ha, switch, off)
            run.ha.on_login = None
            released.append(time.monotonic())
    run.ha.on_login = login
    setattr(run.ha, switch, on)
    scrapes = []
    try:
        await _scraping(reactor, run, lambda: released, f"the session dropped and {tries} "
                        "logins after", DROP_WITHIN + 60, scrapes)
    finally:
        setattr(run.ha, switch, off)
        run.ha.on_login = None
    await _scraping(reactor, run, lambda: run.caught_up(mark), "HA refilled", 120, scrapes)
    dropped = [t for t in run.ha.closes if t >= began][0]
    away, retries = run.said(mark, AWAY), [t for t, _ in run.logins_since(dropped)]
    figures = dict(dropped_after_s=round(dropped - began, 1), by=_why(away), said=len(away),
                   retry_after_s=round(retries[0] - dropped, 2),
                   logins_to_refill=len([t for t in retries if t <= released[0]]),
                   ha_connected_0_in_scrapes=f"{scrapes.count(0)}/{len(scrapes)}",
                   refilled_after_s=round(time.monotonic() - released[0], 1),
                   hours_refilled=len(run.written_since(dropped)),
                   back_said=len(run.said(mark, BACK)), hours_behind=run.behind())
    figures["ok"] = (figures["said"] == 1 and figures["back_said"] == 1
                     and dropped - began < DROP_WITHIN and retries[0] - dropped < 60
                     and figures["hours_behind"] == 0)
    return figures


async def ha_stall(reactor, run, report):
    """
    HA takes the token, then answers nothing (no command, no ping), until the
    service dropped the session and logged in again.
    """
    report["ha stall"] = await _outage(reactor, run, "stall", True, 1)


async def ha_page(reactor, run, report):
    """HA answers every command with a proxy's page, until the service logged in twice since."""
    report["ha non-json"] = await _outage(reactor, run, "page", PAGE, 2)


async def ha_flapping(reactor, run, seconds, report):
    """
    HA logs the service in and drops the connection at every import, for
    C{seconds} from the first drop: the connections and warnings meanwhile.
    """
    mark, began = run.mark(), time.monotonic()
    run.ha.drop_imports = True
    try:
        # The first import comes with the next hour (18 s at most).
        drops = await wait(reactor, lambda: [t for t in run.ha.closes if t >= began],
                           "the first dropped import", HOUR_EVERY + 30)
        first, hours_then = drops[0], len(run.hours())
        await sleep(reactor, seconds - (time.monotonic() - first))
    finally:
        run.ha.drop_imports = False
    ended = time.monotonic()
    connections = len([t for t, _ in run.logins_since(first) if t <= ended])
    new_hours = len(run.hours()) - hours_then
    await wait(reactor, lambda: run.caught_up(mark), "HA refilled after the flapping", 120)
    per_min = connections * 60 / (ended - first)
    figures = dict(seconds=round(ended - first), connections=connections,
                   per_min=round(per_min, 1), new_hours=new_hours,
                   said=len(run.said(mark, AWAY)),
                   refilled_after_s=round(time.monotonic() - ended, 1),
                   hours_refilled=len(run.written_since(first)),
                   back_said=len(run.said(mark, BACK)), hours_behind=run.behind())
    figures["ok"] = (per_min < 10 and figures["said"] == 1 and figures["back_said"] == 1
                     and figures["hours_behind"] == 0)
    report["ha flapping"] = figures


async def ha_token(reactor, run, seconds, report):
    """
    The token is revoked (HA restarts without it) for C{seconds}; then a new
    one is written to the token file.  Logins while revoked, what was said,
    how long until the new token is used and the import goes on.
    """
    mark = run.mark()
    del run.ha.tokens[TOKEN]
    run.ha.drop_all()
    revoked = time.monotonic()
    await wait(reactor, lambda: run.said(mark, REFUSED), "the refused token said", 120)
    await sleep(reactor, seconds)
    logins = len([1 for _, token in run.logins_since(revoked) if token == TOKEN])
    run.ha.tokens[NEW_TOKEN] = True
    run.write_token(NEW_TOKEN)
    written = time.monotonic()
    # A new hour reads the file again (18 s at most here, 30 min with a real
    # meter); the look every 5 min is the bound.
    used = await wait(reactor, lambda: [t for t, token in run.logins_since(written)
                                        if token == NEW_TOKEN], "the new token used",
                      TOKEN_LOOK + 30)
    # HA's restart is an outage only if a session was open then (between two
    # slots none is); the refusal has its own line, and its end too.
    await wait(reactor, lambda: run.said(mark, TAKEN) and run.behind() == 0
               and len(run.said(mark, AWAY)) == len(run.said(mark, BACK)),
               "HA refilled with the new token", 120)
    refused = run.said(mark, REFUSED)
    figures = dict(revoked_s=round(written - revoked), logins_while_revoked=logins,
                   refusals_said=len(refused),
                   at_error_level=all("#error]" in line for line in refused),
                   taken_said=len(run.said(mark, TAKEN)), away_said=len(run.said(mark, AWAY)),
                   new_token_used_after_s=round(used[0] - written, 1),
                   hours_refilled=len(run.written_since(written)),
                   back_said=len(run.said(mark, BACK)), hours_behind=run.behind())
    figures["ok"] = (logins <= 2 and len(refused) == 1 and figures["at_error_level"]
                     and figures["taken_said"] == 1 and figures["away_said"] <= 1
                     and figures["back_said"] == figures["away_said"]
                     and used[0] - written <= TOKEN_LOOK and figures["hours_behind"] == 0)
    report["ha token"] = figures


def ha_totals(run):
    """
    Every complete hour of the data log against HA's rows of the import
    statistic: hours missing, hours HA has that the log does not, hours
    imported more than once, and rows whose sum does not grow by exactly
    their hour's energy (0 before the first: sums continuous, nothing
    carried across a gap).
    """
    hours, rows = run.hours(), run.rows()
    sums = sorted(rows.items())
    breaks, previous = 0, 0.0
    for start, total in sums:
        if start not in hours or abs(total - previous - hours[start]) > 1e-6:
            breaks += 1
        previous = total
    starts = [start for _, sid, start in run.ha.written if sid == run.sid]
    return dict(ha_hours=len(rows), log_hours=len(hours),
                ha_hours_missing=len(set(hours) - set(rows)),
                ha_hours_extra=len(set(rows) - set(hours)),
                ha_hours_imported_twice=len(starts) - len(set(starts)),
                ha_sum_breaks=breaks)


# -- the third run: the host's clock steps ------------------------------------------

#: Debian's libfaketime (package libfaketime), by architecture.
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
ANSWERED = "smartmeter_polls_answered_total"
SKIPPED = "smartmeter_polls_skipped_total"
INTERVAL = 2.0
#: Seconds each side of a step over which the polls are counted.
WINDOW = 10.0


def _set_offset(path, text):
    """Move the service's wall clock to real time plus C{text} (libfaketime's form)."""
    with open(path, "w") as f:
        f.write(text + "\n")


async def _step(reactor, service, offset_file, offset):
    """
    Step the service's wall clock to C{offset}: C{/latest} at once, then
    the polls over L{WINDOW} s.

    @return: the figures of the step, and of the polls before it.
    """
    before = service.metrics()
    _set_offset(offset_file, offset)
    stepped = time.monotonic()
    latest = service.latest()
    answered = before[ANSWERED]
    first = await wait(reactor, lambda: service.metrics()[ANSWERED] > answered and
                       time.monotonic(), "a poll after the step", 30)
    await sleep(reactor, WINDOW - (time.monotonic() - stepped))
    after = service.metrics()
    return dict(first_poll_after_s=round(first - stepped, 1),
                polls_per_interval=round((after[ANSWERED] - answered) * INTERVAL / WINDOW, 2),
                skipped_added=after[SKIPPED] - before[SKIPPED],
                age_s=latest["age"], poll_age_s=latest["poll_age"])


async def clock_step(reactor, directory, checkout, report):
    """
    The host's clock steps back 300 s, then forward 2 h (libfaketime on the
    wall clock, the monotonic one left alone), under a third service run.
    """
    if not LIBFAKETIME:
        report["clock back"] = dict(error="libfaketime is not installed (apt-get install "
                                    "libfaketime)", ok=False)
        return
    os.makedirs(directory)
    offset_file = os.path.join(directory, "faketime")
    _set_offset(offset_file, "+0")
    env = {"LD_PRELOAD": LIBFAKETIME[0], "FAKETIME_TIMESTAMP_FILE": offset_file,
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    service = Service(directory, None, checkout, env=env)
    service.start()
    try:
        await wait(reactor, lambda: answering(service), "the clock run's first reading", 60)
        start = service.metrics()[ANSWERED]
        await sleep(reactor, WINDOW)
        steady = (service.metrics()[ANSWERED] - start) * INTERVAL / WINDOW
        back = await _step(reactor, service, offset_file, "-300")
        forward = await _step(reactor, service, offset_file, "+7200")
    finally:
        await service.stop_on(reactor)
    text = service.log_text()
    back["polls_per_interval_before"] = round(steady, 2)
    back["said"] = text.count("the host's clock stepped back by 300 s")
    forward["said"] = text.count("the host's clock stepped forward by 7500 s")
    for figures in (back, forward):
        figures["ok"] = (figures["said"] == 1 and 0 <= figures["age_s"] < 3 * INTERVAL
                         and 0 <= figures["poll_age_s"] < 3 * INTERVAL)
    back["ok"] = back["ok"] and back["first_poll_after_s"] <= 2 * INTERVAL
    forward["ok"] = forward["ok"] and forward["skipped_added"] <= 2
    report["clock back"], report["clock forward"] = back, forward
    report["_clock_tracebacks"] = text.count("Traceback")


# -- the campaign -------------------------------------------------------------------


async def ha_faults(reactor, run, args, report):
    """Each of HA's faults in turn, against the one running service."""
    for name, fault in (("ha stall", lambda: ha_stall(reactor, run, report)),
                        ("ha non-json", lambda: ha_page(reactor, run, report)),
                        ("ha flapping", lambda: ha_flapping(reactor, run, args.flapping,
                                                            report)),
                        ("ha token", lambda: ha_token(reactor, run, args.revoked, report))):
        try:
            await fault()
        except Exception as e:  # an older service fails where this one should not
            report[name] = dict(error=f"{type(e).__name__}: {e}", ok=False)
            # HA sound again, so that the next faults are tried at all.
            run.ha.stall, run.ha.page, run.ha.drop_imports = False, None, False
            run.ha.tokens[NEW_TOKEN] = True
            run.write_token(NEW_TOKEN)


async def second_run(reactor, args, directory, report):
    """
    HA's faults under a second service run, then the clock's steps under a
    third; the totals of both.
    """
    began = time.monotonic()
    checkout = os.path.abspath(args.checkout)
    run = HaRun(reactor, os.path.join(directory, "ha"), checkout)
    figures = {}
    try:
        await ha_start(reactor, run)
        await ha_faults(reactor, run, args, report)
        try:
            # The newest hour may be a moment from HA: what it has once caught up.
            await wait(reactor, lambda: run.behind() == 0, "HA to have every hour", 60)
        except AssertionError:
            pass  # then the hours it lacks are counted missing
        figures = ha_totals(run)
    except Exception as e:  # the service did not start, or knows no --ha-url
        report["ha stall"] = dict(error=f"{type(e).__name__}: {e}", ok=False)
    finally:
        mark = run.mark()
        await run.service.stop_on(reactor)
        await defer.maybeDeferred(run.listening.stopListening)
    figures["away_said_at_stop"] = len(run.said(mark, AWAY))
    tracebacks = run.service.log_text().count("Traceback")
    try:
        await clock_step(reactor, os.path.join(directory, "clock"), checkout, report)
    except Exception as e:
        report["clock back"] = dict(error=f"{type(e).__name__}: {e}", ok=False)
    figures["tracebacks"] = tracebacks + report.pop("_clock_tracebacks", 0)
    figures["seconds"] = round(time.monotonic() - began)
    report["totals HA+clock"] = figures


async def first_run(reactor, args, directory, report):
    """The five faults of HTTP, MQTT and the data log, under the first service run."""
    broker = Broker(directory, persistence=True)
    service = None
    try:
        await broker.start()
        service = Service(directory, broker.port, os.path.abspath(args.checkout))
        service.start()
        await wait(reactor, lambda: answering(service), "the first reading")
        for name, fault in (("flood", lambda: flood(reactor, service, report)),
                            ("broker stall", lambda: stall(reactor, service, broker, args.stall,
                                                           report)),
                            ("disk full", lambda: disk_full(reactor, service, args.full, report)),
                            ("directory swap", lambda: swap(reactor, service, report)),
                            ("torn line", lambda: torn(reactor, service, report))):
            try:
                await fault()
            except Exception as e:  # an older service fails where this one should not
                report[name] = dict(error=f"{type(e).__name__}: {e}", ok=False)
                try:
                    await wait(reactor, lambda: answering(service), "the service", 30)
                except AssertionError:
                    # It does not recover by itself: what systemd would do, so
                    # that the next faults are tried at all.
                    report[name]["restarted"] = True
                    report["_lines_lost_with_restart"] = True
                    service.stop(signal.SIGKILL)
                    service.start()
                    await wait(reactor, lambda: answering(service), "the restarted service")
        last_lines = service.metrics().get("smartmeter_datalog_lines_total", 0)
        service.stop()  # the last lines are written, the counters final
        written = report.pop("_lines_first_run", 0) + last_lines
        if report.pop("_lines_lost_with_restart", False):
            written = None  # the counters of a killed service are not known
        report["totals"] = totals(service, written)
        text = service.log_text()
        report["totals"]["tracebacks"] = text.count("Traceback")
        report["totals"]["emfile"] = text.count("Too many open files")
    finally:
        if service is not None:
            service.stop()
        broker.kill()


async def campaign(reactor, args):
    directory = tempfile.mkdtemp(prefix="smartmeter-faults-")
    report = {}
    try:
        if args.part in ("all", "first"):
            await first_run(reactor, args, directory, report)
        if args.part in ("all", "second"):
            await second_run(reactor, args, directory, report)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(f"kept {directory}")
    return report


def show(report):
    for name, figures in report.items():
        shown = ", ".join(f"{k} {v}" for k, v in figures.items() if k != "ok")
        verdict = "" if "ok" not in figures else ("  [ok]" if figures["ok"] else "  [FAILED]")
        print(f"{name:16s} {shown}{verdict}")


def targets_met(result, part):
    """Whether every fault was handled and the totals of each run that ran are clean."""
    good = all(f.get("ok", True) for f in result.values())
    if part in ("all", "first"):
        totals_ = result.get("totals", {})
        good = (good and totals_.get("tracebacks") == 0 and totals_.get("emfile") == 0
                and totals_.get("duplicated_readings") == 0
                and totals_.get("duplicated_slots") == 0 and totals_.get("bad_lines") == 1
                and totals_.get("unaccounted") == 0)
    if part in ("all", "second"):
        ha = result.get("totals HA+clock", {})
        good = (good and ha.get("ha_hours", 0) > 0 and ha.get("ha_hours_missing") == 0
                and ha.get("ha_hours_extra") == 0 and ha.get("ha_hours_imported_twice") == 0
                and ha.get("ha_sum_breaks") == 0 and ha.get("tracebacks") == 0)
    return good


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stall", type=float, default=150.0,
                        help="seconds the broker is stopped (past twice the 60 s keepalive, the "
                        "service gives the connection up and reconnects after)")
    parser.add_argument("--checkout", default=ROOT,
                        help="run the service of another checkout (an older commit, to compare); "
                        "figures it does not have are shown as None")
    parser.add_argument("--full", type=float, default=10.0, help="seconds the disk is full")
    parser.add_argument("--flapping", type=float, default=60.0,
                        help="seconds Home Assistant drops every import, from the first drop")
    parser.add_argument("--revoked", type=float, default=60.0,
                        help="seconds the token stays revoked after the service said so, before "
                        "a new one is written to the token file")
    parser.add_argument("--part", choices=("all", "first", "second"), default="all",
                        help="first: the five faults of HTTP, MQTT and the data log; second: "
                        "Home Assistant's and the clock's (default all)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--check", action="store_true", help="exit 1 when a fault is not handled")
    args = parser.parse_args()
    if args.part != "second" and (MOSQUITTO is None or paho is None):
        print("needs mosquitto and paho-mqtt (apt-get install mosquitto; the [test] extra)",
              file=sys.stderr)
        return 2
    if args.part != "first" and FakeHomeAssistant is object:
        print("needs autobahn (the [homeassistant] extra)", file=sys.stderr)
        return 2
    started = datetime.datetime.now()
    result = {}
    from twisted.internet import reactor
    d = defer.Deferred.fromCoroutine(campaign(reactor, args))
    d.addCallbacks(result.update, lambda f: (print(f.getTraceback(), file=sys.stderr), None))
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    show(result)
    good = targets_met(result, args.part)
    print(f"wall time        {(datetime.datetime.now() - started).total_seconds():.0f} s")
    print("targets          " + ("met" if good else "MISSED"))
    return 1 if args.check and not good else 0


if __name__ == "__main__":
    sys.exit(main())
