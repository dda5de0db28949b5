"""
Tests for L{smartmeter_tx.outputs.mqtt.payloads}: what the publisher sends,
without a broker.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.outputs.mqtt.payloads import (
    MODEL, discovery_configs, dumps, link_payload, meter_id, state_payloads,
)
from smartmeter_tx.session.linkstate import HOLD_RATE_LIMIT, LinkState

IDENTITY = {"mac": "001D129012345678", "maker": "000016", "maker_name": "Toshiba", "serial": "SN-1"}


class MeterIdTests(SynchronousTestCase):
    def test_serialFirst(self):
        """meter_id takes the serial number when the meter has one, else the MAC."""
        self.assertEqual(meter_id(IDENTITY), "SN-1")
        self.assertEqual(meter_id(dict(IDENTITY, serial=None)), "001D129012345678")

    def test_topicSafe(self):
        """Characters that are not letters, digits, '-' or '_' become '_' (no + # / in topics)."""
        self.assertEqual(meter_id({"serial": "a/b+c#d é"}), "a_b_c_d__")

    def test_unknown(self):
        """No identity, or one without serial and MAC, gives no id."""
        self.assertIsNone(meter_id(None))
        self.assertIsNone(meter_id({}))
        self.assertIsNone(meter_id({"mac": None, "serial": None}))


class StatePayloadTests(SynchronousTestCase):
    def test_reading(self):
        """An instantaneous reading makes a 'state' payload with all three fields and its time."""
        out = state_payloads({"power_w": 412, "current_r_a": 3.1}, 1700000000.12345)
        self.assertEqual(out, [("state", {"power_w": 412, "current_r_a": 3.1,
                                          "current_t_a": None, "time": 1700000000.123})])

    def test_energy(self):
        """A reading with the counters adds an 'energy' payload; absent ones stay null."""
        out = dict(state_payloads({"power_w": 1, "energy_normal_kwh": 12345.6}, 10.0))
        self.assertEqual(out["energy"], {"energy_normal_kwh": 12345.6,
                                         "energy_reverse_kwh": None, "time": 10.0})
        self.assertEqual(set(out), {"state", "energy"})

    def test_fixed(self):
        """The meter's EA/EB make a 'fixed' payload, its naive JST time given its +09:00."""
        out = state_payloads({"kind": "fixed", "meter_time": "2024-06-01T12:30:00",
                              "energy_normal_kwh": 5.5, "energy_normal_raw": 550}, 20.0)
        self.assertEqual(out, [("fixed", {"meter_time": "2024-06-01T12:30:00+09:00",
                                          "energy_normal_kwh": 5.5, "energy_normal_raw": 550,
                                          "energy_reverse_kwh": None, "energy_reverse_raw": None,
                                          "time": 20.0})])

    def test_fieldsAsTabled(self):
        """
        Every payload has exactly the fields of its topic in FIELDS (the table
        the README is checked against), whatever the record carries.
        """
        from smartmeter_tx.outputs.mqtt.payloads import FIELDS, link_payload
        records = [{"power_w": 1, "energy_normal_kwh": 2, "stray": 3},
                   {"kind": "fixed", "meter_time": "2024-06-01T12:30:00", "stray": 3}]
        seen = {}
        for record in records:
            seen.update(state_payloads(record, 1.0))
        seen["link"] = dict(link_payload(LinkState(), None, 0), time=1.0)
        self.assertEqual({topic: list(p) for topic, p in seen.items()},
                         {topic: list(fields) for topic, fields in FIELDS.items()})

    def test_fixedWithoutClock(self):
        """A meter time that is not a time is null, not a guess."""
        (_, payload), = state_payloads({"kind": "fixed", "meter_time": None}, 1.0)
        self.assertIsNone(payload["meter_time"])

    def test_nothingToSay(self):
        """A record with neither readings nor counters publishes nothing."""
        self.assertEqual(state_payloads({"something": 1}, 1.0), [])

    def test_dumps(self):
        """Payloads are compact JSON with sorted keys."""
        self.assertEqual(dumps({"b": 1, "a": None}), b'{"a":null,"b":1}')


class LinkPayloadTests(SynchronousTestCase):
    def test_fields(self):
        """The link payload reports the session, holds, link quality, age and failures."""
        state = LinkState()
        state.up(100.0)
        state.event(0x32, 110.0)
        state.rssi(-61.37)
        state.scanned(160, -60.0)
        payload = link_payload(state, 12.34, 3)
        self.assertEqual(payload, {
            "session": "up", "session_up": True, "rate_limited": True, "held": HOLD_RATE_LIMIT,
            "rssi_dbm": -60.0, "lqi": 160, "reading_age_s": 12.3, "polls_failed": 3,
            "last_event": "32"})

    def test_nothingYet(self):
        """Before any reading or event the unknowns are null, never 0."""
        payload = link_payload(LinkState(), None, 0)
        self.assertEqual((payload["session"], payload["reading_age_s"], payload["last_event"],
                          payload["rssi_dbm"]), ("unknown", None, None, None))


class DiscoveryTests(SynchronousTestCase):
    def setUp(self):
        self.configs = discovery_configs("homeassistant", "smartmeter", "SN-1", IDENTITY, 30.0,
                                         "9.9")

    def test_everyEntity(self):
        """Fourteen entities, each config under its component and unique id."""
        self.assertEqual(len(self.configs), 14)
        for topic, config in self.configs.items():
            prefix, component, unique, tail = topic.split("/")
            self.assertEqual((prefix, tail), ("homeassistant", "config"))
            self.assertIn(component, ("sensor", "binary_sensor"))
            self.assertEqual(config["unique_id"], unique)
            self.assertTrue(unique.startswith("smartmeter_tx_SN-1_"))
            self.assertEqual(config["availability_topic"], "smartmeter/SN-1/availability")
            json.dumps(config)  # every value is JSON

    def test_device(self):
        """The device names the maker, the model, the serial and our version."""
        config = self.configs["homeassistant/sensor/smartmeter_tx_SN-1_power/config"]
        self.assertEqual(config["device"], {
            "identifiers": ["smartmeter_tx_SN-1"], "name": "Smart meter SN-1",
            "manufacturer": "Toshiba", "model": MODEL, "serial_number": "SN-1"})
        self.assertEqual(config["origin"], {"name": "smartmeter_tx", "sw_version": "9.9"})

    def test_makerCodeKept(self):
        """
        The raw 8A code stays an attribute of the session entity; a code not
        in the list is named as a code, never as a bare number.
        """
        session = self.configs["homeassistant/binary_sensor/smartmeter_tx_SN-1_session/config"]
        self.assertEqual(session["json_attributes_topic"], session["state_topic"])
        self.assertEqual(json.loads(session["json_attributes_template"]),
                         {"maker_code": "000016"})
        other = discovery_configs("ha", "sm", "X", dict(IDENTITY, maker="0000FF", maker_name=None),
                                  30.0, "1")
        self.assertEqual(other["ha/sensor/smartmeter_tx_X_power/config"]["device"][
            "manufacturer"], "ECHONET maker code 0000FF")

    def test_makerNames(self):
        """The meter makers' 8A codes are named, in either case; others are not."""
        from smartmeter_tx.echonet.meter import maker_name
        self.assertEqual([maker_name(c) for c in ("000035", "000052", "00000b", "000016",
                                                  "0000FF", None)],
                         ["Toshiba Toko Meter Systems", "Osaki Electric", "Panasonic", "Toshiba",
                          None, None])

    def test_powerExpires(self):
        """Power and currents expire after three poll intervals; energy never does."""
        power = self.configs["homeassistant/sensor/smartmeter_tx_SN-1_power/config"]
        energy = self.configs["homeassistant/sensor/smartmeter_tx_SN-1_energy_normal/config"]
        self.assertEqual(power["expire_after"], 90)
        self.assertNotIn("expire_after", energy)
        slow = discovery_configs("ha", "sm", "X", None, 31.0, "1")
        self.assertEqual(slow["ha/sensor/smartmeter_tx_X_power/config"]["expire_after"], 93)

    def test_unknownMaker(self):
        """Without an identity the device still has a manufacturer and no serial."""
        configs = discovery_configs("ha", "sm", "X", None, 30.0, "1")
        device = configs["ha/sensor/smartmeter_tx_X_power/config"]["device"]
        self.assertEqual(device["manufacturer"], "unknown maker")
        self.assertNotIn("serial_number", device)
