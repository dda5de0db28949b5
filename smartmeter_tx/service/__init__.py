"""
The long-running service: the poller, the serial port it keeps open, the
latest readings, the data log and the backfill of 30-minute slots.  It never
imports an output.
"""
