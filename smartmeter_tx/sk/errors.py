"""
What an SK command's Deferred fails with: a FAIL line, a failure event, a
timeout, or the serial link lost.

Pure: no Twisted import (a lost link's reason is any object with
C{getErrorMessage}, as a Failure has).
"""

from __future__ import annotations

from typing import Optional, Protocol

from smartmeter_tx.errors import SmartMeterError
from smartmeter_tx.sk.values import Event, Fail

__all__ = ["SKError", "SKCommandError", "SKEventError", "SKTimeoutError", "SKDisconnected"]


class _Reason(Protocol):
    """What ended a link, as far as these errors read it (a Failure is one)."""

    def getErrorMessage(self) -> str: ...


class SKError(SmartMeterError):
    """
    Base class of the errors an SK command's Deferred fails with.

    @ivar command: the name of the command concerned (never its arguments,
        which may be secret).
    """

    def __init__(self, command: Optional[str], message: str) -> None:
        super().__init__(message)
        self.command = command


class SKCommandError(SKError):
    """
    The module answered C{FAIL ERxx}.
    """

    def __init__(self, command: str, fail: Fail) -> None:
        super().__init__(command, f"{command} failed: {fail}")
        self.code = fail.code
        self.meaning = fail.meaning


class SKEventError(SKError):
    """
    The module reported an EVENT that means the command failed (EVENT 24 after
    SKJOIN: PANA authentication failed).
    """

    def __init__(self, command: str, event: Event) -> None:
        super().__init__(command, f"{command} failed: EVENT {event.num:02X} ({event.name})")
        self.event = event


class SKTimeoutError(SKError):
    """
    A command did not complete in its time.

    @ivar unsent: C{True} when the command was never written because the
        resynchronisation before it got no answer
        (L{smartmeter_tx.sk.protocol.SKStackProtocol}).
    """

    def __init__(self, command: str, seconds: float, unsent: bool = False) -> None:
        if unsent:
            message = (f"{command} was not sent: the module did not answer the resync "
                       f"within {seconds:g} s")
        else:
            message = f"{command} got no answer within {seconds:g} s"
        super().__init__(command, message)
        self.seconds = seconds
        self.unsent = unsent


class SKDisconnected(SKError):
    """
    The serial link was lost (or already gone) before the command completed.
    """

    def __init__(self, command: Optional[str], reason: Optional[_Reason] = None) -> None:
        """
        @param reason: the L{twisted.python.failure.Failure} that ended the
            link, or C{None} when it was never connected.
        """
        what = f"{command} was lost" if command else "waiting was abandoned"
        why = reason.getErrorMessage() if reason is not None else "not connected"
        super().__init__(command, f"serial link closed ({why}); {what}")
        self.reason = reason
