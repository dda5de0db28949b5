"""
The C{twist smartmeter} plugin.  Import-light on purpose: the real module
(L{smartmeter_tx.cli.tap}) is imported only when the service is made, and nothing
here imports the reactor.
"""

from twisted.application.service import ServiceMaker

smartmeter = ServiceMaker(
    "smartmeter",
    "smartmeter_tx.cli.tap",
    "Read a Japanese smart meter over the Wi-SUN B-route; log and serve the readings",
    "smartmeter",
)
