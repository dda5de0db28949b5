#!/usr/bin/env python
"""
MQTT benchmark: what the service's publisher (L{smartmeter_tx.outputs.mqtt.publisher.MqttPublisher})
costs per reading, and how long a reading takes from C{recordReceived} to a
subscriber, against a real broker (Debian's C{mosquitto}, started on a free
port of 127.0.0.1 in a temporary directory and killed at the end).

The publisher runs as in the service: on the real reactor, with its default
config (C{mqtt://127.0.0.1:PORT}, topic C{smartmeter}, Home Assistant
discovery on) and a poller made of a real L{LatestStore} (with the meter's
identity) and L{LinkState}.  The records are the service's own
(C{Reading(...).to_record()}), with the energy counters on every 10th, built
before any timing (the service makes them whether MQTT is on or not).

The subscriber is a paho client in a child process (this script with
C{--subscriber}): it subscribes to C{smartmeter/#} with QoS 1 and a persistent
session, stamps every message with C{time.monotonic_ns()} (CLOCK_MONOTONIC,
the same clock in both processes) and hands its stamps over only when asked,
after a timed window.  So neither its CPU nor its GIL is in the publishing
process.

Phases, each after the publisher has connected and sent its discovery:

 - steady: C{--readings} readings, one every C{--pace} seconds (a
   L{LoopingCall});
 - burst: C{--readings} readings in one go, from one reactor turn (what a
   flush of the queue looks like);
 - baseline: after each of the two, the same duration with nothing to
   publish (the publisher connected, its 1 s C{loop_misc} tick running);
 - idle: C{--idle} seconds with the publisher connected and nothing to
   publish: the standing cost of MQTT;
 - broker restart: mosquitto is stopped (SIGTERM), C{--queued} readings are
   published while it is away, it is started again on the same port after
   C{--down} seconds, and the script times the publisher's reconnect and the
   delivery of the queued readings, and checks that they arrive oldest first.

Latency: from just before C{recordReceived} to the subscriber's receipt of
the reading's last message (C{state}, and C{energy} when it has the
counters).  CPU per reading: C{time.process_time()} (user + sys of every
thread of the publishing process) over the window from the first
C{recordReceived} to the last message received and the last PUBACK in, minus
the CPU of a baseline window of the same duration, divided by the readings.
The steady phase's baseline runs the same timer at the same pace doing
nothing (on a slow VM a reactor wake-up alone costs some 0.2 ms); the
burst's baseline is plain idle.
The reactor thread's own CPU (C{time.thread_time()}) is given too.

    venv/bin/python bench/mqtt.py                      # 500 readings, seed 1
    venv/bin/python bench/mqtt.py --readings 2000 --seed 2 --json out.json
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

MOSQUITTO = shutil.which("mosquitto", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
WAIT = 10.0          # the longest any single wait may take, seconds
TOTAL = 55.0         # the whole run, seconds
SERIAL = "SN-BENCH"
SUB_ID = "bench-subscriber"


# -- the subscriber child ------------------------------------------------------------------


def subscriber_main(port: int) -> int:
    """
    The child: subscribe to smartmeter/#, stamp what arrives, answer on stdin:
    C{wait N TIMEOUT} (until N distinct state/energy messages have come),
    C{dump} (every message since the last dump, then C{end}), C{quit}.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    cond = threading.Condition()
    records = []
    seen = set()
    ready = threading.Event()

    def on_connect(client, userdata, flags, rc, props):
        if rc.is_failure:
            return
        if flags.session_present:
            ready.set()
        else:
            client.subscribe("smartmeter/#", qos=1)

    def on_subscribe(client, userdata, mid, rcs, props):
        ready.set()

    def on_message(client, userdata, msg):
        stamp = time.monotonic_ns()
        with cond:
            records.append((stamp, int(msg.retain), msg.topic, msg.payload))
            suffix = msg.topic.rsplit("/", 1)[-1]
            if not msg.retain and suffix in ("state", "energy"):
                try:
                    seen.add((suffix, json.loads(msg.payload)["time"]))
                except (ValueError, KeyError, TypeError):
                    pass
            cond.notify_all()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=SUB_ID, clean_session=False,
                         protocol=paho.MQTTv311)
    client.reconnect_delay_set(0.1, 0.5)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, 30)
    client.loop_start()
    if not ready.wait(WAIT):
        print("error: could not subscribe", flush=True)
        return 1
    print("ready", flush=True)
    dumped = 0
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "wait":
            n, timeout = int(cmd[1]), float(cmd[2])
            with cond:
                ok = cond.wait_for(lambda: len(seen) >= n, timeout)
                print("%s %d" % ("ok" if ok else "timeout", len(seen)), flush=True)
        elif cmd[0] == "dump":
            with cond:
                batch, dumped = records[dumped:], len(records)
            out = ["%d %d %s %s" % (s, r, t, p.decode("utf-8", "replace")) for s, r, t, p in batch]
            out.append("end")
            sys.stdout.write("\n".join(out) + "\n")
            sys.stdout.flush()
        elif cmd[0] == "quit":
            break
    client.disconnect()
    client.loop_stop()
    return 0


# -- the publishing side ---------------------------------------------------------------------

from twisted.internet import defer, protocol, task  # noqa: E402
from twisted.logger import LogLevel, globalLogBeginner  # noqa: E402

from tests import mosquitto  # noqa: E402
from tests.mosquitto import free_port  # noqa: E402

_children = []  # Popen / pids to kill at exit, whatever happens


def _kill_children() -> None:
    for child in _children:
        try:
            if isinstance(child, subprocess.Popen):
                if child.poll() is None:
                    child.kill()
                    child.wait(5)
            else:
                os.kill(child, signal.SIGKILL)
        except (OSError, subprocess.TimeoutExpired):
            pass


atexit.register(_kill_children)


def sleep(reactor, seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


def wait_for(reactor, predicate, what: str, timeout: float = WAIT, step: float = 0.005):
    """L{tests.mosquitto.wait_for}, on this script's reactor, polling every 5 ms."""
    return mosquitto.wait_for(predicate, what, timeout, step)


class Broker:
    """mosquitto on 127.0.0.1 in C{directory}, with persistence (the subscriber's session)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port = None
        self.process = None

    @defer.inlineCallbacks
    def start(self, reactor, port=None):
        """Start it (on C{port}, or a free one); fire once it accepts connections."""
        for attempt in range(3):
            self.port = port or free_port()
            conf = os.path.join(self.directory, "mosquitto.conf")
            lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                     "persistence true", f"persistence_location {self.directory}/",
                     "autosave_interval 0"]
            if os.geteuid() == 0:
                lines.append("user root")
            with open(conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            with open(os.path.join(self.directory, "mosquitto.log"), "ab") as log:
                self.process = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=log, stderr=log)
            _children.append(self.process)
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                    return time.monotonic_ns()
                except OSError:
                    yield sleep(reactor, 0.01)
            yield self.stop(reactor, signal.SIGKILL)
        raise RuntimeError(f"mosquitto did not start on port {self.port} "
                           f"(see {self.directory}/mosquitto.log)")

    @defer.inlineCallbacks
    def stop(self, reactor, sig=signal.SIGTERM):
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        deadline = time.monotonic() + WAIT
        while p.poll() is None and time.monotonic() < deadline:
            yield sleep(reactor, 0.01)
        if p.poll() is None:
            p.kill()
            p.wait(5)


class SubscriberChild(protocol.ProcessProtocol):
    """This script with C{--subscriber PORT}, talked to over its stdin/stdout."""

    def __init__(self) -> None:
        self.buffer = b""
        self.lines = collections.deque()
        self.waiter = None
        self.ended = defer.Deferred()
        self.pid = None

    def connectionMade(self):
        self.pid = self.transport.pid
        _children.append(self.pid)

    def outReceived(self, data: bytes):
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        self.lines.extend(line.decode() for line in lines)
        if self.waiter is not None:
            d, self.waiter = self.waiter, None
            d.callback(None)

    def processEnded(self, reason):
        if self.pid in _children:
            _children.remove(self.pid)
        self.ended.callback(None)
        if self.waiter is not None:
            d, self.waiter = self.waiter, None
            d.callback(None)

    @defer.inlineCallbacks
    def line(self, reactor, timeout: float = WAIT):
        deadline = time.monotonic() + timeout
        while not self.lines:
            if self.ended.called:
                raise RuntimeError("the subscriber child has died")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("the subscriber child did not answer in %.0f s" % timeout)
            self.waiter = defer.Deferred()
            timer = reactor.callLater(left, lambda d=self.waiter: d.called or d.callback(None))
            yield self.waiter
            if timer.active():
                timer.cancel()
        return self.lines.popleft()

    @defer.inlineCallbacks
    def wait(self, reactor, count: int, timeout: float = WAIT):
        """Until the child has C{count} distinct state/energy messages; @return: how many it has."""
        self.transport.write(b"wait %d %.3f\n" % (count, timeout))
        answer = (yield self.line(reactor, timeout + 5)).split()
        if answer[0] != "ok":
            raise RuntimeError("the subscriber got %s of %d messages in %.0f s"
                               % (answer[1], count, timeout))
        return int(answer[1])

    @defer.inlineCallbacks
    def dump(self, reactor):
        """@return: [(monotonic ns, retained, topic, payload text)] since the last dump."""
        self.transport.write(b"dump\n")
        out = []
        while True:
            line = yield self.line(reactor)
            if line == "end":
                return out
            stamp, retain, topic, payload = line.split(" ", 3)
            out.append((int(stamp), retain == "1", topic, payload))

    def kill(self):
        if not self.ended.called:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass


def make_records(rng: random.Random, n: int, base: float):
    """
    C{n} records as the service makes them (C{Reading.to_record()}), the
    energy counters on every 10th, with the wall times C{base + 30 i}.
    """
    from smartmeter_tx.model import Reading
    out = []
    energy = Decimal(rng.randrange(1000000, 9000000)) / 10
    for i in range(n):
        fields = dict(power_w=rng.randrange(80, 6000),
                      current_r_a=Decimal(rng.randrange(0, 600)) / 10,
                      current_t_a=Decimal(rng.randrange(0, 600)) / 10)
        if i % 10 == 0:
            energy += Decimal(rng.randrange(0, 40)) / 10
            fields.update(energy_normal_kwh=energy, energy_reverse_kwh=Decimal("12.5"))
        out.append((Reading(**fields).to_record(), round(base + 30.0 * i, 3)))
    return out


def messages_of(record: dict) -> list:
    return ["state"] + (["energy"] if "energy_normal_kwh" in record else [])


def percentile(values, p: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def latency(records, sent_ns, got):
    """
    @param sent_ns: one monotonic ns per record, just before its recordReceived.
    @param got: the subscriber's dump.
    @return: per-reading latency in ms (to its last message), missing, duplicates, wrong.
    """
    first = {}
    dup = 0
    payloads = {}
    for stamp, retain, topic, payload in got:
        suffix = topic.rsplit("/", 1)[-1]
        if retain or suffix not in ("state", "energy"):
            continue
        data = json.loads(payload)
        key = (suffix, data["time"])
        if key in first:
            dup += 1
            continue
        first[key] = stamp
        payloads[key] = data
    lat, missing, wrong = [], 0, 0
    for (record, when), t0 in zip(records, sent_ns):
        stamps = []
        for suffix in messages_of(record):
            key = (suffix, when)
            if key not in first:
                missing += 1
                continue
            stamps.append(first[key])
            fields = ("power_w", "current_r_a", "current_t_a") if suffix == "state" else \
                ("energy_normal_kwh", "energy_reverse_kwh")
            if any(payloads[key].get(f) != record.get(f) for f in fields):
                wrong += 1
        if len(stamps) == len(messages_of(record)):
            lat.append((max(stamps) - t0) / 1e6)
    return lat, missing, dup, wrong


def lat_text(lat) -> str:
    if not lat:
        return "none received"
    return "median %.2f ms, p95 %.2f ms, max %.2f ms (min %.2f ms, %d readings)" % (
        percentile(lat, 50), percentile(lat, 95), max(lat), min(lat), len(lat))


class Acks:
    """The PUBACKs the publisher has counted (the messages its outbox saw delivered)."""

    def __init__(self, publisher) -> None:
        self.publisher = publisher

    @property
    def count(self) -> int:
        return self.publisher.published


WAKEUPS = [0]  # reactor iterations (calls of doIteration), counted by count_wakeups


def count_wakeups(reactor) -> None:
    inner = reactor.doIteration

    def doIteration(timeout):
        WAKEUPS[0] += 1
        return inner(timeout)
    reactor.doIteration = doIteration


def cpu_now():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return (time.monotonic(), time.process_time(), time.thread_time(), WAKEUPS[0],
            ru.ru_utime, ru.ru_stime)


@defer.inlineCallbacks
def timed_phase(reactor, name, publisher, acks, child, records, expected, pace):
    """
    Publish C{records} (at C{pace} seconds apart, or all in one reactor turn
    when C{pace} is 0), wait for every message at the subscriber and every
    PUBACK, then measure a baseline as long.  @return: the phase's figures.
    """
    target_acks = acks.count + sum(len(messages_of(r)) for r, _ in records)
    target_seen = expected + sum(len(messages_of(r)) for r, _ in records)
    sent_ns = []
    start = cpu_now()
    if pace > 0:
        it = iter(records)

        def one():
            try:
                record, when = next(it)
            except StopIteration:
                loop.stop()
                return
            sent_ns.append(time.monotonic_ns())
            publisher.recordReceived(record, when)
        loop = task.LoopingCall(one)
        loop.clock = reactor
        yield loop.start(pace, now=True)
    else:
        for record, when in records:
            sent_ns.append(time.monotonic_ns())
            publisher.recordReceived(record, when)
    fed = time.monotonic()
    yield child.wait(reactor, target_seen, WAIT)
    yield wait_for(reactor, lambda: acks.count >= target_acks, "the PUBACKs")
    end = cpu_now()
    duration = end[0] - start[0]
    # The baseline: as long again, with the same timer ticking (steady) or nothing (burst).
    idle0 = cpu_now()
    if pace > 0:
        ticks = task.LoopingCall(lambda: None)
        ticks.clock = reactor
        ticks.start(pace, now=True)
        yield sleep(reactor, duration)
        ticks.stop()
    else:
        yield sleep(reactor, duration)
    idle1 = cpu_now()
    got = yield child.dump(reactor)
    lat, missing, dup, wrong = latency(records, sent_ns, got)
    idle_dur = idle1[0] - idle0[0]
    scale = duration / idle_dur if idle_dur > 0 else 1.0
    cpu = end[1] - start[1]
    idle_cpu = (idle1[1] - idle0[1]) * scale
    thread_cpu = end[2] - start[2]
    idle_thread = (idle1[2] - idle0[2]) * scale
    n = len(records)
    return dict(name=name, readings=n, messages=target_seen - expected, pace=pace,
                feed_s=fed - start[0], duration_s=duration, idle_s=idle_dur,
                cpu_s=cpu, idle_cpu_s=idle_cpu, cpu_per_reading_us=(cpu - idle_cpu) / n * 1e6,
                thread_cpu_s=thread_cpu, idle_thread_cpu_s=idle_thread,
                thread_per_reading_us=(thread_cpu - idle_thread) / n * 1e6,
                user_s=end[4] - start[4], sys_s=end[5] - start[5],
                idle_user_s=(idle1[4] - idle0[4]) * scale, idle_sys_s=(idle1[5] - idle0[5]) * scale,
                wakeups=end[3] - start[3], idle_wakeups=(idle1[3] - idle0[3]) * scale,
                latency_ms=lat, missing=missing, duplicates=dup, wrong=wrong,
                expected=target_seen)


@defer.inlineCallbacks
def run(reactor, args, directory):
    from smartmeter_tx.session.linkstate import LinkState
    from smartmeter_tx.outputs.mqtt.config import MqttConfig
    from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
    from smartmeter_tx.service.store import LatestStore
    from smartmeter_tx.service.view import ServiceView

    rng = random.Random(args.seed)
    broker = Broker(directory)
    child = None
    publisher = None
    result = {"seed": args.seed, "readings": args.readings}
    try:
        yield broker.start(reactor)
        result["port"] = broker.port
        child = SubscriberChild()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.dirname(HERE)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        reactor.spawnProcess(child, sys.executable,
                             [sys.executable, os.path.abspath(__file__), "--subscriber",
                              str(broker.port)], env=env)
        line = yield child.line(reactor)
        if line != "ready":
            raise RuntimeError("the subscriber child said %r" % line)

        store = LatestStore()
        store.identity = {"mac": "001D129012345678", "maker": "000016", "serial": SERIAL}
        view = ServiceView(store, LinkState(), reactor)
        config = MqttConfig.from_options(f"mqtt://127.0.0.1:{broker.port}", None)
        publisher = MqttPublisher(config, view, reactor, rng=random.Random(args.seed))
        acks = Acks(publisher)
        connacks = []
        original = publisher.connection.on_up

        def on_up():
            connacks.append(time.monotonic_ns())
            original()
        publisher.connection.on_up = on_up
        t0 = time.monotonic()
        publisher.startService()
        yield wait_for(reactor, lambda: publisher.connected, "the publisher to connect")
        yield wait_for(reactor, lambda: publisher.backlog == 0, "discovery to be acknowledged")
        result["connect_s"] = time.monotonic() - t0
        result["discovery_messages"] = publisher.published

        # Warm-up: paths, imports, json; not timed.
        warm = make_records(rng, 20, 1.7e9)
        for record, when in warm:
            publisher.recordReceived(record, when)
        expected = sum(len(messages_of(r)) for r, _ in warm)
        yield child.wait(reactor, expected)
        yield wait_for(reactor, lambda: publisher.backlog == 0, "warm-up PUBACKs")
        yield child.dump(reactor)

        i0 = cpu_now()
        yield sleep(reactor, args.idle)
        i1 = cpu_now()
        result["idle"] = dict(seconds=i1[0] - i0[0], cpu_s=i1[1] - i0[1])

        steady = make_records(rng, args.readings, 1.8e9)
        burst = make_records(rng, args.readings, 1.9e9)
        queued = make_records(rng, args.queued, 2.0e9)
        phase = yield timed_phase(reactor, "steady", publisher, acks, child, steady, expected,
                                  args.pace)
        expected = phase["expected"]
        result["steady"] = phase
        phase = yield timed_phase(reactor, "burst", publisher, acks, child, burst, expected, 0)
        expected = phase["expected"]
        result["burst"] = phase

        # Broker restart.
        restart = {"queued": args.queued, "down_s": args.down}
        reconnects = publisher.reconnects
        t_stop = time.monotonic_ns()
        yield broker.stop(reactor)
        yield wait_for(reactor, lambda: not publisher.connected,
                       "the publisher to see the broker gone")
        restart["noticed_ms"] = (time.monotonic_ns() - t_stop) / 1e6
        sent_ns = []
        for record, when in queued:
            sent_ns.append(time.monotonic_ns())
            publisher.recordReceived(record, when)
        restart["backlog"] = publisher.backlog
        yield sleep(reactor, args.down)
        n_connacks = len(connacks)
        t_up = yield broker.start(reactor, broker.port)
        expected += sum(len(messages_of(r)) for r, _ in queued)
        yield child.wait(reactor, expected, WAIT + 5)
        got = yield child.dump(reactor)
        lat, missing, dup, wrong = latency(queued, sent_ns, got)
        qtimes = {when for _, when in queued}
        order = []
        last_stamp = None
        for stamp, retain, topic, payload in got:
            if retain or not topic.endswith("/state"):
                continue
            when = json.loads(payload)["time"]
            if when in qtimes:
                order.append(when)
                last_stamp = stamp if last_stamp is None else max(last_stamp, stamp)
        for stamp, retain, topic, payload in got:
            if not retain and topic.endswith("/energy") and json.loads(payload)["time"] in qtimes:
                last_stamp = max(last_stamp or stamp, stamp)
        restart.update(
            reconnects=publisher.reconnects - reconnects,
            connack_after_up_ms=((connacks[n_connacks] - t_up) / 1e6
                                 if len(connacks) > n_connacks else None),
            all_delivered_after_up_ms=(last_stamp - t_up) / 1e6 if last_stamp else None,
            outage_ms=(last_stamp - t_stop) / 1e6 if last_stamp else None,
            oldest_first=order == sorted(order) and len(order) == len(set(order)),
            state_order_count=len(order), missing=missing, duplicates=dup, wrong=wrong,
            backlog_after=publisher.backlog, dropped=publisher.outbox.dropped)
        result["restart"] = restart
        yield wait_for(reactor, lambda: publisher.backlog == 0, "the last PUBACKs")
        result["published"] = publisher.published
        result["acks"] = acks.count
    finally:
        if publisher is not None and publisher.running:
            try:
                yield defer.maybeDeferred(publisher.stopService)
            except Exception:
                pass
        if child is not None:
            try:
                child.transport.write(b"quit\n")
                yield defer.DeferredList([child.ended, sleep(reactor, 2.0)],
                                         fireOnOneCallback=True)
            except Exception:
                pass
            child.kill()
        yield broker.stop(reactor)
    return result


def report(r) -> None:
    print("== %d readings, seed %d, mosquitto on 127.0.0.1:%d" % (r["readings"], r["seed"], r["port"]))
    print("connect                   %.3f s to CONNACK and %d discovery/availability/link"
          " messages acknowledged" % (r["connect_s"], r["discovery_messages"]))
    for key in ("steady", "burst"):
        p = r[key]
        how = ("one every %.0f ms" % (p["pace"] * 1000)) if p["pace"] else "all in one reactor turn"
        print("%-25s %d readings (%d messages, %s): fed in %.3f s, all in and acknowledged"
              " after %.3f s" % (key, p["readings"], p["messages"], how, p["feed_s"],
                                 p["duration_s"]))
        print("  latency                 %s" % lat_text(p["latency_ms"]))
        print("  received                missing %d, duplicates %d, wrong values %d"
              % (p["missing"], p["duplicates"], p["wrong"]))
        print("  CPU (process)           %.3f s, baseline %.3f s over %.3f s -> %.0f us per reading"
              % (p["cpu_s"], p["idle_cpu_s"], p["idle_s"], p["cpu_per_reading_us"]))
        print("  user / sys (getrusage)  %.3f / %.3f s, baseline %.3f / %.3f s"
              % (p["user_s"], p["sys_s"], p["idle_user_s"], p["idle_sys_s"]))
        print("  CPU (reactor thread)    %.3f s, baseline %.3f s -> %.0f us per reading"
              % (p["thread_cpu_s"], p["idle_thread_cpu_s"], p["thread_per_reading_us"]))
        print("  reactor wake-ups        %d, baseline %.0f -> %.1f per reading"
              % (p["wakeups"], p["idle_wakeups"], (p["wakeups"] - p["idle_wakeups"]) / p["readings"]))
    idle = r["idle"]
    print("idle                      %.3f s CPU over %.1f s = %.2f ms per second (publisher"
          " connected, nothing to publish)" % (idle["cpu_s"], idle["seconds"],
                                               idle["cpu_s"] / idle["seconds"] * 1000))
    x = r["restart"]

    def ms(v):
        return "n/a" if v is None else "%.0f ms" % v
    print("broker restart            %d readings queued while down (backlog %d), down %.1f s;"
          " publisher noticed in %s" % (x["queued"], x["backlog"], x["down_s"], ms(x["noticed_ms"])))
    print("  after the broker is up  CONNACK %s, all %d delivered %s (%s from the stop);"
          " reconnects %d" % (ms(x["connack_after_up_ms"]), x["queued"],
                              ms(x["all_delivered_after_up_ms"]), ms(x["outage_ms"]),
                              x["reconnects"]))
    print("  order                   %s (%d states); missing %d, duplicates %d, wrong %d,"
          " backlog after %d, dropped %d"
          % ("oldest first" if x["oldest_first"] else "OUT OF ORDER", x["state_order_count"],
             x["missing"], x["duplicates"], x["wrong"], x["backlog_after"], x["dropped"]))
    print("messages                  %d published, %d PUBACKs" % (r["published"], r["acks"]))


def ok(r) -> bool:
    """Every reading delivered once with its values; the queued ones all, oldest first."""
    phases = [r["steady"], r["burst"], r["restart"]]
    return (all(p["missing"] == 0 and p["duplicates"] == 0 and p["wrong"] == 0 for p in phases)
            and r["restart"]["oldest_first"] and r["restart"]["dropped"] == 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=500,
                    help="readings in each of the steady and burst phases (default 500)")
    ap.add_argument("--seed", type=int, default=1, help="reading values and publisher seed (default 1)")
    ap.add_argument("--pace", type=float, default=0.01,
                    help="seconds between two readings in the steady phase (default 0.01)")
    ap.add_argument("--queued", type=int, default=50,
                    help="readings published while the broker is away (default 50)")
    ap.add_argument("--down", type=float, default=2.0,
                    help="seconds the broker stays away (default 2)")
    ap.add_argument("--idle", type=float, default=4.0,
                    help="seconds of the idle measurement (default 4)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every reading arrived once with its values, and the"
                         " queued ones oldest first")
    ap.add_argument("--subscriber", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.subscriber is not None:
        return subscriber_main(args.subscriber)
    if MOSQUITTO is None:
        print("mosquitto not found (apt-get install mosquitto)", file=sys.stderr)
        return 1
    if args.readings < 1 or args.queued < 1 or args.pace < 0 or args.down < 0 \
            or args.idle <= 0:
        ap.error("--readings and --queued must be >= 1, --pace and --down >= 0, --idle > 0")
    try:
        import paho.mqtt  # noqa: F401
    except ImportError:
        print("paho-mqtt not installed: pip install -e '.[mqtt]'", file=sys.stderr)
        return 1
    levels = collections.Counter()
    globalLogBeginner.beginLoggingTo(
        [lambda e: levels.update([e.get("log_level", LogLevel.info).name])],
        redirectStandardIO=False, discardBuffer=True)
    from twisted.internet import reactor
    count_wakeups(reactor)
    directory = tempfile.mkdtemp(prefix="bench-mqtt-")
    outcome = {}

    def go():
        d = run(reactor, args, directory)
        watchdog = reactor.callLater(TOTAL, d.cancel)

        def done(value):
            if watchdog.active():
                watchdog.cancel()
            outcome["value"] = value
            reactor.stop()
        d.addBoth(done)

    reactor.callWhenRunning(go)
    t0 = time.monotonic()
    try:
        reactor.run()  # SIGTERM/SIGINT stop it; the children are killed below and at exit
    finally:
        _kill_children()
        shutil.rmtree(directory, True)
    value = outcome.get("value")
    if value is None or hasattr(value, "raiseException"):
        print("error: %s" % (value.getErrorMessage() if value is not None else "no result"),
              file=sys.stderr)
        return 1
    report(value)
    print("log events                %s" % ", ".join("%s %d" % kv for kv in sorted(levels.items())))
    print("wall time                 %.1f s" % (time.monotonic() - t0))
    good = ok(value)
    print("targets                   %s" % ("met" if good else "MISSED"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(value, fh, indent=1, default=str)
    return 0 if good or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
