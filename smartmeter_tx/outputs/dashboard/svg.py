"""
The dashboard's two charts as inline SVG: today's power curve and the last 48
hours of 30-minute energy.  Each carries its numbers in C{data-} attributes
and a C{<title>}/C{<desc>} for screen readers.

Built as L{twisted.web.template} tags, never as markup text: the flattener
escapes every text and attribute.  No I/O.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Optional

from twisted.web.template import Tag

from smartmeter_tx.model import JST, SLOT
from smartmeter_tx.outputs.dashboard.snapshot import Snapshot
from smartmeter_tx.outputs.dashboard.text import data_value, power_label, show_hhmm, show_kwh

__all__ = ["curve_svg", "bars_svg"]

W, H = 360, 190
LEFT, RIGHT, TOP, BOTTOM = 38, 14, 10, 24

#: A pause between two readings longer than this breaks the power curve.
CURVE_GAP = 300.0
#: A run of readings narrower than this (px) gets a dot too: a line so short
#: is not seen (at 30 s a reading, ten minutes make about 2 px).
DOT_SPAN = 2.0
#: The height of the power chart's legend row, under its time axis.
LEGEND = 14
SLOT_SECONDS = SLOT.total_seconds()


#: Bands coloured apart (the page's band-0 ... classes); more wrap around.
BAND_COLOURS = 4


def _el(name: str, *children, **attributes: str) -> Tag:
    """
    An SVG element: C{tags} knows only HTML's names.  Attributes are passed
    as a C{**dict} since most SVG and C{data-} names are no Python names.
    """
    return Tag(name)(*children, **attributes)


def _hline(cls: str, gy: float) -> Tag:
    """A horizontal grid line across the plot at C{gy}."""
    return _el("line", **{"class": cls, "x1": str(LEFT), "x2": str(W - RIGHT),
                          "y1": f"{gy:.1f}", "y2": f"{gy:.1f}"})


def _vline(cls: str, gx: float) -> Tag:
    """A vertical line from the plot's top to its bottom at C{gx}."""
    return _el("line", **{"class": cls, "x1": f"{gx:.1f}", "x2": f"{gx:.1f}", "y1": str(TOP),
                          "y2": str(H - BOTTOM)})


def _ylabel(text: str, gy: float) -> Tag:
    """A grid line's value, left of the plot."""
    return _el("text", text, **{"class": "ylab", "x": str(LEFT - 4), "y": f"{gy + 3.5:.1f}"})


def _xlabel(text: str, gx: float) -> Tag:
    """A tick's time, under the plot."""
    return _el("text", text, **{"class": "xlab", "x": f"{gx:.1f}", "y": str(H - BOTTOM + 14)})


def _empty(text: str) -> Tag:
    """Why a chart is empty, in the middle of its plot."""
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    return _el("text", text, **{"class": "empty", "x": f"{LEFT + pw / 2:.1f}",
                                "y": f"{TOP + ph / 2:.1f}"})


def _chart(ident: str, title: str, desc: str, data: dict, parts: list,
           height: int = H) -> Tag:
    """
    The C{<svg>} of chart C{ident}: its C{title} and C{desc} for screen
    readers, its numbers in C{data} (C{data-} attributes, without the prefix),
    then C{parts}.
    """
    attributes = {"id": ident, "viewBox": f"0 0 {W} {height}", "role": "img",
                  "aria-labelledby": f"{ident}-title {ident}-desc"}
    attributes.update((f"data-{name}", value) for name, value in data.items())
    return _el("svg", _el("title", title, id=f"{ident}-title"),
               _el("desc", desc, id=f"{ident}-desc"), *parts, **attributes)


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
    exponent = Decimal(str(step)).normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # a grid step is finite: no NaN or infinity exponent
    return max(0, -exponent)


def curve_svg(snap: Snapshot, t: dict) -> Tag:
    """
    Today's power, midnight to midnight (JST), as an inline SVG: the
    service's readings, and where it has none, the meter's own record as
    half-hour steps.
    """
    midnight = snap.now_jst.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    values = [w for _, w in snap.curve if w is not None]
    runs = _runs(snap.curve)
    # The meter's half-hour averages, where no readings are.
    averages = _uncovered(snap.steps, [(run[0][0], run[-1][0]) for run in runs if len(run) > 1])
    levels = values + [float(w) for _, _, _, w in averages]
    low = min([0] + levels)
    high = max([500] + levels)
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
                        if levels else [], y, pw)
    # The now line first, under the marks: the first readings after a start
    # sit on it and must stay visible.
    parts.append(_vline("now", x(snap.now)))
    parts += _step_marks(averages, x, y, t)
    segments = [[(x(when), y(watts)) for when, watts in run] for run in runs]
    parts += _curve_marks(segments, y(0))
    if values:
        rng = f"{power_label(min(values))} … {power_label(max(values))}"
        desc = t["curve_desc"].format(n=len(values), range=rng)
    else:
        desc = t["curve_empty"]
    slots = len({start for start, _, _, _ in averages})
    height = H
    if averages:
        desc += " " + t["curve_steps_desc"].format(n=slots)
        parts += _steps_legend(t)
        height += LEGEND
    elif not values:
        parts.append(_empty(t["curve_empty"]))
    return _chart("power-curve", t["curve"], desc, {
        "points": str(len(values)), "segments": str(len(segments)), "steps": str(slots),
        "min": data_value(min(values) if values else None),
        "max": data_value(max(values) if values else None)}, parts, height)


def _runs(curve: list) -> list:
    """
    The curve's runs of C{(when, watts)}: broken where a reading is absent
    or readings paused longer than L{CURVE_GAP}.
    """
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    last: Optional[float] = None
    for when, watts in curve:
        if watts is None or (last is not None and when - last > CURVE_GAP):
            if current:
                runs.append(current)
            current = []
        if watts is not None:
            current.append((when, watts))
        last = when
    if current:
        runs.append(current)
    return runs


def _uncovered(steps: list, covered: list) -> list:
    """
    The parts of the slots of C{steps} that no run of readings covers, but
    for those shorter than L{CURVE_GAP}: a pause that short is no gap.

    @param steps: C{[(slot start, watts)]} (L{Snapshot.steps}).
    @param covered: C{[(first, last)]} of the runs, in time order.
    @return: C{[(slot start, from, to, watts)]}, in time order.
    """
    parts = []
    for start, watts in steps:
        at, end = start, start + SLOT_SECONDS
        for first, last in covered:
            if last <= at or first >= end:
                continue
            if first - at >= CURVE_GAP:
                parts.append((start, at, first, watts))
            at = max(at, last)
        if end - at >= CURVE_GAP:
            parts.append((start, at, end, watts))
    return parts


def _step_marks(steps: list, x, y, t: dict) -> list:
    """
    The meter's half-hour averages as a stepped line over a light area,
    each slot's part a group with its slot and watts; risers join only
    parts that touch.
    """
    parts = []
    zero = y(0)
    previous = None
    for start, at, end, watts in steps:
        level = y(float(watts))
        x0, x1 = x(at), x(end)
        if previous is not None and previous[0] == at and previous[1] != level:
            parts.append(_el("line", **{"class": "step-riser", "x1": f"{x0:.1f}",
                                        "x2": f"{x0:.1f}", "y1": f"{previous[1]:.1f}",
                                        "y2": f"{level:.1f}"}))
        label = (f"{show_hhmm(start)}–{show_hhmm(start + SLOT_SECONDS)}: "
                 f"{power_label(float(watts))} ({t['curve_steps']})")
        parts.append(_el(
            "g", _el("title", label),
            _el("rect", **{"class": "step-area", "x": f"{x0:.1f}", "width": f"{x1 - x0:.1f}",
                           "y": f"{min(level, zero):.1f}",
                           "height": f"{abs(zero - level):.1f}"}),
            _el("line", **{"class": "step-line", "x1": f"{x0:.1f}", "x2": f"{x1:.1f}",
                           "y1": f"{level:.1f}", "y2": f"{level:.1f}"}),
            **{"class": "step",
               "data-slot": datetime.datetime.fromtimestamp(start, JST).isoformat(),
               "data-watts": format(watts.normalize(), "f")}))
        previous = (end, level)
    return parts


def _steps_legend(t: dict) -> list:
    """Under the time axis: what the steps are."""
    gy = H + LEGEND / 2
    return [_el("line", **{"class": "step-line", "x1": str(LEFT), "x2": str(LEFT + 14),
                           "y1": f"{gy - 3:.1f}", "y2": f"{gy - 3:.1f}"}),
            _el("text", t["curve_steps_legend"],
                **{"class": "legend", "x": str(LEFT + 18), "y": f"{gy:.1f}"})]


def _curve_marks(segments: list, zero: float) -> list:
    """
    Each segment as a filled line down to C{zero} watts, and as a dot where
    it is too short to be seen as a line (a lone reading, or the first few
    after a start: a minute is a fraction of a pixel).
    """
    parts = []
    for seg in segments:
        if len(seg) > 1:
            line = " ".join(f"{px:.1f},{py:.1f}" for px, py in seg)
            area = f"{seg[0][0]:.1f},{zero:.1f} " + line + f" {seg[-1][0]:.1f},{zero:.1f}"
            parts.append(_el("polygon", **{"class": "area", "points": area}))
            parts.append(_el("polyline", **{"class": "line", "points": line}))
        if seg[-1][0] - seg[0][0] < DOT_SPAN:
            parts.append(_el("circle", **{"class": "point", "cx": f"{seg[-1][0]:.1f}",
                                          "cy": f"{seg[-1][1]:.1f}", "r": "2.6"}))
    return parts


def _curve_axes(grid: list, y, pw: float) -> list:
    """The power chart's horizontal lines at C{grid} watts, and its 6-hour ticks."""
    parts = []
    for watts in grid:
        gy = y(watts)
        parts.append(_hline("zero" if watts == 0 else "grid", gy))
        parts.append(_ylabel(power_label(watts), gy))
    for hour in range(0, 25, 6):
        gx = LEFT + pw * hour / 24
        parts.append(_vline("tick", gx))
        parts.append(_xlabel(f"{hour}:00", gx))
    return parts


#: The hatching that fills a slot without data.
_HATCH = _el("defs", _el(
    "pattern",
    _el("rect", **{"class": "hatch-bg", "width": "4", "height": "4"}),
    _el("line", **{"class": "hatch", "x1": "0", "y1": "0", "x2": "0", "y2": "4"}),
    **{"id": "gap-hatch", "width": "4", "height": "4", "patternUnits": "userSpaceOnUse",
       "patternTransform": "rotate(45)"}))


def bars_svg(snap: Snapshot, t: dict) -> Tag:
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
    pw = W - LEFT - RIGHT
    scale = (H - TOP - BOTTOM) / (top + bottom)
    zero = TOP + top * scale
    bw = pw / max(len(slots), 1)
    parts = [_HATCH.clone()]
    # No scale for a chart without data; ticks told apart by their step.
    decimals = _decimals(step)
    lines = round((top + bottom) / step) + 1 if normals or reverses else 0
    for k in range(lines):
        grid = -bottom + k * step
        gy = zero - grid * scale
        parts.append(_hline("zero" if abs(grid) < step / 1000 else "grid", gy))
        parts.append(_ylabel(f"{abs(grid):.{decimals}f}", gy))
    if not (normals or reverses):
        parts.append(_empty(t["bars_empty"]))
    gaps = sum(1 for slot in slots if slot.state != "ok")
    parts += [_slot_bar(slot, LEFT + i * bw, bw, zero, scale, t) for i, slot in enumerate(slots)]
    parts += _day_ticks(slots, bw)
    desc = t["bars_desc"].format(n=len(slots), gaps=gaps)
    return _chart("energy-bars", t["bars"], desc,
                  {"slots": str(len(slots)), "gaps": str(gaps)}, parts)


def _slot_bar(slot, bx: float, bw: float, zero: float, scale: float, t: dict) -> Tag:
    """One slot of the energy chart: its bars, or a hatched gap."""
    ph = H - TOP - BOTTOM
    label = slot.start.strftime("%m-%d %H:%M")
    if slot.state != "ok":
        why = t["no_data"] if slot.state == "nodata" else t["not_logged"]
        return _el("g", _el("title", f"{label}: {why}"),
                   _el("rect", **{"class": "gap", "x": f"{bx:.2f}", "y": str(TOP),
                                  "width": f"{bw:.2f}", "height": str(ph)}),
                   **{"class": "slot gap", "data-slot": slot.start.isoformat(),
                      "data-state": slot.state, "data-normal": "", "data-reverse": ""})
    hn = float(slot.normal) * scale
    hr = float(slot.reverse) * scale
    text = f"{label}: {t['bought']} {show_kwh(slot.normal)} kWh"
    if slot.reverse:
        text += f", {t['sold']} {show_kwh(slot.reverse)} kWh"
    bars = [_el("rect", **{"class": cls, "x": f"{bx + bw * 0.1:.2f}", "y": f"{y:.2f}",
                           "width": f"{bw * 0.8:.2f}", "height": f"{h:.2f}"})
            for cls, y, h in ((_bought_class(slot), zero - hn, hn), ("reverse", zero, hr)) if h > 0]
    return _el("g", _el("title", text), *bars,
               **{"class": "slot", "data-slot": slot.start.isoformat(), "data-state": "ok",
                  "data-normal": data_value(slot.normal),
                  "data-reverse": data_value(slot.reverse)})


def _bought_class(slot) -> str:
    """A bought bar's class: coloured by its band under a time-of-use tariff."""
    return "normal" if slot.band is None else f"normal band-{slot.band % BAND_COLOURS}"


def _day_ticks(slots: list, bw: float) -> list:
    """The energy chart's midnight and noon lines with their labels."""
    parts = []
    for i, slot in enumerate(slots):
        if slot.start.hour % 12 == 0 and slot.start.minute == 0:
            gx = LEFT + i * bw
            midnight = slot.start.hour == 0
            parts.append(_vline("day" if midnight else "tick", gx))
            parts.append(_xlabel(slot.start.strftime("%m/%d") if midnight else "12:00", gx))
    return parts
