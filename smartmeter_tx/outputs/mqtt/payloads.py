"""
What the MQTT publisher publishes, as data: the meter's id for its topics,
the JSON states made from the service's records, the link's health, the
Home Assistant discovery configs, and the topics an earlier version used.

Pure: no Twisted, no I/O, no broker; L{smartmeter_tx.outputs.mqtt.publisher}
decides when each is sent.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Optional

from smartmeter_tx.model import JST
from smartmeter_tx.outputs.homeassistant.statistics import meter_name, slug_for
from smartmeter_tx.session.linkstate import LinkState

__all__ = ["MODEL", "FIELDS", "meter_id", "earlier_meter_id", "dumps", "state_payloads",
           "link_payload", "bill_payload", "discovery_configs", "earlier_topics"]

MODEL = "Low-voltage smart electric energy meter"

_INSTANT = ("power_w", "current_r_a", "current_t_a")
_ENERGY = ("energy_normal_kwh", "energy_reverse_kwh")
_LINK = ("session", "session_up", "rate_limited", "held", "rssi_dbm", "lqi", "reading_age_s",
         "polls_failed", "last_event")
#: With --tariff: this billing period and the contract, from the figures of
#: the same names on /metrics.
_BILL = ("period_start", "energy_kwh", "cost_yen", "price_yen_per_kwh", "contract_load_pct",
         "near_limit")
_BILL_FIGURES = {"energy_kwh": "smartmeter_bill_period_energy_kwh",
                 "cost_yen": "smartmeter_bill_period_cost_yen",
                 "price_yen_per_kwh": "smartmeter_price_yen_per_kwh"}

#: Every field of each topic's JSON payload, in order: what the payloads are
#: built from, and what the README lists (tests/test_docs.py holds it to this).
FIELDS = {
    "state": _INSTANT + ("time",),
    "energy": _ENERGY + ("time",),
    "fixed": ("meter_time",) + _ENERGY + ("energy_normal_raw", "energy_reverse_raw", "time"),
    "link": _LINK + ("time",),
    "bill": _BILL + ("time",),
}


def meter_id(identity: Optional[dict]) -> Optional[str]:
    """
    The meter's id for topics and unique ids: the id of its HA statistics
    too (L{slug_for}: its MAC, lower case).  C{None} while the identity is
    not known.
    """
    return slug_for((identity or {}).get("mac"))


def earlier_meter_id(identity: Optional[dict]) -> Optional[str]:
    """
    The id versions before the MAC became the one id gave the meter: its
    serial number if it has one, else its MAC as the scan gives it, each
    character other than a letter, digit, C{-} or C{_} made C{_}.
    """
    raw = (identity or {}).get("serial") or (identity or {}).get("mac")
    if not raw:
        return None
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in str(raw))


def dumps(payload: dict) -> bytes:
    """A payload as compact JSON with sorted keys."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def _aware_meter_time(value: object) -> Optional[str]:
    """The meter's naive JST wall-clock time as ISO 8601 with +09:00."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=JST)
    return when.isoformat()


def state_payloads(record: dict, when: float) -> list:
    """
    The states one service record publishes: C{fixed} for the meter's EA/EB,
    else C{state} (power and currents) and C{energy} (the counters), each
    only when the record carries them.

    @param when: the epoch seconds the service took the record (C{time}).
    @return: C{[(topic suffix, payload dict)]}.
    """
    stamp = round(when, 3)
    out = []
    if record.get("kind") == "fixed":
        payload = {name: record.get(name) for name in FIELDS["fixed"]}
        payload["meter_time"] = _aware_meter_time(record.get("meter_time"))
        payload["time"] = stamp
        out.append(("fixed", payload))
        return out
    if any(name in record for name in _INSTANT):
        payload = {name: record.get(name) for name in _INSTANT}
        payload["time"] = stamp
        out.append(("state", payload))
    if any(name in record for name in _ENERGY):
        payload = {name: record.get(name) for name in _ENERGY}
        payload["time"] = stamp
        out.append(("energy", payload))
    return out


def link_payload(state: LinkState, age: Optional[float], polls_failed: int) -> dict:
    """
    The link's health as the C{link} topic carries it (without its C{time}).

    @param age: seconds since the newest reading, or C{None} before the first.
    """
    values = (state.session.value, bool(state.session_up), bool(state.rate_limited), state.held,
              state.last_rssi, state.last_lqi, None if age is None else round(age, 1),
              polls_failed, None if state.last_event is None else f"{state.last_event:02X}")
    return dict(zip(_LINK, values, strict=True))


def bill_payload(figures: dict, when: float) -> Optional[dict]:
    """
    The C{bill} topic's payload from the bill's figures (by their /metrics
    names), or C{None} without them.  A value the service does not know is
    C{null}, never 0.
    """
    start = figures.get("smartmeter_bill_period_start_timestamp_seconds")
    if start is None:
        return None
    payload = {key: figures.get(_BILL_FIGURES.get(key, "")) for key in _BILL}
    payload["period_start"] = datetime.datetime.fromtimestamp(start, JST).isoformat()
    ratio = figures.get("smartmeter_contract_load_ratio")
    payload["contract_load_pct"] = None if ratio is None else round(ratio * 100, 1)
    near = figures.get("smartmeter_breaker_near_limit")
    payload["near_limit"] = None if near is None else bool(near)
    payload["time"] = round(when, 3)
    return payload


def _bill_entities(contract: bool) -> list:
    """
    The entities of the C{bill} topic.  The period's kWh has no state class:
    it is the meter's record again, and as one HA would offer it in its
    Energy dashboard beside the counter (counting the energy twice).  The
    period's yen is a total that restarts at the period's start.
    """
    out = [
        ("bill_energy", "sensor", "Energy bought this billing period", "bill",
         _value("energy_kwh"), dict(unit_of_measurement="kWh", device_class="energy")),
        ("bill_cost", "sensor", "Bill this period", "bill", _value("cost_yen"),
         dict(unit_of_measurement="JPY", device_class="monetary", state_class="total",
              last_reset_value_template=_value("period_start"))),
        ("price", "sensor", "Price of a kWh now", "bill", _value("price_yen_per_kwh"),
         dict(unit_of_measurement="JPY/kWh")),
    ]
    if contract:
        out += [
            ("contract_load", "sensor", "Load of the contract", "bill",
             _value("contract_load_pct"),
             dict(unit_of_measurement="%", state_class="measurement")),
            ("breaker_near_limit", "binary_sensor", "Near the breaker limit", "bill",
             _on("near_limit"), dict(device_class="problem")),
        ]
    return out


def _value(name: str) -> str:
    return "{{ value_json.%s }}" % name


def _on(name: str) -> str:
    return "{{ 'ON' if value_json.%s else 'OFF' }}" % name


def _entities(expire: int) -> list:
    """
    Every Home Assistant entity: C{(key, component, name, topic suffix,
    value template, extra config)}.
    """
    energy = dict(unit_of_measurement="kWh", device_class="energy",
                  state_class="total_increasing")
    # The meter's counters as it recorded them at the last :00 or :30 (EA/EB)
    # arrive after that boundary: with a state class HA would book each half
    # hour's energy in the wrong hour, and offer a second candidate per
    # direction in its Energy dashboard.  Without one it does neither.
    half_hour = dict(unit_of_measurement="kWh", device_class="energy")
    return [
        ("power", "sensor", "Power", "state", _value("power_w"),
         dict(unit_of_measurement="W", device_class="power", state_class="measurement",
              expire_after=expire)),
        ("current_r", "sensor", "Current R", "state", _value("current_r_a"),
         dict(unit_of_measurement="A", device_class="current", state_class="measurement",
              expire_after=expire)),
        ("current_t", "sensor", "Current T", "state", _value("current_t_a"),
         dict(unit_of_measurement="A", device_class="current", state_class="measurement",
              expire_after=expire)),
        ("energy_bought", "sensor", "Energy bought", "energy", _value("energy_normal_kwh"),
         energy),
        ("energy_sold", "sensor", "Energy sold", "energy", _value("energy_reverse_kwh"),
         energy),
        ("energy_bought_half_hour", "sensor", "Energy bought at the half hour", "fixed",
         _value("energy_normal_kwh"), half_hour),
        ("energy_sold_half_hour", "sensor", "Energy sold at the half hour", "fixed",
         _value("energy_reverse_kwh"), half_hour),
        ("half_hour_time", "sensor", "Half-hour reading time", "fixed", _value("meter_time"),
         dict(device_class="timestamp")),
        ("rssi", "sensor", "RSSI", "link", _value("rssi_dbm"),
         dict(unit_of_measurement="dBm", device_class="signal_strength",
              state_class="measurement", entity_category="diagnostic")),
        ("lqi", "sensor", "LQI", "link", _value("lqi"),
         dict(state_class="measurement", entity_category="diagnostic")),
        ("session", "binary_sensor", "Session", "link", _on("session_up"),
         dict(device_class="connectivity", entity_category="diagnostic")),
        ("rate_limited", "binary_sensor", "Rate limited", "link", _on("rate_limited"),
         dict(device_class="problem", entity_category="diagnostic")),
        ("reading_age", "sensor", "Reading age", "link", _value("reading_age_s"),
         dict(unit_of_measurement="s", device_class="duration", state_class="measurement",
              entity_category="diagnostic")),
        ("polls_failed", "sensor", "Polls failed", "link", _value("polls_failed"),
         dict(state_class="total_increasing", entity_category="diagnostic")),
    ]


def discovery_configs(discovery_prefix: str, topic_prefix: str, mid: str,
                      identity: Optional[dict], interval: float, version: str,
                      bill: Optional[bool] = None) -> dict:
    """
    The Home Assistant discovery configs of meter C{mid}.

    @param identity: who the meter is (L{BRouteClient.identity}: maker code
        and name, serial), or C{None}.
    @param interval: seconds between two polls: a power state older than three
        of them expires in Home Assistant.
    @param version: this software's version, for HA's C{origin}.
    @param bill: with C{--tariff}: C{False}, the bill's entities; C{True},
        those of an ampere contract too.
    @return: C{{config topic: payload dict}}.
    """
    identity = identity or {}
    maker = identity.get("maker")
    manufacturer = identity.get("maker_name") or (f"ECHONET maker code {maker}" if maker
                                                   else "unknown maker")
    device = {"identifiers": [f"smartmeter_tx_{mid}"], "name": meter_name(mid),
              "manufacturer": manufacturer, "model": MODEL}
    if identity.get("serial"):
        device["serial_number"] = identity["serial"]
    origin = {"name": "smartmeter_tx", "sw_version": version}
    expire = int(math.ceil(3 * float(interval)))
    avail = f"{topic_prefix}/{mid}/availability"
    configs = {}
    entities = _entities(expire) + ([] if bill is None else _bill_entities(bill))
    for key, component, name, suffix, template, extra in entities:
        unique = _unique_id(mid, key)
        payload = {"name": name, "unique_id": unique, "object_id": unique,
                   "state_topic": f"{topic_prefix}/{mid}/{suffix}", "value_template": template,
                   "availability_topic": avail, "payload_available": "online",
                   "payload_not_available": "offline", "qos": 1,
                   "device": device, "origin": origin}
        payload.update(extra)
        if key == "session" and maker:
            # The raw 8A code stays visible, as an attribute of the link's
            # session entity (the device registry has no field for it).
            payload["json_attributes_topic"] = payload["state_topic"]
            payload["json_attributes_template"] = json.dumps({"maker_code": maker})
        configs[_config_topic(discovery_prefix, component, unique)] = payload
    return configs


def _unique_id(mid: str, key: str) -> str:
    return f"smartmeter_tx_{mid}_{key}"


def _config_topic(discovery_prefix: str, component: str, unique: str) -> str:
    return f"{discovery_prefix}/{component}/{unique}/config"


#: The entities of versions before the MAC became the one id and the
#: energy entities were named bought and sold: C{(component, key)}.
_EARLIER_ENTITIES = tuple(("sensor", key) for key in (
    "power", "current_r", "current_t", "energy_normal", "energy_reverse", "fixed_energy_normal",
    "fixed_energy_reverse", "fixed_time", "rssi", "lqi", "reading_age", "polls_failed")) + (
    ("binary_sensor", "session"), ("binary_sensor", "rate_limited"))


def earlier_topics(discovery_prefix: Optional[str], topic_prefix: str,
                   identity: Optional[dict]) -> tuple:
    """
    What an earlier version published for this meter, retained, that this
    one does not: its discovery configs (the unique ids under
    L{earlier_meter_id} and the old keys) and its states under that id.

    @param discovery_prefix: C{None} without discovery (the states only).
    @return: C{(earlier id, [topic])}; C{(None, [])} while the meter is not known.
    """
    mid, old = meter_id(identity), earlier_meter_id(identity)
    if mid is None or old is None:
        return None, []
    topics = []
    if discovery_prefix is not None:
        current = {_config_topic(discovery_prefix, component, _unique_id(mid, key))
                   for key, component, *_ in _entities(0)}
        topics += [t for t in (_config_topic(discovery_prefix, component, _unique_id(old, key))
                               for component, key in _EARLIER_ENTITIES) if t not in current]
    if old != mid:
        # (The bill topic came after the ids changed: no earlier version had it.)
        topics += [f"{topic_prefix}/{old}/{suffix}"
                   for suffix in ("availability", *FIELDS) if suffix != "bill"]
    return old, topics
