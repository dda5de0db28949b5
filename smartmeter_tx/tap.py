"""
C{twist smartmeter}: Options and makeService for the continuous-logging
service.

The default poll interval (30 s) is 120 Get frames an hour.  Each request and
answer takes tens of milliseconds of air time, so polling uses a few seconds of
the 360 s per rolling hour that ARIB STD-T108 allows a module; PANA, retries and
the neighbour discovery share the rest.  Going below 10 s is not recommended.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.application import service, strports
from twisted.python import usage

from smartmeter_tx.errors import ArgumentError

ENV_ID = "SMARTMETER_ID"
ENV_PASSWORD = "SMARTMETER_PASSWORD"


class Options(usage.Options):
    """
    Options of C{twist smartmeter}; the meter-related ones mirror
    C{mackerel-plugin-smartmeter}.
    """

    synopsis = "[options]"
    longdesc = ("Keep one B-route session with the smart meter, poll it, log every reading "
                "as JSON lines and serve the latest one over HTTP (/latest, /metrics). "
                f"Credentials may come from ${ENV_ID} and ${ENV_PASSWORD}.")

    optFlags = [
        ["dse", None, "force the dual-stack-edition SK dialect (default: detected)"],
        ["standard", None, "force the standard SK dialect (default: detected)"],
    ]
    optParameters = [
        ["device", None, None, "serial device of the Wi-SUN module, or emulator:[...]"],
        ["id", None, None, f"B-route ID (prefer ${ENV_ID})"],
        ["password", None, None, f"B-route password (prefer ${ENV_PASSWORD} or --password-file)"],
        ["password-file", None, None, "file holding the B-route password"],
        ["channel", None, None, "the meter's channel in hex (21-3C)"],
        ["panid", None, None, "the meter's PAN ID (4 hex digits)"],
        ["ipaddr", None, None, "the meter's link-local IPv6 address (full form)"],
        ["state-file", None, None, "where to remember the meter (default as the plugin's)"],
        ["interval", None, 30.0, "seconds between power/current polls", float],
        ["energy-interval", None, 300.0, "seconds between cumulative-energy reads", float],
        ["data-log", None, None, "directory for the daily JSON-lines data log"],
        ["http", None, "tcp:9580:interface=127.0.0.1",
         "endpoint for /latest and /metrics ('none' disables it)"],
    ]

    def __repr__(self) -> str:
        # usage.Options is a dict: its repr would show the credentials.
        return repr({k: ("<redacted>" if k in ("id", "password") and v else v)
                     for k, v in self.items()})

    def postOptions(self) -> None:
        from smartmeter_tx.plugin import _channel, _panid
        if not self["device"]:
            raise usage.UsageError("--device is required (e.g. /dev/ttyUSB0 or emulator:)")
        if self["dse"] and self["standard"]:
            raise usage.UsageError("--dse and --standard exclude each other")
        if self["interval"] < 1 or self["energy-interval"] < self["interval"]:
            raise usage.UsageError("--interval must be >= 1 s and --energy-interval >= it")
        for key, parse in (("channel", _channel), ("panid", _panid)):
            if self[key] is not None:
                try:
                    self[key] = parse(self[key])
                except Exception as e:
                    raise usage.UsageError(f"--{key}: {e}") from None
        if self["ipaddr"] is not None:
            from smartmeter_tx.sk.lines import IPV6_RE
            self["ipaddr"] = self["ipaddr"].upper()
            if not IPV6_RE.match(self["ipaddr"].encode("ascii", "replace")):
                raise usage.UsageError("--ipaddr must be a full IPv6 address, e.g. "
                                       "FE80:0000:0000:0000:021D:1290:1234:5678")
        self["id"] = self["id"] or os.environ.get(ENV_ID)
        self["password"] = self["password"] or os.environ.get(ENV_PASSWORD)
        if self["password-file"]:
            try:
                with open(self["password-file"], encoding="utf-8") as f:
                    self["password"] = f.readline().strip()
            except OSError as e:
                raise usage.UsageError(f"cannot read --password-file: {e.strerror}") from None
        if self["id"] or self["password"]:
            # Checked here so that twist reports a usage error, not a traceback;
            # the message never includes the values.
            from smartmeter_tx.client import Credentials
            try:
                Credentials(self["id"] or "", self["password"] or "")
            except ArgumentError as e:
                raise usage.UsageError(str(e)) from None


def makeService(options, reactor=None, open_port=None) -> service.IService:
    """
    Build the service tree: the poller, the data log and the HTTP site.

    @param open_port: for tests, replaces opening the serial device.
    """
    if reactor is None:
        from twisted.internet import reactor
    from smartmeter_tx import client as C
    from smartmeter_tx import state as S
    from smartmeter_tx.datalog import DataLog
    from smartmeter_tx.service import MeterPoller
    from smartmeter_tx.sk import lines as L

    top = service.MultiService()
    device = options["device"]
    rbid, password = options["id"], options["password"]
    if device.startswith("emulator:") and open_port is None:
        from smartmeter_tx.emulator.device import start_emulator
        # A fixed link path, so that an emulated unplug/replug comes back at
        # the same path, as /dev/serial/by-id does for a real dongle.
        link = os.path.join(tempfile.mkdtemp(prefix="smartmeter-emu-"), "wisun")
        handle = start_emulator(device, reactor, link=link)
        rbid = rbid or handle.id
        password = password or handle.password

        def stop_emulator(directory=os.path.dirname(link)):
            handle.stop()
            shutil.rmtree(directory, ignore_errors=True)
        top.addService(_Stopper(stop_emulator))
        device_path = handle.path
    else:
        device_path = device
    credentials = None
    if rbid or password:
        try:
            credentials = C.Credentials(rbid or "", password or "")
        except ArgumentError as e:
            raise usage.UsageError(str(e)) from None
    if open_port is None:
        def open_port(proto):
            from twisted.internet.serialport import SerialPort
            SerialPort(proto, device_path, reactor, baudrate=115200)
    state_path = options["state-file"] or S.default_state_path(device)
    link = S.load_state(state_path)
    dialect = (L.Dialect.DSE if options["dse"] else
               L.Dialect.STANDARD if options["standard"] else None)
    for key, attr in (("channel", "channel"), ("panid", "pan_id"), ("ipaddr", "ipaddr")):
        if options[key] is not None:
            setattr(link, attr, options[key])
    datalog = DataLog(options["data-log"]) if options["data-log"] else None

    def on_reading(record, when):
        if datalog is None:
            return
        try:
            datalog.write(record, when)
        except OSError as e:
            poller.log.warn("cannot write the data log: {error}", error=e)

    poller = MeterPoller(open_port, credentials, reactor, link=link, state_path=state_path,
                         dialect=dialect, interval=options["interval"], channel=options["channel"],
                         energy_interval=options["energy-interval"], on_reading=on_reading)
    poller.setServiceParent(top)
    if datalog is not None:
        top.addService(_Stopper(datalog.close))
    if options["http"] and options["http"].lower() != "none":
        from smartmeter_tx.web import QuietSite, make_root
        site = QuietSite(make_root(poller, poller.wall_clock))
        strports.service(options["http"], site, reactor=reactor).setServiceParent(top)
    top.poller = poller
    return top


class _Stopper(service.Service):
    """Calls a function when the service tree stops."""

    def __init__(self, stop) -> None:
        self._stop = stop

    def stopService(self):
        self._stop()
        return super().stopService()
