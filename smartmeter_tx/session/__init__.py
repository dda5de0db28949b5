"""
The B-route session with one meter: bounded SK steps, the link state, finding
the meter, joining, reading values and history, and the state file.
"""
