"""
The dashboard's two charts as inline SVG: today's power curve and the last 48
hours of 30-minute energy.  Each carries its numbers in C{data-} attributes
and a C{<title>}/C{<desc>} for screen readers.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape

from smartmeter_tx.outputs.dashboard.snapshot import Snapshot
from smartmeter_tx.outputs.dashboard.text import attr, power_label, show_kwh

__all__ = ["curve_svg", "bars_svg"]

W, H = 360, 190
LEFT, RIGHT, TOP, BOTTOM = 38, 14, 10, 24

#: A pause between two readings longer than this breaks the power curve.
CURVE_GAP = 300.0


def _nice_step(span: float, lines: int = 4) -> float:
    """A round grid step (1, 2 or 5 times a power of ten) giving about C{lines} lines."""
    raw = max(span / lines, 1e-9)
    exp = Decimal(str(raw)).adjusted()
    base = 10.0 ** exp
    for m in (1, 2, 5, 10):
        if m * base >= raw:
            return m * base
    return 10 * base


def _decimals(step: float) -> int:
    """Decimal places that tell the ticks of a C{step} grid apart (0.05 -> 2)."""
    return max(0, -Decimal(str(step)).normalize().as_tuple().exponent)


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

    # No scale for a chart without data: its numbers would mean nothing.
    parts = _curve_axes([low + k * step for k in range(round((high - low) / step) + 1)]
                        if values else [], y, pw)
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
        if len(seg) == 1:
            # A lone reading (the first one, or one between two gaps): a dot,
            # since a line needs two points to be seen.
            parts.append(f'<circle class="point" cx="{seg[0][0]:.1f}" cy="{seg[0][1]:.1f}" '
                         f'r="2.2"/>')
            continue
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in seg)
        area = (f"{seg[0][0]:.1f},{zero:.1f} " + line + f" {seg[-1][0]:.1f},{zero:.1f}")
        parts.append(f'<polygon class="area" points="{area}"/>')
        parts.append(f'<polyline class="line" points="{line}"/>')
    nx = x(snap.now)
    parts.append(f'<line class="now" x1="{nx:.1f}" x2="{nx:.1f}" y1="{TOP}" y2="{H - BOTTOM}"/>')
    if values:
        rng = f"{power_label(min(values))} … {power_label(max(values))}"
        desc = t["curve_desc"].format(n=len(values), range=rng)
    else:
        desc = t["curve_empty"]
        parts.append(f'<text class="empty" x="{LEFT + pw / 2:.1f}" y="{TOP + ph / 2:.1f}">'
                     f'{escape(t["curve_empty"])}</text>')
    return (f'<svg id="power-curve" viewBox="0 0 {W} {H}" role="img" '
            f'aria-labelledby="power-curve-title power-curve-desc" '
            f'data-points="{len(values)}" data-segments="{len(segments)}" '
            f'data-min="{attr(min(values) if values else None)}" '
            f'data-max="{attr(max(values) if values else None)}">'
            f'<title id="power-curve-title">{escape(t["curve"])}</title>'
            f'<desc id="power-curve-desc">{escape(desc)}</desc>'
            + "".join(parts) + "</svg>")


def _curve_axes(grid: list, y, pw: float) -> list:
    """The power chart's horizontal lines at C{grid} watts, and its 6-hour ticks."""
    parts = []
    for watts in grid:
        gy = y(watts)
        cls = "zero" if watts == 0 else "grid"
        parts.append(f'<line class="{cls}" x1="{LEFT}" x2="{W - RIGHT}" y1="{gy:.1f}" '
                     f'y2="{gy:.1f}"/>')
        parts.append(f'<text class="ylab" x="{LEFT - 4}" y="{gy + 3.5:.1f}">'
                     f'{escape(power_label(watts))}</text>')
    for hour in range(0, 25, 6):
        gx = LEFT + pw * hour / 24
        parts.append(f'<line class="tick" x1="{gx:.1f}" x2="{gx:.1f}" y1="{TOP}" '
                     f'y2="{H - BOTTOM}"/>')
        parts.append(f'<text class="xlab" x="{gx:.1f}" y="{H - BOTTOM + 14}">{hour}:00</text>')
    return parts


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
    # No scale for a chart without data; ticks told apart by their step.
    decimals = _decimals(step)
    lines = round((top + bottom) / step) + 1 if normals or reverses else 0
    for k in range(lines):
        grid = -bottom + k * step
        gy = zero - grid * scale
        cls = "zero" if abs(grid) < step / 1000 else "grid"
        parts.append(f'<line class="{cls}" x1="{LEFT}" x2="{W - RIGHT}" y1="{gy:.1f}" '
                     f'y2="{gy:.1f}"/>')
        parts.append(f'<text class="ylab" x="{LEFT - 4}" y="{gy + 3.5:.1f}">'
                     f'{abs(grid):.{decimals}f}</text>')
    if not (normals or reverses):
        parts.append(f'<text class="empty" x="{LEFT + pw / 2:.1f}" y="{TOP + ph / 2:.1f}">'
                     f'{escape(t["bars_empty"])}</text>')
    gaps = sum(1 for slot in slots if slot.state != "ok")
    parts += [_slot_bar(slot, LEFT + i * bw, bw, zero, scale, t) for i, slot in enumerate(slots)]
    parts += _day_ticks(slots, bw)
    desc = t["bars_desc"].format(n=len(slots), gaps=gaps)
    return (f'<svg id="energy-bars" viewBox="0 0 {W} {H}" role="img" '
            f'aria-labelledby="energy-bars-title energy-bars-desc" '
            f'data-slots="{len(slots)}" data-gaps="{gaps}">'
            f'<title id="energy-bars-title">{escape(t["bars"])}</title>'
            f'<desc id="energy-bars-desc">{escape(desc)}</desc>'
            + "".join(parts) + "</svg>")


def _slot_bar(slot, bx: float, bw: float, zero: float, scale: float, t: dict) -> str:
    """One slot of the energy chart: its bars, or a hatched gap."""
    ph = H - TOP - BOTTOM
    label = slot.start.strftime("%m-%d %H:%M")
    if slot.state != "ok":
        why = t["no_data"] if slot.state == "nodata" else t["not_logged"]
        return (f'<g class="slot gap" data-slot="{attr(slot.start.isoformat())}" '
                f'data-state="{slot.state}" data-normal="" data-reverse="">'
                f'<title>{escape(label)}: {escape(why)}</title>'
                f'<rect class="gap" x="{bx:.2f}" y="{TOP}" width="{bw:.2f}" height="{ph}"/></g>')
    hn = float(slot.normal) * scale
    hr = float(slot.reverse) * scale
    text = f"{label}: {t['bought']} {show_kwh(slot.normal)} kWh"
    if slot.reverse:
        text += f", {t['sold']} {show_kwh(slot.reverse)} kWh"
    return (f'<g class="slot" data-slot="{attr(slot.start.isoformat())}" data-state="ok" '
            f'data-normal="{attr(slot.normal)}" data-reverse="{attr(slot.reverse)}">'
            f'<title>{escape(text)}</title>'
            + (f'<rect class="normal" x="{bx + bw * 0.1:.2f}" y="{zero - hn:.2f}" '
               f'width="{bw * 0.8:.2f}" height="{hn:.2f}"/>' if hn > 0 else "")
            + (f'<rect class="reverse" x="{bx + bw * 0.1:.2f}" y="{zero:.2f}" '
               f'width="{bw * 0.8:.2f}" height="{hr:.2f}"/>' if hr > 0 else "")
            + "</g>")


def _day_ticks(slots: list, bw: float) -> list:
    """The energy chart's midnight and noon lines with their labels."""
    parts = []
    for i, slot in enumerate(slots):
        if slot.start.hour % 12 == 0 and slot.start.minute == 0:
            gx = LEFT + i * bw
            cls = "day" if slot.start.hour == 0 else "tick"
            text = slot.start.strftime("%m/%d") if slot.start.hour == 0 else "12:00"
            parts.append(f'<line class="{cls}" x1="{gx:.1f}" x2="{gx:.1f}" y1="{TOP}" '
                         f'y2="{H - BOTTOM}"/>')
            parts.append(f'<text class="xlab" x="{gx:.1f}" y="{H - BOTTOM + 14}">'
                         f'{escape(text)}</text>')
    return parts
