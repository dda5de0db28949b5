"""
Two network namespaces joined by a veth pair, for the tests of the ECHONET
Lite bridge: a node and a controller that both bind UDP 3610 each get a
stack of their own, with a link between them that carries multicast
(224.0.23.0) as a home LAN does.

    pair = Netns(extra_b=2)    # side B gets two addresses more
    pair.open()
    process = pair.spawn("a", [sys.executable, "-m", "twisted", ...])
    result = pair.run("b", ["node", "client.js", pair.address("a")], timeout=30)
    pair.close()

Each pair has names of its own (the test process's PID and a random
suffix), and the veth is made inside namespace A with its peer put straight
into B: nothing is named in the root namespace, so two copies of the suite
can run at once on one machine.  Needs root and iproute2's C{ip}.

Tests that need it are skipped, saying why, where it cannot work (see
L{unavailable}); with C{$SMARTMETER_TEST_LAN=required} (as .ci/run sets it)
they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from typing import IO, Optional, Sequence

from twisted.trial import unittest

#: The prefix of every namespace this module makes; the rest of the name is
#: the PID of the process that made it and a random suffix.
PREFIX = "smtx-"
#: The interface on each side (names inside a namespace are its own).
DEVICE = {"a": "enl-a", "b": "enl-b"}
#: Link-local addresses, as a home router that hands out none would leave.
ADDRESS = {"a": "169.254.36.10", "b": "169.254.36.20"}
#: Side B's extra addresses are taken from here on.
EXTRA_BASE = "169.254.36."
EXTRA_FIRST = 21
#: ECHONET Lite's multicast range goes out on the veth (there is no default route).
MULTICAST = "224.0.0.0/4"
#: Seconds an C{ip} command may take; a process may take to end on SIGTERM.
IP_WITHIN, STOP_WITHIN = 30.0, 10.0
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-[0-9a-f]+-[ab]$")


class NetnsError(RuntimeError):
    """An C{ip} command failed; the message holds what it said."""


def _ip(*args: str) -> str:
    """Run C{ip ARGS}; @return: its output. @raise NetnsError: it failed."""
    try:
        out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_WITHIN)
    except (OSError, subprocess.SubprocessError) as e:
        raise NetnsError(f"ip {' '.join(args)}: {e}") from None
    if out.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> None:
    """
    Delete the namespaces a run of the suite left behind when it was killed
    (their maker's PID is gone); another copy's, still running, are left.
    """
    try:
        names = _ip("netns", "list")
    except NetnsError:
        return
    for line in names.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NAME.match(name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(NetnsError):
                _ip("netns", "delete", name)


def _die_with_parent() -> None:
    """In a child: be sent SIGKILL when the test process dies, so no node outlives it."""
    import ctypes
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Netns:
    """
    Namespaces C{a} and C{b} joined by a veth, each with a link-local
    address, C{lo} up and the multicast route on the veth.

    @ivar names: C{{"a": name, "b": name}}.
    @ivar extra: side B's extra addresses.
    """

    def __init__(self, extra_b: int = 0) -> None:
        """@param extra_b: how many more addresses side B gets (for several sources)."""
        tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.names = {"a": tag + "-a", "b": tag + "-b"}
        self.extra = tuple(f"{EXTRA_BASE}{EXTRA_FIRST + n}" for n in range(extra_b))
        self.processes: list = []
        self._made: list = []

    def address(self, side: str) -> str:
        """@return: the main address of C{side} ("a" or "b")."""
        return ADDRESS[side]

    def open(self) -> "Netns":
        """
        Make the namespaces and the link.

        @raise NetnsError: something could not be made (what was, is undone).
        """
        try:
            for side in "ab":
                _ip("netns", "add", self.names[side])
                self._made.append(self.names[side])
            _ip("-n", self.names["a"], "link", "add", DEVICE["a"], "type", "veth",
                "peer", "name", DEVICE["b"], "netns", self.names["b"])
            for side in "ab":
                self._configure(side)
        except NetnsError:
            self.close()
            raise
        return self

    def _configure(self, side: str) -> None:
        name, device = self.names[side], DEVICE[side]
        addresses = [ADDRESS[side]] + (list(self.extra) if side == "b" else [])
        for address in addresses:
            _ip("-n", name, "addr", "add", address + "/16", "dev", device)
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "set", device, "up")
        _ip("-n", name, "route", "add", MULTICAST, "dev", device)

    def command(self, side: str, argv: Sequence[str]) -> list:
        """@return: C{argv} run inside C{side}'s namespace."""
        return ["ip", "netns", "exec", self.names[side], *argv]

    def spawn(self, side: str, argv: Sequence[str], env: Optional[dict] = None,
              stdout: Optional[IO] = None, stderr: Optional[IO] = None,
              cwd: Optional[str] = None) -> subprocess.Popen:
        """
        Start C{argv} inside C{side}'s namespace (C{ip netns exec} execs it:
        the process's PID is the command's); L{close} ends it.

        @param stdout: a file for its output, else it goes nowhere; the same
            for C{stderr}, which goes with C{stdout} when not given.
        """
        process = subprocess.Popen(
            self.command(side, argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=stderr if stderr is not None else subprocess.STDOUT,
            preexec_fn=_die_with_parent)
        self.processes.append(process)
        return process

    def run(self, side: str, argv: Sequence[str], timeout: float, env: Optional[dict] = None,
            cwd: Optional[str] = None) -> subprocess.CompletedProcess:
        """
        Run C{argv} inside C{side}'s namespace to its end, its output kept.

        @return: the completed process (text output).
        @raise subprocess.TimeoutExpired: it ran over C{timeout}, and was killed.
        """
        process = subprocess.Popen(
            self.command(side, argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_die_with_parent)
        self.processes.append(process)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def stop(self, process: subprocess.Popen) -> Optional[int]:
        """SIGTERM, then SIGKILL if it hangs; @return: its exit status."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_WITHIN)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def close(self) -> None:
        """End what was started here, then delete the namespaces (again: nothing to do)."""
        for process in self.processes:
            self.stop(process)
        self.processes = []
        for name in self._made:
            # What runs there now was started by our processes: end it by its PID.
            with contextlib.suppress(NetnsError):
                for pid in _ip("netns", "pids", name).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(NetnsError):
                _ip("netns", "delete", name)
        self._made = []


_reason: list = []


def unavailable() -> Optional[str]:
    """
    @return: C{None} where a pair of namespaces can be made here, else why
        not (checked once a process).
    """
    if not _reason:
        _reason.append(_probe())
    return _reason[0]


def _probe() -> Optional[str]:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    sweep()
    pair = Netns()
    try:
        pair.open()
    except NetnsError as e:
        return f"cannot make a network namespace pair: {e}"
    finally:
        pair.close()
    return None


def required() -> bool:
    """Whether the LAN tests must run here ($SMARTMETER_TEST_LAN=required)."""
    return os.environ.get("SMARTMETER_TEST_LAN") == "required"


def need(reason: Optional[str]) -> None:
    """
    Nothing when C{reason} is C{None}; else skip the test for that reason,
    or fail it when the LAN tests are L{required}.

    @raise unittest.SkipTest: not required.
    @raise RuntimeError: required.
    """
    if reason is None:
        return
    if required():
        raise RuntimeError(f"the LAN tests are required here: {reason}")
    raise unittest.SkipTest(reason)


def opened(test: unittest.TestCase, extra_b: int = 0) -> Netns:
    """
    A pair made for C{test}, deleted at its cleanup (whether it passes or not).

    @raise unittest.SkipTest: no namespaces here (unless required: then RuntimeError).
    """
    need(unavailable())
    pair = Netns(extra_b)
    test.addCleanup(pair.close)
    try:
        pair.open()
    except NetnsError as e:
        need(f"cannot make a network namespace pair: {e}")
    return pair
