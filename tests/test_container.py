"""
The project's image (Containerfile), built from this checkout with Podman and
run with the emulator as a user runs it: C{/latest} answers, the service is
not root, the health check turns healthy, SIGTERM stops it within 10 s with
every reading on disk, and the data log in C{/data} carries on across a new
container.  Skipped, saying why, only where Podman cannot run
(L{tests.podman}).
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import time
import urllib.request

from twisted.internet import reactor, task, threads
from twisted.trial.unittest import TestCase

from tests import podman as P

#: How long the emulated join may take before the first reading (a scan of
#: every channel is about 9 s).
FIRST_READING_WITHIN = 90.0
_built: dict = {}


def _image(kind: str) -> str:
    """The image of C{kind} (C{product}, C{addon}) for this process, built once."""
    if kind not in _built:
        P.require()
        tag = f"localhost/smartmeter_tx-{kind}:{P.unique('test')}"
        if kind == "product":
            P.build_product(tag)
        else:
            import tempfile
            with tempfile.TemporaryDirectory() as wheels:
                P.build_addon(tag, P.build_wheel(wheels))
        atexit.register(P.podman, "rmi", "--force", tag, check=False)
        _built[kind] = tag
    return _built[kind]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read())


async def poll(check, what: str, timeout: float, step: float = 0.5):
    """Ask C{check} (blocking, run in a thread) until it returns a true value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await threads.deferToThread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await task.deferLater(reactor, step, lambda: None)


def logged_times(directory: str) -> list:
    """The reading times in a data log directory, in file order."""
    times = []
    for path in sorted(glob.glob(os.path.join(directory, "log", "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                if "kind" not in record:
                    times.append(record["time"])
    return times


class PodmanTestCase(TestCase):
    """Builds (once per process) the image the test names in C{kind}."""

    kind = "product"
    timeout = P.BUILD_WITHIN + 300  # only catches a hang; the first test pays the build

    async def setUp(self):
        self.image = await threads.deferToThread(_image, self.kind)
        self.data = os.path.abspath(self.mktemp())
        os.makedirs(self.data)

    async def run_container(self, args=(), options=()) -> P.Container:
        container = P.Container(self.image, args, ["--publish", "127.0.0.1::9580", *options])
        self.addCleanup(threads.deferToThread, container.remove)
        await threads.deferToThread(container.start)
        return container

    async def latest(self, container: P.Container, what: str = "a reading") -> dict:
        """C{/latest} once it holds a reading."""
        url = f"http://127.0.0.1:{await threads.deferToThread(container.port, 9580)}/latest"

        def reading():
            try:
                latest = get_json(url)
            except (OSError, ValueError):
                return None
            return latest if latest.get("power_w") is not None else None
        try:
            return await poll(reading, what, FIRST_READING_WITHIN)
        except AssertionError as e:
            raise AssertionError(f"{e}; the container's log:\n"
                                 f"{container.logs()[-3000:]}") from None


class ProductImageTests(PodmanTestCase):

    async def test_readsAsNonRootAndTurnsHealthy(self):
        """
        The image reads the emulated meter with no hardware, serves /latest,
        runs the service as a user that is not root (in dialout), and its
        health check turns healthy once there is a reading.
        """
        container = await self.run_container(["--device", "emulator:"],
                                             ["--volume", f"{self.data}:/data:U"])
        latest = await self.latest(container)
        self.assertEqual(latest["device"], "emulator:")
        self.assertGreater(latest["power_w"], 0)
        status = await threads.deferToThread(container.exec, "grep", "-E", "^(Uid|Groups):",
                                             "/proc/1/status")
        fields = dict(line.split(":", 1) for line in status.stdout.decode().splitlines())
        self.assertNotIn("0", fields["Uid"].split(), "the service runs as root")
        groups = await threads.deferToThread(container.exec, "id", "-Gn")
        self.assertIn("dialout", groups.stdout.decode().split())

        def healthy():
            P.podman("healthcheck", "run", container.name, check=False)
            return container.inspect()["State"]["Health"]["Status"] == "healthy"
        await poll(healthy, "a healthy health check", 60, step=1.0)

    async def test_sigtermKeepsReadingsAndNewContainerContinues(self):
        """
        SIGTERM (podman stop) ends the service within 10 s with status 0 and
        the last reading /latest showed on disk; a new container on the same
        /data takes up the saved meter (no scan) and the same data log, each
        reading in it once.
        """
        args = ["--device", "emulator:", "--interval", "2", "--energy-interval", "4"]
        volume = ["--volume", f"{self.data}:/data:U"]
        first = await self.run_container(args, volume)
        await self.latest(first)
        await poll(lambda: len(logged_times(self.data)) >= 3, "three readings logged", 30)
        last = (await self.latest(first))["time"]
        started = time.monotonic()
        await threads.deferToThread(P.podman, "stop", "--time", "10", first.name, timeout=30)
        stopped_in = time.monotonic() - started
        self.assertLess(stopped_in, 10.0, "SIGTERM did not stop the service in time")
        self.assertEqual(first.inspect()["State"]["ExitCode"], 0, first.logs()[-2000:])
        before = logged_times(self.data)
        self.assertIn(last, before, "the last reading shown is not in the data log")

        second = await self.run_container(args, volume)
        newer = await self.latest(second)
        self.assertGreater(newer["time"], last)
        self.assertNotIn("scanning", second.logs(), "the saved meter was not used")
        after = await poll(lambda: newer["time"] in logged_times(self.data)
                           and logged_times(self.data), "the new reading logged", 30)
        self.assertEqual(after[:len(before)], before)
        self.assertEqual(len(after), len(set(after)), "a reading was logged twice")
