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
