"""
The Twisted side of SKSTACK IP: L{SKStackProtocol} over any byte transport
(L{host}) and the command queue behind it (L{queue}).  Everything else in
L{smartmeter_tx.sk} is pure.
"""

from smartmeter_tx.sk.protocol.host import SKStackProtocol

__all__ = ["SKStackProtocol"]
