"""
Which failures to reach the broker are the configuration's, which the
network's: the first end the service at start (exit status 78, one line
naming the option), the second are retried.

Some are certain: the broker refused the user name and password or the
authorisation (CONNACK), or its certificate is not signed by a trusted CA.
Some are only likely: a connection closed during the TLS handshake is what a
plain MQTT port does with TLS, and one closed before CONNACK is what a TLS
port does with plain MQTT, but a broker that restarts can do either once.
Those count as the configuration's after L{SUSPECT_LIMIT} in a row.  What
says TLS met a plain port, and the hints' words, are shared with Home
Assistant's websocket (L{smartmeter_tx.outputs.tlshint}).

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import ssl
from typing import Optional

from smartmeter_tx.outputs.tlshint import not_tls, speaks_no_tls, tls_port

__all__ = ["FATAL", "SUSPECT", "TRANSIENT", "SUSPECT_LIMIT", "connack_refusal",
           "connect_error", "closed_before_connack"]

FATAL = "fatal"
SUSPECT = "suspect"
TRANSIENT = "transient"

#: Likely-configuration failures in a row, before any success, that end the start.
SUSPECT_LIMIT = 3

#: CONNACK refusals no retry can cure, by paho's reason code (MQTT 3.1.1
#: return codes 1, 2, 4 and 5).  3, "server unavailable", is transient.
_REFUSALS = {
    132: "the broker does not accept MQTT 3.1.1",
    133: "the broker rejects the client id",
    134: "the broker refuses the user name or password (the user in --mqtt; "
         "--mqtt-password-file or SMARTMETER_MQTT_PASSWORD)",
    # mosquitto answers a wrong password with this one too.
    135: "the broker does not authorise us (the user in --mqtt; --mqtt-password-file or "
         "SMARTMETER_MQTT_PASSWORD; the broker's ACL)",
}

def connack_refusal(value: int) -> Optional[str]:
    """
    @param value: paho's reason code of a refused CONNACK.
    @return: why no retry can succeed, or C{None} for a refusal that may pass.
    """
    return _REFUSALS.get(value)


def connect_error(error: BaseException, tls: bool, port: int) -> tuple:
    """
    Classify an error of the connect itself (DNS, TCP, TLS).

    @return: C{(kind, reason)}: L{FATAL}, L{SUSPECT} or L{TRANSIENT}, and
        why, in one line.
    """
    if isinstance(error, ssl.SSLCertVerificationError):
        return FATAL, (f"the broker's certificate is not trusted ({error.verify_message}); "
                       "give its CA with --mqtt-ca")
    if speaks_no_tls(error):
        return FATAL, not_tls(port, "mqtt")
    if tls and isinstance(error, (ConnectionResetError, ssl.SSLEOFError,
                                  ssl.SSLZeroReturnError)):
        return SUSPECT, (f"the broker closed the connection during the TLS handshake; "
                         f"is port {port} a plain MQTT port (mqtt://)?")
    why = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return TRANSIENT, why


#: paho's DISCONNECT reason for "we gave up waiting" (its keepalive), as
#: against the broker closing the connection (128) or garbling it (130).
_KEEPALIVE_TIMEOUT = 141


def closed_before_connack(tls: bool, port: int, reason: int) -> tuple:
    """
    The connection ended before the broker answered CONNECT.

    @param reason: paho's reason code of the disconnection.
    @return: C{(kind, reason)}: L{SUSPECT} or L{TRANSIENT}, and why.
    """
    if reason == _KEEPALIVE_TIMEOUT:
        # A broker that does not answer at all (hung, overloaded) is no sign
        # of the wrong port.
        return TRANSIENT, "the broker did not answer CONNECT"
    if tls:
        return TRANSIENT, "the broker closed the connection before answering"
    return SUSPECT, f"the broker closed the connection before answering; {tls_port(port, 'mqtts')}"
