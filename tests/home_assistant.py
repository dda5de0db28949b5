"""
A real Home Assistant for the tests, as users run it: a pinned
C{homeassistant} from the package index in its own venv, cached outside the
checkout (one per version: the second run pays no install), a configuration
directory made by the test (onboarding done, an owner and a second user
with long-lived access tokens made by HA's own auth code, the recorder on
SQLite, optionally the C{mqtt} integration on a test broker), and C{hass}
started on a free loopback port and stopped by its PID.

    python -m tests.home_assistant install    # what .ci/run does first

The newest pinned HA the machine's interpreters can run is used
(C{$SMARTMETER_TEST_HA_VERSION} picks another pin); the cache lives in
C{$SMARTMETER_TEST_CACHE}, else C{$XDG_CACHE_HOME/smartmeter_tx}, else
C{~/.cache/smartmeter_tx}.  Tests that need HA are skipped, saying why, only
where it cannot be installed; with C{$SMARTMETER_TEST_HA=required} (as
.ci/run sets it) they fail instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Optional

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from tests.mosquitto import free_port, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
#: HA versions we test against, newest first, each with the Python it needs
#: and what its own pins leave open that a later release broke (acme 2.8,
#: which HA 2024.3 pins, fails with josepy 2).
PINS = (("2025.4.4", (3, 13), ()), ("2024.3.3", (3, 11), ("josepy<2",)))
#: How long a started HA may take to answer with its recorder running.
START_WITHIN = 90.0
#: How long an install may take (a cold one is a few minutes).
INSTALL_WITHIN = 1200.0


def cache_root() -> str:
    explicit = os.environ.get("SMARTMETER_TEST_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "smartmeter_tx")


def clean_env() -> dict:
    """
    Our environment without Python's own variables: another interpreter must
    not read our path (trial's workers set C{PYTHONPATH} to theirs).
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def _die_with_parent() -> None:
    """In a child: be sent SIGTERM when the test process dies, killed or not."""
    import ctypes
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _version_of(python: str) -> Optional[tuple]:
    """The (major, minor) of an interpreter that runs and has venv, or C{None}."""
    try:
        out = subprocess.run([python, "-I", "-c",
                              "import sys, venv; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60, env=clean_env())
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def _candidates(wanted: tuple) -> list:
    """Interpreters that may be Python C{wanted}: on PATH, then pyenv's."""
    name = "python%d.%d" % wanted
    found = [shutil.which(name)] if shutil.which(name) else []
    if sys.version_info[:2] == wanted:
        found.insert(0, sys.executable)
    root = os.environ.get("PYENV_ROOT") or os.path.join(os.path.expanduser("~"), ".pyenv")
    found += sorted(glob.glob(os.path.join(root, "versions", "%d.%d.*" % wanted, "bin", name)),
                    reverse=True)
    return found


def pick() -> tuple:
    """
    The HA version to test against and the interpreter for it.

    @return: C{(version, python)}.
    @raise unittest.SkipTest: no interpreter for any pin (or for the one asked for).
    """
    asked = os.environ.get("SMARTMETER_TEST_HA_VERSION")
    pins = [pin for pin in PINS if asked in (None, "", pin[0])]
    if not pins:
        raise unittest.SkipTest(f"$SMARTMETER_TEST_HA_VERSION={asked} is not one of the "
                                f"pinned versions {[pin[0] for pin in PINS]}")
    for version, wanted, _ in pins:
        for python in _candidates(wanted):
            if _version_of(python) == wanted:
                return version, python
    raise unittest.SkipTest("no Python for Home Assistant: it needs "
                            + " or ".join("%d.%d" % pin[1] for pin in pins))


class Installation:
    """One cached venv with one HA version, ready once its marker file is there."""

    #: Integrations the tests load beyond HA's defaults; their requirements
    #: are installed with HA, so C{hass} runs with C{--skip-pip}.
    DOMAINS = ("recorder", "mqtt", "energy", "history", "config", "api", "websocket_api",
               "sensor", "binary_sensor")

    def __init__(self, version: str, python: str) -> None:
        self.version = version
        self.python_for_venv = python
        self.directory = os.path.join(cache_root(), f"homeassistant-{version}")
        self.python = os.path.join(self.directory, "bin", "python")
        self.marker = os.path.join(self.directory, ".ready")
        self.log = self.directory + ".install.log"

    @property
    def ready(self) -> bool:
        return os.path.exists(self.marker)

    def install(self, say=lambda text: None) -> None:
        """
        Install (under a lock shared by every copy of the suite), unless done.

        @raise RuntimeError: the install failed; its log says why.
        """
        os.makedirs(cache_root(), exist_ok=True)
        with open(self.directory + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.ready:
                return
            started = time.monotonic()
            say(f"installing Home Assistant {self.version} into {self.directory} "
                f"(a few minutes, once)")
            shutil.rmtree(self.directory, ignore_errors=True)  # a partial one
            with open(self.log, "w") as log:
                self._run([self.python_for_venv, "-m", "venv", self.directory], log)
                self._run([self.python, "-m", "pip", "install", "--upgrade", "pip"], log)
                fixes = next(pin[2] for pin in PINS if pin[0] == self.version)
                self._run([self.python, "-m", "pip", "install",
                           f"homeassistant=={self.version}", *fixes], log)
                extra = self._requirements()
                if extra:
                    self._run([self.python, "-m", "pip", "install", *extra], log)
                self._warm_up(log)
            with open(self.marker, "w") as f:
                f.write(self.version + "\n")
            say(f"Home Assistant {self.version} installed in {time.monotonic() - started:.0f} s")

    def _run(self, argv: list, log) -> None:
        log.write("$ " + " ".join(argv) + "\n")
        log.flush()
        try:
            subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=True,
                           timeout=INSTALL_WITHIN, env=clean_env())
        except (OSError, subprocess.SubprocessError) as e:
            raise RuntimeError(f"{argv[2:5]} failed ({e}); see {self.log}") from None

    def _requirements(self) -> list:
        """The pip requirements of L{DOMAINS} and what they depend on, from HA's manifests."""
        script = (
            "import json, os, sys, homeassistant.components as c\n"
            "root = os.path.dirname(c.__file__); todo = sys.argv[1:]; seen = set(); reqs = []\n"
            "while todo:\n"
            "    d = todo.pop()\n"
            "    if d in seen: continue\n"
            "    seen.add(d)\n"
            "    m = json.load(open(os.path.join(root, d, 'manifest.json')))\n"
            "    reqs += m.get('requirements', []); todo += m.get('dependencies', [])\n"
            "print(json.dumps(sorted(set(reqs))))\n")
        out = subprocess.run([self.python, "-c", script, *self.DOMAINS], capture_output=True,
                             text=True, timeout=120, check=True, env=clean_env())
        return json.loads(out.stdout)

    def _warm_up(self, log) -> None:
        """
        Start HA once with pip allowed, until it runs: it installs what its
        default integrations need (the frontend among them) and compiles
        itself, so the tests' starts need no package index.
        """
        import tempfile
        with tempfile.TemporaryDirectory(prefix="ha-warm-up-") as config:
            ha = HomeAssistant(config, self)
            ha.write_config()
            ha.make_users()
            process = subprocess.Popen([self.python, "-m", "homeassistant", "-c", config],
                                       stdout=log, stderr=subprocess.STDOUT, env=clean_env(),
                                       preexec_fn=_die_with_parent)
            ha.process = process
            try:
                deadline = time.monotonic() + INSTALL_WITHIN
                while not ha.running():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"Home Assistant did not start; see {self.log}")
                    time.sleep(0.5)  # the install step, outside any test
            except AssertionError as e:  # it exited
                raise RuntimeError(f"{e}; see {self.log}") from None
            finally:
                ha.stop()


_installed: dict = {}


def installation() -> Installation:
    """
    The installation the tests use, installed if it is not yet.

    @raise unittest.SkipTest: it cannot be installed here (the reason said),
        unless C{$SMARTMETER_TEST_HA=required}: then C{RuntimeError}.
    """
    key = os.environ.get("SMARTMETER_TEST_HA_VERSION", "")
    if key in _installed:
        found = _installed[key]
        if isinstance(found, Exception):
            raise found
        return found
    try:
        version, python = pick()
        found = Installation(version, python)
        found.install(lambda text: sys.stderr.write(text + "\n"))
    except (unittest.SkipTest, RuntimeError) as e:
        if os.environ.get("SMARTMETER_TEST_HA") == "required":
            failure: Exception = RuntimeError(f"Home Assistant is required here: {e}")
        else:
            failure = unittest.SkipTest(f"no Home Assistant: {e}")
        _installed[key] = failure
        raise failure from None
    _installed[key] = found
    return found


class HomeAssistant:
    """
    One C{hass} process on 127.0.0.1 with its own configuration directory.

    @ivar tokens: C{"admin"} (the owner's) and C{"user"} (not an admin)
        long-lived access tokens.
    @ivar url: C{http://127.0.0.1:PORT}.
    """

    def __init__(self, directory: str, install: Installation) -> None:
        self.directory = directory
        self.install = install
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tokens: dict = {}
        self.process: Optional[subprocess.Popen] = None

    @property
    def token(self) -> str:
        return self.tokens["admin"]

    def write_config(self) -> None:
        with open(os.path.join(self.directory, "configuration.yaml"), "w") as f:
            f.write(CONFIGURATION.format(port=self.port,
                                         db=os.path.join(self.directory, "ha.db")))

    def make_users(self) -> None:
        """The owner, a plain user and their tokens, by HA's own auth code."""
        out = subprocess.run([self.install.python, "-I", os.path.join(HERE, "ha_owner.py"),
                              self.directory], capture_output=True, text=True, timeout=120,
                             env=clean_env())
        if out.returncode != 0:
            raise RuntimeError("making HA's users failed: " + out.stderr[-2000:])
        self.tokens = json.loads(out.stdout)

    @defer.inlineCallbacks
    def start(self):
        """Start C{hass}; fire once its API answers and its recorder runs."""
        os.makedirs(self.directory, exist_ok=True)
        if not self.tokens:
            self.write_config()
            self.make_users()
        log = open(os.path.join(self.directory, "hass.out"), "ab")
        self.process = subprocess.Popen(
            [self.install.python, "-m", "homeassistant", "-c", self.directory, "--skip-pip"],
            stdout=log, stderr=subprocess.STDOUT, env=clean_env(), preexec_fn=_die_with_parent)
        log.close()
        try:
            yield wait_for(self.running, f"Home Assistant on port {self.port}",
                           START_WITHIN, 0.2)
        except AssertionError:
            self.stop()
            raise AssertionError(f"Home Assistant did not start; its log: {self.log_tail()}")

    def running(self) -> bool:
        """
        Whether HA runs, its setup done and its recorder up.

        @raise AssertionError: the process has exited.
        """
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"hass exited with {self.process.returncode}: "
                                 f"{self.log_tail()}")
        try:
            config = self.get("/api/config")
        except (OSError, ValueError):
            return False
        return config.get("state") == "RUNNING" and "recorder" in config.get("components", ())

    def pause(self) -> None:
        """Freeze it (SIGSTOP): its sockets stay open and nothing answers."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a frozen HA run on (SIGCONT)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self, sig=signal.SIGTERM) -> None:
        """Stop it by its PID (at most 60 s, then killed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        path = os.path.join(self.directory, "home-assistant.log")
        if not os.path.exists(path):
            path = os.path.join(self.directory, "hass.out")
        with contextlib.suppress(OSError), open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
        return ""

    def log_lines(self, levels=("ERROR",)) -> list:
        """The lines of HA's log at C{levels} (how HA tells a user it refused something)."""
        path = os.path.join(self.directory, "home-assistant.log")
        with contextlib.suppress(OSError), open(path, errors="replace") as f:
            return [line for line in f if any(f" {level} " in line for level in levels)]
        return []

    # -- HA's REST API (blocking: call through L{request}) --------------------

    def get(self, path: str, token: Optional[str] = None):
        return self._http("GET", path, None, token)

    def _http(self, method: str, path: str, body, token: Optional[str]):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"Bearer {token or self.token}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read() or b"null")

    def request(self, method: str, path: str, body=None, token: Optional[str] = None):
        """@return: a Deferred firing with the decoded JSON answer (asked in a thread)."""
        return threads.deferToThread(self._http, method, path, body, token)

    @defer.inlineCallbacks
    def add_mqtt(self, broker_port: int, username: Optional[str] = None,
                 password: Optional[str] = None):
        """
        Set up the C{mqtt} integration on 127.0.0.1:C{broker_port} (with a
        user name and password, if given) through its config flow, as a user
        does in the UI.
        """
        flow = yield self.request("POST", "/api/config/config_entries/flow",
                                  {"handler": "mqtt", "show_advanced_options": False})
        if flow.get("type") == "form":
            flow = yield self.request("POST", f"/api/config/config_entries/flow/"
                                      f"{flow['flow_id']}",
                                      {"broker": "127.0.0.1", "port": broker_port,
                                       **({"username": username, "password": password}
                                          if username else {})})
        if flow.get("type") != "create_entry":
            raise AssertionError(f"the MQTT config flow ended with {flow}")
        return flow


CONFIGURATION = """\
homeassistant:
  name: smartmeter_tx test
  latitude: 35.68
  longitude: 139.76
  elevation: 40
  unit_system: metric
  time_zone: Asia/Tokyo
  currency: JPY
  country: JP
http:
  server_host: 127.0.0.1
  server_port: {port}
recorder:
  db_url: sqlite:///{db}
  auto_purge: false
api:
websocket_api:
config:
energy:
history:
logger:
  default: warning
"""


class HomeAssistantTestCase(unittest.TestCase):
    """
    A test case with a real HA started for each test (C{self.ha}), stopped
    after it; skipped, with the reason, where HA cannot be installed.
    """

    timeout = 180  # only catches a hang

    def getTimeout(self):
        # The first test may pay the install; every other one only a start.
        if not any(isinstance(v, Installation) for v in _installed.values()):
            return INSTALL_WITHIN
        return self.timeout

    @defer.inlineCallbacks
    def setUp(self):
        install = yield threads.deferToThread(installation_or_failure)
        if isinstance(install, Exception):
            raise install
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.ha = HomeAssistant(directory, install)
        self.addCleanup(self.ha.stop)
        yield self.ha.start()


def installation_or_failure():
    """L{installation}, with its failure returned, not raised (for a thread)."""
    try:
        return installation()
    except (unittest.SkipTest, RuntimeError) as e:
        return e


def main(argv: list) -> int:
    if argv[1:] != ["install"]:
        sys.stderr.write("usage: python -m tests.home_assistant install\n")
        return 2
    try:
        version, python = pick()
        Installation(version, python).install(print)
    except (unittest.SkipTest, RuntimeError) as e:
        print(f"Home Assistant not installed: {e}", file=sys.stderr)
        return 1
    print(f"Home Assistant {version} ready")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
