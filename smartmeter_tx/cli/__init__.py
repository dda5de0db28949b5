"""
The entry points: the one-shot commands and C{twist smartmeter}'s
makeService, the composition root that wires outputs to the poller.
"""
