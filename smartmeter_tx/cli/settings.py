"""
What C{twist smartmeter} runs with: its options (L{smartmeter_tx.cli.tap.Options},
the text the user gave) read, checked and derived once into one
L{Settings}, which L{smartmeter_tx.cli.tap.makeService} builds the service
from.  Nothing derived goes back into the options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from smartmeter_tx.cli import meteropts
from smartmeter_tx.cli import options as O
from smartmeter_tx.errors import ArgumentError, ConfigError

__all__ = ["Settings", "settings_from", "DEFAULT_BACKFILL_DAYS", "ENV_MQTT_PASSWORD",
           "ENV_PREFIX", "environment_words"]

ENV_MQTT_PASSWORD = "SMARTMETER_MQTT_PASSWORD"
#: C{SMARTMETER_<OPTION>} gives C{twist smartmeter}'s C{--option} (a
#: container's settings, a unit's EnvironmentFile); the command line wins.
ENV_PREFIX = "SMARTMETER_"
#: Options read from the environment under their own names, as the secrets
#: they are (L{smartmeter_tx.cli.options.read_secrets}), or not at all.
_NOT_FROM_ENVIRONMENT = frozenset({"id", "password", "help", "version"})
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"", "0", "false", "no", "off"})
#: Days of the meter's own record kept complete in the data log by default.
DEFAULT_BACKFILL_DAYS = 7
#: ... and with --tariff: a whole billing period and the day before it.
TARIFF_BACKFILL_DAYS = 32


@dataclass(frozen=True)
class Settings:
    """
    What C{twist smartmeter} runs with: the options read, checked and
    derived once (L{settings_from}); the options keep the text given.

    @ivar credentials: the B-route credentials, or C{None} (with
        C{emulator:}, the emulator's own fill in what was not given: see
        C{rbid} and C{password}).
    @ivar mqtt: the broker's settings, or C{None} without C{--mqtt}.
    @ivar ha_token: HA's access token, or C{None} without C{--ha-url}.
    @ivar warnings: lines for the log at start: settings that work but cost
        more than they should.
    """

    device: O.DeviceSpec
    state_file: Optional[str] = None
    credentials: Optional[Any] = None
    rbid: Optional[str] = field(default=None, repr=False)
    password: Optional[str] = field(default=None, repr=False)
    dialect: Optional[Any] = None
    channel: Optional[int] = None
    panid: Optional[int] = None
    ipaddr: Optional[str] = None
    interval: float = 30.0
    energy_interval: float = 300.0
    data_log: Optional[str] = None
    backfill_days: int = 0
    http: Optional[str] = None
    http_max_connections: Optional[int] = None
    mqtt: Optional[Any] = None
    ha_url: Optional[str] = None
    ha_token: Optional[str] = field(default=None, repr=False)
    ha_token_file: Optional[str] = None
    tariff: Optional[Any] = None
    echonet_lan: Optional[str] = None
    warnings: tuple = ()


def environment_name(option: str) -> str:
    """C{--ha-url}'s variable: C{SMARTMETER_HA_URL}."""
    return ENV_PREFIX + option.replace("-", "_").upper()


def environment_words(parameters, flags, environ) -> tuple:
    """
    The command-line words that C{SMARTMETER_<OPTION>} variables stand for,
    to be parsed before the command line's own (which so wins).  Pure.

    @param parameters: the long names of the options that take a value.
    @param flags: the long names of the switches.
    @return: C{(words, names)}: the words, and the variables they came from.
    @raise ArgumentError: a switch's variable is neither true nor false.
    """
    words, names = [], []
    for option in sorted(set(parameters) | set(flags)):
        name = environment_name(option)
        value = environ.get(name)
        if option in _NOT_FROM_ENVIRONMENT or value is None:
            continue
        if option in flags:
            if value.strip().lower() not in _TRUE | _FALSE:
                raise ArgumentError(f"${name} must be true or false (1/0), not {value!r}")
            if value.strip().lower() in _TRUE:
                words.append(f"--{option}")
        else:
            words.append(f"--{option}={value}")
        names.append(name)
    return words, names


def settings_from(options, environ=None) -> Settings:
    """
    Check the options and derive what the service needs from them: the
    device read once, the secrets from their files or the environment, the
    MQTT and Home Assistant settings.

    @raise ArgumentError: a usage error (one line naming the option).
    @raise ConfigError: a setting that cannot work (one line; exit 78).
    """
    environ = os.environ if environ is None else environ
    meter = meteropts.checked_values(options)
    device = O.require_device(meter["device"])
    if options["dse"] and options["standard"]:
        raise ArgumentError("--dse and --standard exclude each other")
    interval, energy_interval = _seconds(options, "interval"), _seconds(options, "energy-interval")
    if interval < 1 or energy_interval < interval:
        raise ArgumentError("--interval must be >= 1 s and --energy-interval >= it")
    if options["http-max-connections"] is not None and options["http-max-connections"] < 1:
        raise ArgumentError("--http-max-connections must be 1 or more")
    backfill_days = _backfill_days(options)
    warnings = _interval_warnings(interval)
    if options["tariff"] and options["data-log"]:
        # The whole billing period (up to 31 days) and the slot before it.
        if options["backfill-days"] == 0:
            raise ConfigError("--tariff prices the meter's 30-minute record, which "
                              "--backfill-days 0 turns off")
        if backfill_days < TARIFF_BACKFILL_DAYS and options["backfill-days"] is not None:
            warnings += (f"--tariff keeps {TARIFF_BACKFILL_DAYS} days of the meter's record "
                         f"complete (a whole billing period), not --backfill-days "
                         f"{backfill_days}",)
        backfill_days = max(backfill_days, TARIFF_BACKFILL_DAYS)
    mqtt = _mqtt(options, environ) if options["mqtt"] else None
    ha_token = _ha(options, backfill_days, environ) if options["ha-url"] else None
    rbid, password = O.read_secrets(options["id"], options["password"],
                                    options["password-file"], environ)
    # Checked here so that twist reports a usage error, not a traceback; the
    # message never includes the values.  (With emulator: a missing pair is
    # filled in by the emulator's own credentials.)
    credentials = None
    if rbid and password or not device.is_emulator:
        credentials = O.make_credentials(rbid, password)
    http = options["http"]
    tariff = _tariff(options) if options["tariff"] else None
    echonet_lan = _lan_address(options["echonet-lan"])
    return Settings(
        device=device, state_file=options["state-file"], credentials=credentials,
        rbid=rbid, password=password,
        dialect=O.dialect_for(True if options["dse"] else False if options["standard"]
                              else None),
        channel=meter["channel"], panid=meter["panid"], ipaddr=meter["ipaddr"],
        interval=interval, energy_interval=energy_interval,
        warnings=warnings,
        data_log=options["data-log"], backfill_days=backfill_days,
        http=None if not http or http.lower() == "none" else http,
        http_max_connections=options["http-max-connections"], mqtt=mqtt,
        ha_url=options["ha-url"], ha_token=ha_token, ha_token_file=options["ha-token-file"],
        tariff=tariff, echonet_lan=echonet_lan)


def _lan_address(text: Optional[str]) -> Optional[str]:
    """
    C{--echonet-lan}'s address: an IPv4 address (or C{0.0.0.0}); C{None} or
    C{none}: off.

    @raise ArgumentError: not an IPv4 address.
    """
    import ipaddress

    if text is None or text.strip().lower() in ("", "none"):
        return None
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise ArgumentError(f"--echonet-lan takes an IPv4 address of this host (or 0.0.0.0), "
                            f"not {text!r}") from None


def _tariff(options):
    """
    The household's tariff, read once at start.

    @raise ConfigError: it cannot be read or does not fit, or there is no
        data log to price (exit 78, one line).
    """
    from smartmeter_tx.bill.tariff import load_tariff

    if not options["data-log"]:
        raise ConfigError("--tariff needs --data-log: the bill is priced from the meter's "
                          "30-minute record kept there")
    return load_tariff(options["tariff"])


def _seconds(options, name: str) -> float:
    """A duration option (C{30}, C{30s}, C{5m}), its flag named in the error."""
    try:
        return O.parse_seconds(str(options[name]))
    except ArgumentError as e:
        raise ArgumentError(f"--{name}: {e}") from None


#: Polls an hour at the default C{--interval} (30 s), and the shortest interval
#: that README and the log call reasonable.
DEFAULT_POLLS, ADVISED_INTERVAL = 120, 10.0


def _interval_warnings(interval: float) -> tuple:
    """A poll interval under L{ADVISED_INTERVAL} is said once at start."""
    if interval >= ADVISED_INTERVAL:
        return ()
    polls = 3600 / interval
    return (f"--interval {interval:g} s sends {polls:.0f} requests an hour, "
            f"{polls / DEFAULT_POLLS:.0f} times the default's {DEFAULT_POLLS}: each costs "
            "air time from the 360 s per hour the law allows the module, which joins and "
            f"retries need too; {ADVISED_INTERVAL:g} s or more is advised",)


def _backfill_days(options) -> int:
    days = options["backfill-days"]
    if days is None:
        return DEFAULT_BACKFILL_DAYS if options["data-log"] else 0
    if not options["data-log"]:
        raise ConfigError("--backfill-days needs --data-log: the 30-minute record is kept "
                          "in the data log")
    if not 0 <= days <= O.RECORD_DAYS:
        raise ArgumentError(f"--backfill-days must be 0 to {O.RECORD_DAYS} (meters keep about "
                            f"{O.RECORD_DAYS} days)")
    return days


def _mqtt(options, environ):
    """The MQTT settings; the password from its file or the environment."""
    import importlib.util

    from smartmeter_tx.outputs.mqtt.config import MqttConfig
    if importlib.util.find_spec("paho") is None:
        raise ConfigError(O.missing_extra("--mqtt", "mqtt", "paho-mqtt"))
    password = environ.get(ENV_MQTT_PASSWORD) or None
    if options["mqtt-password-file"]:
        password = O.read_password_file(options["mqtt-password-file"], "--mqtt-password-file")
    discovery = options["ha-discovery"]
    return MqttConfig.from_options(
        options["mqtt"], password, topic_prefix=options["mqtt-topic"],
        discovery_prefix=None if discovery.lower() == "none" else discovery,
        ca_file=options["mqtt-ca"], cert_file=options["mqtt-cert"],
        key_file=options["mqtt-key"])


def _ha(options, backfill_days: int, environ) -> str:
    """
    Home Assistant's settings: the extra, the URL, the data log the record
    comes from, the token (from its file or the environment).

    @return: the token.
    """
    import importlib.util

    if importlib.util.find_spec("autobahn") is None:
        raise ConfigError(O.missing_extra("--ha-url", "homeassistant", "autobahn"))
    from smartmeter_tx.outputs.homeassistant.websocket import websocket_url
    websocket_url(options["ha-url"])  # ConfigError: 78
    if not options["data-log"] or backfill_days == 0:
        raise ConfigError("--ha-url needs --data-log (with --backfill-days above 0): "
                          "the meter's 30-minute record is kept there")
    token = O.read_ha_token(options["ha-token-file"], environ)
    if not token:
        raise ConfigError(f"--ha-url needs an access token: --ha-token-file FILE or "
                          f"${O.ENV_HA_TOKEN}")
    return token
