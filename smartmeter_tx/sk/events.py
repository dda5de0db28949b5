"""
The EVENT numbers a Wi-SUN module prints (C{EVENT <NUM> ...}), by name.

Pure: no Twisted, no I/O.  L{EventNum} members are ints, so a parsed
C{Event.num} (a plain int: a module may print a number this table does not
know) compares equal to them.  What each event means to this product is in
docs/PROTOCOL.md, "Events".
"""

from __future__ import annotations

import enum

__all__ = ["EventNum", "SendResult", "event_name"]


class EventNum(enum.IntEnum):
    """
    The EVENT numbers a B-route client meets.
    """

    NS_RECEIVED = 0x01
    NA_RECEIVED = 0x02
    ECHO_REQUEST = 0x05
    ED_SCAN_DONE = 0x1F
    BEACON = 0x20
    UDP_SENT = 0x21
    SCAN_DONE = 0x22
    PANA_FAILED = 0x24
    PANA_OK = 0x25
    TERMINATE_REQUESTED = 0x26
    TERMINATED = 0x27
    TERMINATE_TIMED_OUT = 0x28
    SESSION_EXPIRED = 0x29
    TX_LIMITED = 0x32
    TX_RELEASED = 0x33
    DSE_KEY_MISMATCH = 0x45
    WOKE_UP = 0xC0

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    EventNum.NS_RECEIVED: "NS received",
    EventNum.NA_RECEIVED: "NA received",
    EventNum.ECHO_REQUEST: "echo request received",
    EventNum.ED_SCAN_DONE: "ED scan finished",
    EventNum.BEACON: "beacon received",
    EventNum.UDP_SENT: "UDP send finished",
    EventNum.SCAN_DONE: "active scan finished",
    EventNum.PANA_FAILED: "PANA authentication failed",
    EventNum.PANA_OK: "PANA authentication succeeded",
    EventNum.TERMINATE_REQUESTED: "session termination requested by peer",
    EventNum.TERMINATED: "session termination completed",
    EventNum.TERMINATE_TIMED_OUT: "session termination timed out",
    EventNum.SESSION_EXPIRED: "PANA session lifetime expired",
    EventNum.TX_LIMITED: "transmit-time limit engaged",
    EventNum.TX_RELEASED: "transmit-time limit released",
    EventNum.DSE_KEY_MISMATCH: "DSE key index mismatch",
    EventNum.WOKE_UP: "woke up",
}


class SendResult(enum.IntEnum):
    """
    The PARAM of EVENT 21 (UDP send finished): what became of an SKSENDTO.
    """

    SENT = 0x00
    FAILED = 0x01
    #: Neighbour solicitation was sent instead of the datagram: the module
    #: has no route to the meter, which without a PANA session is every send.
    NEIGHBOUR_SOLICITATION = 0x02


def event_name(num: int) -> str:
    """The human name of EVENT C{num}, or C{"unknown event"}."""
    try:
        return EventNum(num).description
    except ValueError:
        return "unknown event"
