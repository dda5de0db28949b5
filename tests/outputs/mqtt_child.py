"""
A publisher in its own process, for the Last Will tests: it connects to the
broker on 127.0.0.1:PORT as meter 001d129012345678 (its MAC; with C{unknown},
before any meter is known) and runs until it is killed.

    python tests/outputs/mqtt_child.py PORT [unknown]
"""

import sys


from twisted.internet import reactor

from smartmeter_tx.session.linkstate import LinkState
from smartmeter_tx.outputs.mqtt.config import MqttConfig
from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
from smartmeter_tx.service.store import LatestStore
from smartmeter_tx.service.view import ServiceView


def main(port: int, unknown: bool = False) -> None:
    store = LatestStore()
    if not unknown:
        store.identity = {"mac": "001D129012345678", "maker": "000016", "serial": "SN-CHILD"}
    view = ServiceView(store, LinkState(), reactor)
    config = MqttConfig.from_options(f"mqtt://127.0.0.1:{port}", None, discovery_prefix=None)
    publisher = MqttPublisher(config, view, reactor)
    publisher.startService()
    publisher.recordReceived({"power_w": 123}, 1700000000.0)
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:] == ["unknown"])
