"""
What the two front ends (C{mackerel-plugin-smartmeter} and C{twist
smartmeter}) take from the user, in one place: environment names, secrets,
value checks, the link overrides, the dialect flags and opening the device
(including the built-in C{emulator:}).

Each check raises L{ArgumentError} with a one-line message that never holds
a secret; each front end turns it into its own usage error.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from smartmeter_tx.errors import ArgumentError, ConfigError, SmartMeterError
from smartmeter_tx.redact import Redactor

if TYPE_CHECKING:  # imported where used: a front end loads only what it runs
    from smartmeter_tx.session.config import SessionConfig

__all__ = [
    "ENV_ID", "ENV_ID_FILE", "ENV_PASSWORD", "ENV_HA_TOKEN", "read_ha_token", "DeviceError", "parse_bool",
    "parse_channel", "parse_panid", "parse_ipaddr", "parse_seconds", "parse_number",
    "parse_count",
    "parse_days", "RECORD_DAYS",
    "parse_device", "require_device", "DeviceSpec", "read_secrets", "read_password_file",
    "make_credentials", "dialect_for", "session_config", "Device", "start_device",
    "open_serial", "DeviceBusy", "install_hint", "missing_extra", "is_placeholder",
    "missing_device", "denied_device", "BY_ID",
]

ENV_ID = "SMARTMETER_ID"
ENV_PASSWORD = "SMARTMETER_PASSWORD"
#: A file holding the B-route ID (a container's secret), when neither
#: C{--id} nor C{$SMARTMETER_ID} gives it.
ENV_ID_FILE = "SMARTMETER_ID_FILE"
ENV_HA_TOKEN = "SMARTMETER_HA_TOKEN"


class DeviceError(SmartMeterError):
    """The serial device cannot be used."""


class DeviceBusy(DeviceError):
    """Another program holds the serial device (our lock, or TIOCEXCL)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} is in use by another program")
        self.path = path


# -- values ---------------------------------------------------------------------


def parse_bool(text: Optional[str]) -> bool:
    """A Go-style boolean flag value; C{None} (the bare flag) is true."""
    if text is None:
        return True
    value = text.lower()
    if value in ("1", "t", "true", "yes", "on"):
        return True
    if value in ("0", "f", "false", "no", "off"):
        return False
    raise ArgumentError(f"not a boolean: {text!r}")


def parse_channel(text: str) -> int:
    """
    The channel in hex, exactly as EPANDESC prints it (C{3B}), as the Go
    plugin takes it; a C{0x} prefix is accepted.
    """
    t = text.strip().lower()
    try:
        value = int(t[2:] if t.startswith("0x") else t, 16)
    except ValueError:
        raise ArgumentError(f"not a channel: {text!r}") from None
    if not 0x21 <= value <= 0x3C:
        hint = ""
        if t.isdigit() and 0x21 <= int(t) <= 0x3C:  # a decimal channel number
            hint = f"; {int(t)} decimal is {int(t):02X}"
        raise ArgumentError(f"channel {text!r} is outside 21-3C (hex){hint}")
    return value


def parse_panid(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise ArgumentError(f"PAN ID must be 4 hex digits, got {text!r}") from None
    if not 0 <= value <= 0xFFFF:
        raise ArgumentError("PAN ID must be 4 hex digits")
    return value


def parse_ipaddr(text: str) -> str:
    """The meter's link-local address in full form, upper case."""
    from smartmeter_tx.sk.values import IPV6_RE
    value = text.strip().upper()
    if not IPV6_RE.match(value.encode("ascii", "replace")):
        raise ArgumentError("--ipaddr must be a full IPv6 address, "
                            "e.g. FE80:0000:0000:0000:021D:1290:1234:5678")
    return value


#: The units a duration may be written in (C{30s}, C{5m}, C{1h}).
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_seconds(text: str) -> float:
    """
    A duration or threshold in seconds: a finite number, 0 or more, bare or
    with a unit (C{30s}, C{5m}, C{1.5h}).
    """
    number, scale = text.strip(), 1
    if number[-1:].lower() in _UNITS:
        number, scale = number[:-1], _UNITS[number[-1].lower()]
    try:
        return parse_number(number) * scale
    except ArgumentError:
        raise ArgumentError(f"not a number of seconds >= 0: {text!r} (e.g. 30, 30s, 5m)") \
            from None


def parse_number(text: str) -> float:
    """A threshold: a finite number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise ArgumentError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ArgumentError(f"must be a number >= 0, not {text!r}")
    return value


def parse_count(text: str) -> int:
    """A count: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise ArgumentError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise ArgumentError(f"must be >= 0, not {text!r}")
    return value


#: Days of the meter's own 30-minute record: meters keep about 45.
RECORD_DAYS = 45


def parse_days(text: str, least: int = 1) -> int:
    """Days of the meter's record to read: C{least} to L{RECORD_DAYS}."""
    try:
        value = int(text)
    except ValueError:
        raise ArgumentError(f"not a number of days: {text!r}") from None
    if not least <= value <= RECORD_DAYS:
        raise ArgumentError(f"must be {least} to {RECORD_DAYS} (meters keep about "
                            f"{RECORD_DAYS} days)")
    return value


# -- the device, read once --------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    """
    What C{--device} names, read once when the options are: a serial device
    path, or the built-in emulator (C{emulator:[dialect][?options]}) with
    its configuration already parsed.

    @ivar text: as the user gave it (it names the default state file, and
        C{/latest} shows it).
    @ivar emulator: C{(EmulatorConfig, link or None)}, or C{None} for a
        serial device.
    """

    text: str
    emulator: Optional[tuple] = None

    @property
    def is_emulator(self) -> bool:
        return self.emulator is not None

    def __str__(self) -> str:
        return self.text


def parse_device(text: str) -> DeviceSpec:
    """
    @raise ArgumentError: an C{emulator:} spec that is not one (one line
        naming C{--device}).
    """
    kind, colon, _ = text.partition(":")
    if not (colon and kind.lower() == "emulator"):
        return DeviceSpec(text)
    from smartmeter_tx.emulator.device import parse_spec
    try:
        return DeviceSpec(text, parse_spec(text))
    except ArgumentError as e:
        raise ArgumentError(f"--device {text}: {e}") from None


def require_device(device: Optional[DeviceSpec], alternative: str = "") -> DeviceSpec:
    """
    @param alternative: what else the command takes instead (C{", or --service"}).
    @raise ArgumentError: no C{--device} was given.
    """
    if device is None or not device.text:
        raise ArgumentError("--device is required (e.g. --device /dev/ttyUSB0, or "
                            f"--device emulator: to try the built-in emulator){alternative}")
    return device


# -- extras -----------------------------------------------------------------------


def install_hint(extra: str) -> str:
    """
    The command that installs what C{extra} adds, into this installation:
    its own pip and the extra's requirements as our metadata lists them.
    That works however the package was installed (from a directory, a
    checkout in editable mode, an index), where C{pip install
    'smartmeter_tx[extra]'} would look for it on an index.
    """
    import re
    import shlex
    import sys
    from importlib import metadata

    pip = os.path.join(os.path.dirname(sys.executable), "pip")
    command = shlex.quote(pip) if os.path.exists(pip) else f"{shlex.quote(sys.executable)} -m pip"
    ours = re.compile(r"(\s*\band\s+)?\bextra\s*==\s*[\"']" + re.escape(extra) + r"[\"']")
    try:
        requires = metadata.distribution("smartmeter_tx").requires or []
    except metadata.PackageNotFoundError:
        requires = []
    wanted = []
    for requirement in requires:
        name, _, condition = requirement.partition(";")
        if not ours.search(condition):
            continue
        # (An egg-info's requires.txt reads back with the rest in parentheses.)
        condition = ours.sub("", condition).strip().removeprefix("and").strip()
        if condition.startswith("(") and condition.endswith(")"):
            condition = condition[1:-1].strip()
        if _machine_matches(condition):
            wanted.append(name.strip())
    if not wanted:  # no metadata (run from a source tree): name the extra
        wanted = [f"smartmeter_tx[{extra}]"]
    # Sorted: an editable install's egg-info lists them in another order.
    return f"{command} install " + " ".join(shlex.quote(r) for r in sorted(wanted))


def _machine_matches(condition: str) -> bool:
    """
    Whether a requirement's remaining marker holds here: none, or one
    C{platform_machine ==|!= "..."} test (the only kind our metadata has).
    """
    import platform
    import re

    if not condition:
        return True
    test = re.fullmatch(r"platform_machine\s*(==|!=)\s*[\"']([^\"']*)[\"']", condition)
    if test is None:
        return True  # not ours to judge: name it
    return (platform.machine() == test.group(2)) == (test.group(1) == "==")


def missing_extra(flag: str, extra: str, what: str) -> str:
    """The one line for an option whose extra is not installed."""
    return (f"{flag} needs {what} (the [{extra}] extra), which this installation lacks: "
            f"{install_hint(extra)}")


# -- secrets ----------------------------------------------------------------------


def read_secrets(rbid: Optional[str], password: Optional[str], password_file: Optional[str],
                 environ=None) -> tuple:
    """
    The B-route ID and password from the command line, the environment
    (the ID also from the file C{$SMARTMETER_ID_FILE} names) or
    C{--password-file} (which wins, being the safest), each possibly C{None}.

    @raise ArgumentError: the password file cannot be read.
    """
    environ = os.environ if environ is None else environ
    rbid = rbid or environ.get(ENV_ID) or None
    if not rbid and environ.get(ENV_ID_FILE):
        rbid = read_password_file(environ[ENV_ID_FILE], f"${ENV_ID_FILE}")
    password = password or environ.get(ENV_PASSWORD) or None
    if password_file:
        password = read_password_file(password_file, "--password-file")
    return rbid, password


def read_password_file(path: str, flag: str) -> str:
    """
    A password file's first line, stripped.

    @raise ConfigError: it cannot be read (the message names C{flag} and the
        path, never a content).
    """
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().strip()
    except OSError as e:
        raise ConfigError(f"cannot read {flag} {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} {path} is not a text file") from None
    if not line:
        what = "token" if "token" in flag else "ID" if "_ID_" in flag else "password"
        raise ConfigError(f"{flag} {path} is empty: the {what} goes on its first line")
    return line


def read_ha_token(token_file: Optional[str], environ=None) -> Optional[str]:
    """
    HA's access token from C{--ha-token-file} (which wins) or
    C{$SMARTMETER_HA_TOKEN}; C{None} when neither gives one.

    @raise ConfigError: the file cannot be read or is empty.
    """
    environ = os.environ if environ is None else environ
    if token_file:
        return read_password_file(token_file, "--ha-token-file")
    return environ.get(ENV_HA_TOKEN) or None


def make_credentials(rbid: Optional[str], password: Optional[str]):
    """
    @return: L{Credentials}, or C{None} when neither was given.
    @raise ArgumentError: only one was given.
    @raise ConfigError: one is malformed (the message never holds the values).
    """
    from smartmeter_tx.session.join import Credentials
    if not rbid and not password:
        return None
    if not (rbid and password):
        raise ArgumentError("give both the B-route ID and the password "
                            f"(--id/--password, ${ENV_ID}/${ENV_PASSWORD}, --password-file)")
    return Credentials(rbid, password)


def redactor_for(*secrets: Optional[str]) -> Redactor:
    return Redactor(s for s in secrets if s)


# -- the session ------------------------------------------------------------------


def dialect_for(dse: Optional[bool]):
    """C{--dse}: C{True} forces DSE, C{False} the standard dialect, C{None} detects."""
    from smartmeter_tx.sk.values import Dialect
    if dse is None:
        return None
    return Dialect.DSE if dse else Dialect.STANDARD


def session_config(device: DeviceSpec, state_file: Optional[str], credentials, dialect,
                   channel: Optional[int] = None, pan_id: Optional[int] = None,
                   ipaddr: Optional[str] = None,
                   environ=None) -> tuple[SessionConfig, str]:
    """
    The saved link with the command line's overrides over it.

    @return: C{(SessionConfig, state path)}.
    """
    from smartmeter_tx.session.config import SessionConfig
    from smartmeter_tx.session import state as S
    environ = os.environ if environ is None else environ
    state_path = state_file or S.default_state_path(device.text, environ)
    link = S.load_state(state_path).with_overrides(channel, pan_id, ipaddr)
    config = SessionConfig(credentials=credentials, link=link, dialect=dialect,
                           device=device.text)
    return config, state_path


# -- the device -------------------------------------------------------------------

#: Where udev names serial devices by their USB identity (stable across re-plugging).
BY_ID = "/dev/serial/by-id"


def is_placeholder(path: str) -> bool:
    """Whether C{path} is the examples' C{usb-XXXX} left as shipped."""
    return "XXXX" in os.path.basename(path)


def denied_device(path: str) -> str:
    """
    Why this user may not open the device at C{path}, and what to do (the
    caller names the path): its
    owner, group and mode, and whether this user is in that group (a user
    added to it must log in again; a device only its owner may use needs a
    udev rule, or the program run as that owner).
    """
    import grp
    import pwd
    import stat as S

    try:
        st = os.stat(path)
    except OSError as e:
        return e.strerror or str(e)

    def name(lookup, number: int) -> str:
        try:
            return lookup(number)[0]
        except KeyError:
            return str(number)
    owner, group = name(pwd.getpwuid, st.st_uid), name(grp.getgrgid, st.st_gid)
    seen = f"{S.filemode(st.st_mode)} {owner}:{group}"
    if not st.st_mode & S.S_IRGRP or not st.st_mode & S.S_IWGRP:
        return (f"permission denied ({seen}): only {owner} may use it; run as {owner}, or "
                "give its group read and write (a udev rule with MODE=\"0660\")")
    if st.st_gid in os.getgroups():
        return f"permission denied ({seen}), though this process is in group {group}"
    return (f"permission denied ({seen}): add the user to group {group} (sudo usermod -aG "
            f"{group} $USER), then log in again")


def missing_device(path: str, by_id: Optional[str] = None) -> str:
    """
    The line for a device path that does not exist: the examples'
    placeholder named as such, and the modules plugged in now, by their
    stable paths.
    """
    by_id = BY_ID if by_id is None else by_id
    try:
        present = sorted(os.listdir(by_id))
    except OSError:
        present = []
    found = (f"plugged in now: {', '.join(os.path.join(by_id, p) for p in present)}"
             if present else f"{by_id}/ lists none: is the Wi-SUN module plugged in?")
    if is_placeholder(path):
        return f"--device {path} is the example's placeholder: give your module's path; {found}"
    return f"no such device {path}; {found}"



class Device:
    """
    Where the module is: a serial device path, or an emulator started in this
    process on a pty.

    @ivar path: the tty to open.
    @ivar default_credentials: C{(id, password)} that the emulator accepts,
        or C{None} for real hardware.
    """

    def __init__(self, path: str, handle=None) -> None:
        self.path = path
        self._handle = handle
        self.default_credentials = (handle.id, handle.password) if handle is not None else None

    def stop(self) -> None:
        """Stop the emulator, if any.  Idempotent."""
        if self._handle is not None:
            self._handle.stop()
            self._handle = None


def start_device(spec: DeviceSpec, reactor, link: Optional[str] = None) -> Device:
    """
    The device C{spec} names: a serial path as it is, or the emulator it
    configures, started now.

    @param link: for C{emulator:}, a fixed path for its pty (so that an
        emulated replug comes back at the same path, as /dev/serial/by-id does).
    """
    if spec.emulator is None:
        return Device(spec.text)
    from smartmeter_tx.emulator.device import run_emulator
    config, spec_link = spec.emulator
    handle = run_emulator(config, reactor, link or spec_link)
    return Device(handle.path, handle)


def _open_exclusive(*args, **kwargs):
    """
    pyserial's Serial, locked against every other program that opens the
    port: C{exclusive=True} takes an advisory flock (honoured by both of our
    front ends and by pyserial-based tools; the kernel drops it when the
    process ends, even on a crash), and TIOCEXCL makes the kernel refuse any
    further open() of the tty, by any program, except for root.
    """
    import fcntl
    import serial
    import termios

    port = serial.Serial(*args, exclusive=True, **kwargs)
    try:
        fcntl.ioctl(port.fd, termios.TIOCEXCL)
    except OSError:
        pass  # not a tty that supports it: the flock still guards us
    return port


def _serial_port_class():
    from twisted.internet.serialport import SerialPort

    class ExclusiveSerialPort(SerialPort):
        _serialFactory = staticmethod(_open_exclusive)

        def connectionLost(self, reason):
            # TIOCEXCL lasts until the tty's last close; another holder of the
            # tty (the emulator keeps its pty open) would keep it: clear it.
            import fcntl
            import termios
            try:
                fcntl.ioctl(self._serial.fd, termios.TIOCNXCL)
            except (OSError, TypeError, ValueError):
                pass
            super().connectionLost(reason)

    return ExclusiveSerialPort


def open_serial(protocol, path: str, reactor) -> None:
    """
    Connect C{protocol} to the serial device at C{path} (115200 baud), locked
    for this process alone.

    @raise DeviceBusy: another program holds the port.
    @raise DeviceError: with a one-line message naming the path and the fix.
    """
    import errno as E

    import serial

    try:
        _serial_port_class()(protocol, path, reactor, baudrate=115200)
    except (serial.SerialException, OSError) as e:
        cause = e.__cause__ or e.__context__
        errno = getattr(e, "errno", None) or getattr(cause, "errno", None)
        text = str(e)
        if errno in (E.EAGAIN, E.EWOULDBLOCK, E.EBUSY) or "exclusively lock" in text:
            raise DeviceBusy(path) from None
        if errno == E.EACCES or "Permission denied" in text:
            raise DeviceError(f"{path}: {denied_device(path)}") from None
        if errno == E.ENOENT or "No such file" in text:
            raise DeviceError(missing_device(path)) from None
        raise DeviceError(f"cannot open {path}: {text.splitlines()[0] if text else e}") from None
