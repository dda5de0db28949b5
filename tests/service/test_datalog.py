"""
Tests for L{smartmeter_tx.service.datalog}: the daily JSON-lines data log.
"""

import datetime
import json
import os
from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.service.datalog import DataLog
from smartmeter_tx.model import NO_DATA, NO_PHASE

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
        """DataLog.write raises OSError when its directory cannot be created."""
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a directory")
        log = DataLog(os.path.join(blocker, "data"))
        self.addCleanup(log.close)
        self.assertRaises(OSError, log.write, {"power_w": 1}, DAY1)
