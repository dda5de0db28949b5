"""
Tests for L{smartmeter_tx.errors}: the declared error hierarchy the pure
layers promise to raise.
"""

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx import errors as E
from smartmeter_tx.echonet.frame import Frame
from smartmeter_tx.sk import parse
from smartmeter_tx.sk import commands


class HierarchyTests(SynchronousTestCase):
    def test_valueErrors(self):
        """Codec errors are ValueErrors under SmartMeterError, split by who is at fault."""
        for cls in (E.ArgumentError, E.SKParseError, E.FrameError):
            self.assertTrue(issubclass(cls, ValueError))
            self.assertTrue(issubclass(cls, E.SmartMeterError))
        self.assertTrue(issubclass(E.SKParseError, E.RemoteDataError))
        self.assertTrue(issubclass(E.FrameError, E.RemoteDataError))
        self.assertFalse(issubclass(E.ArgumentError, E.RemoteDataError))

    def test_raisedByCodecs(self):
        """Device garbage raises RemoteDataError; a bad argument raises ArgumentError."""
        self.assertRaises(E.RemoteDataError, Frame.decode, b"\x10\x81\x00")
        self.assertRaises(E.RemoteDataError, parse.parse_line, b"EVENT ZZ")
        self.assertRaises(E.ArgumentError, commands.sk_setrbid, "short")
