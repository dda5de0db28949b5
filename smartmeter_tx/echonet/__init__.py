"""
ECHONET Lite with the meter: the pure frame codec (L{frame}), the meter
class's properties (L{meter}) and its 30-minute record (L{history}), and the
request layer that sends frames over the SK protocol (L{requester}).
"""
