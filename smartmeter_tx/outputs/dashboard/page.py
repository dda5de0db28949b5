"""
The dashboard page at C{/}: the power now, today's power curve, the last 48
hours of 30-minute energy, today's and this month's kWh, and the link's
health, as one self-contained HTML page (no script, font or style from
elsewhere: a Pi may be offline).

Pure: no Twisted, no I/O.  L{render} fills the page template (L{PAGE}) once,
from a L{smartmeter_tx.outputs.dashboard.snapshot.Snapshot}, each section
made by a function of its own.
"""

from __future__ import annotations

import string
from html import escape

from smartmeter_tx.outputs.dashboard.snapshot import Snapshot
from smartmeter_tx.outputs.dashboard.svg import bars_svg, curve_svg
from smartmeter_tx.outputs.dashboard.text import (
    DASH, TEXT, attr, show_amps, show_duration, show_hhmm, show_kwh, show_watts,
)

__all__ = ["render", "REFRESH", "PAGE"]

#: Seconds between the page's own reloads.
REFRESH = 30
#: A reading older than this is shown as stale.
STALE_AGE = 120.0

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
svg .area{fill:var(--curve);opacity:.15}svg .point{fill:var(--curve)}
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


#: The page; every C{$name} is filled once by L{render}, already escaped.
PAGE = string.Template("""<!DOCTYPE html>
<html lang="$lang">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="$refresh">
<meta name="color-scheme" content="light dark">
<title>$page_title</title>
<style>$css</style>
</head>
<body>
<header><h1>$title</h1>
<a id="lang" href="?lang=$other" hreflang="$other" lang="$other">$lang_other</a>
</header>
<main>
<section id="now" aria-label="$power_now"><h2>$power_now</h2>
$power</section>
<section id="energy" aria-label="$today / $month">
<h2>$today / $month (kWh)</h2>$totals</section>
<section id="curve" aria-label="$curve_title"><h2>$curve_title</h2>
$curve</section>
<section id="bars" aria-label="$bars_title"><h2>$bars_title (kWh)</h2>
$bars$legend</section>
<section id="link" aria-label="$link_title"><h2>$link_title</h2>
$link</section>
</main>
<footer><p id="updated">$updated</p>
<p><a href="latest">/latest</a><a href="history">/history</a><a href="metrics">/metrics</a></p>
</footer>
</body>
</html>
""")


def render(snap: Snapshot, lang: str = "en") -> str:
    """The whole page, in C{lang} (C{"en"} or C{"ja"})."""
    t = TEXT.get(lang, TEXT["en"])
    other = "ja" if lang == "en" else "en"
    page_title = (t["title"] if snap.power_w is None
                  else f"{show_watts(snap.power_w)} W · {t['title']}")
    updated = t["updated"].format(snap.now_jst.strftime("%Y-%m-%d %H:%M"), REFRESH)
    legend = (f'<div class="legend"><i class="lg-buy"></i>{escape(t["bought"])}'
              f'<i class="lg-sell"></i>{escape(t["sold"])}'
              f'<i class="lg-gap"></i>{escape(t["no_data"])}</div>')
    return PAGE.substitute(
        lang=lang, other=other, refresh=REFRESH, css=CSS, page_title=escape(page_title),
        title=escape(t["title"]), lang_other=escape(t["lang_other"]),
        power_now=escape(t["power_now"]), today=escape(t["today"]), month=escape(t["month"]),
        curve_title=escape(t["curve"]), bars_title=escape(t["bars"]),
        link_title=escape(t["link"]), updated=escape(updated), legend=legend,
        power=_power_html(snap, t), totals=_totals_html(snap, t), curve=curve_svg(snap, t),
        bars=bars_svg(snap, t), link=_link_html(snap, t))


def _power_html(snap: Snapshot, t: dict) -> str:
    """The power now, its direction, the currents and the reading's age."""
    if snap.reading_time is None:
        return (f'<div id="power-now" data-value="">{DASH}</div>'
                f'<div class="sub" id="power-note">{escape(t["no_reading"])}</div>')
    cls = "selling" if snap.power_w is not None and snap.power_w < 0 else ""
    direction = ("" if snap.power_w is None or snap.power_w == 0 else
                 t["selling"] if snap.power_w < 0 else t["buying"])
    return (
        f'<div id="power-now" class="{cls}" data-value="{attr(snap.power_w)}" '
        f'aria-label="{escape(t["power_now"])}: {escape(show_watts(snap.power_w))} W">'
        f'{escape(show_watts(snap.power_w))}<span class="unit">W</span></div>'
        f'<div class="direction">{escape(direction)}</div>'
        f'<div class="sub" id="currents" data-r="{attr(snap.current_r_a)}" '
        f'data-t="{attr(snap.current_t_a)}">{escape(t["current"])} '
        f'R {escape(show_amps(snap.current_r_a))} / T {escape(show_amps(snap.current_t_a))}</div>'
        f'<div class="sub" id="power-age">{escape(t["ago"].format(show_duration(snap.age, t)))}'
        f'</div>')


def _total_cell(value, t: dict, cls: str, ident: str) -> str:
    if value is None:
        return f'<span id="{ident}" class="kwh {cls}" data-value="">{DASH}</span>'
    kwh, as_of = value
    return (f'<span id="{ident}" class="kwh {cls}" data-value="{attr(kwh)}">'
            f'{escape(show_kwh(kwh))} <small>kWh</small><span class="asof">'
            f'{escape(t["until"].format(show_hhmm(as_of)))}</span></span>')


def _totals_html(snap: Snapshot, t: dict) -> str:
    """Today's and this month's kWh, bought and sold."""
    rows = [f'<span></span><span class="head">{escape(t["bought"])}</span>'
            f'<span class="head">{escape(t["sold"])}</span>']
    for key, values in (("today", snap.today), ("month", snap.month)):
        rows.append(f'<span class="head">{escape(t[key])}</span>'
                    + _total_cell(values.get("normal"), t, "buy", f"{key}-normal")
                    + _total_cell(values.get("reverse"), t, "sell", f"{key}-reverse"))
    totals = '<div class="totals" id="totals">' + "".join(rows) + "</div>"
    if not snap.backfill:
        totals += f'<p class="sub">{escape(t["no_backfill"])}</p>'
    return totals


def _ha_row(ha: tuple, t: dict) -> tuple:
    """Home Assistant's statistics: the newest hour it has, and whether it is reachable."""
    last, connected = ha
    text = DASH if last is None else last.strftime("%Y-%m-%d %H:%M")
    html = escape(text) + ("" if connected else
                           f' <span class="bad">({escape(t["ha_away"])})</span>')
    return ("ha", t["ha_last"], html, "" if last is None else last.isoformat())


def _link_html(snap: Snapshot, t: dict) -> str:
    """The link's health as a definition list, each value also in C{data-value}."""
    session_cls = "good" if snap.session == "up" else "bad"
    session = escape(t.get(f"session_{snap.session}", snap.session))
    if snap.session == "up" and snap.session_since is not None:
        session += " " + escape(t["since"].format(show_hhmm(snap.session_since)))
    age = snap.age
    stale = age is not None and age > STALE_AGE
    age_text = escape(show_duration(age, t)) + (
        f' <span class="bad">({escape(t["stale"])})</span>' if stale else "")
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
    if snap.ha is not None:
        link.append(_ha_row(snap.ha, t))
    return "<dl>" + "".join(
        f'<dt>{escape(label)}</dt><dd id="link-{key}" data-value="{attr(value)}">{html}</dd>'
        for key, label, html, value in link) + "</dl>"
