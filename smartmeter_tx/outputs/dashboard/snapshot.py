"""
What the dashboard shows, copied out of the service's view into plain data
(L{Snapshot}), and the energy of a period from the logged slots and the newest
counters (L{period_energy}).

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Callable, Optional

from smartmeter_tx.model import JST, SLOT, Absent, slot_range, slot_start

if TYPE_CHECKING:  # the view's module imports Twisted; the page is pure
    from smartmeter_tx.service.view import ServiceView

__all__ = ["Slot", "Snapshot", "snapshot", "period_energy", "slot_steps", "BARS_SPAN"]

#: The energy chart's span.
BARS_SPAN = datetime.timedelta(hours=48)
#: A slot's kWh to its average watts: 1000 W a kW, over half an hour.
SLOT_WATTS = 2000


@dataclass(frozen=True)
class Slot:
    """
    One 30-minute slot of the energy chart.

    @ivar state: C{"ok"} (both energies known), C{"nodata"} (the meter has no
        value for it) or C{"missing"} (not logged yet).
    """

    start: datetime.datetime
    normal: Optional[Decimal]
    reverse: Optional[Decimal]
    state: str
    #: Under a time-of-use tariff: the index of the slot's band.
    band: Optional[int] = None


@dataclass
class Snapshot:
    """
    What the page shows, as plain values: C{None} wherever a value is not
    known (never 0 in its place).

    @ivar now: the wall clock (epoch seconds).
    @ivar curve: C{[(epoch seconds, watts or None)]} of today (JST), oldest
        first; C{None} where the meter marked the power absent.
    @ivar steps: the meter's own record of today (L{slot_steps}).
    @ivar slots: the L{Slot}s of the last 48 hours, oldest first.
    @ivar today, month: C{{"normal": (kWh, as of) or None, "reverse": ...}}.
    """

    now: float
    power_w: Optional[int] = None
    current_r_a: Optional[Decimal] = None
    current_t_a: Optional[Decimal] = None
    reading_time: Optional[float] = None
    curve: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    slots: list = field(default_factory=list)
    today: dict = field(default_factory=dict)
    month: dict = field(default_factory=dict)
    session: str = "unknown"
    session_since: Optional[float] = None  # wall-clock epoch seconds
    held: Optional[str] = None
    rate_limited: bool = False
    last_event: Optional[int] = None
    rssi: Optional[float] = None
    lqi: Optional[int] = None
    rejoins_last_hour: Optional[int] = None
    backfill: bool = False
    #: Home Assistant's statistics: (the newest hour it has, connected), or
    #: C{None} without an importer.
    ha: Optional[tuple] = None
    #: The current billing period's figures by name (C{--tariff}), or C{None}.
    bill: Optional[dict] = None
    #: An ampere contract: C{(amperes, the larger phase's share or None, near
    #: its limit or None)}, or C{None}.
    contract: Optional[tuple] = None
    #: Under a time-of-use tariff: the bands' names by index, and the band now.
    bands: dict = field(default_factory=dict)
    band_now: Optional[str] = None
    #: why the service's last join failed, until a session is up: its kind
    #: (C{"refused"}, C{"not_found"}, C{"other"}) and its text, or C{None}.
    join_failure: Optional[tuple] = None

    #: the reading's age as the service took it (on its own clock), if known.
    reading_age: Optional[float] = None

    @property
    def age(self) -> Optional[float]:
        """The reading's age: the service's, else from the wall times (a snapshot made by hand)."""
        if self.reading_age is not None:
            return self.reading_age
        return None if self.reading_time is None else max(0.0, self.now - self.reading_time)

    @property
    def now_jst(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.now, JST)


def _value(value):
    """A reading's value, or C{None} when not asked for or marked absent."""
    return None if value is None or isinstance(value, Absent) else value


def _counter_at(slots: dict, t: datetime.datetime, direction: str) -> Optional[Decimal]:
    """The cumulative counter at boundary C{t}, from the slot starting or ending there."""
    slot = slots.get(t)
    if slot is not None:
        value = _value(getattr(slot, f"cumulative_{direction}_kwh"))
        if value is not None:
            return value
    before = slots.get(t - SLOT)
    if before is not None:
        counter = _value(getattr(before, f"cumulative_{direction}_kwh"))
        energy = _value(getattr(before, f"energy_{direction}_kwh"))
        if counter is not None and energy is not None:
            return counter + energy
    return None


def period_energy(slots: dict, start: datetime.datetime, boundary: datetime.datetime,
                  direction: str, latest: Optional[Decimal],
                  latest_at: Optional[datetime.datetime]):
    """
    The energy (C{direction} C{"normal"} or C{"reverse"}) from C{start} to
    now: the sum of the complete slots from C{start} to the last C{boundary},
    plus the running slot (the newest cumulative reading minus the counter at
    C{boundary}) when that can be derived.  From the first slot without data
    (or not logged yet) on, the difference of the meter's counters stands in
    for the sum: the counter at that slot's start against the newer of the
    newest reading and the counter at C{boundary}.

    @param slots: slot start -> L{HistorySlot}.
    @param latest: the newest cumulative reading (kWh) or C{None}.
    @param latest_at: its time (aware).
    @return: C{(kWh, as of)}, or C{None} when not derivable.
    """
    total = Decimal(0)
    t = start
    while t < boundary:
        slot = slots.get(t)
        energy = None if slot is None else _value(getattr(slot, f"energy_{direction}_kwh"))
        if energy is None:
            break
        total += energy
        t += SLOT
    if t >= boundary:
        if latest is not None and latest_at is not None and latest_at >= boundary:
            counter = _counter_at(slots, boundary, direction)
            if counter is not None and latest >= counter:
                return total + latest - counter, latest_at
        return total, boundary
    # A slot without data from t on: bridge it with the counters.
    counter = _counter_at(slots, t, direction)
    if counter is None:
        return None
    ends = []
    if latest is not None and latest_at is not None and latest_at >= t and latest >= counter:
        ends.append((latest_at, latest))
    last = _counter_at(slots, boundary, direction)
    if last is not None and last >= counter:
        ends.append((boundary, last))
    if not ends:
        return None
    at, value = max(ends)  # the newer
    return total + value - counter, at


def slot_steps(slots: list, since: datetime.datetime) -> list:
    """
    The average power of each of C{slots} from C{since} on whose energies
    are both known: bought minus sold, in W.  A slot without data has none.

    @param slots: L{Slot}s, oldest first.
    @return: C{[(slot start in epoch seconds, watts as a Decimal)]}, oldest first.
    """
    return [(slot.start.timestamp(), (slot.normal - slot.reverse) * SLOT_WATTS)
            for slot in slots
            if slot.normal is not None and slot.reverse is not None and slot.start >= since]


def snapshot(view: "ServiceView", now: float, figures: Optional[dict] = None,
             band_of: Optional[Callable[[datetime.datetime], tuple]] = None) -> Snapshot:
    """
    Copy what the page shows out of the service's C{view} (its store, link
    state, backfill and clock) at wall-clock C{now}.

    @param figures: the outputs' figures by name (as on C{/metrics}): the
        Home Assistant importer's say what HA has.
    @param band_of: under a time-of-use tariff, a slot's C{(index, name)} of
        band by its start: the bars are coloured by it.
    """
    store, state = view.store, view.state
    backfill = view.backfill
    snap = Snapshot(now=now)
    latest = store.latest
    if latest is not None:
        snap.power_w = _value(latest.power_w)
        snap.current_r_a = _value(latest.current_r_a)
        snap.current_t_a = _value(latest.current_t_a)
        snap.reading_time = store.latest_time
        snap.reading_age = store.age(view.clock.seconds())
    now_jst = snap.now_jst
    midnight = now_jst.replace(hour=0, minute=0, second=0, microsecond=0)
    since = midnight.timestamp()
    snap.curve = [(when, watts) for when, watts in store.recent if since <= when <= now]

    boundary = slot_start(now_jst)
    slots = dict(backfill.slots) if backfill is not None else {}
    snap.backfill = backfill is not None
    for t in slot_range(boundary - BARS_SPAN, boundary):
        slot = slots.get(t)
        if slot is None:
            snap.slots.append(Slot(t, None, None, "missing"))
        else:
            normal, reverse = _value(slot.energy_normal_kwh), _value(slot.energy_reverse_kwh)
            state_ = "ok" if normal is not None and reverse is not None else "nodata"
            snap.slots.append(Slot(t, normal, reverse, state_))
    snap.steps = slot_steps(snap.slots, midnight)

    energy = store.energy
    energy_at = (None if store.energy_time is None
                 else datetime.datetime.fromtimestamp(store.energy_time, JST))
    month_start = midnight.replace(day=1)
    for direction in ("normal", "reverse"):
        latest_kwh = None if energy is None else _value(getattr(energy, f"energy_{direction}_kwh"))
        for target, start in ((snap.today, midnight), (snap.month, month_start)):
            target[direction] = (None if backfill is None else period_energy(
                slots, start, boundary, direction, latest_kwh, energy_at))

    snap.session = state.session.value
    clock = view.clock
    if state.session_since is not None:
        snap.session_since = now - (clock.seconds() - state.session_since)
    snap.held = state.held
    snap.rate_limited = state.rate_limited
    snap.last_event = state.last_event
    snap.rssi = state.last_rssi
    snap.lqi = state.last_lqi
    snap.rejoins_last_hour = store.rejoins_since(clock.seconds() - 3600)
    if store.join_failure is not None:
        snap.join_failure = (store.join_failure.kind, store.join_failure.text)
    _from_figures(snap, figures or {})
    if band_of is not None:
        _bands(snap, band_of)
    return snap


def _bands(snap: Snapshot, band_of: Callable[[datetime.datetime], tuple]) -> None:
    """Each bar's band, the bands' names, and the band now."""
    slots = []
    for slot in snap.slots:
        index, name = band_of(slot.start)
        snap.bands[index] = name
        slots.append(dataclasses.replace(slot, band=index))
    snap.slots = slots
    index, snap.band_now = band_of(snap.now_jst)
    snap.bands[index] = snap.band_now


def _from_figures(snap: Snapshot, figures: dict) -> None:
    """What the outputs' figures tell the page: the bill, the contract, Home Assistant."""
    if "smartmeter_bill_period_start_timestamp_seconds" in figures:
        snap.bill = {k[len("smartmeter_"):]: v for k, v in figures.items()
                     if k.startswith(("smartmeter_bill_", "smartmeter_price_"))}
    if figures.get("smartmeter_contract_amperes") is not None:
        near = figures.get("smartmeter_breaker_near_limit")
        snap.contract = (figures["smartmeter_contract_amperes"],
                         figures.get("smartmeter_contract_load_ratio"),
                         None if near is None else bool(near))
    if "smartmeter_ha_connected" in figures:
        last = figures.get("smartmeter_ha_last_hour_timestamp_seconds")
        snap.ha = (None if last is None else datetime.datetime.fromtimestamp(last, JST),
                   bool(figures["smartmeter_ha_connected"]))
