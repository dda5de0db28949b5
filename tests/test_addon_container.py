"""
The Home Assistant add-on's image (addon/), built as the Supervisor builds it
and run with an C{options.json}, a stand-in for the Supervisor's small API
(L{tests.supervisor}: the MQTT service, C{/core} forwarded to the suite's
real Home Assistant) and a real mosquitto with a password: its MQTT
entities appear in HA, its statistics are imported through the Supervisor's
proxy, and its page answers under an ingress path prefix, links included.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request

from twisted.internet import reactor, threads
from twisted.trial.unittest import SkipTest

from smartmeter_tx.emulator.module import DEFAULT_ID, DEFAULT_PASSWORD
from smartmeter_tx.outputs.homeassistant import websocket as W
from tests import podman as P
from tests.home_assistant import HomeAssistantTestCase
from tests.mosquitto import MOSQUITTO, MOSQUITTO_PASSWD, Broker
from tests.outputs.test_ha_real import poll
from tests.supervisor import SupervisorStandIn
from tests.test_container import FIRST_READING_WITHIN, _image

MQTT_USER, MQTT_PASSWORD = "addons", "Mqtt-Pass-4821"
#: The host's loopback as a container on slirp4netns sees it.
HOST = "10.0.2.2"


class AddonImageTests(HomeAssistantTestCase):

    timeout = P.BUILD_WITHIN + 600  # only catches a hang; the first test pays the build

    async def setUp(self):
        await super().setUp()
        if MOSQUITTO is None or MOSQUITTO_PASSWD is None:
            raise SkipTest("mosquitto not installed: apt-get install mosquitto")
        self.image = await threads.deferToThread(_image, "addon")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.dir, "data"))
        passwd = os.path.join(self.dir, "passwd")
        subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", passwd, MQTT_USER, MQTT_PASSWORD],
                       check=True, capture_output=True, timeout=30)
        os.chmod(passwd, 0o600)
        self.broker = Broker(self.dir, extra=f"password_file {passwd}")
        self.addCleanup(self.broker.kill)
        await self.broker.start()
        await self.ha.add_mqtt(self.broker.port, MQTT_USER, MQTT_PASSWORD)
        self.supervisor = SupervisorStandIn(self.ha.token, self.ha.port, {
            "host": HOST, "port": self.broker.port, "ssl": False, "protocol": "3.1.1",
            "username": MQTT_USER, "password": MQTT_PASSWORD, "addon": "core_mosquitto"})
        supervisor_port = self.supervisor.listen()
        self.addCleanup(self.supervisor.port.stopListening)
        self.supervisor_url = f"http://127.0.0.1:{supervisor_port}"
        with open(os.path.join(self.dir, "data", "options.json"), "w") as f:
            json.dump({"device": "emulator:", "broute_id": DEFAULT_ID,
                       "broute_password": DEFAULT_PASSWORD,
                       "interval": 10, "mqtt": True, "statistics": True, "dialect": "auto"}, f)
        # As the Supervisor hands them over: in the environment, not on a command line.
        self.env_file = os.path.join(self.dir, "env")
        with open(self.env_file, "w") as f:
            f.write(f"SUPERVISOR_TOKEN={self.ha.token}\n"
                    f"SMARTMETER_SUPERVISOR_URL=http://{HOST}:{supervisor_port}\n")

    async def entities(self) -> dict:
        """HA's states of the add-on's MQTT entities: C{{unique_id: state}}."""
        session = await W.connect(reactor, self.ha.url, self.ha.token)
        try:
            registry = await session.call("config/entity_registry/list")
            statistics = await session.call("recorder/list_statistic_ids",
                                            statistic_type="sum")
        finally:
            await session.close_and_wait(reactor)
        ours = {e["entity_id"]: e["unique_id"] for e in registry
                if e.get("platform") == "mqtt" and e["unique_id"].startswith("smartmeter_tx_")}
        states = await self.ha.request("GET", "/api/states")
        self.statistic_ids = {s["statistic_id"] for s in statistics
                              if s["statistic_id"].startswith("smartmeter_tx:")}
        return {ours[s["entity_id"]]: s for s in states if s["entity_id"] in ours}

    async def test_entitiesStatisticsAndIngressPage(self):
        """
        The add-on reads the emulated meter, publishes to the broker the
        Supervisor names (its user and password), HA builds the entities,
        the meter's record reaches HA's statistics through C{/core}, and the
        page and its links work under the ingress prefix.  No secret is in
        the add-on's log.
        """
        container = P.Container(self.image, (), [
            "--network", "slirp4netns:allow_host_loopback=true",
            "--publish", "127.0.0.1::9580", "--env-file", self.env_file,
            "--volume", f"{os.path.join(self.dir, 'data')}:/data"])
        self.addCleanup(threads.deferToThread, container.remove)
        await threads.deferToThread(container.start)
        self.supervisor.addon_port = await threads.deferToThread(container.port, 9580)

        async def numbers():
            states = await self.entities()
            power = [s for u, s in states.items() if u.endswith("_power")]
            return (power and power[0]["state"] not in ("unknown", "unavailable")
                    and self.statistic_ids and states)
        try:
            states = await poll(numbers, "the add-on's entities and statistics in HA",
                               FIRST_READING_WITHIN + 60, step=1.0)
        except AssertionError as e:
            raise AssertionError(f"{e}; the add-on's log:\n{container.logs()[-3000:]}") from None
        self.assertGreater(float(next(s["state"] for u, s in states.items()
                                      if u.endswith("_power"))), 0)
        self.assertIn(("GET", "/services/mqtt"), self.supervisor.requests)
        self.assertIn(("GET", "/core/api/websocket"), self.supervisor.requests)
        self.assertTrue(any(i.endswith("_energy_import") for i in self.statistic_ids),
                        self.statistic_ids)

        page_url = f"{self.supervisor_url}{self.supervisor.ingress_prefix}/"
        page = await threads.deferToThread(_get, page_url)
        self.assertIn(b"<html", page)
        self.assertIn(b'href="latest"', page)
        latest = json.loads(await threads.deferToThread(_get, urllib.parse.urljoin(page_url, "latest")))
        self.assertGreater(latest["power_w"], 0)

        log = container.logs()
        self.assertIn(f"--mqtt mqtt://{HOST}:{self.broker.port} "
                      f"--ha-url ws://{HOST}:{self.supervisor.port.getHost().port}"
                      f"/core/api/websocket", log)
        for secret in (MQTT_PASSWORD, self.ha.token, DEFAULT_ID, DEFAULT_PASSWORD):
            self.assertNotIn(secret, log)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()

