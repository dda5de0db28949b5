"""
Tests for L{smartmeter_tx.outputs.exposition}: what C{/metrics} writes is
read back by the Prometheus client's own parser, as a scraper reads it.
"""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.outputs.exposition import Family, counter, exposition, gauge


def parsed(families) -> dict:
    """C{{(sample name, labels): value}} and the families' types, as a scraper reads them."""
    text = exposition(families).decode("utf-8")
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = (family.type, family.documentation)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return {"samples": samples, "types": types}


class ExpositionTests(SynchronousTestCase):
    def test_gaugesAndCounters(self):
        """A gauge keeps its name, a counter's samples end in _total; values exact."""
        got = parsed([gauge("smartmeter_power_watts", "Power", -1234),
                      counter("smartmeter_polls_answered", "Polls", 123456789012),
                      counter("smartmeter_tally_total", "Already named", 3)])
        self.assertEqual(got["samples"], {
            ("smartmeter_power_watts", ()): -1234.0,
            ("smartmeter_polls_answered_total", ()): 123456789012.0,
            ("smartmeter_tally_total", ()): 3.0,
        })
        self.assertEqual(got["types"]["smartmeter_power_watts"], ("gauge", "Power"))
        self.assertEqual(got["types"]["smartmeter_polls_answered"], ("counter", "Polls"))

    def test_unknownHasNoSample(self):
        """A gauge of nothing known is declared with no sample (not 0, not NaN)."""
        text = exposition([gauge("smartmeter_rssi_dbm", "RSSI", None)]).decode()
        self.assertEqual(text, "# HELP smartmeter_rssi_dbm RSSI\n"
                               "# TYPE smartmeter_rssi_dbm gauge\n")

    def test_labelsAndEscapes(self):
        """Label values and help texts with quotes, backslashes and newlines survive."""
        odd = 'a "b" \\ c\nd'
        got = parsed([Family("smartmeter_energy_kwh", "gauge", "Energy\\ and\nmore",
                             (((("direction", odd),), 1.5),
                              ((("direction", "reverse"),), 0.25)))])
        self.assertEqual(got["samples"], {
            ("smartmeter_energy_kwh", (("direction", odd),)): 1.5,
            ("smartmeter_energy_kwh", (("direction", "reverse"),)): 0.25,
        })
        self.assertEqual(got["types"]["smartmeter_energy_kwh"], ("gauge", "Energy\\ and\nmore"))

    def test_specialValues(self):
        """NaN, infinities and tiny or huge values are written as Prometheus reads them."""
        got = parsed([Family("x", "gauge", "x", tuple(
            (((("k", str(i)),), v)) for i, v in enumerate(
                [float("inf"), float("-inf"), 1e-06, 1e21, 0.1 + 0.2]))),
            gauge("y", "y", float("nan"))])["samples"]
        self.assertEqual([got[("x", (("k", str(i)),))] for i in range(5)],
                         [math.inf, -math.inf, 1e-06, 1e21, 0.1 + 0.2])
        self.assertTrue(math.isnan(got[("y", ())]))
