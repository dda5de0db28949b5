#!/usr/bin/env python
"""
What the container image costs: its build, its size and what takes the
space, and the service's memory in it next to the same service from a venv.

The image is built from this checkout with Podman as the tests build it
(L{tests.podman}: the base image made from Debian's archive where no
registry answers).  The script prints:

 - the build time (the layers Podman has cached are reused: C{--no-cache}
   for a build from the base image up);
 - the image's size, the base image's, and the largest parts of the product
   (the venv's packages), and whether pip, setuptools or a test package is
   in the final image (none may be);
 - the service's RSS at steady state: C{--device emulator:}, the data log
   and HTTP, C{--interval 10}, read from C{/proc} once the backfill is done
   and C{--readings} more readings are logged, in the container and from a
   venv made with the same extras (C{pip install .[mqtt,homeassistant]});
   the ratio of the two.

    venv/bin/python bench/container.py [--readings 6] [--no-cache] [--check]

C{--check} exits 1 when the final image holds pip, setuptools or a test
package, or the container's RSS is over 1.2 times the venv's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests import podman as P  # noqa: E402
from tests.mosquitto import free_port  # noqa: E402

SITE = "/opt/smartmeter/lib/python3.11/site-packages"
_FORBIDDEN = ("pip", "setuptools", "wheel", "hypothesis", "mypy", "prometheus_client",
              "_pytest", "pytest")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def logged(directory: str) -> int:
    count = 0
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            count += sum(1 for line in f if '"kind"' not in line)
    return count


def wait(predicate, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def backfilled(url: str) -> bool:
    """The service has a reading and its backfill has nothing left to read."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return False
    pending = [line for line in text.splitlines()
               if line.startswith("smartmeter_backfill_missing_slots ")]
    return bool(pending) and float(pending[0].split()[1]) == 0


def steady_rss(pid_of, url: str, data: str, readings: int) -> float:
    """RSS once the backfill is done and C{readings} more are logged."""
    wait(lambda: backfilled(url), "the backfill", 300)
    first = logged(data)
    wait(lambda: logged(data) >= first + readings, f"{readings} readings", 30 * readings)
    return rss_mb(pid_of())


def container_rss(tag: str, work: str, readings: int) -> float:
    data = os.path.join(work, "container-data")
    os.makedirs(data)
    container = P.Container(tag, ["--device", "emulator:", "--interval", "10"],
                            ["--publish", "127.0.0.1::9580", "--volume", f"{data}:/data:U"])
    container.start()
    try:
        url = f"http://127.0.0.1:{container.port(9580)}"
        return steady_rss(lambda: container.inspect()["State"]["Pid"], url,
                          os.path.join(data, "log"), readings)
    finally:
        container.remove()


def venv_rss(work: str, readings: int) -> float:
    venv = os.path.join(work, "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    installed = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet",
                                f"{ROOT}[mqtt,homeassistant]"], capture_output=True, text=True,
                               timeout=900)
    if installed.returncode != 0:
        raise SystemExit(f"pip install failed: {installed.stderr[-2000:]}")
    data = os.path.join(work, "venv-data")
    port = free_port()
    process = subprocess.Popen(
        [os.path.join(venv, "bin", "twist"), "--log-format", "text", "smartmeter",
         "--device", "emulator:", "--interval", "10", "--data-log", os.path.join(data, "log"),
         "--state-file", os.path.join(data, "state.json"),
         "--http", f"tcp:{port}:interface=127.0.0.1"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SMARTMETER_"))})
    try:
        return steady_rss(lambda: process.pid, f"http://127.0.0.1:{port}",
                          os.path.join(data, "log"), readings)
    finally:
        process.terminate()
        process.wait(30)


def contents(tag: str) -> tuple:
    """The largest parts of the venv (KiB, name) and the forbidden ones present."""
    listing = P.podman("run", "--rm", "--entrypoint", "sh", tag, "-c",
                       f"cd {SITE} && du -sk * | sort -n").stdout.decode().split("\n")
    parts = [(int(size), name) for size, name in (line.split("\t") for line in listing if line)]
    names = {name.split("-")[0].lower() for _, name in parts}
    present = sorted(n for n in _FORBIDDEN if n in names)
    total = P.podman("run", "--rm", "--entrypoint", "du", tag, "-sk",
                     "/opt/smartmeter").stdout.decode().split()[0]
    return int(total), parts, present


def size_mb(image: str) -> float:
    return json.loads(P.podman("image", "inspect", image).stdout)[0]["Size"] / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readings", type=int, default=6,
                    help="readings logged after the backfill before the RSS is read (default 6)")
    ap.add_argument("--no-cache", action="store_true", help="build without Podman's layer cache")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    why = P.unavailable()
    if why:
        print(f"Podman: {why}")
        return 1
    tag = f"localhost/smartmeter_tx-bench:{P.unique('b')}"
    P.ensure_base(print)
    seconds = P.build_product(tag, no_cache=args.no_cache)
    try:
        total, parts, present = contents(tag)
        image, base = size_mb(tag), size_mb(P.BASE)
        print(f"build: {seconds:.0f} s ({'no cache' if args.no_cache else 'cached layers reused'})")
        print(f"image: {image:.0f} MB; base {base:.0f} MB; Python and CA certificates "
              f"{image - base - total / 1000:.0f} MB; the product's venv {total / 1000:.0f} MB")
        print("largest in the venv: " + ", ".join(f"{name} {kib / 1000:.1f} MB"
                                                  for kib, name in reversed(parts[-6:])))
        print(f"pip, setuptools or test packages in the image: {', '.join(present) or 'none'}")
        with tempfile.TemporaryDirectory() as work:
            inside = container_rss(tag, work, args.readings)
            outside = venv_rss(work, args.readings)
        print(f"RSS at steady state: container {inside:.1f} MB, venv {outside:.1f} MB "
              f"(ratio {inside / outside:.2f})")
    finally:
        P.podman("rmi", "--force", tag, check=False)
    if args.check and (present or inside > 1.2 * outside):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
