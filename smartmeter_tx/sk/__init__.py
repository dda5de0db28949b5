"""
SKSTACK IP, the Wi-SUN module's serial command set: the pure line codec
(L{values}, L{parse}, L{commands}, L{events}, L{framing}, L{errors}) and the
Twisted protocol over it (L{protocol}, with its command queue L{exchange}).
"""
