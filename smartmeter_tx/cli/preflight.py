"""
The checks C{twist smartmeter} makes before it starts: a setting that can
never work (a data-log path that is a file or that another service writes
in, a state file it cannot replace, a device that is not a serial port, a CA
file that is not PEM) ends the start at once with one line naming the option
and the cause, exit status 78, instead of being retried for ever (or warned
about at every save) by a service that looks healthy.  (The
MQTT TLS files are checked where the TLS context is made, in
L{smartmeter_tx.outputs.mqtt.driver}.)

What may come right by itself is not checked here: a device that is absent
(unplugged; the service waits for it), a disk that is full (the data log
counts what it cannot write and says so).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from typing import Callable, Optional

from smartmeter_tx.cli.options import denied_device, is_placeholder, missing_device
from smartmeter_tx.errors import ConfigError
from smartmeter_tx.service.datalog import DataLog, DataLogInUse

__all__ = ["check_data_log", "check_device", "check_state_file"]

#: Errors of a probe write that are the directory's settings, not a passing fault.
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR)


def _probe(directory: str) -> None:
    """Create and remove a file in C{directory}, as this user."""
    fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-test-")
    os.close(fd)
    os.unlink(probe)


def check_data_log(datalog: DataLog, now: Optional[float] = None,
                   probe: Callable[[str], None] = _probe,
                   access: Callable[[str, int], bool] = os.access,
                   lock: Optional[Callable[[], None]] = None) -> None:
    """
    The data log's directory exists (it is made if not), this user can
    create files in it and append to today's file, and no other service
    writes in it: the data log takes the directory's lock, which it holds
    until it is closed.

    @param probe: L{_probe}; and C{access}, C{os.access}: tests, which run
        as root too, give ones that answer as for another user.
    @param lock: takes the directory for the service (default
        L{DataLog.lock}; tests give one that fails).
    @raise ConfigError: it is not a directory, cannot be made or cannot be
        written, or another service writes in it.
    """
    directory = datalog.directory
    flag = f"--data-log {directory}"
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"{flag}: not a directory")
    _writable(flag, directory, "it", probe)
    today = datalog.path_for(time.time() if now is None else now)
    if os.path.exists(today) and not access(today, os.W_OK):
        raise ConfigError(f"{flag}: cannot append to {os.path.basename(today)}: it belongs to "
                          "another user (was the service once run as root?)")
    _take(flag, datalog.lock if lock is None else lock)


def _writable(flag: str, directory: str, named: str, probe: Callable[[str], None],
              mode: int = 0o777) -> None:
    """
    Make C{directory} if it is not there, and create a file in it as this
    user; C{named} is how the message calls it.

    @raise ConfigError: it cannot be made, or this user may not write in it.
    """
    try:
        os.makedirs(directory, mode=mode, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{flag}: cannot create {named}: {e.strerror}") from None
    try:
        probe(directory)
    except OSError as e:
        if e.errno in _NOT_WRITABLE:
            raise ConfigError(f"{flag}: cannot write in {named}: {e.strerror} (the service "
                              f"runs as user id {os.getuid()})") from None
        # ENOSPC, EIO...: a fault of the disk, which the service reports and survives.


def _take(flag: str, lock: Callable[[], None]) -> None:
    """
    Take the data log's directory for this service; two services on one
    directory would write every line twice.
    """
    try:
        lock()
    except DataLogInUse:
        raise ConfigError(f"{flag}: another twist smartmeter uses this directory; stop it, "
                          "or give this one a --data-log of its own") from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise ConfigError(f"{flag}: cannot read it: {e.strerror} (the service runs as "
                              f"user id {os.getuid()})") from None
        # A file system without flock on directories (NFS: EBADF, ENOLCK), an
        # I/O error: the data log still works, unguarded, as before the lock.


def check_state_file(path: str, given: bool, probe: Callable[[str], None] = _probe,
                     access: Callable[[str, int], bool] = os.access) -> None:
    """
    The state file (where the meter was found) can be read and replaced:
    its directory exists (it is made if not) and this user can create
    files in it (the file is replaced whole, never written in place).

    @param given: whether C{--state-file} named it (else it is the default).
    @raise ConfigError: it is a directory, its directory cannot be made or
        written, or the file cannot be read.
    """
    flag = f"--state-file {path}" if given else f"the state file {path} (default of --state-file)"
    if os.path.isdir(path):
        raise ConfigError(f"{flag}: a directory, not a file")
    directory = os.path.dirname(os.path.abspath(path))
    _writable(flag, directory, directory, probe, mode=0o700)
    if os.path.exists(path) and not access(path, os.R_OK):
        raise ConfigError(f"{flag}: cannot read it: it belongs to another user (was the "
                          "service once run as root?)")


def check_device(path: str, access: Callable[[str, int], bool] = os.access) -> None:
    """
    A serial device path that exists must be a character device this user
    may open.  An absent one is no error here (the module may be plugged in
    later, and the service waits for it) unless it is the examples'
    placeholder (C{usb-XXXX}), which no module will ever have.

    @raise ConfigError: it is a regular file, a directory..., or permission
        is denied.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if is_placeholder(path):  # it will never be plugged in
            raise ConfigError(missing_device(path)) from None
        return
    except OSError as e:
        raise ConfigError(f"--device {path}: {e.strerror}") from None
    if not stat.S_ISCHR(mode):
        raise ConfigError(f"--device {path}: not a serial device (give the module's tty, "
                          "e.g. /dev/ttyUSB0 or /dev/serial/by-id/...)")
    if not access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"--device {path}: {denied_device(path)}")



def check_lan_address(address: str) -> None:
    """
    C{--echonet-lan}'s address is one of this host's (or C{0.0.0.0}): the
    node could never be reached on another.

    @raise ConfigError: it is not.
    """
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((address, 0))
    except OSError as e:
        raise ConfigError(f"--echonet-lan {address}: not an address of this host "
                          f"({e.strerror}); give one of its IPv4 addresses, or 0.0.0.0") from None
    finally:
        probe.close()
