"""
C{twist smartmeter} under a flood of HTTP connections with a low open-file
limit (C{ulimit -n 64}), in a subprocess on the emulator: hundreds of idle and
slow connections must not keep C{/metrics} from answering, nor stop the polls,
the data log or the state file, nor run the service out of descriptors.

Every wait here waits for something to happen (the service to close the
flood's surplus, a poll to be answered); its deadline only catches a hang.
How fast the service answers under the flood is measured by
C{bench/flood.py}, which imports the helpers below (and C{bench/faults.py}
L{metrics}).
"""

import glob
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import urllib.request

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from smartmeter_tx.outputs.guard import default_max_connections
from tests.cli.test_twist import twist_env
from tests.emuloop import pinned
from tests.mosquitto import free_port, wait_for

OPEN_FILES = 64
#: The HTTP connections the service holds at most under that limit.
CAP = default_max_connections(OPEN_FILES)
FLOOD = 300
#: Connections opened at once: with the L{CAP} the service may leave in the
#: listen queue, fewer than its 50 places.
BATCH = 16
#: Seconds a wait may last before the test calls it a hang (a loaded machine
#: is slow, not stuck: this is not a speed target).
HANG = 60.0
#: Polls that must be answered while the flood goes on.
POLLS = 3
ANSWERED = "smartmeter_polls_answered_total"
LINES = "smartmeter_datalog_lines_total"
#: The counters of the connections the service closed.
CLOSES = ("smartmeter_http_evicted_total", "smartmeter_http_refused_total",
          "smartmeter_http_header_timeouts_total")
#: Error signs that must not be in the service's log.
BAD_SIGNS = ("Too many open files", "EMFILE", "Out of file descriptors", "Traceback")


def limit_open_files(limit: int = OPEN_FILES):
    """@return: a C{preexec_fn} setting the child's open-file limit to C{limit}."""
    def preexec():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return preexec


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


def data_log_records(directory: str) -> list:
    """@return: every line of the data log in C{directory}, decoded (a torn line raises)."""
    records = []
    for path in sorted(glob.glob(os.path.join(directory, "*.jsonl"))):
        with open(path, "rb") as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


class Twist:
    """
    C{twist smartmeter} on the emulator in a subprocess, under a low
    open-file limit, its output in a log file of C{directory}.
    """

    def __init__(self, directory: str, interval: float = 1.0,
                 open_files: int = OPEN_FILES, env: "dict | None" = None) -> None:
        """@param env: more environment for the process (e.g. a faked clock)."""
        self.directory = directory
        self.env = env or {}
        self.data = os.path.join(directory, "data")
        self.state = os.path.join(directory, "state.json")
        self.log = os.path.join(directory, "twist.log")
        self.interval = interval
        self.open_files = open_files
        self.port = free_port()
        self.process = None

    def start(self) -> None:
        args = [sys.executable, "-m", "twisted", "--log-format", "text", "smartmeter",
                "--device", pinned("emulator:?time-scale=0.01"),
                "--http", f"tcp:{self.port}:interface=127.0.0.1", "--data-log", self.data,
                "--state-file", self.state, "--interval", str(self.interval),
                "--energy-interval", str(self.interval * 5)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(args, env=dict(twist_env(), **self.env),
                                            cwd=self.directory,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=limit_open_files(self.open_files))

    def stop(self):
        """SIGTERM, then SIGKILL if it hangs; @return: its exit status."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return None if self.process is None else self.process.returncode

    def metrics(self, timeout: float = HANG) -> dict:
        return metrics(self.port, timeout)

    def answered(self, timeout: float = 5.0) -> float:
        """@return: the polls answered so far, or 0 while /metrics does not answer."""
        try:
            return self.metrics(timeout).get(ANSWERED, 0)
        except OSError:
            return 0

    def log_text(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def logged_records(self) -> list:
        """@return: every line of the data log, decoded (a torn line raises)."""
        return data_log_records(self.data)


class Flood:
    """
    Connections to a port that never send a whole request: every other one
    sends a request line and no more (a slow client), the rest nothing.

    @ivar sockets: those the service has not closed, as far as seen.
    @ivar opened: how many were opened in all; C{closed}, how many of them
        the service closed (reset or EOF).
    """

    def __init__(self, port: int, cap: int = CAP) -> None:
        """@param cap: the HTTP connections the service holds at most."""
        self.port = port
        self.cap = cap
        self.sockets = []
        self.opened = self.closed = 0

    def open(self, count: int) -> None:
        for n in range(count):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self.sockets.append(s)
            self.opened += 1
            if n % 2:
                try:
                    s.send(b"GET /latest HTTP/1.1\r\n")
                except OSError:
                    pass  # not yet connected, or already closed by the service

    def prune(self) -> int:
        """Forget (and close) the connections the service has closed; @return: how many are left."""
        left = []
        for s in self.sockets:
            try:
                gone = s.recv(1, socket.MSG_PEEK) == b""
            except (BlockingIOError, InterruptedError):
                gone = False  # open (or still connecting), nothing to read
            except OSError:
                gone = True  # reset, refused: the connection is over
            if gone:
                s.close()
                self.closed += 1
            else:
                left.append(s)
        self.sockets = left
        return len(left)

    def absorbed(self) -> bool:
        """
        Whether the service has closed all but C{cap} of the connections: it
        has taken in every one it was sent before the last C{cap} (those may
        still be in the listen queue).
        """
        return self.prune() <= self.cap

    @defer.inlineCallbacks
    def steady(self, count: int, batch: int = BATCH):
        """
        Open C{count} connections, C{batch} at a time, each batch once the
        service has absorbed the previous one: so the listen queue (50) never
        overflows, and every connection reaches the service.  (A burst over
        the queue has the kernel drop the handshake's last ACK: an idle client
        then believes itself connected while the service never sees it.)
        """
        while count > 0:
            self.open(min(batch, count))
            count -= batch
            yield wait_for(self.absorbed, "the service to close the flood's surplus", HANG)

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets = []


class FloodTests(TestCase):
    timeout = 240  # only catches a hang

    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.twist = Twist(directory)
        self.flood = Flood(self.twist.port)
        self.addCleanup(self.flood.close)
        self.addCleanup(self.twist.stop)

    def scrape(self) -> dict:
        """@return: /metrics, checked for the connections held: never over the cap."""
        figures = self.twist.metrics()
        self.assertLessEqual(figures["smartmeter_http_connections"], CAP)
        return figures

    def floodUntil(self, polls: float):
        """
        @return: a predicate for L{wait_for}: true once the service has
            answered C{polls} polls; until then it opens a batch more each
            time the service has absorbed the last, so that the flood goes
            on for as long as the wait lasts.
        """
        def flooding():
            if not self.flood.absorbed():
                return False
            if self.scrape()[ANSWERED] >= polls:
                return True
            self.flood.open(BATCH)
            return False
        return flooding

    @defer.inlineCallbacks
    def test_floodWithFewFiles(self):
        """Under a flood the service holds at most the cap, answers /metrics and polls on."""
        twist = self.twist
        twist.start()
        yield wait_for(lambda: twist.answered() >= 1, "the first reading", HANG, 0.2)
        before = self.scrape()
        yield self.flood.steady(FLOOD)
        during = self.scrape()
        self.assertGreater(during["smartmeter_http_evicted_total"], 0)
        # Every connection the service closed, it counted.
        closes = sum(during[name] - before[name] for name in CLOSES)
        self.assertGreaterEqual(closes, self.flood.closed)
        self.assertGreaterEqual(self.flood.closed, FLOOD - CAP)
        # The polls go on while the flood does.
        yield wait_for(self.floodUntil(during[ANSWERED] + POLLS),
                       f"{POLLS} polls answered during the flood", HANG)
        after = self.scrape()
        self.assertEqual(after["smartmeter_datalog_lost_total"], 0)
        self.assertGreater(after[LINES], before[LINES])
        self.flood.close()
        saved = os.stat(twist.state)
        # twist stops cleanly on SIGTERM, then ends by the signal (as systemd expects).
        self.assertEqual(twist.stop(), -signal.SIGTERM)
        text = twist.log_text()
        self.assertIn("Main loop terminated", text)
        # The state file is written again at the stop (a new file renamed
        # into place), after the flood.
        now = os.stat(twist.state)
        self.assertNotEqual((now.st_ino, now.st_mtime_ns), (saved.st_ino, saved.st_mtime_ns))
        with open(twist.state, encoding="utf-8") as f:
            json.load(f)
        # Every line the service counted is in the data log, whole.
        self.assertGreaterEqual(len(twist.logged_records()), after[LINES])
        for sign in BAD_SIGNS:
            self.assertNotIn(sign, text)
