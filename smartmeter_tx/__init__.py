"""
smartmeter_tx: read a Japanese low-voltage smart electricity meter over the
Wi-SUN B-route (SKSTACK IP modules, ECHONET Lite) with Twisted.
"""

__version__ = "0.1.0"
