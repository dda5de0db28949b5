"""
Ctrl-C and SIGTERM in the one-shot commands, as a user sends them: each
command runs in a subprocess, is signalled once it is busy (its own output
or its connection says so), and must end with one line "interrupted", exit
status 130 (SIGINT) or 143 (SIGTERM), no traceback, and the port closed.
"""

import os
import signal
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from smartmeter_tx.cli import options as O
from smartmeter_tx.emulator.device import DEFAULT_ID, DEFAULT_PASSWORD, start_emulator
from tests.cli.test_twist import twist_env
from tests.emuloop import pinned

ENTRY = {
    "mackerel-plugin-smartmeter": "smartmeter_tx.cli.plugin",
    "smartmeter-history": "smartmeter_tx.cli.history",
    "check-smartmeter": "smartmeter_tx.cli.check",
}


class _Command(protocol.ProcessProtocol):
    """A command that is sent C{signum} once C{ready()} says so."""

    def __init__(self, signum, ready):
        self.signum = signum
        self.ready = ready
        self.stderr = b""
        self.stdout = b""
        self.sent = False
        self.ended = defer.Deferred()

    def poke(self):
        if not self.sent and self.ready(self):
            self.sent = True
            self.transport.signalProcess(self.signum)

    def errReceived(self, data):
        self.stderr += data
        self.poke()

    def outReceived(self, data):
        self.stdout += data

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


class _Silent(protocol.Protocol):
    """A server that takes the connection and never answers."""

    def connectionMade(self):
        self.factory.connected.append(self)
        for command in self.factory.commands:
            command.poke()


class InterruptTests(TestCase):
    timeout = 60  # only catches a hang

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def spawn(self, program, argv, signum, ready):
        command = _Command(signum, ready)
        env = twist_env()
        env.update(SMARTMETER_ID=DEFAULT_ID, SMARTMETER_PASSWORD=DEFAULT_PASSWORD,
                   MACKEREL_PLUGIN_WORKDIR=self.dir)
        code = f"import sys; from {ENTRY[program]} import main; sys.argv[0] = {program!r}; main()"
        reactor.spawnProcess(command, sys.executable, [sys.executable, "-c", code, *argv],
                             env=env, path=self.dir)
        return command

    async def interrupted(self, program, argv, signum, ready):
        command = self.spawn(program, argv, signum, ready)
        code = await command.ended
        text = command.stderr.decode("utf-8", "replace")
        self.assertTrue(command.sent, text)
        self.assertNotIn("Traceback", text)
        # It is the last line: not even the reactor's farewell follows, at -v 3.
        lines = text.splitlines()
        self.assertEqual(lines.count(f"{program}: interrupted"), 1, text)
        self.assertEqual(lines[-1], f"{program}: interrupted", text)
        self.assertEqual(code, {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], text)
        self.assertEqual(command.stdout, b"")
        return text

    def emulator(self):
        handle = start_emulator(pinned("emulator:?time-scale=1"), reactor,
                                link=os.path.join(self.dir, "wisun"))
        self.addCleanup(handle.stop)
        return handle

    def assertPortFree(self, path):
        """Nothing holds the port: this process can open it (and closes it)."""
        proto = protocol.Protocol()
        O.open_serial(proto, path, reactor)
        proto.transport.loseConnection()

    def test_ctrlCDuringScan(self):
        """Ctrl-C while --scan scans: "interrupted", 130, the port free again."""
        handle = self.emulator()

        async def go():
            text = await self.interrupted(
                "mackerel-plugin-smartmeter", ["--device", handle.path, "--scan", "-v", "3"],
                signal.SIGINT, lambda c: b"SKSCAN" in c.stderr)
            self.assertNotIn("serial link closed", text)
            self.assertPortFree(handle.path)
        return defer.Deferred.fromCoroutine(go())

    def test_sigtermDuringReading(self):
        """SIGTERM while the plugin joins to read: "interrupted", 143."""
        handle = self.emulator()
        return defer.Deferred.fromCoroutine(self.interrupted(
            "mackerel-plugin-smartmeter", ["--device", handle.path, "--channel",
                                           "%02X" % handle.emulator.channel, "-v", "3"],
            signal.SIGTERM, lambda c: b"SKSCAN" in c.stderr or b"SKJOIN" in c.stderr))

    def test_historyFromTheMeter(self):
        """Ctrl-C in smartmeter-history reading the meter: "interrupted", 130."""
        return defer.Deferred.fromCoroutine(self.interrupted(
            "smartmeter-history", ["--device", pinned("emulator:?time-scale=1"), "-v", "3"],
            signal.SIGINT, lambda c: b"SKSCAN" in c.stderr))

    def silentService(self):
        factory = protocol.Factory.forProtocol(_Silent)
        factory.connected, factory.commands = [], []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        def close():
            for p in factory.connected:
                p.transport.abortConnection()
        self.addCleanup(close)
        return factory, f"http://127.0.0.1:{port.getHost().port}"

    def test_blockingPaths(self):
        """
        The paths without a reactor (the plugin's and history's --service,
        check-smartmeter) waiting for a service that never answers.
        """
        async def go():
            for program, argv, signum in (
                    ("mackerel-plugin-smartmeter", ["--service"], signal.SIGINT),
                    ("check-smartmeter", ["--service"], signal.SIGTERM),
                    ("smartmeter-history", ["--service"], signal.SIGINT)):
                factory, url = self.silentService()
                command = self.spawn(program, [*argv, url], signum,
                                     lambda c: bool(factory.connected))
                factory.commands.append(command)
                code = await command.ended
                text = command.stderr.decode("utf-8", "replace")
                self.assertTrue(command.sent, (program, text))
                self.assertNotIn("Traceback", text)
                self.assertEqual(text.splitlines()[-1], f"{program}: interrupted", text)
                self.assertEqual(code, {signal.SIGINT: 130, signal.SIGTERM: 143}[signum])
        return defer.Deferred.fromCoroutine(go())
