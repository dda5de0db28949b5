"""
C{twist smartmeter} under a flood of HTTP connections with a low open-file
limit (C{ulimit -n 64}), in a subprocess on the emulator: hundreds of idle and
slow connections must not keep C{/metrics} from answering within 2 s, nor
stop the polls, the data log or the state file.
"""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from smartmeter_tx.outputs.guard import default_max_connections
from tests.cli.test_twist import twist_env
from tests.emuloop import pinned
from tests.mosquitto import free_port, wait_for

OPEN_FILES = 64
FLOOD = 300


def pause(seconds: float):
    """Real time, on the reactor: the service runs in another process."""
    return task.deferLater(reactor, seconds, lambda: None)


def limit_open_files():
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


def metrics(port: int, timeout: float = 2.0) -> dict:
    """@return: C{{sample name: value}} of the service's /metrics (unlabelled samples)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode("utf-8")
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


class FloodTests(TestCase):
    timeout = 120  # only catches a hang

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.data = os.path.join(self.dir, "data")
        self.state = os.path.join(self.dir, "state.json")
        self.log = os.path.join(self.dir, "twist.log")
        self.sockets = []
        self.addCleanup(self.closeFlood)

    def closeFlood(self):
        for s in self.sockets:
            s.close()
        self.sockets = []

    def start(self):
        """Start twist under the low limit; @return: its HTTP port."""
        self.port = free_port()
        args = [sys.executable, "-m", "twisted", "--log-format", "text", "smartmeter",
                "--device", pinned("emulator:?time-scale=0.01"),
                "--http", f"tcp:{self.port}:interface=127.0.0.1", "--data-log", self.data,
                "--state-file", self.state, "--interval", "2", "--energy-interval", "10"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(args, env=twist_env(), cwd=self.dir, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            preexec_fn=limit_open_files)
        self.addCleanup(self.stop)
        return self.port

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def answered(self):
        try:
            return metrics(self.port, 1.0).get("smartmeter_polls_answered_total", 0) >= 1
        except OSError:
            return False

    def flood(self, count: int) -> None:
        """Open C{count} connections: half idle, half trickling a request line."""
        for n in range(count):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self.sockets.append(s)
            if n % 2:
                try:
                    s.send(b"GET /latest HTTP/1.1\r\n")
                except OSError:
                    pass  # not yet connected, or already closed by the service

    def log_text(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    @defer.inlineCallbacks
    def test_floodWithFewFiles(self):
        self.start()
        yield wait_for(self.answered, "the first reading", 30)
        before = metrics(self.port)
        self.flood(FLOOD)
        yield pause(0.5)
        t0 = time.monotonic()
        during = metrics(self.port, timeout=2.0)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertGreater(during["smartmeter_http_evicted_total"], 0)
        self.assertLessEqual(during["smartmeter_http_connections"],
                             default_max_connections(OPEN_FILES))
        # Keep flooding for a few poll intervals (2 s).
        for _ in range(4):
            self.flood(FLOOD // 4)
            yield pause(2.0)
        t0 = time.monotonic()
        after = metrics(self.port, timeout=2.0)
        self.assertLess(time.monotonic() - t0, 2.0)
        elapsed = after["smartmeter_reading_age_seconds"]
        self.assertLess(elapsed, 6.0, "the polls stopped during the flood")
        answered = "smartmeter_polls_answered_total"
        self.assertGreaterEqual(after[answered] - before[answered], 3)
        self.assertEqual(after["smartmeter_datalog_lost_total"], 0)
        self.assertGreater(after["smartmeter_datalog_lines_total"],
                           before["smartmeter_datalog_lines_total"])
        self.closeFlood()
        flooded_at = time.time() - 10
        # twist stops cleanly on SIGTERM, then ends by the signal (as systemd expects).
        self.assertEqual(self.stop(), -signal.SIGTERM)
        self.assertIn("Main loop terminated", self.log_text())
        # The state file is written at the stop, after the flood.
        self.assertGreater(os.stat(self.state).st_mtime, flooded_at)
        with open(self.state, encoding="utf-8") as f:
            json.load(f)
        text = self.log_text()
        for sign in ("Too many open files", "EMFILE", "Out of file descriptors", "Traceback"):
            self.assertNotIn(sign, text)
