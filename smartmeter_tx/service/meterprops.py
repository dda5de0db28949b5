"""
The meter's own words: the EDT bytes of each property as the meter last
sent them (in an answer to any of the service's requests, or in its own
INF), with when.  Pure.

The readings the service keeps (L{smartmeter_tx.service.store}) are decoded
values; whoever serves the meter onwards as ECHONET Lite (the LAN bridge)
needs the bytes themselves, so that a controller sees exactly what the
meter said, coefficient and unit included, and nothing re-encoded.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

__all__ = ["Said", "MeterProperties"]


class Said(NamedTuple):
    """
    One property as the meter last said it.

    @ivar edt: its data; empty when the meter answered it with PDC 0 (it
        cannot give it).
    @ivar at: when, on the service's monotonic clock.
    """

    edt: bytes
    at: float


class MeterProperties:
    """
    The newest EDT of each EPC of one meter.  A new meter (another MAC)
    starts empty: nothing one meter said is ever served as another's.

    @ivar mac: the meter whose words these are, or C{None} when unknown.
    """

    def __init__(self) -> None:
        self.mac: Optional[str] = None
        self._said: dict[int, Said] = {}

    def heard(self, properties: Iterable[tuple[int, bytes]], at: float,
              mac: Optional[str]) -> None:
        """
        Keep the C{(epc, edt)} pairs of one frame from the meter C{mac}.
        """
        if mac != self.mac:
            self._said.clear()
            self.mac = mac
        for epc, edt in properties:
            self._said[epc] = Said(bytes(edt), at)

    def get(self, epc: int) -> Optional[Said]:
        """@return: what the meter last said of C{epc}, or C{None}."""
        return self._said.get(epc)

    def __len__(self) -> int:
        return len(self._said)
