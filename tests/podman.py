"""
Podman for the tests: the project's image and the add-on's, built from this
checkout and run as users run them.

    python -m tests.podman prepare     # what .ci/run does first: base, both images

How Podman must run on the project's test machines, written down here and
nowhere user-facing:

 - the C{runc} runtime, the C{cgroupfs} cgroup manager and no default ulimits
   (the machines refuse Podman's default C{nproc} limit): a containers.conf of
   our own, named by C{$CONTAINERS_CONF} for every podman command;
 - builds reach the package index only with the host's settings: its CA
   bundle and pip configuration are mounted into each build step (the CA
   beside the image's own bundle, which Debian's ca-certificates rewrites);
 - where the registry cannot be reached, the base image the Containerfile
   names (C{debian:bookworm-slim}) is made from Debian's archive with
   mmdebstrap, slimmed as Debian's own image is, and tagged under that name.

Tests that need Podman are skipped, saying why, only where it cannot run;
with C{$SMARTMETER_TEST_PODMAN=required} (as .ci/run sets it) they fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Optional, Sequence

from twisted.trial import unittest

from tests.home_assistant import cache_root

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The base image, as the Containerfile names it (docker.io's short name).
BASE = "docker.io/library/debian:bookworm-slim"
SUITE = "bookworm"
#: Where the host's CA bundle is mounted in a build step.
HOST_CA = "/run/host-ca.crt"
#: Deadlines: a pull (to find out there is no registry), making the base, a build.
PULL_WITHIN, BASE_WITHIN, BUILD_WITHIN = 60.0, 900.0, 1800.0
_CONTAINERS_CONF = """\
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""
_MERGED_USR = "/usr/share/mmdebstrap/hooks/merged-usr"
#: What Debian's own slim image leaves out (as its build does).
_SLIM = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
         "/usr/share/groff/*", "/usr/share/linda/*", "/usr/share/lintian/*")


class PodmanError(RuntimeError):
    """A podman command failed; the message holds its output's end."""


def _state_dir() -> str:
    path = os.path.join(cache_root(), "podman")
    os.makedirs(path, exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def _containers_conf() -> str:
    path = os.path.join(_state_dir(), "containers.conf")
    if not os.path.exists(path) or open(path).read() != _CONTAINERS_CONF:
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path))
        with os.fdopen(fd, "w") as f:
            f.write(_CONTAINERS_CONF)
        os.replace(temporary, path)
    return path


def environment() -> dict:
    """The environment for podman commands (our containers.conf)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["CONTAINERS_CONF"] = _containers_conf()
    return env


def podman(*args: str, timeout: float = 120.0, check: bool = True,
           input: Optional[bytes] = None) -> subprocess.CompletedProcess:
    """
    Run one podman command to its end (at most C{timeout} seconds).

    @raise PodmanError: it failed (with C{check}) or ran out of time.
    """
    try:
        done = subprocess.run(["podman", *args], capture_output=True, timeout=timeout,
                              env=environment(), input=input)
    except subprocess.TimeoutExpired:
        raise PodmanError(f"podman {' '.join(args[:3])} took over {timeout:.0f} s") from None
    if check and done.returncode != 0:
        raise PodmanError(f"podman {' '.join(args[:3])} failed ({done.returncode}): "
                          f"{_tail(done.stderr)}")
    return done


def _tail(data: bytes, lines: int = 25) -> str:
    text = data.decode("utf-8", "replace")
    # Without systemd, podman says at each health check that it has no timers.
    kept = [line for line in text.splitlines() if "systemd" not in line]
    return "\n".join(kept[-lines:])


def unavailable() -> Optional[str]:
    """Why Podman cannot run containers here, or C{None}."""
    if shutil.which("podman") is None:
        return "podman is not installed"
    try:
        podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60)
    except (PodmanError, OSError) as e:
        return f"podman cannot run here: {e}"
    return None


def require() -> None:
    """
    @raise unittest.SkipTest: Podman cannot run here (unless it is required).
    @raise RuntimeError: it cannot, and C{$SMARTMETER_TEST_PODMAN=required}.
    """
    why = unavailable()
    if why is None:
        return
    if os.environ.get("SMARTMETER_TEST_PODMAN") == "required":
        raise RuntimeError(f"Podman is required here: {why}")
    raise unittest.SkipTest(why)


@contextlib.contextmanager
def _locked(name: str):
    """One builder at a time across processes (two suites on one machine)."""
    with open(os.path.join(_state_dir(), name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_base(say=lambda text: None) -> None:
    """
    Make sure L{BASE} exists: pulled, else made with mmdebstrap.

    @raise PodmanError: neither works.
    """
    with _locked("base"):
        if podman("image", "exists", BASE, check=False).returncode == 0:
            return
        pulled = podman("pull", "--quiet", BASE, timeout=PULL_WITHIN, check=False)
        if pulled.returncode == 0:
            return
        say(f"no registry for {BASE}; making it from Debian's archive with mmdebstrap")
        if shutil.which("mmdebstrap") is None:
            raise PodmanError(f"{BASE} cannot be pulled and mmdebstrap is not installed")
        with tempfile.TemporaryDirectory(dir=_state_dir()) as work:
            tarball = os.path.join(work, "base.tar")
            options = [f"--dpkgopt=path-exclude={p}" for p in _SLIM]
            if os.path.isdir(_MERGED_USR):
                # As Debian's image is made: /usr merged by the hook, so that
                # the usrmerge package (and the whole of perl) stays out.
                options.append(f"--hook-dir={_MERGED_USR}")
            try:
                made = subprocess.run(
                    ["mmdebstrap", "--variant=minbase", "--quiet", *options,
                     "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/*",
                     SUITE, tarball], capture_output=True, timeout=BASE_WITHIN)
            except subprocess.TimeoutExpired:
                raise PodmanError(f"mmdebstrap took over {BASE_WITHIN:.0f} s") from None
            if made.returncode != 0:
                raise PodmanError(f"mmdebstrap failed: {_tail(made.stderr)}")
            podman("import", "--quiet", tarball, BASE, timeout=300)


def _pip_conf(directory: str) -> str:
    """
    The host's package-index settings for a build step: its index, extra
    index and trusted hosts (those a container can reach), and its CA
    bundle at L{HOST_CA}.
    """
    keep = ("index-url", "extra-index-url", "trusted-host", "timeout")
    lines = ["[global]", f"cert = {HOST_CA}"]
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, timeout=60)
    for line in listed.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.split(".", 1)[-1]
        value = value.strip().strip("'\"")
        if name in keep and "file://" not in value:
            lines.append(f"{name} = {value}")
    for env, name in (("PIP_INDEX_URL", "index-url"), ("PIP_EXTRA_INDEX_URL", "extra-index-url")):
        if os.environ.get(env, "").startswith("http"):
            lines.append(f"{name} = {os.environ[env]}")
    path = os.path.join(directory, "pip.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _host_ca() -> Optional[str]:
    for path in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                 "/etc/ssl/certs/ca-certificates.crt"):
        if path and os.path.isfile(path):
            return path
    return None


def build(tag: str, context: str, containerfile: str,
          build_args: Sequence[str] = (), no_cache: bool = False) -> float:
    """
    Build an image (docker format: it keeps the HEALTHCHECK).

    @return: the seconds it took.
    @raise PodmanError: the build failed.
    """
    ensure_base()
    with tempfile.TemporaryDirectory() as work:
        mounts = ["--volume", f"{_pip_conf(work)}:/etc/pip.conf:ro"]
        ca = _host_ca()
        if ca:
            mounts += ["--volume", f"{ca}:{HOST_CA}:ro"]
        args = [f"--build-arg={a}" for a in build_args]
        started = time.monotonic()
        cache = ["--no-cache"] if no_cache else []
        podman("build", "--format", "docker", "--quiet", *cache, *mounts, *args, "--tag", tag,
               "--file", containerfile, context, timeout=BUILD_WITHIN)
        return time.monotonic() - started


def build_product(tag: str, no_cache: bool = False) -> float:
    """The project's image from this checkout's Containerfile."""
    return build(tag, ROOT, os.path.join(ROOT, "Containerfile"), no_cache=no_cache)


def build_addon(tag: str, wheel_directory: str) -> float:
    """
    The add-on's image as the Supervisor builds it (its folder the context,
    L{BASE} as C{BUILD_FROM}), with this checkout's wheel in C{wheels/}.
    """
    from smartmeter_tx import __version__
    with tempfile.TemporaryDirectory() as work:
        context = os.path.join(work, "addon")
        shutil.copytree(os.path.join(ROOT, "addon"), context)
        os.makedirs(os.path.join(context, "wheels"))
        for name in os.listdir(wheel_directory):
            if name.endswith(".whl"):
                shutil.copy(os.path.join(wheel_directory, name), os.path.join(context, "wheels"))
        return build(tag, context, os.path.join(context, "Dockerfile"),
                     [f"BUILD_FROM={BASE}",
                      f"SMARTMETER_TX=smartmeter_tx[mqtt,homeassistant]=={__version__}"])


def build_wheel(directory: str) -> str:
    """This checkout's wheel, built without the network (as test_packaging does)."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "--quiet", "--wheel-dir", directory, ROOT],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise PodmanError(f"building the wheel failed: {done.stderr[-2000:]}")
    return directory


def unique(name: str) -> str:
    """A name no other test (or suite) uses at the same time."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


class Container:
    """One container started by a test; removed with its anonymous volumes."""

    def __init__(self, image: str, args: Sequence[str] = (), options: Sequence[str] = ()):
        self.image, self.args, self.options = image, list(args), list(options)
        self.name = unique("smartmeter-test")

    def start(self) -> "Container":
        podman("run", "--detach", "--name", self.name, *self.options, self.image, *self.args)
        return self

    def inspect(self) -> dict:
        return json.loads(podman("container", "inspect", self.name).stdout)[0]

    def port(self, inside: int) -> int:
        """The loopback port the container's port was published on."""
        out = podman("port", self.name, str(inside)).stdout.decode().split()
        return int(out[0].rsplit(":", 1)[1])

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return (done.stdout + done.stderr).decode("utf-8", "replace")

    def exec(self, *argv: str, user: Optional[str] = None) -> subprocess.CompletedProcess:
        return podman("exec", *(["--user", user] if user else []), self.name, *argv,
                      check=False)

    def remove(self) -> None:
        podman("rm", "--force", "--volumes", "--time", "5", self.name, check=False, timeout=60)


def main(argv: list) -> int:
    if argv[1:] != ["prepare"]:
        sys.stderr.write("usage: python -m tests.podman prepare\n")
        return 2
    why = unavailable()
    if why:
        print(f"Podman: {why}")
        return 1
    try:
        started = time.monotonic()
        ensure_base(print)
        print(f"base image ready after {time.monotonic() - started:.0f} s")
        print(f"project image built in {build_product('localhost/smartmeter_tx:ci'):.0f} s")
        with tempfile.TemporaryDirectory() as wheels:
            seconds = build_addon("localhost/smartmeter_tx-addon:ci", build_wheel(wheels))
        print(f"add-on image built in {seconds:.0f} s")
    except PodmanError as e:
        print(f"Podman: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
