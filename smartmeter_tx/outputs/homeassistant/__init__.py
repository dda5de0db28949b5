"""
The meter's own 30-minute record in Home Assistant's long-term statistics:
the hour arithmetic (L{statistics}, pure), HA's websocket API on Twisted
(L{websocket}, with autobahn: the C{[homeassistant]} extra), and the
service's importer (L{importer}).
"""
