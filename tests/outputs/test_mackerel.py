"""
Tests for L{smartmeter_tx.outputs.mackerel}: metric lines and graph meta, checked
against the rules mackerel-agent applies when it parses plugin output.
"""

import json
import re
from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.outputs import mackerel
from smartmeter_tx import model
from smartmeter_tx.errors import ArgumentError

_NAME = re.compile(r"^[-a-zA-Z0-9_.]+$")


def agent_parse(output: str) -> dict:
    """
    Parse plugin output the way mackerel-agent's collectValues does: fields
    split on whitespace, fewer than 3 skipped, the value parsed as a float.
    """
    values = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        values[fields[0]] = float(fields[1])
        int(fields[2])  # the timestamp must be a base-10 integer
    return values


def agent_meta(output: str) -> dict:
    """
    Read meta output as the agent does: a header line, then one JSON value.
    """
    header, _, body = output.partition("\n")
    if not re.match(r"^#\s*mackerel-agent-plugin\b(.*)", header):
        raise ValueError("bad header")
    return json.loads(body)


class MetricLinesTests(SynchronousTestCase):
    def test_powerAndCurrent(self):
        """format_metrics prints power as an integer and currents with one decimal."""
        reading = model.Reading(power_w=296, current_r_a=Decimal("2.3"), current_t_a=Decimal("1.1"))
        lines = mackerel.format_metrics("smartmeter", reading, 1584861299)
        self.assertEqual(lines, [
            "smartmeter.power.value\t296\t1584861299",
            "smartmeter.current.r\t2.3\t1584861299",
            "smartmeter.current.t\t1.1\t1584861299",
        ])
        self.assertEqual(agent_parse("\n".join(lines)), {
            "smartmeter.power.value": 296.0, "smartmeter.current.r": 2.3,
            "smartmeter.current.t": 1.1})

    def test_negativePower(self):
        """Reverse flow (negative E7) is printed as a negative number."""
        lines = mackerel.format_metrics("p", model.Reading(power_w=-1962), 1)
        self.assertEqual(lines, ["p.power.value\t-1962\t1"])

    def test_absentValuesLeftOut(self):
        """No-data, overflow and a missing T phase are left out, never printed as 0."""
        reading = model.Reading(power_w=model.NO_DATA, current_r_a=Decimal("4"),
                            current_t_a=model.NO_PHASE)
        lines = mackerel.format_metrics("smartmeter", reading, 5)
        self.assertEqual(lines, ["smartmeter.current.r\t4\t5"])
        reading = model.Reading(power_w=model.OVERFLOW)
        self.assertEqual(mackerel.format_metrics("smartmeter", reading, 5), [])

    def test_energy(self):
        """With energy, kWh values are printed exactly, without exponent notation."""
        reading = model.Reading(power_w=1, energy_normal_kwh=Decimal("15756.31"),
                            energy_reverse_kwh=Decimal("1E+2"))
        lines = mackerel.format_metrics("s", reading, 7, energy=True)
        self.assertIn("s.energy.normal\t15756.31\t7", lines)
        self.assertIn("s.energy.reverse\t100\t7", lines)
        self.assertEqual(len(mackerel.format_metrics("s", reading, 7, energy=False)), 1)

    def test_namesValid(self):
        """Every metric name matches Mackerel's allowed characters."""
        reading = model.Reading(1, Decimal(1), Decimal(1), Decimal(1), Decimal(1))
        for line in mackerel.format_metrics("my-home_1", reading, 1, energy=True):
            self.assertTrue(_NAME.match(line.split("\t")[0]))


class MetaTests(SynchronousTestCase):
    def test_metaParses(self):
        """format_meta has the agent's header and JSON graphs keyed by prefix."""
        meta = agent_meta(mackerel.format_meta("smartmeter"))
        self.assertEqual(sorted(meta["graphs"]), ["smartmeter.current", "smartmeter.power"])
        current = meta["graphs"]["smartmeter.current"]
        self.assertEqual([m["name"] for m in current["metrics"]], ["r", "t"])
        self.assertTrue(all(m["stacked"] for m in current["metrics"]))
        self.assertEqual(current["unit"], "float")
        self.assertIn("[A]", current["label"])
        self.assertEqual(meta["graphs"]["smartmeter.power"]["unit"], "integer")

    def test_metaEnergy(self):
        """With energy the meta adds a float kWh graph whose metrics match the lines."""
        meta = agent_meta(mackerel.format_meta("x", energy=True))
        graph = meta["graphs"]["x.energy"]
        self.assertEqual(graph["unit"], "float")
        self.assertIn("kWh", graph["label"])
        names = {"x.energy." + m["name"] for m in graph["metrics"]}
        reading = model.Reading(1, Decimal(1), Decimal(1), Decimal(2), Decimal(3))
        printed = {l.split("\t")[0] for l in mackerel.format_metrics("x", reading, 1, True)}
        self.assertTrue(names <= printed)

    def test_unitsKnown(self):
        """Every graph uses a unit the agent knows."""
        known = {"float", "integer", "percentage", "seconds", "milliseconds", "bytes",
                 "bytes/sec", "bits/sec", "iops"}
        for graph in mackerel.graph_definitions("s", True)["graphs"].values():
            self.assertIn(graph["unit"], known)

    def test_badPrefix(self):
        """check_prefix rejects characters Mackerel does not allow."""
        for bad in ("", "a b", "a/b", ".a", "a."):
            self.assertRaises(ArgumentError, mackerel.check_prefix, bad)
        self.assertEqual(mackerel.check_prefix("home.meter"), "home.meter")
