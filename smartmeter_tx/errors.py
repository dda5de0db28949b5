"""
The exception hierarchy shared by every layer.

Pure layers raise only L{ValueError} subclasses from here, so callers can tell
"the device sent garbage" (L{RemoteDataError}) from "we called the API wrongly"
(L{ArgumentError}), in the spirit of h11's Remote/Local protocol errors.
This module imports nothing from Twisted.
"""


class SmartMeterError(Exception):
    """
    Base class of every error this package raises on purpose.
    """


class ArgumentError(SmartMeterError, ValueError):
    """
    A caller passed an argument that would produce an invalid SK command or
    ECHONET Lite frame.  Raised before anything is written to the device.
    """


class ConfigError(ArgumentError):
    """
    A setting that can never work as given (a file that cannot be read, a
    path that is not what it must be): the service ends with exit status 78
    rather than retry it.
    """


class DialectMismatch(ConfigError):
    """
    The module rejects the syntax of the SK dialect the user forced (FAIL
    ER05): it speaks the other one.  A setting that can never work: the
    service ends (78), a one-shot command reports a usage error (2).

    @ivar forced: the dialect forced (C{"standard"} or C{"dse"}).
    @ivar flag: the option that forced it, as the front end spells it.
    """

    def __init__(self, forced: str, flag: str) -> None:
        given, other = ("DSE", "standard") if forced == "dse" else ("standard", "DSE")
        super().__init__(f"{flag}: the module rejects the commands of the {given} SK dialect "
                         f"(FAIL ER05), so it speaks the {other} one; leave out {flag} and the "
                         "dialect is detected")
        self.forced = forced
        self.flag = flag


class RemoteDataError(SmartMeterError, ValueError):
    """
    Bytes received from the module or the meter could not be decoded.
    """


class SKParseError(RemoteDataError):
    """
    A line from the Wi-SUN module does not have the shape its keyword promises.
    """


class FrameError(RemoteDataError):
    """
    An ECHONET Lite frame or property value is short, long or otherwise garbled.
    """


# -- what a B-route session can end with (raised by the client layer) ----------


class StepTimeout(SmartMeterError):
    """A step of the session did not finish within the time left."""

    def __init__(self, step: str) -> None:
        super().__init__(f"timed out while {step}")
        self.step = step


class AuthenticationFailed(SmartMeterError):
    """
    EVENT 24: the meter refused PANA authentication.

    @ivar cause: what happened and what to check, without what the next run
        of a one-shot command does (the service says what it does itself).
    """

    def __init__(self, cause: str, next_run: str = "") -> None:
        """@param next_run: what the next run of a one-shot command does about it."""
        super().__init__(f"{cause} ({next_run})" if next_run else cause)
        self.cause = cause


class MeterNotFound(SmartMeterError):
    """No scan found a PAN answering with our pairing ID."""


class ReadFailed(SmartMeterError):
    """The meter did not answer within the budget."""


class SendsHeld(ReadFailed):
    """
    The module must not send now: EVENT 29 (it re-authenticates by itself) or
    EVENT 32 (its transmit-time budget is spent).

    @ivar reason: the hold, as L{smartmeter_tx.session.linkstate.LinkState.held} names it.
    """

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or f"sends are held: {reason}")
        self.reason = reason


class RateLimited(SendsHeld):
    """EVENT 32: the module's ARIB transmit-time budget is spent."""


class NoSession(ReadFailed):
    """The module has no PANA session and the caller did not allow a join."""

