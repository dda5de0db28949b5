"""
What says that TLS met a plain-text port, and the hints' words: shared by
the MQTT client (L{smartmeter_tx.outputs.mqtt.faults}) and Home Assistant's
websocket (L{smartmeter_tx.outputs.homeassistant.websocket}).

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import ssl

__all__ = ["speaks_no_tls", "not_tls", "tls_port"]

#: OpenSSL's reasons for a handshake with something that does not speak TLS.
_NOT_TLS = {"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG",
            "RECORD_LAYER_FAILURE", "HTTP_REQUEST"}


def speaks_no_tls(error: BaseException) -> bool:
    """
    Whether a TLS handshake failed because the peer answered in plain text:
    by OpenSSL's reason, from the standard library's C{ssl.SSLError} (paho)
    or from pyOpenSSL's C{SSL.Error} (Twisted's TLS), whose one argument is
    OpenSSL's error queue, C{[(library, function, reason text)]}.
    """
    if isinstance(error, ssl.SSLError):
        return getattr(error, "reason", None) in _NOT_TLS
    queue = error.args[0] if error.args and isinstance(error.args[0], list) else []
    return any(isinstance(entry, tuple) and len(entry) == 3
               and str(entry[2]).upper().replace(" ", "_") in _NOT_TLS for entry in queue)


def not_tls(port: int, plain: str) -> str:
    """The hint for TLS against a plain port; C{plain} is the plain scheme (C{mqtt})."""
    return f"port {port} does not speak TLS; for a plain port use {plain}://"


def tls_port(port: int, secure: str) -> str:
    """The question for a plain connection closed unanswered; C{secure}: C{mqtts}."""
    return f"is port {port} a TLS port ({secure}://)?"
