"""
Tests for L{smartmeter_tx.cli.preflight}: the settings of C{twist smartmeter}
that can never work are refused before it starts, in one line naming the
option; what may come right by itself (an unplugged module, a full disk) is
let through.
"""

import errno
import os

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.cli import preflight
from smartmeter_tx.errors import ConfigError
from smartmeter_tx.service.datalog import DataLog

NOON = 1780282800.0  # 2026-06-01 12:00 in Japan


def refuse(error_number):
    def probe(directory):
        raise OSError(error_number, os.strerror(error_number))
    return probe


class DataLogTests(SynchronousTestCase):
    def check(self, directory, **seams):
        log = DataLog(directory)
        self.addCleanup(log.close)
        preflight.check_data_log(log, NOON, **seams)

    def test_madeWhenMissing(self):
        """A directory that does not exist yet is made, parents and all."""
        directory = os.path.join(self.mktemp(), "a", "b")
        self.check(directory)
        self.assertTrue(os.path.isdir(directory))
        self.assertEqual(os.listdir(directory), [])  # the probe file is gone

    def test_aFile(self):
        """A path that is a file is refused: not a directory."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("x")
        e = self.assertRaises(ConfigError, self.check, path)
        self.assertEqual(str(e), f"--data-log {path}: not a directory")

    def test_underAFile(self):
        """A directory that cannot be made (a file in its path) is refused with the cause."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("x")
        e = self.assertRaises(ConfigError, self.check, os.path.join(path, "data"))
        self.assertIn("cannot create it: Not a directory", str(e))

    def test_notWritable(self):
        """A directory this user may not write in is refused (EACCES, EROFS)."""
        for number in (errno.EACCES, errno.EROFS):
            directory = self.mktemp()
            e = self.assertRaises(ConfigError, self.check, directory, probe=refuse(number))
            self.assertIn(f"--data-log {directory}: cannot write in it: "
                          f"{os.strerror(number)}", str(e))

    def test_fullDiskIsNoConfigurationError(self):
        """A full disk or an I/O error is a fault the data log survives: the start goes on."""
        for number in (errno.ENOSPC, errno.EIO, errno.EDQUOT):
            self.check(self.mktemp(), probe=refuse(number))

    def test_todaysFileOfAnotherUser(self):
        """Today's file that this user may not append to (left by a run as root) is refused."""
        directory = self.mktemp()
        log = DataLog(directory)
        os.makedirs(directory)
        today = log.path_for(NOON)
        with open(today, "w") as f:
            f.write("{}\n")
        e = self.assertRaises(ConfigError, self.check, directory,
                              access=lambda path, mode: path != today)
        self.assertIn(f"cannot append to {os.path.basename(today)}", str(e))
        # Another day's file of another user does not matter.
        self.check(directory, access=lambda path, mode: path == today)

    def test_inUse(self):
        """A directory whose data log another service holds is refused, naming the directory."""
        directory = self.mktemp()
        self.check(directory)
        e = self.assertRaises(ConfigError, self.check, directory)
        self.assertEqual(str(e), f"--data-log {directory}: another twist smartmeter uses this "
                                 "directory; stop it, or give this one a --data-log of its own")

    def test_lockFailures(self):
        """
        A directory this user may not open to lock is refused; a file system
        without locks (NFS, ENOLCK) lets the start go on, unguarded.
        """
        def lock(number):
            def take():
                raise OSError(number, os.strerror(number))
            return take
        directory = self.mktemp()
        e = self.assertRaises(ConfigError, preflight.check_data_log, DataLog(directory), NOON,
                              lock=lock(errno.EACCES))
        self.assertEqual(str(e), f"--data-log {directory}: cannot read it: "
                                 f"{os.strerror(errno.EACCES)} (the service runs as user id "
                                 f"{os.getuid()})")
        for number in (errno.ENOLCK, errno.EBADF):
            preflight.check_data_log(DataLog(directory), NOON, lock=lock(number))


class StateFileTests(SynchronousTestCase):
    """The state file must be replaceable, or the service would warn at every save."""

    def test_madeWhenMissing(self):
        """Its directory is made (mode 0700); a file not there yet is fine."""
        path = os.path.join(self.mktemp(), "state", "meter.json")
        preflight.check_state_file(path, given=True)
        directory = os.path.dirname(path)
        self.assertEqual((os.listdir(directory), os.stat(directory).st_mode & 0o777),
                         ([], 0o700))

    def test_notWritable(self):
        """A directory this user may not write in: 78's line names the option and the path."""
        path = os.path.join(self.mktemp(), "meter.json")
        e = self.assertRaises(ConfigError, preflight.check_state_file, path, True,
                              probe=refuse(errno.EACCES))
        self.assertEqual(str(e), f"--state-file {path}: cannot write in "
                                 f"{os.path.dirname(os.path.abspath(path))}: Permission denied "
                                 f"(the service runs as user id {os.getuid()})")

    def test_defaultNamed(self):
        """Without --state-file the line says it is the default's path."""
        path = os.path.join(self.mktemp(), "meter.json")
        e = self.assertRaises(ConfigError, preflight.check_state_file, path, False,
                              probe=refuse(errno.EROFS))
        self.assertTrue(str(e).startswith(f"the state file {path} (default of --state-file): "
                                          "cannot write in "), str(e))

    def test_unreadableOrADirectory(self):
        """A file of another user, or a directory at its path, is refused too."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("{}")
        e = self.assertRaises(ConfigError, preflight.check_state_file, path, True,
                              access=lambda p, mode: False)
        self.assertIn("cannot read it", str(e))
        os.makedirs(path + "-dir")
        e = self.assertRaises(ConfigError, preflight.check_state_file, path + "-dir", True)
        self.assertEqual(str(e), f"--state-file {path}-dir: a directory, not a file")

    def test_fullDiskIsNoConfigurationError(self):
        """A full disk is a passing fault: the start goes on."""
        preflight.check_state_file(os.path.join(self.mktemp(), "m.json"), True,
                                   probe=refuse(errno.ENOSPC))


class DeviceTests(SynchronousTestCase):
    def test_absentIsNoConfigurationError(self):
        """A device that is not there (unplugged) passes: the service waits for it."""
        preflight.check_device(os.path.abspath(self.mktemp()))

    def test_placeholderRefused(self):
        """
        The examples' usb-XXXX left as shipped is refused (78's line names it)
        rather than waited for as an unplugged module for ever.
        """
        from smartmeter_tx.cli import options as O
        by_id = self.mktemp()
        os.makedirs(by_id)
        open(os.path.join(by_id, "usb-FTDI_FT230X_DN05ABCD-if00-port0"), "w").close()
        self.patch(O, "BY_ID", by_id)
        path = "/dev/serial/by-id/usb-XXXX-if00-port0"
        e = self.assertRaises(ConfigError, preflight.check_device, path)
        self.assertEqual(str(e), f"--device {path} is the example's placeholder: give your "
                                 f"module's path; plugged in now: "
                                 f"{by_id}/usb-FTDI_FT230X_DN05ABCD-if00-port0")

    def test_regularFile(self):
        """A regular file or a directory is refused, with an example of a tty."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("x")
        for target in (path, os.path.dirname(os.path.abspath(path))):
            e = self.assertRaises(ConfigError, preflight.check_device, target)
            self.assertIn(f"--device {target}: not a serial device", str(e))

    def test_characterDevice(self):
        """A character device this user may open passes; one it may not is refused."""
        preflight.check_device(os.devnull)
        e = self.assertRaises(ConfigError, preflight.check_device, os.devnull,
                              access=lambda path, mode: False)
        self.assertIn(f"--device {os.devnull}: permission denied (crw-rw-rw- root:root)", str(e))

    def test_deniedSaysWhy(self):
        """
        A device this user may not open: its mode, owner and group, and the
        remedy that fits (join its group; or it is only its owner's).
        """
        from smartmeter_tx.cli import options as O
        path = self.mktemp()
        open(path, "w").close()
        os.chmod(path, 0o660)
        import grp
        import pwd
        group = grp.getgrgid(os.stat(path).st_gid)[0]
        me = pwd.getpwuid(os.stat(path).st_uid)[0]
        self.patch(os, "getgroups", lambda: [])
        self.assertEqual(O.denied_device(path), f"permission denied (-rw-rw---- {me}:{group}): "
                                                f"add the user to group {group} (sudo usermod "
                                                f"-aG {group} $USER), then log in again")
        self.patch(os, "getgroups", lambda: [os.stat(path).st_gid])
        self.assertEqual(O.denied_device(path), f"permission denied (-rw-rw---- {me}:{group}), "
                                                f"though this process is in group {group}")
        os.chmod(path, 0o600)
        self.assertEqual(O.denied_device(path), f"permission denied (-rw------- {me}:"
                                                f"{group}): only {me} may use it; run as {me}, "
                                                "or give its group read and write (a udev rule "
                                                'with MODE="0660")')
