"""
Tests for L{smartmeter_tx.service.datalog}: the daily JSON-lines data log.
"""

import datetime
import errno
import json
import os
import shutil
from decimal import Decimal

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.service import datalog
from smartmeter_tx.service.datalog import DataLog, DataLogInUse, read_history_records
from smartmeter_tx.model import NO_DATA, NO_PHASE
from tests.sktesting import host_zone

# Noon UTC on two consecutive days: the same local date as UTC in every time
# zone from UTC-11 to UTC+11, and the UTC-named tests do not depend on it.
DAY1 = datetime.datetime(2026, 3, 1, 12, 0, 5, tzinfo=datetime.timezone.utc).timestamp()
DAY2 = DAY1 + 86400


def read_lines(path):
    """The parsed JSON objects of a data-log file, one per line."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.endswith("\n"), repr(text[-20:])
    return [json.loads(line) for line in text.split("\n")[:-1]]


class DataLogTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        self.log = DataLog(self.directory, utc=True)
        self.addCleanup(self.log.close)
        self.path1 = os.path.join(self.directory, "smartmeter-2026-03-01.jsonl")
        self.path2 = os.path.join(self.directory, "smartmeter-2026-03-02.jsonl")

    def test_oneObjectPerLineWithTime(self):
        """DataLog.write appends one JSON object per line carrying the record and its time."""
        self.log.write({"power_w": 512, "current_r_a": Decimal("5.1")}, DAY1)
        self.log.write({"power_w": -40, "current_r_a": Decimal("0.4")}, DAY1 + 30)
        lines = read_lines(self.path1)
        self.assertEqual(lines, [
            {"time": DAY1, "power_w": 512, "current_r_a": 5.1},
            {"time": DAY1 + 30, "power_w": -40, "current_r_a": 0.4},
        ])
        self.assertEqual(self.log.lines_written, 2)

    def test_decimalExact(self):
        """DataLog.write keeps a Decimal's digits: 2.3 is written as 2.3, not a binary float."""
        self.log.write({"current_r_a": Decimal("2.3"), "energy_normal_kwh": Decimal("12345.67"),
                        "energy_reverse_kwh": Decimal("0.00")}, DAY1)
        with open(self.path1, encoding="utf-8") as f:
            text = f.read()
        self.assertIn('"current_r_a":2.3,', text)
        self.assertIn('"energy_normal_kwh":12345.67,', text)
        self.assertNotIn("2.2999", text)
        line = json.loads(text, parse_float=Decimal)
        self.assertEqual(line["current_r_a"], Decimal("2.3"))
        self.assertEqual(line["energy_normal_kwh"], Decimal("12345.67"))
        self.assertEqual(line["energy_reverse_kwh"], 0)

    def test_absentIsNull(self):
        """DataLog.write writes an Absent value (no data, no phase) as null, never as 0."""
        self.log.write({"power_w": NO_DATA, "current_r_a": Decimal("1.5"),
                        "current_t_a": NO_PHASE}, DAY1)
        [line] = read_lines(self.path1)
        self.assertIn("power_w", line)
        self.assertIsNone(line["power_w"])
        self.assertIsNone(line["current_t_a"])
        self.assertEqual(line["current_r_a"], 1.5)

    def test_meterTimeIsIsoformat(self):
        """DataLog.write writes the meter's own timestamp (a datetime) as ISO 8601 text."""
        stamp = datetime.datetime(2026, 3, 1, 20, 30)
        self.log.write({"kind": "fixed", "meter_time": stamp, "energy_normal_raw": 198708}, DAY1)
        [line] = read_lines(self.path1)
        self.assertEqual(line["meter_time"], "2026-03-01T20:30:00")
        self.assertEqual(line["kind"], "fixed")

    def test_restartAppends(self):
        """A second DataLog on the same directory appends to the day's file, never truncating it."""
        self.log.write({"power_w": 100}, DAY1)
        # No close(): a crash leaves the first instance's file open.
        second = DataLog(self.directory, utc=True)
        self.addCleanup(second.close)
        second.write({"power_w": 200}, DAY1 + 60)
        self.log.close()
        third = DataLog(self.directory, utc=True)
        self.addCleanup(third.close)
        third.write({"power_w": 300}, DAY1 + 120)
        self.assertEqual([line["power_w"] for line in read_lines(self.path1)], [100, 200, 300])

    def test_dailyRotationByRecordTime(self):
        """DataLog.write picks the file from the record's time: two days give two dated files."""
        self.log.write({"power_w": 1}, DAY1)
        self.log.write({"power_w": 2}, DAY2)
        # A late record for the first day goes back to the first day's file.
        self.log.write({"power_w": 3}, DAY1 + 3600)
        self.assertEqual(sorted(os.listdir(self.directory)),
                         ["smartmeter-2026-03-01.jsonl", "smartmeter-2026-03-02.jsonl"])
        self.assertEqual([line["power_w"] for line in read_lines(self.path1)], [1, 3])
        self.assertEqual([line["power_w"] for line in read_lines(self.path2)], [2])

    def test_localDateByDefault(self):
        """DataLog without utc names files by the local date of the record's time."""
        log = DataLog(self.directory, prefix="meter")
        self.addCleanup(log.close)
        log.write({"power_w": 1}, DAY1)
        expected = "meter-%s.jsonl" % datetime.datetime.fromtimestamp(DAY1).strftime("%Y-%m-%d")
        self.assertEqual(os.listdir(self.directory), [expected])

    def test_flushedPerLine(self):
        """DataLog.write flushes the line: another reader sees it before the log is closed."""
        self.log.write({"power_w": 42}, DAY1)
        self.assertEqual(read_lines(self.path1), [{"time": DAY1, "power_w": 42}])
        self.log.write({"power_w": 43}, DAY1 + 1)
        self.assertEqual([line["power_w"] for line in read_lines(self.path1)], [42, 43])

    def test_unwritableDirectory(self):
        """DataLog.write returns False and counts the record lost when its directory cannot be made."""
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a directory")
        log = DataLog(os.path.join(blocker, "data"))
        self.addCleanup(log.close)
        self.assertFalse(log.write({"power_w": 1}, DAY1))
        self.assertEqual((log.lines_written, log.lines_lost, log.failing), (0, 1, True))


class Disk:
    """
    C{os.write} and C{os.fsync} for a L{DataLog}, able to fail as a full or
    broken disk does: C{full} refuses every write (ENOSPC), C{short} writes
    only the first C{short} bytes of the next write, C{sync_fails} makes
    fsync fail with EIO.
    """

    def __init__(self):
        self.full = False
        self.short = None
        self.sync_fails = False

    def write(self, fd, data):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.short is not None:
            part, self.short = data[:self.short], None
            return os.write(fd, part)
        return os.write(fd, data)

    def fsync(self, fd):
        if self.sync_fails:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)


class LogEvents:
    """The log events of a test, formatted."""

    def __init__(self, test):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def texts(self, level="warn"):
        return [formatEvent(e) for e in self.events if e["log_level"].name == level]


class FaultTests(SynchronousTestCase):
    """A full disk, a broken disk, and files or folders taken away under the log."""

    def setUp(self):
        self.directory = self.mktemp()
        self.disk = Disk()
        self.log = DataLog(self.directory, utc=True, write=self.disk.write, fsync=self.disk.fsync)
        self.addCleanup(self.log.close)
        self.path = os.path.join(self.directory, "smartmeter-2026-03-01.jsonl")
        self.events = LogEvents(self)

    def test_diskFullDropsAndCounts(self):
        """
        While the disk is full records are dropped and counted, never written
        later; the log warns once when it starts failing and once when it
        recovers, with the number lost.
        """
        self.assertTrue(self.log.write({"power_w": 1}, DAY1))
        self.disk.full = True
        for n in range(2, 17):
            self.assertFalse(self.log.write({"power_w": n}, DAY1 + n))
        self.assertTrue(self.log.failing)
        self.disk.full = False
        self.assertTrue(self.log.write({"power_w": 99}, DAY1 + 99))
        self.assertEqual([line["power_w"] for line in read_lines(self.path)], [1, 99])
        self.assertEqual((self.log.lines_written, self.log.lines_lost, self.log.failing),
                         (2, 15, False))
        warnings = self.events.texts()
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn("No space left on device", warnings[0])
        self.assertIn("15 records were lost", warnings[1])

    def test_shortWriteCutBack(self):
        """A write the disk took only part of is cut back: the file never holds half a line."""
        self.log.write({"power_w": 1}, DAY1)
        self.disk.short = 10
        self.assertFalse(self.log.write({"power_w": 2, "current_r_a": Decimal("1.5")}, DAY1 + 1))
        self.log.write({"power_w": 3}, DAY1 + 2)
        self.assertEqual([line["power_w"] for line in read_lines(self.path)], [1, 3])

    def test_syncFailureCutBack(self):
        """A line whose fsync fails (EIO) is cut back off the file and counted lost."""
        self.log.write({"power_w": 1}, DAY1)
        self.disk.sync_fails = True
        self.assertFalse(self.log.write({"power_w": 2}, DAY1 + 1))
        self.disk.sync_fails = False
        self.log.write({"power_w": 3}, DAY1 + 2)
        self.assertEqual([line["power_w"] for line in read_lines(self.path)], [1, 3])
        self.assertEqual(self.log.lines_lost, 1)

    def test_directoryDeleted(self):
        """The log's folder deleted while it runs: the next record re-creates it, with a warning."""
        self.log.write({"power_w": 1}, DAY1)
        shutil.rmtree(self.directory)
        self.assertTrue(self.log.write({"power_w": 2}, DAY1 + 1))
        self.assertEqual([line["power_w"] for line in read_lines(self.path)], [2])
        self.assertEqual(len(self.events.texts()), 1)
        self.assertIn("deleted, replaced or moved", self.events.texts()[0])

    def test_directoryReplaced(self):
        """The folder moved away and a new one put in its place: records go to the new one."""
        self.log.write({"power_w": 1}, DAY1)
        moved = self.directory + ".old"
        os.rename(self.directory, moved)
        os.makedirs(self.directory)
        self.log.write({"power_w": 2}, DAY1 + 1)
        self.assertEqual([line["power_w"] for line in read_lines(self.path)], [2])
        old = os.path.join(moved, "smartmeter-2026-03-01.jsonl")
        self.assertEqual([line["power_w"] for line in read_lines(old)], [1])

    def test_fileReplaced(self):
        """The day's file replaced by another (a new inode): records go to the one at the path."""
        self.log.write({"power_w": 1}, DAY1)
        os.rename(self.path, self.path + ".rotated")
        with open(self.path, "w") as f:
            f.write('{"power_w":0,"time":0}\n')
        self.log.write({"power_w": 2}, DAY1 + 1)
        self.assertEqual([line["power_w"] for line in read_lines(self.path)], [0, 2])

    def test_tornLastLine(self):
        """
        A day's file cut mid-line (a power cut): the next record starts on a
        new line, so only the torn line is lost.
        """
        os.makedirs(self.directory)
        with open(self.path, "w") as f:
            f.write('{"power_w":1,"time":1}\n{"power_w":2,"ti')
        self.log.write({"power_w": 3}, DAY1)
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertEqual(lines, ['{"power_w":1,"time":1}', '{"power_w":2,"ti',
                                 json.dumps({"power_w": 3, "time": DAY1}, sort_keys=True,
                                            separators=(",", ":"))])


class ReaderTests(SynchronousTestCase):
    """L{read_history_records} reads what it can of damaged files."""

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.events = LogEvents(self)

    def write(self, name, data):
        with open(os.path.join(self.directory, name), "wb") as f:
            f.write(data)

    def test_badLinesSkippedWithWarning(self):
        """Lines that are not UTF-8, or not whole JSON, are skipped with file and line named."""
        good = b'{"kind":"history","slot":"2026-03-01T00:00:00+09:00","source":"E2"}'
        self.write("smartmeter-2026-03-01.jsonl",
                   b'{"power_w":1}\n\xff\xfe{"kind":"history"}\n' + good + b'\n'
                   b'{"kind":"history","slot":"2026-03-01T00:3\n' + good + b"\n")
        records = read_history_records(self.directory, "smartmeter", datetime.date(2026, 3, 1))
        self.assertEqual(len(records), 2)
        warnings = self.events.texts()
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn("line 2 of ", warnings[0])
        self.assertIn("line 4 of ", warnings[1])
        self.assertIn("smartmeter-2026-03-01.jsonl", warnings[0])

    def test_manyBadLinesSummarised(self):
        """A file of garbage gives a few warnings and one summary, not one line each."""
        self.write("smartmeter-2026-03-01.jsonl", b"\x80garbage\n" * 100)
        self.assertEqual(read_history_records(self.directory, "smartmeter",
                                              datetime.date(2026, 3, 1)), [])
        warnings = self.events.texts()
        self.assertEqual(len(warnings), 6)
        self.assertIn("95 more bad lines", warnings[-1])

    def test_deeplyNestedLineSkipped(self):
        """A history line nested past the recursion limit is skipped and named like any bad line."""
        good = b'{"kind":"history","slot":"2026-03-01T00:00:00+09:00","source":"E2"}'
        deep = b'{"kind":"history","slot":' + b"[" * 100000 + b"]" * 100000 + b"}"
        self.write("smartmeter-2026-03-01.jsonl", good + b"\n" + deep + b"\n" + good + b"\n")
        records = read_history_records(self.directory, "smartmeter", datetime.date(2026, 3, 1))
        self.assertEqual(len(records), 2)
        [warning] = self.events.texts()
        self.assertIn("skipping line 2 of ", warning)
        self.assertIn("smartmeter-2026-03-01.jsonl", warning)


class LastReadingTests(SynchronousTestCase):
    def test_newestReading(self):
        """
        The time of the newest reading, from the newest file: not a history
        or fixed record after it, not a torn last line; None without any.
        """
        directory = self.mktemp()
        log = DataLog(directory, utc=True)
        self.assertIsNone(log.last_reading_time())
        day = datetime.datetime(2026, 12, 3, 12, tzinfo=datetime.timezone.utc).timestamp()
        log.write({"power_w": 400}, day)
        log.write({"power_w": 410}, day + 86400)
        log.write({"power_w": 420}, day + 86430)
        log.write({"kind": "history", "slot": "2026-12-04T20:00:00"}, day + 86440)
        log.write({"kind": "fixed", "meter_time": "2026-12-04T21:00:00"}, day + 86450)
        log.close()
        with open(log.path_for(day + 86400), "ab") as f:
            f.write(b'{"power_w":43')  # a power cut mid-line
        self.assertEqual(log.last_reading_time(), day + 86430)

    def test_deeplyNestedLastLine(self):
        """A last line nested past the recursion limit is passed over like a torn one."""
        directory = self.mktemp()
        log = DataLog(directory, utc=True)
        log.write({"power_w": 400}, DAY1)
        log.close()
        # Past the recursion limit (1,000 deep), within the 64 KiB tail that is read.
        for garbage in (b"[" * 20000, b'{"time":' * 5000):
            with open(log.path_for(DAY1), "ab") as f:
                f.write(garbage + b"\n")
            self.assertEqual(log.last_reading_time(), DAY1)
        # A line longer than the tail hides what is before it, without a crash.
        with open(log.path_for(DAY1), "ab") as f:
            f.write(b"[" * 100000 + b"\n")
        self.assertIsNone(log.last_reading_time())


class LockTests(SynchronousTestCase):
    """One directory, one writer: the data log of a service takes its directory."""

    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def datalog(self):
        log = DataLog(self.directory, utc=True)
        self.addCleanup(log.close)
        return log

    def test_secondRefused(self):
        """A second data log on a directory whose lock is held is refused until the first closes."""
        first, second = self.datalog(), self.datalog()
        first.lock()
        first.lock()  # again: it holds it already
        e = self.assertRaises(DataLogInUse, second.lock)
        self.assertEqual(e.directory, self.directory)
        first.close()
        second.lock()
        self.assertRaises(DataLogInUse, first.lock)

    def test_writingKeepsTheLock(self):
        """A day's file opened again (a failed write, a new day) leaves the lock held."""
        disk = Disk()
        first = DataLog(self.directory, utc=True, write=disk.write, fsync=disk.fsync)
        self.addCleanup(first.close)
        first.lock()
        first.write({"power_w": 1}, DAY1)
        disk.full = True
        first.write({"power_w": 2}, DAY1 + 1)  # lost: the file is closed
        disk.full = False
        first.write({"power_w": 3}, DAY2)
        self.assertRaises(DataLogInUse, self.datalog().lock)

    def test_readersNeedNoLock(self):
        """The readers read a directory whose lock a data log holds; the lock leaves no file."""
        writer = self.datalog()
        writer.lock()
        writer.write({"power_w": 5}, DAY1)
        writer.write({"kind": "history", "slot": "2026-03-01T00:00:00+09:00"}, DAY1 + 1)
        reader = DataLog(self.directory, utc=True)
        self.assertEqual(reader.last_reading_time(), DAY1)
        self.assertEqual(len(read_history_records(self.directory, "smartmeter",
                                                  datetime.date(2026, 3, 1))), 1)
        self.assertEqual(os.listdir(self.directory), ["smartmeter-2026-03-01.jsonl"])


class ReadingsTests(SynchronousTestCase):
    """L{DataLog.readings}: the readings of Japan's day, for the dashboard's curve."""

    #: 2024-06-01 00:00 JST (2024-05-31 15:00 UTC) and 17:00 JST the same day.
    MIDNIGHT = datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone(
        datetime.timedelta(hours=9))).timestamp()
    NOW = MIDNIGHT + 17 * 3600

    def setUp(self):
        self.events = LogEvents(self)

    def fill(self, log):
        """
        Log yesterday evening, today's morning and afternoon (Japan time),
        with slots, fixed readings and a damaged line among them.

        @return: the C{(time, power)} of today's readings, in order.
        """
        today = []
        for hours, watts in ((-0.5, 100), (0.25, 210), (8.75, 220), (9.5, 230), (14.0, None),
                             (15.5, 240), (16.5, 250), (17.5, 260)):
            when = self.MIDNIGHT + hours * 3600
            log.write({"power_w": watts, "current_r_a": 2}, when)
            log.write({"kind": "fixed", "meter_time": "2024-06-01T00:00:00"}, when + 1)
            log.write({"kind": "history", "slot": "2024-06-01T00:00:00+09:00"}, when + 2)
            log.write({"energy_normal_kwh": 12.5}, when + 3)  # no power: still a reading
            if 0 <= hours <= 17:
                today += [(when, watts), (when + 3, None)]
        log.close()
        with open(log.path_for(self.NOW - 60), "ab") as f:
            f.write(b'{"power_w":43\n\xff\n')  # a torn line and garbage
        return today

    def read(self, log):
        return [(when, record.get("power_w")) for when, record in log.readings(self.MIDNIGHT,
                                                                               self.NOW)]

    def test_japaneseDayOnAnyHost(self):
        """
        Whatever the host's time zone or the files' naming (local date or
        UTC), the readings of Japan's day so far come back in time order, and
        nothing else: no slot, no fixed reading, no reading of yesterday or
        after now; damaged lines are skipped with a warning.
        """
        for zone, utc, files in (("UTC", False, 2), ("Asia/Tokyo", False, 1),
                                 ("America/Los_Angeles", False, 2), ("Asia/Tokyo", True, 2)):
            host_zone(self, zone)
            log = DataLog(self.mktemp(), utc=utc)
            today = self.fill(log)
            # Japan's day in one file or in two, as the host names them.
            self.assertEqual(len({log.path_for(when) for when, _ in today}), files, zone)
            got = self.read(log)
            self.assertEqual([when for when, _ in got], [when for when, _ in today], zone)
            self.assertEqual([watts for _, watts in got if watts is not None],
                             [210, 220, 230, 240, 250], zone)
            self.assertEqual(len([w for w in self.events.texts() if "skipping line" in w]), 2,
                             zone)
            del self.events.events[:]

    def test_bigFileReadFromItsEnd(self):
        """
        Of a file over the read limit only its end is read: the newest
        readings, none cut in two, no warning for the line the cut falls in.
        """
        log = DataLog(self.mktemp(), utc=True)
        for k in range(200):
            log.write({"power_w": 1000 + k}, self.MIDNIGHT + 3600 + 30 * k)
        log.close()
        self.patch(datalog, "READ_LIMIT", 1000)
        got = [record["power_w"] for _, record in log.readings(self.MIDNIGHT, self.NOW)]
        self.assertTrue(0 < len(got) < 40, got)
        self.assertEqual(got, list(range(1200 - len(got), 1200)))
        self.assertEqual(self.events.texts(), [])

    def test_noFiles(self):
        """No data log yet (or none of today's files): no readings, no warning."""
        log = DataLog(self.mktemp())
        self.assertEqual(self.read(log), [])
        self.assertEqual(self.events.texts(), [])
