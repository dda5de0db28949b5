"""
The small state file that lets the next run skip the scan: channel, PAN ID,
meter MAC and IPv6, SK dialect and the energy scale (D3/E1/D7).

Written atomically (temporary file, fsync, rename) with mode 0600.  It never
holds the B-route ID or password.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Callable, Mapping, Optional

from smartmeter_tx.echonet.meter import EnergyScale
from smartmeter_tx.model import parse_json_object

__all__ = ["MeterLink", "load_state", "save_state", "default_state_path"]


@dataclass
class MeterLink:
    """
    What we know about the meter and the module; C{None} where unknown.
    """

    channel: Optional[int] = None
    pan_id: Optional[int] = None
    mac: Optional[str] = None
    ipaddr: Optional[str] = None
    dialect: Optional[str] = None
    coefficient: Optional[int] = None
    unit: Optional[str] = None  # kWh per count, as a decimal string ("0.01")
    digits: Optional[int] = None
    lqi: Optional[int] = None
    #: joins with the saved meter refused in a row (EVENT 24).
    join_failures: int = 0
    #: joins with the saved meter that did not end within a run, in a row:
    #: no evidence of anything by itself (the radio, a short --timeout).
    join_timeouts: int = 0
    #: where the meter was before it moved: a --channel/--ipaddr that still
    #: names it is stale and no longer overrides the saved link.
    moved_from_channel: Optional[int] = None
    moved_from_ipaddr: Optional[str] = None
    #: the MAC of the meter the energy scale was learnt from.
    scale_mac: Optional[str] = None

    @property
    def modulus_kwh(self) -> Optional[Decimal]:
        """Where the meter's counters wrap, in kWh; C{None} while the scale is unknown."""
        if self.unit is None:
            return None
        return EnergyScale(self.coefficient or 1, Decimal(self.unit), self.digits).modulus_kwh

    @property
    def joinable(self) -> bool:
        """Whether SKJOIN can be attempted without a scan."""
        return None not in (self.channel, self.pan_id, self.ipaddr)

    def where(self) -> tuple:
        """C{(channel, PAN ID, IPv6 address)}: where the meter answers."""
        return (self.channel, self.pan_id, self.ipaddr)

    def meter_found(self, mac: Optional[str], ipaddr: str) -> None:
        """
        A scan or the neighbour table names the meter.  The energy scale
        (D3/E1/D7) belongs to one meter: when this may be another one (a
        replaced meter), it is dropped and read again, never applied to it.
        """
        if mac is None or mac != self.scale_mac:
            self.coefficient = self.unit = self.digits = None
            self.scale_mac = None
        self.mac = mac
        self.ipaddr = ipaddr

    def forget_meter(self, keep_channel: bool = False) -> None:
        """Drop where the meter was, so that it is looked for anew."""
        self.pan_id = self.ipaddr = self.mac = None
        if not keep_channel:
            self.channel = None

    def with_overrides(self, channel: Optional[int] = None, pan_id: Optional[int] = None,
                       ipaddr: Optional[str] = None) -> "MeterLink":
        """
        This link with what the user gave on the command line (C{--channel},
        C{--panid}, C{--ipaddr}, already validated) put over what was saved.
        A saved link that names another channel or address belongs to another
        meter (the user moved the module): its other fields are dropped
        rather than mixed with the new ones.  Pure.

        @return: a new L{MeterLink}.
        """
        link = MeterLink(**asdict(self))
        given = [(v, old) for v, old in ((channel, link.moved_from_channel),
                                         (ipaddr, link.moved_from_ipaddr)) if v is not None]
        if given and all(v == old for v, old in given):
            # Every flag names where the meter was before it moved (we warned
            # then): the saved link knows better.
            return link
        if channel is not None and link.channel not in (None, channel):
            link = MeterLink(dialect=link.dialect)
        if ipaddr is not None and link.ipaddr not in (None, ipaddr):
            link = MeterLink(dialect=link.dialect, channel=link.channel)
        for attr, value in (("channel", channel), ("pan_id", pan_id), ("ipaddr", ipaddr)):
            if value is not None:
                setattr(link, attr, value)
        return link


#: Root's state directory when its HOME is another user's (C{sudo -E}).
SYSTEM_STATE_DIR = "/var/lib/smartmeter_tx"


def _owner(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


def default_state_path(device: str, environ: Mapping[str, str] = os.environ,
                       euid: Optional[int] = None,
                       owner: Callable[[str], Optional[int]] = _owner) -> str:
    """
    Under C{$MACKEREL_PLUGIN_WORKDIR} when set (mackerel-agent sets it), else the
    per-user state directory; one file per device so two dongles do not collide.
    Root whose C{HOME} belongs to another user (C{sudo -E}) uses
    L{SYSTEM_STATE_DIR}: a directory made there would be root's, and that
    user's own runs could not write their state any more.

    @param euid: the effective user id (default the process's); C{owner}
        gives a path's owner, C{None} when it is not there.
    """
    base = environ.get("MACKEREL_PLUGIN_WORKDIR")
    if not base:
        home = environ.get("HOME") or os.path.expanduser("~")
        uid = os.geteuid() if euid is None else euid
        if uid == 0 and owner(home) not in (None, 0):
            base = SYSTEM_STATE_DIR
        else:
            xdg = environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
            base = os.path.join(xdg, "smartmeter_tx")
    digest = hashlib.sha1(device.encode("utf-8", "replace")).hexdigest()[:12]
    return os.path.join(base, f"smartmeter-{digest}.json")


def load_state(path: str) -> MeterLink:
    """
    @return: the saved L{MeterLink}, or an empty one when the file is missing,
        unreadable or corrupt (not a JSON object, or one nested too deeply to
        parse): a corrupt state file costs a scan, never a failure.
    """
    try:
        with open(path, "rb") as f:
            data = parse_json_object(f.read())
    except OSError:
        return MeterLink()
    if data is None:
        return MeterLink()
    values = {}
    for key, check in _CHECKS.items():
        value = data.get(key)
        if value is not None and check(value):
            values[key] = value
    # A field that does not look right is dropped (it costs a scan, never a
    # wrong command): the file may be old, hand-edited or from another tool.
    return MeterLink(**values)


_HEX16 = set("0123456789ABCDEF")

_CHECKS: dict[str, Callable[[object], bool]] = {
    "channel": lambda v: isinstance(v, int) and 0x21 <= v <= 0x3C,
    "pan_id": lambda v: isinstance(v, int) and 0 <= v <= 0xFFFF,
    "mac": lambda v: isinstance(v, str) and len(v) == 16 and set(v) <= _HEX16,
    "ipaddr": lambda v: isinstance(v, str) and len(v) == 39 and all(
        len(g) == 4 and set(g) <= _HEX16 for g in v.split(":")) and v.count(":") == 7,
    "dialect": lambda v: v in ("standard", "dse"),
    "coefficient": lambda v: isinstance(v, int) and 0 <= v <= 999999,
    "unit": lambda v: v in ("1", "0.1", "0.01", "0.001", "0.0001", "10", "100", "1000",
                            "10000"),  # str() of the E1 table's values
    "digits": lambda v: isinstance(v, int) and 1 <= v <= 8,
    "lqi": lambda v: isinstance(v, int) and 0 <= v <= 0xFF,
    "join_failures": lambda v: isinstance(v, int) and 0 <= v < 1000,
    "join_timeouts": lambda v: isinstance(v, int) and 0 <= v < 1000,
    "moved_from_channel": lambda v: isinstance(v, int) and 0x21 <= v <= 0x3C,
    "moved_from_ipaddr": lambda v: _CHECKS["ipaddr"](v),
    "scale_mac": lambda v: _CHECKS["mac"](v),
}


def save_state(path: str, link: MeterLink) -> None:
    """
    Write C{link} atomically with mode 0600, creating the directory if needed.

    @raise OSError: the directory cannot be created or written.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".smartmeter-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(link), f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
