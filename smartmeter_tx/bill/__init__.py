"""
The household's bill: a tariff file (L{tariff}) and the meter's 30-minute
record priced under it, period by period (L{pricing}).  Pure: no Twisted, no
I/O but reading the tariff file.
"""
