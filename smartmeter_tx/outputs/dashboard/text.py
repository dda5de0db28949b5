"""
The dashboard's words in English and Japanese (L{TEXT}), the choice between
them (L{language}), and how its numbers and times are written.

Pure: no Twisted, no I/O.  Every formatter writes L{DASH} for a value that
is not known, never 0.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Optional, Union

from smartmeter_tx.model import JST, amps_text

__all__ = ["TEXT", "language", "DASH", "show_watts", "show_kwh", "show_amps", "show_duration",
           "show_hhmm", "data_value", "num", "power_label"]

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
        "cause": "Why: {}",
        "cause_refused": "The meter refused authentication: check the B-route ID and "
                         "password.",
        "cause_not_found": "No meter answered the scan: check the B-route ID, and move the "
                           "module closer to the meter.",
        "today": "Today",
        "month": "This month",
        "bought": "Bought",
        "sold": "Sold",
        "until": "until {}",
        "curve": "Power today",
        "curve_desc": "Power from midnight to now, {n} readings; {range}.",
        "curve_empty": "No readings today yet.",
        "curve_steps": "half-hour average from the meter's record",
        "curve_steps_legend": "Half-hour averages from the meter's record",
        "curve_steps_desc": "Where the service has no readings, {n} half-hour averages from "
                            "the meter's record are drawn as steps.",
        "bars": "Energy per 30 minutes, last 48 hours",
        "bars_desc": "{n} slots of 30 minutes, {gaps} without data; bought above the line, "
                     "sold below.",
        "bars_empty": "No 30-minute record yet.",
        "no_data": "no data",
        "not_logged": "not logged yet",
        "no_backfill": "The 30-minute record needs --data-log with --backfill-days.",
        "link": "Link",
        "session": "Session",
        "session_up": "up",
        "session_down": "down",
        "session_unknown": "unknown",
        "session_no_module": "down: the Wi-SUN module is not there (unplugged?)",
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
        "ha_last": "Home Assistant, last hour",
        "ha_away": "not connected",
        "contract_share": "{}% of the {} A contract",
        "breaker_near": "near the breaker's limit",
        "bill": "This billing period",
        "bill_since": "Since",
        "bill_energy": "Bought",
        "bill_cost": "Bill so far",
        "bill_projected": "Projected",
        "bill_price": "Price of a kWh now",
        "bill_tier": "(tier {})",
        "bill_unknown": "not known yet (the meter's record of the period is not all logged)",
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
        "cause": "原因: {}",
        "cause_refused": "メーターが認証を拒否しました。Bルート認証 ID とパスワードを確認して"
                         "ください。",
        "cause_not_found": "スキャンに応答するメーターがありません。Bルート認証 ID を確認し、"
                           "モジュールをメーターに近づけてください。",
        "today": "今日",
        "month": "今月",
        "bought": "買電",
        "sold": "売電",
        "until": "{}まで",
        "curve": "今日の電力",
        "curve_desc": "0時から現在までの電力、計測{n}件、{range}。",
        "curve_empty": "今日の計測値はまだありません。",
        "curve_steps": "メーターの記録による30分平均",
        "curve_steps_legend": "メーターの記録による30分ごとの平均",
        "curve_steps_desc": "計測のない時間は、メーターの記録による30分ごとの平均（{n}枠）を"
                            "階段状に表示。",
        "bars": "30分ごとの電力量（過去48時間）",
        "bars_desc": "30分枠{n}個、うちデータなし{gaps}個。線より上が買電、下が売電。",
        "bars_empty": "30 分ごとの記録はまだありません。",
        "no_data": "データなし",
        "not_logged": "未記録",
        "no_backfill": "30分ごとの記録には --data-log と --backfill-days が必要です。",
        "link": "通信状態",
        "session": "セッション",
        "session_up": "接続中",
        "session_down": "切断",
        "session_unknown": "不明",
        "session_no_module": "切断: Wi-SUN モジュールが見つかりません（抜けている？）",
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
        "ha_last": "Home Assistant の最新の時間",
        "ha_away": "未接続",
        "contract_share": "契約 {1} A の {0}%",
        "breaker_near": "ブレーカーの上限に近い",
        "bill": "今期の電気料金",
        "bill_since": "期間の開始",
        "bill_energy": "買電量",
        "bill_cost": "これまでの料金",
        "bill_projected": "期末の見込み",
        "bill_price": "今の 1 kWh の単価",
        "bill_tier": "（第 {} 段階）",
        "bill_unknown": "まだ不明（この期間のメーターの記録がそろっていません）",
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


def show_watts(value: Optional[int]) -> str:
    return DASH if value is None else f"{value:,}".replace("-", "−")


def show_kwh(value: Optional[Union[float, Decimal]]) -> str:
    return DASH if value is None else f"{value:,.2f}"


def show_amps(value: Optional[Union[int, float, Decimal]]) -> str:
    return DASH if value is None else amps_text(value)


def show_duration(seconds: Optional[float], t: dict) -> str:
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


def show_hhmm(when: Union[float, datetime.datetime]) -> str:
    if isinstance(when, (int, float)):
        when = datetime.datetime.fromtimestamp(when, JST)
    return when.astimezone(JST).strftime("%H:%M")


def data_value(value: object) -> str:
    """
    C{value} as a C{data-} attribute holds it: C{""} when not known.  Not
    escaped: the page's flattener escapes every attribute.
    """
    return "" if value is None else str(value)


def num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def power_label(watts: float) -> str:
    if abs(watts) >= 1000:
        return f"{num(watts / 1000)} kW".replace("-", "−")
    return f"{int(watts)} W".replace("-", "−")
