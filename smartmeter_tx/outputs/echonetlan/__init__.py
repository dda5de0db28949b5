"""
The meter on the LAN as an ECHONET Lite node: C{node}, what answers what
(pure), and C{bridge}, the node on UDP 3610 as an output of the service.
"""
