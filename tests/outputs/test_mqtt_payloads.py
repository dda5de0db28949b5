"""
Tests for L{smartmeter_tx.outputs.mqtt.payloads}: what the publisher sends,
without a broker.
"""

import json

from twisted.trial.unittest import SynchronousTestCase

from smartmeter_tx.outputs.homeassistant import statistics as S
from smartmeter_tx.outputs.mqtt.payloads import (
    MODEL, discovery_configs, dumps, earlier_meter_id, earlier_topics, link_payload, meter_id,
    state_payloads,
)
from smartmeter_tx.session.linkstate import HOLD_RATE_LIMIT, LinkState

IDENTITY = {"mac": "001D129012345678", "maker": "000016", "maker_name": "Toshiba", "serial": "SN-1"}
#: The meter's one id: its MAC in lower case.
MID = "001d129012345678"


class MeterIdTests(SynchronousTestCase):
    def test_macNotSerial(self):
        """
        meter_id is the MAC in lower case, the id of the meter's HA statistics
        too, whether the meter has a serial number or not.
        """
        self.assertEqual(meter_id(IDENTITY), MID)
        self.assertEqual(meter_id(dict(IDENTITY, serial=None)), MID)
        self.assertEqual(meter_id(IDENTITY), S.slug_for(IDENTITY["mac"]))
        self.assertEqual(S.statistic_id(meter_id(IDENTITY), "import"),
                         f"smartmeter_tx:{MID}_energy_import")

    def test_topicSafe(self):
        """Only ASCII letters and digits stay (no + # / in topics, a valid statistic id)."""
        self.assertEqual(meter_id({"mac": "00:1D/12+90#é"}), "001d1290")

    def test_unknown(self):
        """No identity, or one without a MAC, gives no id, whatever the serial."""
        self.assertIsNone(meter_id(None))
        self.assertIsNone(meter_id({}))
        self.assertIsNone(meter_id({"mac": None, "serial": "SN-1"}))

    def test_earlierId(self):
        """The id of earlier versions: the serial number if any, else the MAC as given."""
        self.assertEqual(earlier_meter_id(IDENTITY), "SN-1")
        self.assertEqual(earlier_meter_id(dict(IDENTITY, serial=None)), "001D129012345678")
        self.assertEqual(earlier_meter_id({"serial": "a/b+c#d é"}), "a_b_c_d__")
        self.assertIsNone(earlier_meter_id(None))


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
        from smartmeter_tx.outputs.mqtt.payloads import FIELDS, bill_payload, link_payload
        records = [{"power_w": 1, "energy_normal_kwh": 2, "stray": 3},
                   {"kind": "fixed", "meter_time": "2024-06-01T12:30:00", "stray": 3}]
        seen = {}
        for record in records:
            seen.update(state_payloads(record, 1.0))
        seen["link"] = dict(link_payload(LinkState(), None, 0), time=1.0)
        seen["bill"] = bill_payload({"smartmeter_bill_period_start_timestamp_seconds": 0.0}, 1.0)
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
        self.configs = discovery_configs("homeassistant", "smartmeter", MID, IDENTITY, 30.0,
                                         "9.9")

    def config(self, key, component="sensor"):
        return self.configs[f"homeassistant/{component}/smartmeter_tx_{MID}_{key}/config"]

    def test_everyEntity(self):
        """Fourteen entities, each config under its component and unique id."""
        self.assertEqual(len(self.configs), 14)
        for topic, config in self.configs.items():
            prefix, component, unique, tail = topic.split("/")
            self.assertEqual((prefix, tail), ("homeassistant", "config"))
            self.assertIn(component, ("sensor", "binary_sensor"))
            self.assertEqual(config["unique_id"], unique)
            self.assertTrue(unique.startswith(f"smartmeter_tx_{MID}_"))
            self.assertEqual(config["availability_topic"], f"smartmeter/{MID}/availability")
            json.dumps(config)  # every value is JSON

    def test_device(self):
        """
        The device is named as the meter's statistics are (its MAC in upper
        case), and names the maker, the model, the serial and our version.
        """
        self.assertEqual(self.config("power")["device"], {
            "identifiers": [f"smartmeter_tx_{MID}"], "name": "Smart meter 001D129012345678",
            "manufacturer": "Toshiba", "model": MODEL, "serial_number": "SN-1"})
        self.assertEqual(self.config("power")["origin"],
                         {"name": "smartmeter_tx", "sw_version": "9.9"})
        for direction in ("import", "export"):
            self.assertTrue(S.metadata(MID, direction)["name"].startswith(
                "Smart meter 001D129012345678 energy "))

    def test_boughtAndSold(self):
        """
        The energy entities say bought and sold, in their names and unique
        ids; each reads its counter from the payload's field, which keeps its name.
        """
        names = {key: (self.config(key)["name"], self.config(key)["value_template"])
                 for key in ("energy_bought", "energy_sold", "energy_bought_half_hour",
                             "energy_sold_half_hour")}
        self.assertEqual(names, {
            "energy_bought": ("Energy bought", "{{ value_json.energy_normal_kwh }}"),
            "energy_sold": ("Energy sold", "{{ value_json.energy_reverse_kwh }}"),
            "energy_bought_half_hour": ("Energy bought at the half hour",
                                        "{{ value_json.energy_normal_kwh }}"),
            "energy_sold_half_hour": ("Energy sold at the half hour",
                                      "{{ value_json.energy_reverse_kwh }}")})
        text = " ".join(c["name"] for c in self.configs.values()).lower()
        for word in ("normal", "reverse", "fixed"):
            self.assertNotIn(word, text)

    def test_oneEnergyCandidatePerDirection(self):
        """
        Only the live counters have a state class (HA's statistics, its
        Energy dashboard): the half-hour ones are published after their
        boundary, and would put each half hour's energy in the wrong hour.
        """
        candidates = {c["unique_id"] for c in self.configs.values()
                      if c.get("device_class") == "energy" and c.get("state_class")}
        self.assertEqual(candidates, {f"smartmeter_tx_{MID}_energy_bought",
                                      f"smartmeter_tx_{MID}_energy_sold"})
        for key in ("energy_bought", "energy_sold"):
            self.assertEqual(self.config(key)["state_class"], "total_increasing")
        for key in ("energy_bought_half_hour", "energy_sold_half_hour"):
            config = self.config(key)
            self.assertNotIn("state_class", config)
            self.assertEqual((config["device_class"], config["unit_of_measurement"],
                              config["state_topic"]), ("energy", "kWh", f"smartmeter/{MID}/fixed"))

    def test_makerCodeKept(self):
        """
        The raw 8A code stays an attribute of the session entity; a code not
        in the list is named as a code, never as a bare number.
        """
        session = self.config("session", "binary_sensor")
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
        power = self.config("power")
        energy = self.config("energy_bought")
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


class BillTests(SynchronousTestCase):
    """With --tariff: the bill topic and its entities."""

    def test_payload(self):
        """The bill's figures by their /metrics names; unknown ones null, never 0."""
        from smartmeter_tx.outputs.mqtt.payloads import bill_payload
        figures = {"smartmeter_bill_period_start_timestamp_seconds": 1796050800.0,
                   "smartmeter_bill_period_energy_kwh": None,
                   "smartmeter_bill_period_cost_yen": 4988.85,
                   "smartmeter_price_yen_per_kwh": 40.38,
                   "smartmeter_contract_load_ratio": 0.9, "smartmeter_breaker_near_limit": 1}
        self.assertEqual(bill_payload(figures, 5.0), {
            "period_start": "2026-12-01T00:00:00+09:00", "energy_kwh": None,
            "cost_yen": 4988.85, "price_yen_per_kwh": 40.38, "contract_load_pct": 90.0,
            "near_limit": True, "time": 5.0})
        self.assertIsNone(bill_payload({}, 5.0))

    def test_entities(self):
        """
        The bill's yen is a monetary total that restarts at the period's
        start; its kWh is no Energy-dashboard candidate; the breaker's
        entities only with an ampere contract.
        """
        plain = discovery_configs("homeassistant", "smartmeter", MID, IDENTITY, 30.0, "9.9")
        tariff = discovery_configs("homeassistant", "smartmeter", MID, IDENTITY, 30.0, "9.9",
                                   bill=False)
        contract = discovery_configs("homeassistant", "smartmeter", MID, IDENTITY, 30.0, "9.9",
                                     bill=True)
        self.assertEqual((len(plain), len(tariff), len(contract)), (14, 17, 19))
        cost = tariff[f"homeassistant/sensor/smartmeter_tx_{MID}_bill_cost/config"]
        self.assertEqual((cost["unit_of_measurement"], cost["device_class"], cost["state_class"],
                          cost["last_reset_value_template"], cost["state_topic"]),
                         ("JPY", "monetary", "total", "{{ value_json.period_start }}",
                          f"smartmeter/{MID}/bill"))
        energy = tariff[f"homeassistant/sensor/smartmeter_tx_{MID}_bill_energy/config"]
        self.assertNotIn("state_class", energy)
        near = contract[f"homeassistant/binary_sensor/smartmeter_tx_{MID}_breaker_near_limit/"
                        "config"]
        self.assertEqual((near["device_class"], near["value_template"]),
                         ("problem", "{{ 'ON' if value_json.near_limit else 'OFF' }}"))


class EarlierTopicsTests(SynchronousTestCase):
    """What versions before the MAC was the one id left retained, to be cleared."""

    #: The entities those versions announced: (component, key).
    EARLIER = [("sensor", k) for k in (
        "power", "current_r", "current_t", "energy_normal", "energy_reverse",
        "fixed_energy_normal", "fixed_energy_reverse", "fixed_time", "rssi", "lqi",
        "reading_age", "polls_failed")] + [("binary_sensor", "session"),
                                           ("binary_sensor", "rate_limited")]

    def test_serialId(self):
        """
        A meter with a serial number: every config and state under it (the
        earlier id), and nothing of what is published now.
        """
        old, topics = earlier_topics("homeassistant", "smartmeter", IDENTITY)
        self.assertEqual(old, "SN-1")
        self.assertEqual(topics, [
            f"homeassistant/{component}/smartmeter_tx_SN-1_{key}/config"
            for component, key in self.EARLIER] + [
            f"smartmeter/SN-1/{suffix}"
            for suffix in ("availability", "state", "energy", "fixed", "link")])
        current = discovery_configs("homeassistant", "smartmeter", MID, IDENTITY, 30.0, "1")
        self.assertEqual(set(topics) & set(current), set())

    def test_macId(self):
        """A meter without a serial had its MAC as given (upper case): all of it differs."""
        old, topics = earlier_topics("ha", "sm", dict(IDENTITY, serial=None))
        self.assertEqual((old, len(topics)), ("001D129012345678", 19))
        self.assertIn("ha/sensor/smartmeter_tx_001D129012345678_energy_normal/config", topics)
        self.assertIn("sm/001D129012345678/availability", topics)

    def test_sameIdOldKeys(self):
        """
        An earlier id that is the id now (a MAC of digits only): only the
        renamed entities' configs, no state topic (they are the ones in use).
        """
        identity = {"mac": "0012345678901234", "serial": None}
        old, topics = earlier_topics("ha", "sm", identity)
        self.assertEqual(old, "0012345678901234")
        self.assertEqual(sorted(topics), sorted(
            f"ha/sensor/smartmeter_tx_0012345678901234_{key}/config"
            for key in ("energy_normal", "energy_reverse", "fixed_energy_normal",
                        "fixed_energy_reverse", "fixed_time")))

    def test_withoutDiscovery(self):
        """Without discovery only the states; nothing while the meter is not known."""
        self.assertEqual(earlier_topics(None, "sm", IDENTITY)[1],
                         [f"sm/SN-1/{s}" for s in ("availability", "state", "energy", "fixed",
                                                    "link")])
        self.assertEqual(earlier_topics("ha", "sm", None), (None, []))
