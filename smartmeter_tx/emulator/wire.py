"""
What goes over the emulated module's UART and radio, for every part of the
emulator: the line end, hex fields, the multicast address and the UDP ports.
"""

import re

__all__ = ["CRLF", "HEX", "MULTICAST", "PORT_ECHONET", "PORT_PANA"]

CRLF = b"\r\n"
HEX = re.compile(r"^[0-9A-Fa-f]+$")
MULTICAST = "FF02:0000:0000:0000:0000:0000:0000:0001"
PORT_ECHONET = 0x0E1A
PORT_PANA = 0x02CC
