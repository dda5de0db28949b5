"""
The dashboard page at C{/}: the power now, today's power curve, the last 48
hours of 30-minute energy, today's and this month's kWh, and the link's
health, as one self-contained HTML page (no script, font or style from
elsewhere: a Pi may be offline).

L{render} fills the page's template (C{page.xml}, next to this module) from a
L{smartmeter_tx.outputs.dashboard.snapshot.Snapshot} with
L{twisted.web.template}: the skeleton and its words are slots, each section is
made by a renderer of L{DashboardPage} as tags.  No markup is ever written as
text, so the flattener escapes every text and attribute that reaches the
page.  No I/O but reading the template once.
"""

from __future__ import annotations

import datetime
from typing import Union

from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.web.template import Element, Tag, XMLFile, flattenString, renderer, tags

from smartmeter_tx.model import JST
from smartmeter_tx.outputs.dashboard.snapshot import Snapshot
from smartmeter_tx.outputs.dashboard.svg import BAND_COLOURS, bars_svg, curve_svg
from smartmeter_tx.outputs.dashboard.text import (
    DASH, TEXT, data_value, show_amps, show_duration, show_hhmm, show_kwh, show_watts,
)

__all__ = ["render", "flatten_now", "DashboardPage", "REFRESH", "TEMPLATE"]

#: Seconds between the page's own reloads.
REFRESH = 30
#: A reading older than this is shown as stale.
STALE_AGE = 120.0
#: The page's skeleton; shipped as package data (pyproject.toml).
TEMPLATE = FilePath(__file__).sibling("page.xml")
#: Written before the flattened template: XMLFile drops a DTD.
DOCTYPE = "<!DOCTYPE html>\n"

#: The page's style, flattened as the C{<style>}'s text.  It must hold no
#: C{<}, C{>} or C{&}: the flattener would escape them, and HTML does not
#: unescape a style.
CSS = """
:root{--bg:#f4f5f7;--card:#fff;--fg:#1b1f24;--muted:#5f6b7a;--line:#d9dde3;
--buy:#e8590c;--sell:#2b8a3e;--curve:#1c7ed6;--gap:#adb5bd;--warn:#c92a2a;--ok:#2b8a3e;
--step:#7048e8}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1b1f24;--fg:#e9ecef;
--muted:#9aa5b1;--line:#343a40;--buy:#ff922b;--sell:#51cf66;--curve:#4dabf7;--gap:#868e96;
--warn:#ff6b6b;--ok:#51cf66;--step:#b197fc}}
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
svg .point{fill:var(--curve);stroke:var(--card);stroke-width:.8}
svg .now{stroke:var(--buy);stroke-width:.5;stroke-dasharray:3 2;opacity:.8}
svg .step-line,svg .step-riser{stroke:var(--step);stroke-width:1.2;stroke-dasharray:3 1.5}
svg .step-riser{stroke-width:.8}svg .step-area{fill:var(--step);opacity:.1}
svg .legend{font-size:9px}
svg rect.normal{fill:var(--buy)}svg rect.reverse{fill:var(--sell)}
svg rect.band-1,.legend .lg-band-1{fill:#f08c00;background:#f08c00}
svg rect.band-2,.legend .lg-band-2{fill:#845ef7;background:#845ef7}
svg rect.band-3,.legend .lg-band-3{fill:#1098ad;background:#1098ad}
.legend .lg-band-0{background:var(--buy)}
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


def flatten_now(root) -> str:
    """
    C{root} flattened at once: C{flattenString} fires synchronously when
    nothing in the tree is a Deferred, as nothing on the page is.

    @param root: a tag, an element, or a list of them.
    @return: the markup, every text and attribute escaped.
    @raise RuntimeError: if anything in C{root} would wait (a Deferred).
    @raise twisted.web.error.FlattenerError: if C{root} cannot be flattened.
    """
    result: list[Union[bytes, Failure]] = []
    flattenString(None, root).addBoth(result.append)
    if not result:
        raise RuntimeError(f"flattening {root!r} did not finish synchronously")
    if isinstance(result[0], Failure):
        result[0].raiseException()
    return result[0].decode("utf-8")


def render(snap: Snapshot, lang: str = "en") -> str:
    """
    The whole page of C{snap}, in C{lang} (C{"en"} or C{"ja"}).

    @return: the HTML document, doctype first.
    """
    return DOCTYPE + flatten_now(DashboardPage(snap, lang)) + "\n"


class DashboardPage(Element):
    """
    The page of one L{Snapshot} in one language: L{TEMPLATE}, whose C{page}
    renderer fills the words, the others a section each.
    """

    loader = XMLFile(TEMPLATE)

    def __init__(self, snap: Snapshot, lang: str):
        """
        @param lang: C{"en"} or C{"ja"}; any other is shown in English (but
            still named in the page's C{lang}).
        """
        super().__init__()
        self.snap = snap
        self.lang = lang
        self.t = TEXT.get(lang, TEXT["en"])

    @renderer
    def page(self, request, tag: Tag) -> Tag:
        """The C{<html>}: every slot of the template, words and numbers."""
        snap, t = self.snap, self.t
        page_title = (t["title"] if snap.power_w is None
                      else f"{show_watts(snap.power_w)} W · {t['title']}")
        return tag.fillSlots(
            lang=self.lang, other="ja" if self.lang == "en" else "en", refresh=str(REFRESH),
            css=CSS, page_title=page_title, title=t["title"], lang_other=t["lang_other"],
            power_now=t["power_now"], today=t["today"], month=t["month"],
            curve_title=t["curve"], bars_title=t["bars"], link_title=t["link"],
            bought=t["bought"], sold=t["sold"], no_data=t["no_data"],
            updated=t["updated"].format(snap.now_jst.strftime("%Y-%m-%d %H:%M"), REFRESH))

    @renderer
    def power(self, request, tag: Tag) -> list:
        """The power now, its direction, the currents and the reading's age."""
        return _power(self.snap, self.t)

    @renderer
    def totals(self, request, tag: Tag) -> list:
        """Today's and this month's kWh, bought and sold."""
        return _totals(self.snap, self.t)

    @renderer
    def bill(self, request, tag: Tag) -> list:
        """This billing period's bill, with C{--tariff}."""
        return [] if self.snap.bill is None else [_bill(self.snap, self.t)]

    @renderer
    def bands(self, request, tag: Tag) -> list:
        """Under a time-of-use tariff, what colours the bought bars: the bands."""
        return [[tags.i(class_=f"lg-band-{index % BAND_COLOURS}"), name]
                for index, name in sorted(self.snap.bands.items())]

    @renderer
    def curve(self, request, tag: Tag) -> Tag:
        """Today's power curve."""
        return curve_svg(self.snap, self.t)

    @renderer
    def bars(self, request, tag: Tag) -> Tag:
        """The last 48 hours of 30-minute energy."""
        return bars_svg(self.snap, self.t)

    @renderer
    def link(self, request, tag: Tag) -> Tag:
        """The link's health."""
        return _link(self.snap, self.t)


def _power(snap: Snapshot, t: dict) -> list:
    """The power now, its direction, the currents and the reading's age."""
    if snap.reading_time is None:
        return [tags.div(DASH, **{"id": "power-now", "data-value": ""}),
                tags.div(t["no_reading"], **{"class": "sub", "id": "power-note"})
                ] + _cause(snap, t)
    watts = show_watts(snap.power_w)
    cls = "selling" if snap.power_w is not None and snap.power_w < 0 else ""
    direction = ("" if snap.power_w is None or snap.power_w == 0 else
                 t["selling"] if snap.power_w < 0 else t["buying"])
    return [
        tags.div(watts, tags.span("W", class_="unit"),
                 **{"id": "power-now", "class": cls, "data-value": data_value(snap.power_w),
                    "aria-label": f"{t['power_now']}: {watts} W"}),
        tags.div(direction, class_="direction"),
        tags.div(f"{t['current']} R {show_amps(snap.current_r_a)} / "
                 f"T {show_amps(snap.current_t_a)}",
                 **{"class": "sub", "id": "currents", "data-r": data_value(snap.current_r_a),
                    "data-t": data_value(snap.current_t_a)}),
        tags.div(t["ago"].format(show_duration(snap.age, t)),
                 **{"class": "sub", "id": "power-age"}),
    ] + _contract(snap, t)


def _contract(snap: Snapshot, t: dict) -> list:
    """The larger phase current as a share of an ampere contract, marked when near."""
    if snap.contract is None:
        return []
    amperes, ratio, near = snap.contract
    if ratio is None:
        return []
    text = t["contract_share"].format(round(ratio * 100), amperes)
    return [tags.div(_bad(f"{text} ({t['breaker_near']})") if near else text,
                     **{"class": "sub", "id": "contract", "data-value": data_value(ratio)})]


def _cause(snap: Snapshot, t: dict) -> list:
    """
    Why there is no reading, when the service's joins fail: in the page's
    words for a refusal or a meter not found, else the service's own line.
    """
    if snap.join_failure is None:
        return []
    kind, text = snap.join_failure
    shown = t.get(f"cause_{kind}") or t["cause"].format(text)
    return [tags.div(_bad(shown), **{"class": "sub", "id": "power-cause", "data-kind": kind,
                                     "data-value": text})]


def _total_cell(value, t: dict, cls: str, ident: str) -> Tag:
    """One period's kWh in one direction, with the time it runs until."""
    attributes = {"id": ident, "class": f"kwh {cls}"}
    if value is None:
        return tags.span(DASH, **attributes, **{"data-value": ""})
    kwh, as_of = value
    return tags.span(f"{show_kwh(kwh)} ", tags.small("kWh"),
                     tags.span(t["until"].format(show_hhmm(as_of)), class_="asof"),
                     **attributes, **{"data-value": data_value(kwh)})


def _totals(snap: Snapshot, t: dict) -> list:
    """Today's and this month's kWh, bought and sold."""
    cells = [tags.span(), tags.span(t["bought"], class_="head"),
             tags.span(t["sold"], class_="head")]
    for key, values in (("today", snap.today), ("month", snap.month)):
        cells += [tags.span(t[key], class_="head"),
                  _total_cell(values.get("normal"), t, "buy", f"{key}-normal"),
                  _total_cell(values.get("reverse"), t, "sell", f"{key}-reverse")]
    totals = [tags.div(cells, class_="totals", id="totals")]
    if not snap.backfill:
        totals.append(tags.p(t["no_backfill"], class_="sub"))
    return totals


def _bill(snap: Snapshot, t: dict) -> Tag:
    """The period's kWh, the bill so far and projected, and the price now (and its band)."""
    bill = snap.bill
    assert bill is not None
    def yen(value) -> str:
        return DASH if value is None else f"¥{value:,.0f}"

    start = datetime.datetime.fromtimestamp(bill["bill_period_start_timestamp_seconds"], JST)
    energy = bill.get("bill_period_energy_kwh")
    price = bill.get("price_yen_per_kwh")
    rows = [("since", t["bill_since"], start.strftime("%Y-%m-%d"), start.isoformat()),
            ("energy", t["bill_energy"], DASH if energy is None else f"{show_kwh(energy)} kWh",
             energy),
            ("cost", t["bill_cost"], yen(bill.get("bill_period_cost_yen")),
             bill.get("bill_period_cost_yen")),
            ("projected", t["bill_projected"], yen(bill.get("bill_period_projected_cost_yen")),
             bill.get("bill_period_projected_cost_yen")),
            ("price", t["bill_price"], DASH if price is None else f"¥{price:.2f} / kWh"
             + _price_note(snap, t), price)]
    body: list = [tags.h2(t["bill"]), tags.dl([
        (tags.dt(label), tags.dd(shown, **{"id": f"bill-{key}", "data-value": data_value(value)}))
        for key, label, shown, value in rows])]
    if energy is None:
        body.append(tags.p(t["bill_unknown"], class_="sub"))
    return tags.section(body, id="bill", **{"aria-label": t["bill"]})


def _price_note(snap: Snapshot, t: dict) -> str:
    """What the price now is: its time-of-day band, or its tier."""
    tier = (snap.bill or {}).get("bill_tier")
    if snap.band_now is not None:
        return f" ({snap.band_now})"
    return "" if tier is None else " " + t["bill_tier"].format(tier)


def _bad(text: str) -> Tag:
    """C{text} marked as a problem."""
    return tags.span(text, class_="bad")


def _ha_row(ha: tuple, t: dict) -> tuple:
    """Home Assistant's statistics: the newest hour it has, and whether it is reachable."""
    last, connected = ha
    text = DASH if last is None else last.strftime("%Y-%m-%d %H:%M")
    shown = [text] if connected else [text, " ", _bad(f"({t['ha_away']})")]
    return ("ha", t["ha_last"], shown, None if last is None else last.isoformat())


def _link(snap: Snapshot, t: dict) -> Tag:
    """The link's health as a definition list, each value also in C{data-value}."""
    session = t.get(f"session_{snap.session}", snap.session)
    if snap.session == "up" and snap.session_since is not None:
        session += " " + t["since"].format(show_hhmm(snap.session_since))
    age = snap.age
    age_shown: list[Union[str, Tag]] = [show_duration(age, t)]
    if age is not None and age > STALE_AGE:
        age_shown += [" ", _bad(f"({t['stale']})")]
    rssi = DASH if snap.rssi is None else f"{snap.rssi:.0f} dBm"
    lqi = DASH if snap.lqi is None else str(snap.lqi)
    event = None if snap.last_event is None else f"{snap.last_event:02X}"
    rows = [
        ("session", t["session"],
         tags.span(session, class_="good" if snap.session == "up" else "bad"), snap.session),
        ("rate-limit", t["rate_limit"],
         _bad(t["limited"]) if snap.rate_limited else t["not_limited"],
         "1" if snap.rate_limited else "0"),
        ("last-event", t["last_event"], DASH if event is None else event, event),
        ("rssi", t["rssi"], f"{rssi} / {lqi}", snap.rssi),
        ("age", t["age"], age_shown, None if age is None else round(age)),
        ("rejoins", t["rejoins"], DASH if snap.rejoins_last_hour is None
         else str(snap.rejoins_last_hour), snap.rejoins_last_hour),
    ]
    if snap.held:
        rows.insert(1, ("held", t["held"], _bad(snap.held), snap.held))
    if snap.ha is not None:
        rows.append(_ha_row(snap.ha, t))
    return tags.dl([(tags.dt(label), tags.dd(shown, **{"id": f"link-{key}",
                                                       "data-value": data_value(value)}))
                    for key, label, shown, value in rows])
