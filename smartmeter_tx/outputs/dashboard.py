"""
The dashboard page at C{/}: the power now, today's power curve, the last 48
hours of 30-minute energy, today's and this month's kWh, and the link's
health, as one self-contained HTML page (no script, font or style from
elsewhere: a Pi may be offline), its charts drawn here as inline SVG.

Pure: no Twisted, no I/O.  L{snapshot} copies what the page shows out of a
poller (its store, link state and backfill) into plain data; L{render} turns
that into the page; L{language} picks Japanese or English from an
C{Accept-Language} header.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from decimal import Decimal
from html import escape
from typing import TYPE_CHECKING, Optional

from smartmeter_tx.model import JST, SLOT, Absent, slot_range, slot_start

if TYPE_CHECKING:  # the view's module imports Twisted; the page is pure
    from smartmeter_tx.service.view import ServiceView

__all__ = ["Snapshot", "Slot", "snapshot", "render", "language", "period_energy",
           "REFRESH", "TEXT"]

#: Seconds between the page's own reloads.
REFRESH = 30
#: A reading older than this is shown as stale.
STALE_AGE = 120.0
#: A pause between two readings longer than this breaks the power curve.
CURVE_GAP = 300.0
#: The energy chart's span.
BARS_SPAN = datetime.timedelta(hours=48)


# -- plain data --------------------------------------------------------------------


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


@dataclass
class Snapshot:
    """
    What the page shows, as plain values: C{None} wherever a value is not
    known (never 0 in its place).

    @ivar now: the wall clock (epoch seconds).
    @ivar curve: C{[(epoch seconds, watts or None)]} of today (JST), oldest
        first; C{None} where the meter marked the power absent.
    @ivar slots: the L{Slot}s of the last 48 hours, oldest first.
    @ivar today, month: C{{"normal": (kWh, as of) or None, "reverse": ...}}.
    """

    now: float
    power_w: Optional[int] = None
    current_r_a: Optional[Decimal] = None
    current_t_a: Optional[Decimal] = None
    reading_time: Optional[float] = None
    curve: list = field(default_factory=list)
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

    @property
    def age(self) -> Optional[float]:
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


def snapshot(view: "ServiceView", now: float) -> Snapshot:
    """
    Copy what the page shows out of the service's C{view} (its store, link
    state, backfill and clock) at wall-clock C{now}.
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
    now_jst = snap.now_jst
    midnight = now_jst.replace(hour=0, minute=0, second=0, microsecond=0)
    since = midnight.timestamp()
    snap.curve = [(when, _value(reading.power_w)) for when, reading in store.recent
                  if since <= when <= now and reading.power_w is not None]

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
    return snap


# -- language ----------------------------------------------------------------------


def language(accept_language: Optional[str], choice: Optional[str] = None) -> str:
    """
    C{"ja"} or C{"en"}: C{choice} (a C{?lang=} parameter) when it names one,
    else the first of those two in C{accept_language} by preference (q),
    else English.
    """
    if choice in TEXT:
        return choice
    ranked = []
    for n, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if q > 0 and primary in TEXT:
            ranked.append((-q, n, primary))
    return min(ranked)[2] if ranked else "en"


TEXT = {
    "en": {
        "title": "Smart meter",
        "power_now": "Power now",
        "buying": "buying",
        "selling": "selling",
        "current": "Current",
        "no_reading": "No reading yet",
        "today": "Today",
        "month": "This month",
        "bought": "Bought",
        "sold": "Sold",
        "until": "until {}",
        "curve": "Power today",
        "curve_desc": "Power from midnight to now, {n} readings; {range}.",
        "curve_empty": "No readings today yet.",
        "bars": "Energy per 30 minutes, last 48 hours",
        "bars_desc": "{n} slots of 30 minutes, {gaps} without data; bought above the line, "
                     "sold below.",
        "no_data": "no data",
        "not_logged": "not logged yet",
        "no_backfill": "The 30-minute record needs --data-log with --backfill-days.",
        "link": "Link",
        "session": "Session",
        "session_up": "up",
        "session_down": "down",
        "session_unknown": "unknown",
        "since": "since {}",
        "held": "Sends held",
        "last_event": "Last EVENT",
        "rssi": "RSSI / LQI",
        "rate_limit": "Transmit-time limit",
        "limited": "active (EVENT 32)",
        "not_limited": "no",
        "age": "Reading age",
        "stale": "stale",
        "ago": "{} ago",
        "rejoins": "Rejoins (last hour)",
        "updated": "Updated {} JST · reloads every {} s",
        "lang_other": "日本語",
        "seconds": "{} s",
        "minutes": "{} min",
        "hours": "{} h {} min",
        "days": "{} d {} h",
        "w": "W",
        "kwh": "kWh",
    },
    "ja": {
        "title": "スマートメーター",
        "power_now": "現在の電力",
        "buying": "買電中",
        "selling": "売電中",
        "current": "電流",
        "no_reading": "まだ計測値がありません",
        "today": "今日",
        "month": "今月",
        "bought": "買電",
        "sold": "売電",
        "until": "{}まで",
        "curve": "今日の電力",
        "curve_desc": "0時から現在までの電力、計測{n}件、{range}。",
        "curve_empty": "今日の計測値はまだありません。",
        "bars": "30分ごとの電力量（過去48時間）",
        "bars_desc": "30分枠{n}個、うちデータなし{gaps}個。線より上が買電、下が売電。",
        "no_data": "データなし",
        "not_logged": "未記録",
        "no_backfill": "30分ごとの記録には --data-log と --backfill-days が必要です。",
        "link": "通信状態",
        "session": "セッション",
        "session_up": "接続中",
        "session_down": "切断",
        "session_unknown": "不明",
        "since": "{}から",
        "held": "送信保留",
        "last_event": "最後のEVENT",
        "rssi": "RSSI / LQI",
        "rate_limit": "送信時間制限",
        "limited": "制限中（EVENT 32）",
        "not_limited": "なし",
        "age": "計測からの経過",
        "stale": "古い",
        "ago": "{}前",
        "rejoins": "再接続（過去1時間）",
        "updated": "{} JST 更新・{}秒ごとに再読込",
        "lang_other": "English",
        "seconds": "{}秒",
        "minutes": "{}分",
        "hours": "{}時間{}分",
        "days": "{}日{}時間",
        "w": "W",
        "kwh": "kWh",
    },
}

DASH = "—"


# -- formatting --------------------------------------------------------------------


def _watts(value) -> str:
    return DASH if value is None else f"{value:,}".replace("-", "−")


def _kwh(value) -> str:
    return DASH if value is None else f"{value:,.2f}"


def _amps(value) -> str:
    return DASH if value is None else f"{value:.1f} A"


def _duration(seconds: Optional[float], t: dict) -> str:
    if seconds is None:
        return DASH
    s = int(seconds)
    if s < 120:
        return t["seconds"].format(s)
    if s < 3600:
        return t["minutes"].format(s // 60)
    if s < 86400:
        return t["hours"].format(s // 3600, s % 3600 // 60)
    return t["days"].format(s // 86400, s % 86400 // 3600)


def _hhmm(when) -> str:
    if isinstance(when, (int, float)):
        when = datetime.datetime.fromtimestamp(when, JST)
    return when.astimezone(JST).strftime("%H:%M")


def _attr(value) -> str:
    return "" if value is None else escape(str(value), quote=True)


def _nice_step(span: float, lines: int = 4) -> float:
    """A round grid step (1, 2 or 5 times a power of ten) giving about C{lines} lines."""
    raw = max(span / lines, 1e-9)
    exp = Decimal(str(raw)).adjusted()
    base = 10.0 ** exp
    for m in (1, 2, 5, 10):
        if m * base >= raw:
            return m * base
    return 10 * base


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


# -- charts ------------------------------------------------------------------------

W, H = 360, 190
LEFT, RIGHT, TOP, BOTTOM = 38, 14, 10, 24


def _power_label(watts: float) -> str:
    if abs(watts) >= 1000:
        return f"{_num(watts / 1000)} kW".replace("-", "−")
    return f"{int(watts)} W".replace("-", "−")


def curve_svg(snap: Snapshot, t: dict) -> str:
    """Today's power, midnight to midnight (JST), as an inline SVG."""
    midnight = snap.now_jst.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    values = [w for _, w in snap.curve if w is not None]
    low = min([0] + values)
    high = max([500] + values)
    step = _nice_step(high - low)
    low = step * (low // step)
    high = step * -(-high // step)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(when):
        return LEFT + pw * (when - midnight) / 86400

    def y(watts):
        return TOP + ph * (high - watts) / (high - low)

    parts = []
    grid = low
    while grid <= high + step / 2:
        gy = y(grid)
        cls = "zero" if grid == 0 else "grid"
        parts.append(f'<line class="{cls}" x1="{LEFT}" x2="{W - RIGHT}" y1="{gy:.1f}" '
                     f'y2="{gy:.1f}"/>')
        parts.append(f'<text class="ylab" x="{LEFT - 4}" y="{gy + 3.5:.1f}">'
                     f'{escape(_power_label(grid))}</text>')
        grid += step
    for hour in range(0, 25, 6):
        gx = LEFT + pw * hour / 24
        parts.append(f'<line class="tick" x1="{gx:.1f}" x2="{gx:.1f}" y1="{TOP}" '
                     f'y2="{H - BOTTOM}"/>')
        parts.append(f'<text class="xlab" x="{gx:.1f}" y="{H - BOTTOM + 14}">{hour}:00</text>')
    # The curve: one path, broken where a reading is absent or readings paused.
    segments, current, last = [], [], None
    for when, watts in snap.curve:
        if watts is None or (last is not None and when - last > CURVE_GAP):
            if current:
                segments.append(current)
            current = []
        if watts is not None:
            current.append((x(when), y(watts)))
        last = when
    if current:
        segments.append(current)
    zero = y(0)
    for seg in segments:
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in seg)
        area = (f"{seg[0][0]:.1f},{zero:.1f} " + line + f" {seg[-1][0]:.1f},{zero:.1f}")
        parts.append(f'<polygon class="area" points="{area}"/>')
        parts.append(f'<polyline class="line" points="{line}"/>')
    nx = x(snap.now)
    parts.append(f'<line class="now" x1="{nx:.1f}" x2="{nx:.1f}" y1="{TOP}" y2="{H - BOTTOM}"/>')
    if values:
        rng = f"{_power_label(min(values))} … {_power_label(max(values))}"
        desc = t["curve_desc"].format(n=len(values), range=rng)
    else:
        desc = t["curve_empty"]
        parts.append(f'<text class="empty" x="{LEFT + pw / 2:.1f}" y="{TOP + ph / 2:.1f}">'
                     f'{escape(t["curve_empty"])}</text>')
    return (f'<svg id="power-curve" viewBox="0 0 {W} {H}" role="img" '
            f'aria-labelledby="power-curve-title power-curve-desc" '
            f'data-points="{len(values)}" data-segments="{len(segments)}" '
            f'data-min="{_attr(min(values) if values else None)}" '
            f'data-max="{_attr(max(values) if values else None)}">'
            f'<title id="power-curve-title">{escape(t["curve"])}</title>'
            f'<desc id="power-curve-desc">{escape(desc)}</desc>'
            + "".join(parts) + "</svg>")


def bars_svg(snap: Snapshot, t: dict) -> str:
    """The last 48 h of 30-minute energy, bought up and sold down, as an inline SVG."""
    slots = snap.slots
    normals = [s.normal for s in slots if s.normal is not None]
    reverses = [s.reverse for s in slots if s.reverse is not None]
    top = float(max(normals, default=0) or 0)
    bottom = float(max(reverses, default=0) or 0)
    top = max(top, 0.1)
    span = top + bottom
    step = _nice_step(span, 4)
    top = step * -(-top // step)
    bottom = step * -(-bottom // step) if bottom > 0 else 0.0
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    scale = ph / (top + bottom)
    zero = TOP + top * scale
    n = max(len(slots), 1)
    bw = pw / n
    parts = ['<defs><pattern id="gap-hatch" width="4" height="4" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><rect class="hatch-bg" width="4" height="4"/>'
             '<line class="hatch" x1="0" y1="0" x2="0" y2="4"/></pattern></defs>']
    grid = -bottom
    while grid <= top + step / 2:
        gy = zero - grid * scale
        cls = "zero" if abs(grid) < step / 1000 else "grid"
        parts.append(f'<line class="{cls}" x1="{LEFT}" x2="{W - RIGHT}" y1="{gy:.1f}" '
                     f'y2="{gy:.1f}"/>')
        parts.append(f'<text class="ylab" x="{LEFT - 4}" y="{gy + 3.5:.1f}">'
                     f'{_num(abs(grid))}</text>')
        grid += step
    gaps = 0
    for i, slot in enumerate(slots):
        bx = LEFT + i * bw
        label = slot.start.strftime("%m-%d %H:%M")
        if slot.state != "ok":
            gaps += 1
            why = t["no_data"] if slot.state == "nodata" else t["not_logged"]
            parts.append(
                f'<g class="slot gap" data-slot="{_attr(slot.start.isoformat())}" '
                f'data-state="{slot.state}" data-normal="" data-reverse="">'
                f'<title>{escape(label)}: {escape(why)}</title>'
                f'<rect class="gap" x="{bx:.2f}" y="{TOP}" width="{bw:.2f}" height="{ph}"/></g>')
            continue
        hn = float(slot.normal) * scale
        hr = float(slot.reverse) * scale
        text = f"{label}: {t['bought']} {_kwh(slot.normal)} kWh"
        if slot.reverse:
            text += f", {t['sold']} {_kwh(slot.reverse)} kWh"
        parts.append(
            f'<g class="slot" data-slot="{_attr(slot.start.isoformat())}" data-state="ok" '
            f'data-normal="{_attr(slot.normal)}" data-reverse="{_attr(slot.reverse)}">'
            f'<title>{escape(text)}</title>'
            + (f'<rect class="normal" x="{bx + bw * 0.1:.2f}" y="{zero - hn:.2f}" '
               f'width="{bw * 0.8:.2f}" height="{hn:.2f}"/>' if hn > 0 else "")
            + (f'<rect class="reverse" x="{bx + bw * 0.1:.2f}" y="{zero:.2f}" '
               f'width="{bw * 0.8:.2f}" height="{hr:.2f}"/>' if hr > 0 else "")
            + "</g>")
    for i, slot in enumerate(slots):
        if slot.start.hour % 12 == 0 and slot.start.minute == 0:
            gx = LEFT + i * bw
            cls = "day" if slot.start.hour == 0 else "tick"
            text = slot.start.strftime("%m/%d") if slot.start.hour == 0 else "12:00"
            parts.append(f'<line class="{cls}" x1="{gx:.1f}" x2="{gx:.1f}" y1="{TOP}" '
                         f'y2="{H - BOTTOM}"/>')
            parts.append(f'<text class="xlab" x="{gx:.1f}" y="{H - BOTTOM + 14}">'
                         f'{escape(text)}</text>')
    desc = t["bars_desc"].format(n=len(slots), gaps=gaps)
    return (f'<svg id="energy-bars" viewBox="0 0 {W} {H}" role="img" '
            f'aria-labelledby="energy-bars-title energy-bars-desc" '
            f'data-slots="{len(slots)}" data-gaps="{gaps}">'
            f'<title id="energy-bars-title">{escape(t["bars"])}</title>'
            f'<desc id="energy-bars-desc">{escape(desc)}</desc>'
            + "".join(parts) + "</svg>")


# -- the page ----------------------------------------------------------------------

CSS = """
:root{--bg:#f4f5f7;--card:#fff;--fg:#1b1f24;--muted:#5f6b7a;--line:#d9dde3;
--buy:#e8590c;--sell:#2b8a3e;--curve:#1c7ed6;--gap:#adb5bd;--warn:#c92a2a;--ok:#2b8a3e}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1b1f24;--fg:#e9ecef;
--muted:#9aa5b1;--line:#343a40;--buy:#ff922b;--sell:#51cf66;--curve:#4dabf7;--gap:#868e96;
--warn:#ff6b6b;--ok:#51cf66}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:16px/1.4 system-ui,-apple-system,"Segoe UI","Hiragino Sans","Noto Sans CJK JP",
"Yu Gothic",sans-serif}
header,main,footer{max-width:980px;margin:0 auto;padding:0 12px}
header{display:flex;justify-content:space-between;align-items:baseline;padding-top:12px}
h1{font-size:1.15rem;margin:0}
h2{font-size:.95rem;margin:0 0 6px;color:var(--muted);font-weight:600}
a{color:var(--curve)}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:12px;
padding-top:10px;padding-bottom:10px}
section{background:var(--card);border-radius:12px;padding:12px 14px;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
#power-now{font-size:3.4rem;font-weight:700;line-height:1.1;font-variant-numeric:tabular-nums}
#power-now .unit{font-size:1.4rem;font-weight:600;margin-left:.2em;color:var(--muted)}
#power-now.selling{color:var(--sell)}
.direction{font-size:.9rem;color:var(--muted)}
.sub{color:var(--muted);font-size:.9rem;font-variant-numeric:tabular-nums}
.totals{display:grid;grid-template-columns:auto 1fr 1fr;gap:4px 12px;align-items:baseline}
.totals .kwh{font-size:1.5rem;font-weight:700;font-variant-numeric:tabular-nums;white-space:nowrap}
.totals .kwh small{font-size:.8rem;font-weight:400;color:var(--muted)}
.totals .head{color:var(--muted);font-size:.85rem}
.buy{color:var(--buy)}.sell{color:var(--sell)}
.asof{display:block;font-size:.75rem;color:var(--muted);font-weight:400}
svg{width:100%;height:auto;display:block}
svg text{font-size:10px;fill:var(--muted)}
svg .ylab{text-anchor:end}svg .xlab{text-anchor:middle}
svg .empty{text-anchor:middle;font-size:12px}
svg .grid,svg .tick{stroke:var(--line);stroke-width:.6}
svg .day{stroke:var(--muted);stroke-width:.8;stroke-dasharray:2 2}
svg .zero{stroke:var(--muted);stroke-width:.8}
svg .line{fill:none;stroke:var(--curve);stroke-width:1.4;stroke-linejoin:round}
svg .area{fill:var(--curve);opacity:.15}
svg .now{stroke:var(--buy);stroke-width:.8;stroke-dasharray:3 2}
svg rect.normal{fill:var(--buy)}svg rect.reverse{fill:var(--sell)}
svg rect.gap{fill:url(#gap-hatch)}svg g[data-state=missing] rect.gap{opacity:.45}
svg .hatch-bg{fill:var(--card)}svg .hatch{stroke:var(--gap);stroke-width:1.5}
.legend{font-size:.8rem;color:var(--muted);margin-top:4px}
.legend i{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin:0 .3em 0 .8em;
vertical-align:-1px}
.legend .lg-buy{background:var(--buy)}.legend .lg-sell{background:var(--sell)}
.legend .lg-gap{
background:repeating-linear-gradient(45deg,var(--gap) 0 1.5px,transparent 1.5px 4px);
border:1px solid var(--line)}
dl{display:grid;grid-template-columns:auto 1fr;gap:4px 12px;margin:0}
dt{color:var(--muted)}dd{margin:0;font-variant-numeric:tabular-nums}
.bad{color:var(--warn);font-weight:600}.good{color:var(--ok);font-weight:600}
footer{color:var(--muted);font-size:.8rem;padding-bottom:16px}
footer a{margin-right:.8em}
@media (max-width:420px){#power-now{font-size:2.8rem}.totals .kwh{font-size:1.25rem}}
"""


def _total_cell(value, t: dict, cls: str) -> str:
    if value is None:
        return f'<span class="kwh {cls}" data-value="">{DASH}</span>'
    kwh, as_of = value
    return (f'<span class="kwh {cls}" data-value="{_attr(kwh)}">{escape(_kwh(kwh))} '
            f'<small>kWh</small><span class="asof">{escape(t["until"].format(_hhmm(as_of)))}'
            f'</span></span>')


def render(snap: Snapshot, lang: str = "en") -> str:
    """The whole page, in C{lang} (C{"en"} or C{"ja"})."""
    t = TEXT.get(lang, TEXT["en"])
    other = "ja" if lang == "en" else "en"
    # The power now.
    if snap.reading_time is None:
        power_html = (f'<div id="power-now" data-value="">{DASH}</div>'
                      f'<div class="sub" id="power-note">{escape(t["no_reading"])}</div>')
    else:
        cls = "selling" if snap.power_w is not None and snap.power_w < 0 else ""
        direction = ("" if snap.power_w is None or snap.power_w == 0 else
                     t["selling"] if snap.power_w < 0 else t["buying"])
        power_html = (
            f'<div id="power-now" class="{cls}" data-value="{_attr(snap.power_w)}" '
            f'aria-label="{escape(t["power_now"])}: {escape(_watts(snap.power_w))} W">'
            f'{escape(_watts(snap.power_w))}<span class="unit">W</span></div>'
            f'<div class="direction">{escape(direction)}</div>'
            f'<div class="sub" id="currents" data-r="{_attr(snap.current_r_a)}" '
            f'data-t="{_attr(snap.current_t_a)}">{escape(t["current"])} '
            f'R {escape(_amps(snap.current_r_a))} / T {escape(_amps(snap.current_t_a))}</div>'
            f'<div class="sub" id="power-age">{escape(t["ago"].format(_duration(snap.age, t)))}'
            f'</div>')
    # Today and this month.
    rows = [f'<span></span><span class="head">{escape(t["bought"])}</span>'
            f'<span class="head">{escape(t["sold"])}</span>']
    for key, values in (("today", snap.today), ("month", snap.month)):
        rows.append(f'<span class="head">{escape(t[key])}</span>'
                    + _total_cell(values.get("normal"), t, "buy").replace(
                        'class="kwh', f'id="{key}-normal" class="kwh', 1)
                    + _total_cell(values.get("reverse"), t, "sell").replace(
                        'class="kwh', f'id="{key}-reverse" class="kwh', 1))
    totals = '<div class="totals" id="totals">' + "".join(rows) + "</div>"
    if not snap.backfill:
        totals += f'<p class="sub">{escape(t["no_backfill"])}</p>'
    # The link.
    session_cls = "good" if snap.session == "up" else "bad"
    session = escape(t.get(f"session_{snap.session}", snap.session))
    if snap.session == "up" and snap.session_since is not None:
        session += " " + escape(t["since"].format(_hhmm(snap.session_since)))
    age = snap.age
    stale = age is not None and age > STALE_AGE
    age_text = escape(_duration(age, t)) + (f' <span class="bad">({escape(t["stale"])})</span>'
                                            if stale else "")
    rssi = DASH if snap.rssi is None else f"{snap.rssi:.0f} dBm"
    lqi = DASH if snap.lqi is None else str(snap.lqi)
    link = [
        ("session", t["session"], f'<span class="{session_cls}">{session}</span>',
         snap.session),
        ("rate-limit", t["rate_limit"],
         f'<span class="bad">{escape(t["limited"])}</span>' if snap.rate_limited
         else escape(t["not_limited"]), "1" if snap.rate_limited else "0"),
        ("last-event", t["last_event"],
         DASH if snap.last_event is None else escape(f"{snap.last_event:02X}"),
         "" if snap.last_event is None else f"{snap.last_event:02X}"),
        ("rssi", t["rssi"], escape(f"{rssi} / {lqi}"), "" if snap.rssi is None else snap.rssi),
        ("age", t["age"], age_text, "" if age is None else round(age)),
        ("rejoins", t["rejoins"],
         DASH if snap.rejoins_last_hour is None else str(snap.rejoins_last_hour),
         snap.rejoins_last_hour),
    ]
    if snap.held:
        link.insert(1, ("held", t["held"], f'<span class="bad">{escape(snap.held)}</span>',
                        snap.held))
    link_html = "<dl>" + "".join(
        f'<dt>{escape(label)}</dt><dd id="link-{key}" data-value="{_attr(value)}">{html}</dd>'
        for key, label, html, value in link) + "</dl>"
    legend = (f'<div class="legend"><i class="lg-buy"></i>{escape(t["bought"])}'
              f'<i class="lg-sell"></i>{escape(t["sold"])}'
              f'<i class="lg-gap"></i>{escape(t["no_data"])}</div>')
    page_title = (t["title"] if snap.power_w is None
                  else f"{_watts(snap.power_w)} W · {t['title']}")
    updated = t["updated"].format(snap.now_jst.strftime("%Y-%m-%d %H:%M"), REFRESH)
    return f"""<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH}">
<meta name="color-scheme" content="light dark">
<title>{escape(page_title)}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{escape(t["title"])}</h1>
<a id="lang" href="?lang={other}" hreflang="{other}" lang="{other}">{escape(t["lang_other"])}</a>
</header>
<main>
<section id="now" aria-label="{escape(t["power_now"])}"><h2>{escape(t["power_now"])}</h2>
{power_html}</section>
<section id="energy" aria-label="{escape(t["today"])} / {escape(t["month"])}">
<h2>{escape(t["today"])} / {escape(t["month"])} (kWh)</h2>{totals}</section>
<section id="curve" aria-label="{escape(t["curve"])}"><h2>{escape(t["curve"])}</h2>
{curve_svg(snap, t)}</section>
<section id="bars" aria-label="{escape(t["bars"])}"><h2>{escape(t["bars"])} (kWh)</h2>
{bars_svg(snap, t)}{legend}</section>
<section id="link" aria-label="{escape(t["link"])}"><h2>{escape(t["link"])}</h2>
{link_html}</section>
</main>
<footer><p id="updated">{escape(updated)}</p>
<p><a href="latest">/latest</a><a href="history">/history</a><a href="metrics">/metrics</a></p>
</footer>
</body>
</html>
"""
