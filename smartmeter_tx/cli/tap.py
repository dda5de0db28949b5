"""
C{twist smartmeter}: Options and makeService for the continuous-logging
service.

The default poll interval (30 s) is 120 Get frames an hour.  Each request and
answer takes tens of milliseconds of air time, so polling uses a few seconds of
the 360 s per rolling hour that ARIB STD-T108 allows a module; PANA, retries and
the neighbour discovery share the rest.  Going below 10 s is not recommended.
"""

from __future__ import annotations

import atexit
import datetime
import os
import shutil
import sys
import tempfile
import time

from typing import TYPE_CHECKING, NoReturn, Optional

from twisted.application import service
from twisted.python import usage

from smartmeter_tx.cli import meteropts, preflight
from smartmeter_tx.cli.settings import (ENV_MQTT_PASSWORD, Settings, environment_words,
                                        settings_from)
from smartmeter_tx.cli import options as O
from smartmeter_tx.errors import ArgumentError, ConfigError
from smartmeter_tx.cli.options import ENV_ID, ENV_PASSWORD

if TYPE_CHECKING:  # the service is imported when it is built
    from smartmeter_tx.service.interfaces import IMetricsSource


_METER_FLAGS, _METER_PARAMETERS = meteropts.usage_parameters()
_HA_FLAGS, _HA_PARAMETERS = meteropts.usage_parameters(meteropts.HA_OPTIONS)


#: Exit statuses of C{twist smartmeter} (sysexits.h, as twist itself uses).
EXIT_USAGE = 64        # a bad option (twist prints the usage)
EXIT_UNAVAILABLE = 69  # the --http endpoint cannot be bound
EXIT_CONFIG = 78       # a setting that cannot work (see cli/preflight.py); no credentials
                       # and the module has no session; the broker refuses us at start


def _die(status: int, message: str) -> NoReturn:
    """
    End C{twist} before the reactor runs: one line on stderr, no traceback.

    @raise SystemExit: always.
    """
    sys.stderr.write(f"twist smartmeter: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


class Options(usage.Options):
    """
    Options of C{twist smartmeter}; the meter-related ones are the one
    table of L{smartmeter_tx.cli.meteropts}, shared with the one-shot
    commands.
    """

    synopsis = "[options]"
    longdesc = ("Keep one B-route session with the smart meter, poll it, log every reading "
                "as JSON lines and serve the latest one over HTTP (/latest, /metrics). "
                f"Credentials may come from ${ENV_ID} and ${ENV_PASSWORD}; any other option "
                "from SMARTMETER_<OPTION> (--ha-url: $SMARTMETER_HA_URL; a switch: 1 or 0), "
                "which the command line overrides.")

    optFlags = _METER_FLAGS + [
        ["standard", None, "force the standard SK dialect (default: detected)"],
    ]
    optParameters = _METER_PARAMETERS + [
        ["interval", None, "30", "seconds between power/current polls (30, 30s, 1m); "
         "under 10 s costs air time the law caps"],
        ["energy-interval", None, "300", "seconds between cumulative-energy reads (300, 5m)"],
        ["data-log", None, None, "directory for the daily JSON-lines data log"],
        ["backfill-days", None, None, "with --data-log: keep the log's 30-minute slots "
         "complete this many days back from the meter's own record (0-45, default 7; 0 "
         "disables)", int],
        ["http", None, "tcp:9580:interface=127.0.0.1",
         "endpoint for the dashboard, /latest, /history and /metrics ('none' disables it)"],
        ["http-max-connections", None, None, "most HTTP connections at once; past it idle "
         "or slow ones give way (default: 64, fewer under a low open-file limit)", int],
        ["mqtt", None, None, "publish to an MQTT broker: mqtt://[user@]host[:port] or "
         "mqtts://... (needs the [mqtt] extra)"],
        ["mqtt-password-file", None, None, "file holding the MQTT password (or "
         f"${ENV_MQTT_PASSWORD})"],
        ["mqtt-topic", None, "smartmeter", "MQTT topic prefix"],
        ["ha-discovery", None, "homeassistant", "Home Assistant discovery prefix ('none' "
         "disables discovery)"],
        ["mqtt-ca", None, None, "CA certificates (PEM) for mqtts:// (default: the system's)"],
        ["mqtt-cert", None, None, "client certificate (PEM) for mqtts://, with its key unless "
         "--mqtt-key is given"],
        ["mqtt-key", None, None, "the client certificate's key (PEM)"],
        ["tariff", None, None, "the household's tariff (TOML, examples/tariffs): this billing "
         "period's kWh, yen and price now on the page and /metrics (needs --data-log)"],
        ["echonet-lan", None, None, "serve the meter to ECHONET Lite controllers on the LAN "
         "(UDP 3610, group 224.0.23.0) on this IPv4 address of the host, or 0.0.0.0; no "
         "authentication: a trusted LAN only"],
    ] + _HA_PARAMETERS

    def opt_version(self) -> None:
        """Print the version and exit."""
        from smartmeter_tx import __version__
        print(f"twist smartmeter (smartmeter_tx) {__version__}")
        raise SystemExit(0)

    def __repr__(self) -> str:
        # usage.Options is a dict: its repr would show the secrets given.
        return repr({k: ("<redacted>" if k in ("id", "password") and v else v)
                     for k, v in self.items()})

    def parseOptions(self, options=None) -> None:
        """
        Parse the options that C{SMARTMETER_<OPTION>} variables give, then
        the command line's (so that they win).

        @raise usage.UsageError: a bad option; one that came from a variable
            names it.
        """
        argv = sys.argv[1:] if options is None else list(options)
        try:
            words, names = environment_words(
                [p[0] for p in self.optParameters], [f[0] for f in self.optFlags], os.environ)
        except ArgumentError as e:
            raise usage.UsageError(str(e)) from None
        try:
            super().parseOptions(words + argv)
        except usage.UsageError as e:
            if not names:
                raise
            raise usage.UsageError(f"{e} (options were also taken from "
                                   f"{', '.join('$' + n for n in names)})") from None

    def postOptions(self) -> None:
        try:
            self.settings = settings_from(self)
        except ConfigError as e:
            _die(EXIT_CONFIG, str(e))
        except ArgumentError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options, reactor=None, open_port=None, wall_clock=None) -> service.IService:
    """
    Build the service tree, the composition root of C{twist smartmeter}:
    the poller, the data log and its backfill, and the outputs registered
    on it (HTTP, MQTT, Home Assistant).

    @param options: the parsed L{Options} (their L{Settings}).
    @param open_port: for tests, replaces opening the serial device.
    @param wall_clock: for tests, replaces C{time.time} (data-log dates).
    @raise SystemExit: a setting cannot work (exit status 78, one line).
    """
    if reactor is None:
        from twisted.internet import reactor

        from smartmeter_tx.service.clock import sleep_past_cancelled, use_monotonic
        # The service's schedule must not move with the wall clock, and
        # nothing but the next poll may wake it between two polls.
        use_monotonic(reactor)
        sleep_past_cancelled(reactor)
        _stop_on_hangup(reactor)
    try:
        return _build(options.settings, reactor, open_port, wall_clock)
    except ConfigError as e:
        _die(EXIT_CONFIG, str(e))


def _build(settings: Settings, reactor, open_port, wall_clock) -> service.MultiService:
    from smartmeter_tx.service.backfill import Backfill
    from smartmeter_tx.service.datalog import DataLog
    from smartmeter_tx.service.poller import MeterPoller, PollSchedule
    from smartmeter_tx.service.radio import FrameWindow
    from smartmeter_tx.service.tree import RecordFanout, ServiceTree

    datalog = None
    if settings.data_log:
        datalog = DataLog(settings.data_log)
        preflight.check_data_log(datalog, None if wall_clock is None else wall_clock())
    if open_port is None and not settings.device.is_emulator:
        preflight.check_device(settings.device.text)
    http = _http_service(settings.http, reactor)
    device, credentials, stop_device = _device(settings, reactor, emulate=open_port is None)
    if open_port is None:
        def open_port(proto):
            O.open_serial(proto, device.path, reactor)
    config, state_path = O.session_config(settings.device, settings.state_file, credentials,
                                          settings.dialect, settings.channel, settings.panid,
                                          settings.ipaddr)
    preflight.check_state_file(state_path, given=settings.state_file is not None)
    if settings.echonet_lan is not None:
        preflight.check_lan_address(settings.echonet_lan)
    records = RecordFanout(datalog)
    extra = {} if wall_clock is None else {"wall_clock": wall_clock}
    # The frames beyond the polls, an hour's worth for the record and the LAN together.
    window = FrameWindow(Backfill.FRAMES_PER_HOUR)
    backfill = _backfill(settings, records, reactor, wall_clock or time.time, window)
    if backfill is not None:
        extra["backfill"] = backfill

    def on_fatal(message):
        # The service's own line, whichever part found the setting that cannot work.
        from twisted.logger import Logger
        Logger(namespace="smartmeter_tx.cli.tap").critical("{why}; stopping", why=message)
        _stop_with(reactor, EXIT_CONFIG)

    poller = MeterPoller(open_port, config, reactor,
                         PollSchedule(interval=settings.interval,
                                      energy_interval=settings.energy_interval),
                         on_reading=records, state_path=state_path, on_fatal=on_fatal,
                         identify=settings.mqtt is not None, **extra)
    for line in settings.warnings:  # (a "warning" key is the legacy log's warnings.warn)
        poller.log.warn("{line}", line=line)
    if datalog is not None:
        poller.last_logged = datalog.last_reading_time()
        # The dashboard's curve starts with today's logged readings, not empty.
        poller.store.seed_today(datalog.readings, poller.wall_clock())
    top = ServiceTree(poller, records)
    if stop_device is not None:
        top.whenStopped(stop_device)
    view = top.view()
    if http is not None:
        http.factory = _site(settings, view, poller.wall_clock, top.sources, reactor)
        top.addOutput(http)
    _add_outputs(settings, top, view, reactor, poller.wall_clock, wall_clock, on_fatal,
                 ha=backfill is not None)
    if settings.echonet_lan is not None:
        top.addOutput(_echonet_lan(settings, poller, view, window, reactor))
    return top


def _echonet_lan(settings: Settings, poller, view, window, reactor):
    """The ECHONET Lite node (C{--echonet-lan}), relaying through the poller's session."""
    from smartmeter_tx.outputs.echonetlan.bridge import EchonetLanBridge
    from smartmeter_tx.outputs.echonetlan.node import Freshness
    from smartmeter_tx.service.relay import MeterRelay

    relay = MeterRelay(lambda: poller.client, poller.running_poll, lambda: poller.held,
                       reactor, window)

    def cannot_listen(why) -> None:
        _die(EXIT_UNAVAILABLE, f"cannot listen on UDP 3610 for --echonet-lan: {why} (is "
                               "another ECHONET Lite node or controller running on this host?)")
    assert settings.echonet_lan is not None  # (asked for)
    return EchonetLanBridge(settings.echonet_lan, view, relay, reactor,
                            Freshness.for_schedule(settings.interval, settings.energy_interval),
                            cannot_listen=cannot_listen, wall=poller.wall_clock)


def _add_outputs(settings: Settings, top, view, reactor, service_wall_clock, wall_clock,
                 on_fatal, ha: bool) -> None:
    """Register the outputs the settings ask for but HTTP: the bill, MQTT, Home Assistant."""
    bill = None
    if settings.tariff is not None:
        from smartmeter_tx.outputs.bill import BillFigures
        bill = BillFigures(settings.tariff, view, service_wall_clock)
        top.addOutput(bill)
    if settings.mqtt is not None:
        from smartmeter_tx.outputs.mqtt.publisher import MqttPublisher
        top.addOutput(MqttPublisher(
            settings.mqtt, view, reactor, on_fatal=on_fatal, bill=bill,
            contract=settings.tariff is not None and settings.tariff.contract_amperes is not None))
    if settings.ha_token and ha:
        from smartmeter_tx.outputs.homeassistant.importer import HaImporter
        assert settings.ha_url is not None  # a token is read only with --ha-url
        ha_token_file = settings.ha_token_file

        def token() -> Optional[str]:
            # Read again before every connection: a replaced token file is used.
            return O.read_ha_token(ha_token_file)
        top.addOutput(HaImporter(settings.ha_url, token, view, reactor, on_fatal,
                                 wall_clock=wall_clock, tariff=settings.tariff))


def _site(settings: Settings, view, wall_clock, sources: list[IMetricsSource], reactor):
    """
    The HTTP site over the service's view, behind the connection cap and the
    header deadline; the figures of C{sources} (the limits' among them, once
    the site's service is registered) on /metrics.
    """
    import resource

    from smartmeter_tx.outputs.guard import IDLE_TIMEOUT, HttpGuard, default_max_connections
    from smartmeter_tx.outputs.web import QuietSite, make_root

    band_of = None
    if settings.tariff is not None:
        from smartmeter_tx.bill.pricing import band_of as bands
        band_of = bands(settings.tariff)
    site = QuietSite(make_root(view, wall_clock, sources, band_of), timeout=IDLE_TIMEOUT,
                     reactor=reactor)
    cap = settings.http_max_connections
    if cap is None:
        cap = default_max_connections(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return HttpGuard(site, reactor, cap)


def _device(settings: Settings, reactor, emulate: bool) -> tuple:
    """
    The device to read, and the credentials: with C{emulator:} an emulator
    started here, whose own credentials fill in those not given.

    @return: C{(Device, Credentials or None, the emulator's stop or None)}.
    """
    spec = settings.device
    credentials = settings.credentials
    if not (spec.is_emulator and emulate):
        return O.Device(spec.text), credentials, None
    # A fixed link path, so that an emulated unplug/replug comes back at
    # the same path, as /dev/serial/by-id does for a real dongle.
    directory = tempfile.mkdtemp(prefix="smartmeter-emu-")
    # Also when twist ends before the tree stops (e.g. --http cannot bind).
    atexit.register(shutil.rmtree, directory, True)
    device = O.start_device(spec, reactor, link=os.path.join(directory, "wisun"))

    def stop_emulator():
        device.stop()
        shutil.rmtree(directory, ignore_errors=True)
    if credentials is None:
        assert device.default_credentials is not None  # an emulator has its own
        rbid, password = device.default_credentials
        credentials = O.make_credentials(settings.rbid or rbid, settings.password or password)
    return device, credentials, stop_emulator


def _backfill(settings: Settings, records, reactor, wall_clock, window):
    """
    @return: the L{Backfill} of the data log's 30-minute slots, knowing the
        slots the log holds already, its slots going out through C{records}
        (the data log first), or C{None} without a data log.
    """
    datalog = records.datalog
    if datalog is None or settings.backfill_days <= 0:
        return None
    from smartmeter_tx.service.backfill import Backfill
    days = settings.backfill_days
    today = datetime.date.fromtimestamp(wall_clock())
    # The window, and the whole month for the dashboard's "this month".
    since = min(today - datetime.timedelta(days=days + 1), today.replace(day=1))
    # A slot that could not be written stays missing, and nothing is read
    # from the meter while the log cannot be written.
    return Backfill(days, reactor, records, wall_clock,
                    known=datalog.history_records(since), writable=lambda: not datalog.failing,
                    read_log=datalog.history_records, window=window)


def _http_service(description: Optional[str], reactor):
    """
    @return: the (not yet started) service for C{--http}, its site still to
        be set, or C{None} without one.
    @raise SystemExit: the endpoint description is malformed (one line).
    """
    from twisted.internet import endpoints

    if description is None:
        return None
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError) as e:
        _die(EXIT_USAGE, f"--http {description}: not a server endpoint ({e}); e.g. "
                         "tcp:9580:interface=127.0.0.1, or none")
    from smartmeter_tx.outputs.web import WebService

    def cannot_listen(why) -> None:
        _die(EXIT_UNAVAILABLE, f"cannot listen on --http {description}: {why} "
                               "(is another twist smartmeter running?)")
    return WebService(endpoint, cannot_listen)


def _stop_on_hangup(reactor) -> None:
    """
    SIGHUP (a closed terminal, the end of a login session) stops the service
    in order, as SIGTERM does: the default would end the process at once,
    with MQTT's offline left to the Last Will and the emulator's files
    behind.  Installed once the reactor runs, beside its own handlers; then
    every stop signal stops it once (L{_stop_once}).
    """
    import signal

    from twisted.logger import Logger

    def stop() -> None:
        Logger(namespace="smartmeter_tx.cli.tap").info("SIGHUP: stopping, as for SIGTERM")
        reactor.stop()

    def hangup(signum, frame) -> None:
        reactor.callFromThread(stop)

    if hasattr(signal, "SIGHUP"):
        reactor.callWhenRunning(signal.signal, signal.SIGHUP, hangup)
    reactor.callWhenRunning(_stop_once, reactor)  # after the handlers above and the reactor's


def _stop_once(reactor) -> None:
    """
    Let the first SIGTERM, SIGINT or SIGHUP stop the service as its handler
    does; from then on (or once the orderly stop has begun any other way)
    such a signal only says in one line that the stop goes on: the handlers
    would stop the reactor a second time, and log C{ReactorNotRunning} with
    a traceback.
    """
    import signal

    from twisted.logger import Logger

    log = Logger(namespace="smartmeter_tx.cli.tap")
    stopping = [False]

    def begun() -> None:
        stopping[0] = True
    reactor.addSystemEventTrigger("before", "shutdown", begun)

    def once(first):
        def handler(signum, frame) -> None:
            if not stopping[0]:
                stopping[0] = True
                first(signum, frame)
                return
            reactor.callFromThread(log.info, "{signal} while stopping: the orderly stop "
                                   "goes on", signal=signal.Signals(signum).name)
        return handler

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if not hasattr(signal, name):
            continue
        signum = getattr(signal, name)
        first = signal.getsignal(signum)
        if callable(first):  # the reactor's own, or ours for SIGHUP
            signal.signal(signum, once(first))


def _stop_with(reactor, status: int) -> None:
    """
    Stop the reactor and make the process exit with C{status}: twist itself
    always exits 0 once its reactor has run, and a unit that reads nothing
    must show as failed to systemd.  (The reason is in the log already:
    twist's log holds stderr by now.)
    """
    def exit_now():
        # After the shutdown triggers: the services have stopped, the state
        # file and the data log are closed; only the exit status is left.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    reactor.addSystemEventTrigger("after", "shutdown", exit_now)
    reactor.stop()
