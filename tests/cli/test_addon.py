"""
Tests for L{smartmeter_tx.cli.addon}, the Home Assistant add-on's start: the
add-on's options and the Supervisor's MQTT service become one C{twist
smartmeter} command, its secrets in the environment only; and the add-on's
files (config.yaml, build.yaml, translations) agree with it and the package.
"""

from __future__ import annotations

import io
import json
import os
import sys

import yaml
from twisted.internet import reactor, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from smartmeter_tx import __version__
from smartmeter_tx.cli import addon
from smartmeter_tx.cli.tap import Options
from tests.cli.test_tap import clean_environ

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADDON = os.path.join(ROOT, "addon")
BROKER = addon.Broker(host="core-mosquitto", port=1883, username="addons",
                      password="mqtt-secret-7")
OPTIONS = {"device": "emulator:", "broute_id": "0" * 31 + "1", "broute_password": "ABCDEFGH2345",
           "interval": 30, "mqtt": True, "statistics": True, "dialect": "auto"}
TOKEN = "supervisor-token-9"


def _yaml(*parts: str) -> dict:
    with open(os.path.join(ADDON, *parts), encoding="utf-8") as f:
        return yaml.safe_load(f)


class PlanTests(SynchronousTestCase):
    def test_everythingOn(self):
        """
        With MQTT and statistics on, the command has the broker (its user,
        not its password) and the Supervisor's websocket proxy; the secrets
        are in the environment only; and twist smartmeter accepts it all.
        """
        argv, environ = addon.plan(OPTIONS, BROKER, TOKEN)
        self.assertEqual(argv[:4], ["twist", "--log-format", "text", "smartmeter"])
        self.assertIn("mqtt://addons@core-mosquitto:1883", argv)
        self.assertIn("ws://supervisor/core/api/websocket", argv)
        self.assertEqual(environ, {"SMARTMETER_ID": OPTIONS["broute_id"],
                                   "SMARTMETER_PASSWORD": OPTIONS["broute_password"],
                                   "SMARTMETER_MQTT_PASSWORD": "mqtt-secret-7",
                                   "SMARTMETER_HA_TOKEN": TOKEN})
        for secret in environ.values():
            self.assertFalse(any(secret in word for word in argv), secret)
        clean_environ(self, **environ)
        options = Options()
        options.parseOptions(argv[4:])
        settings = options.settings
        self.assertEqual((settings.data_log, settings.state_file, settings.http),
                         ("/data/log", "/data/state.json", "tcp:9580"))
        self.assertEqual((settings.mqtt.host, settings.mqtt.username, settings.mqtt.password),
                         ("core-mosquitto", "addons", "mqtt-secret-7"))
        self.assertEqual((settings.ha_url, settings.ha_token),
                         ("ws://supervisor/core/api/websocket", TOKEN))
        self.assertEqual((settings.rbid, settings.password),
                         (OPTIONS["broute_id"], OPTIONS["broute_password"]))

    def test_everythingOff(self):
        """Without MQTT and statistics, no broker or token is needed or used."""
        options = dict(OPTIONS, mqtt=False, statistics=False, dialect="dse", interval=60)
        argv, environ = addon.plan(options, None, None)
        self.assertNotIn("--mqtt", argv)
        self.assertNotIn("--ha-url", argv)
        self.assertEqual(argv[argv.index("--interval") + 1], "60")
        self.assertIn("--dse", argv)
        self.assertEqual(set(environ), {"SMARTMETER_ID", "SMARTMETER_PASSWORD"})

    def test_tariff(self):
        """A tariff is a file of the add-on's folder of files; no path out of it."""
        argv, _ = addon.plan(dict(OPTIONS, tariff="tariff.toml"), BROKER, TOKEN)
        self.assertEqual(argv[argv.index("--tariff") + 1], "/config/tariff.toml")
        self.assertNotIn("--tariff", addon.plan(OPTIONS, BROKER, TOKEN)[0])
        for bad in ("/etc/passwd", "../secrets.toml"):
            e = self.assertRaises(addon.AddonError, addon.plan, dict(OPTIONS, tariff=bad),
                                  BROKER, TOKEN)
            self.assertIn("'tariff' is a file name in the add-on's folder of files", str(e))

    def test_tlsBrokerAndQuotedUser(self):
        """A broker with TLS is mqtts://; a user name is quoted in the URL."""
        broker = addon.Broker(host="broker", port=8883, ssl=True, username="a@b c")
        argv, environ = addon.plan(OPTIONS, broker, TOKEN)
        self.assertIn("mqtts://a%40b%20c@broker:8883", argv)
        self.assertNotIn("SMARTMETER_MQTT_PASSWORD", environ)

    def test_settingsThatCannotWork(self):
        """
        No device, a dialect not offered, MQTT on with no broker, statistics
        on with no token: each is one line saying what to do.
        """
        cases = [(dict(OPTIONS, device=""), BROKER, TOKEN, "set the add-on's 'device' option"),
                 (dict(OPTIONS, dialect="x"), BROKER, TOKEN, "'dialect' must be"),
                 (OPTIONS, None, TOKEN, "install and start the Mosquitto broker add-on"),
                 (dict(OPTIONS, mqtt=False), None, None, "needs homeassistant_api")]
        for options, broker, token, expected in cases:
            e = self.assertRaises(addon.AddonError, addon.plan, options, broker, token)
            self.assertIn(expected, str(e))
            self.assertNotIn("\n", str(e))


class _Services(resource.Resource):
    """The Supervisor's C{/services/mqtt}, answering as told."""

    isLeaf = True

    def __init__(self, status: int, body) -> None:
        super().__init__()
        self.status, self.body, self.seen = status, body, []

    def render_GET(self, request):
        self.seen.append((request.path, request.getHeader("authorization")))
        if self.body is None:
            return server.NOT_DONE_YET  # never answers
        request.setResponseCode(self.status)
        return json.dumps(self.body).encode()


class MqttServiceTests(TestCase):
    """L{addon.mqtt_service} against an HTTP server on loopback."""

    def serve(self, status: int, body) -> tuple:
        services = _Services(status, body)
        site = server.Site(services)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}", services

    async def test_broker(self):
        """The Supervisor's answer becomes the broker, asked with the add-on's token."""
        url, services = self.serve(200, {"result": "ok", "data": {
            "host": "core-mosquitto", "port": 1883, "ssl": False, "protocol": "3.1.1",
            "username": "addons", "password": "mqtt-secret-7"}})
        broker = await threads.deferToThread(addon.mqtt_service, url, TOKEN)
        self.assertEqual(broker, BROKER)
        self.assertEqual(services.seen, [(b"/services/mqtt", f"Bearer {TOKEN}")])

    async def test_noService(self):
        """The Supervisor's 400 (no MQTT service) is no broker."""
        url, _ = self.serve(400, {"result": "error", "message": "No mqtt service available"})
        self.assertIsNone(await threads.deferToThread(addon.mqtt_service, url, TOKEN))

    async def test_silentSupervisor(self):
        """A Supervisor that never answers is one line after the deadline."""
        url, _ = self.serve(200, None)
        with self.assertRaises(addon.AddonError) as caught:
            await threads.deferToThread(addon.mqtt_service, url, TOKEN, 0.5)
        self.assertIn("did not answer about MQTT within 0.5 s", str(caught.exception))


class MainTests(SynchronousTestCase):
    def test_missingOptions(self):
        """Without its options file the start says so in one line and ends with 78."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        path = self.mktemp()
        status = addon.main([], {"SMARTMETER_ADDON_OPTIONS": path})
        self.assertEqual(status, addon.EXIT_CONFIG)
        self.assertEqual(stderr.getvalue(), f"smartmeter add-on: cannot read the add-on's "
                                            f"options {path}: No such file or directory\n")


class AddonFilesTests(SynchronousTestCase):
    """The add-on's files agree with one another, the start and the package."""

    def test_versionIsThePackages(self):
        """config.yaml's version and build.yaml's pinned release are this package's."""
        self.assertEqual(_yaml("config.yaml")["version"], __version__)
        self.assertEqual(_yaml("build.yaml")["args"]["SMARTMETER_TX"],
                         f"smartmeter_tx[mqtt,homeassistant]=={__version__}")

    def test_optionsSchemaAndTranslations(self):
        """
        Every option has a schema entry and an English and a Japanese name,
        and the defaults are a plan the start accepts.
        """
        config = _yaml("config.yaml")
        self.assertEqual(set(config["options"]), set(config["schema"]))
        for language in ("en", "ja"):
            names = _yaml("translations", f"{language}.yaml")["configuration"]
            self.assertEqual(set(names), set(config["options"]), language)
            for name, text in names.items():
                self.assertTrue(text.get("name") and text.get("description"), (language, name))
        argv, _ = addon.plan(dict(config["options"], device="emulator:"), BROKER, TOKEN)
        self.assertIn("--ha-url", argv)

    def test_supervisorFeatures(self):
        """The add-on asks for what the start relies on: serial ports, ingress, API, MQTT."""
        config = _yaml("config.yaml")
        self.assertTrue(config["uart"])
        self.assertTrue(config["ingress"])
        self.assertEqual(config["ingress_port"], addon.INGRESS_PORT)
        self.assertTrue(config["homeassistant_api"])
        self.assertIn("mqtt:want", config["services"])
        self.assertIn("addon_config:ro", config["map"])
        self.assertEqual(set(config["arch"]), set(_yaml("build.yaml")["build_from"]))
