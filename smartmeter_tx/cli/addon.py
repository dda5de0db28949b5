"""
The Home Assistant add-on's start: the add-on's options (C{/data/options.json},
written by the Supervisor from what the user set in HA) and the Supervisor's
services turned into one C{twist smartmeter} command, which replaces this
process.

    python -m smartmeter_tx.cli.addon        # the add-on image's entry point

Secrets never go on the command line nor in the log: the B-route ID and
password, the broker's password and the Supervisor's token reach the
service in its environment.  With C{statistics} on, the meter's record goes
to HA through the Supervisor's proxy (its token, no long-lived token to make
by hand); with C{mqtt} on, to the broker the Supervisor names (the Mosquitto
add-on's own user).

L{plan} is pure; L{main} does the reading and asking, each with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from smartmeter_tx.cli.options import ENV_HA_TOKEN, ENV_ID, ENV_PASSWORD
from smartmeter_tx.cli.settings import ENV_MQTT_PASSWORD

__all__ = ["AddonError", "plan", "mqtt_service", "main", "OPTIONS_PATH", "EXIT_CONFIG"]

#: Where the Supervisor writes the add-on's options.
OPTIONS_PATH = "/data/options.json"
#: The Supervisor's API; C{$SMARTMETER_SUPERVISOR_URL} points elsewhere (a
#: stand-in, for tests and development).
SUPERVISOR_URL = "http://supervisor"
#: Seconds the Supervisor has to answer.
SUPERVISOR_WITHIN = 15.0
#: The page's port inside the container: config.yaml's C{ingress_port}.
INGRESS_PORT = 9580
#: The add-on's own folder of files (config.yaml's C{addon_config} map).
CONFIG_DIR = "/config"
#: As C{twist smartmeter}'s own: a setting that cannot work.
EXIT_CONFIG = 78

_DIALECTS = {"auto": [], "standard": ["--standard"], "dse": ["--dse"]}


class AddonError(Exception):
    """A setting of the add-on that cannot work: one line for the add-on's log."""


@dataclass(frozen=True)
class Broker:
    """The MQTT service as the Supervisor describes it."""

    host: str
    port: int
    ssl: bool = False
    username: Optional[str] = None
    password: Optional[str] = None


def _option(options: Mapping, name: str, default=None):
    value = options.get(name, default)
    return default if value in (None, "") else value


def plan(options: Mapping, broker: Optional[Broker], supervisor_token: Optional[str],
         supervisor_url: str = SUPERVISOR_URL) -> tuple:
    """
    The command and environment that run the add-on's service.  Pure.

    @param options: the add-on's options (config.yaml's schema).
    @param broker: the Supervisor's MQTT service, or C{None} (none, or not
        asked for).
    @return: C{(argv, environ)}: argv from C{twist} on; the environment
        holds the secrets only.
    @raise AddonError: an option that cannot work, said in one line.
    """
    device = _option(options, "device")
    if not device:
        raise AddonError("set the add-on's 'device' option: the Wi-SUN module's "
                         "/dev/serial/by-id/... path, or emulator: to try it without one")
    dialect = _option(options, "dialect", "auto")
    if dialect not in _DIALECTS:
        raise AddonError(f"'dialect' must be auto, standard or dse, not {dialect!r}")
    argv = ["twist", "--log-format", "text", "smartmeter", "--device", str(device),
            "--state-file", "/data/state.json", "--data-log", "/data/log",
            "--http", f"tcp:{INGRESS_PORT}", "--interval", str(_option(options, "interval", 30)),
            *_DIALECTS[dialect]]
    tariff = _option(options, "tariff")
    if tariff:
        name = str(tariff)
        if os.path.isabs(name) or ".." in name.split("/"):
            raise AddonError("'tariff' is a file name in the add-on's folder of files "
                             f"(addon_configs), such as tariff.toml, not {name!r}")
        argv += ["--tariff", os.path.join(CONFIG_DIR, name)]
    environ = {}
    if _option(options, "broute_id"):
        environ[ENV_ID] = str(options["broute_id"])
    if _option(options, "broute_password"):
        environ[ENV_PASSWORD] = str(options["broute_password"])
    if options.get("mqtt"):
        if broker is None:
            raise AddonError("'mqtt' is on, but Home Assistant has no MQTT broker: install and "
                             "start the Mosquitto broker add-on (or set up MQTT), or turn "
                             "'mqtt' off")
        user = f"{_quote(broker.username)}@" if broker.username else ""
        scheme = "mqtts" if broker.ssl else "mqtt"
        argv += ["--mqtt", f"{scheme}://{user}{broker.host}:{broker.port}"]
        if broker.password:
            environ[ENV_MQTT_PASSWORD] = broker.password
    if options.get("statistics"):
        if not supervisor_token:
            raise AddonError("'statistics' is on, but the Supervisor gave no token: the "
                             "add-on needs homeassistant_api (reinstall it)")
        websocket = supervisor_url.replace("http", "ws", 1).rstrip("/") + "/core/api/websocket"
        argv += ["--ha-url", websocket]
        environ[ENV_HA_TOKEN] = supervisor_token
    return argv, environ


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def mqtt_service(supervisor_url: str, token: str, timeout: float = SUPERVISOR_WITHIN
                 ) -> Optional[Broker]:
    """
    Ask the Supervisor for the MQTT service.

    @return: the broker, or C{None} when the Supervisor has none.
    @raise AddonError: the Supervisor did not answer in time, or not as its
        API says.
    """
    request = urllib.request.Request(supervisor_url.rstrip("/") + "/services/mqtt",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body = json.loads(answer.read(65536))
    except urllib.error.HTTPError as e:
        if e.code in (400, 404):  # the Supervisor's answer for "no such service"
            return None
        raise AddonError(f"the Supervisor refused the MQTT service: HTTP {e.code}") from None
    except (OSError, ValueError) as e:
        raise AddonError(f"the Supervisor did not answer about MQTT within {timeout:g} s: "
                         f"{e}") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or not data.get("host"):
        return None
    try:
        return Broker(host=str(data["host"]), port=int(data.get("port") or 1883),
                      ssl=bool(data.get("ssl")), username=data.get("username") or None,
                      password=data.get("password") or None)
    except (TypeError, ValueError):
        raise AddonError("the Supervisor's MQTT service has no usable port") from None


def read_options(path: str = OPTIONS_PATH) -> dict:
    """
    The add-on's options.

    @raise AddonError: the file is missing or not a JSON object.
    """
    try:
        with open(path, encoding="utf-8") as f:
            options = json.load(f)
    except OSError as e:
        raise AddonError(f"cannot read the add-on's options {path}: {e.strerror}") from None
    except ValueError:
        raise AddonError(f"the add-on's options {path} are not JSON") from None
    if not isinstance(options, dict):
        raise AddonError(f"the add-on's options {path} are not a JSON object")
    return options


def main(argv: Sequence[str] = (), environ: Mapping[str, str] = os.environ) -> int:
    """
    Read the options, ask the Supervisor, and become C{twist smartmeter}.

    @return: only on a setting that cannot work (L{EXIT_CONFIG}), after one
        line on stderr.
    """
    supervisor_url = environ.get("SMARTMETER_SUPERVISOR_URL") or SUPERVISOR_URL
    token = environ.get("SUPERVISOR_TOKEN") or None
    try:
        options = read_options(environ.get("SMARTMETER_ADDON_OPTIONS") or OPTIONS_PATH)
        broker = None
        if options.get("mqtt"):
            if not token:
                raise AddonError("'mqtt' is on, but the Supervisor gave no token to ask it for "
                                 "the broker")
            broker = mqtt_service(supervisor_url, token)
        command, secrets = plan(options, broker, token, supervisor_url)
    except AddonError as e:
        sys.stderr.write(f"smartmeter add-on: {e}\n")
        return EXIT_CONFIG
    shown = [re.sub(r"://[^/@]*@", "://", word) for word in command]  # no user name
    sys.stderr.write(f"smartmeter add-on: starting {' '.join(shown)}\n")
    sys.stderr.flush()
    env = {k: v for k, v in environ.items() if k not in ("SUPERVISOR_TOKEN",)}
    env.update(secrets)
    twist = os.path.join(os.path.dirname(sys.executable), "twist")
    os.execve(twist, command, env)
    return EXIT_CONFIG  # not reached: execve replaces the process or raises


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
