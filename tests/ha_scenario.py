"""
One scenario of Home Assistant's statistics API, played against the strict
fake (L{tests.hafake}) and against a real HA (L{tests.home_assistant}): every
answer the product reads (the rows of each period, C{list_statistic_ids},
the errors for refused input) must be the same from both, or the fake is
not the HA our fast tests think it is (L{tests.outputs.test_ha_real}).

Each step returns its answer normalised: rows as HA gives them, our own
statistics only in lists, errors by their code.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

from smartmeter_tx.model import JST
from smartmeter_tx.outputs.homeassistant import statistics as S
from smartmeter_tx.outputs.homeassistant import sync
from smartmeter_tx.outputs.homeassistant import websocket as W

SLUG = "5ce7a0000c0ffee1"
IMPORT, EXPORT = S.statistic_id(SLUG, "import"), S.statistic_id(SLUG, "export")
#: Around the end of a month in Japan's time zone (HA's, in both).
T0 = datetime.datetime(2026, 11, 30, 21, 0, tzinfo=JST)
H = datetime.timedelta(hours=1)


def _stats(start: datetime.datetime, sums: list, states: bool = True) -> list:
    rows = []
    for k, total in enumerate(sums):
        row = {"start": (start + k * H).isoformat(), "sum": total}
        if states:
            row["state"] = 1000.0 + total
        rows.append(row)
    return rows


def _period(start, end, period, types=("sum",), ids=(IMPORT,)):
    return {"start_time": start.isoformat(), "end_time": end.isoformat(),
            "statistic_ids": list(ids), "period": period, "types": list(types)}


#: What is refused, and how: (name, metadata changes, stats).
REFUSALS = [
    ("naive start", {}, [{"start": "2026-12-01T00:00:00", "sum": 1}]),
    ("start off the hour", {}, [{"start": "2026-12-01T00:30:00+09:00", "sum": 1}]),
    ("unknown stat key", {}, [{"start": "2026-12-01T00:00:00+09:00", "sum": 1, "kwh": 1}]),
    ("sum as text", {}, [{"start": "2026-12-01T00:00:00+09:00", "sum": "1"}]),
    ("source not the id's", {"source": "other"}, None),
    ("upper case id", {"statistic_id": "smartmeter_tx:Bad"}, None),
    ("entity id from us", {"statistic_id": "sensor.smartmeter_energy"}, None),
    ("unknown metadata key", {"extra": 1}, None),
    ("date as start", {}, [{"start": "yesterday", "sum": 1}]),
]

#: The steps: (name, kind, fields); kinds are the HA command, or "import"
#: (then wait until it is recorded) and "refuse" (an import that must fail).
STEPS = [
    ("nothing of ours yet", "recorder/list_statistic_ids", {"statistic_type": "sum"}),
    ("no rows yet", "recorder/statistics_during_period", _period(T0 - 24 * H, T0 + 24 * H,
                                                                 "hour")),
    ("four hours over the month's end", "import",
     {"direction": "import", "stats": _stats(T0, [1.0, 2.5, 4.0, 4.75])}),
    ("sold energy, sums only", "import",
     {"direction": "export", "stats": _stats(T0, [0.0, 0.0, 0.25, 0.5], states=False)}),
    ("listed with their metadata", "recorder/list_statistic_ids", {"statistic_type": "sum"}),
    ("listed among all", "recorder/list_statistic_ids", {}),
    ("hours in a window", "recorder/statistics_during_period",
     _period(T0 + H, T0 + 3 * H, "hour", ("sum", "state"))),
    ("hours of both", "recorder/statistics_during_period",
     _period(T0 - 24 * H, T0 + 24 * H, "hour", ("sum", "state"), (IMPORT, EXPORT))),
    ("months up to one inside the range", "recorder/statistics_during_period",
     _period(sync.EPOCH, T0 + 3 * H + datetime.timedelta(minutes=30), "month")),
    ("months up to the month's end, exactly", "recorder/statistics_during_period",
     _period(sync.EPOCH, T0 + 3 * H, "month")),
    ("months up to the month's last hour", "recorder/statistics_during_period",
     _period(sync.EPOCH, T0 + 2 * H, "month", ("sum", "state"))),
    ("an hour written again replaces it", "import",
     {"direction": "import", "stats": _stats(T0 + H, [2.0])}),
    ("after the replacement", "recorder/statistics_during_period",
     _period(T0, T0 + 4 * H, "hour", ("sum", "state"))),
    ("a statistic HA does not have", "recorder/statistics_during_period",
     _period(T0, T0 + 4 * H, "hour", ids=(S.statistic_id("0000000000000000", "import"),))),
] + [(f"refused: {name}", "refuse", {"metadata": changes, "stats": stats})
     for name, changes, stats in REFUSALS] + [
    ("a user who is not an admin", "refuse as user", {"metadata": {}, "stats": None}),
    ("nothing changed by the refusals", "recorder/statistics_during_period",
     _period(T0 - 24 * H, T0 + 24 * H, "hour", ("sum", "state"))),
]


def _ours(items) -> list:
    """Our statistics of a list answer, sorted (HA has its own beside them)."""
    return sorted((item for item in items or () if
                   str(item.get("statistic_id", "")).startswith(S.SOURCE + ":")),
                  key=lambda item: item["statistic_id"])


async def _refused(session, fields) -> dict:
    meta = dict(S.metadata(SLUG, "import"), **fields["metadata"])
    stats = fields["stats"] or _stats(T0, [9.0])
    try:
        await session.call("recorder/import_statistics", metadata=meta, stats=stats)
    except W.HaError as e:
        # The code is what a client can act on; the wording changes between
        # HA's releases (and voluptuous words its own).
        return {"error": e.code}
    return {"error": None}


async def play(admin, user) -> list:
    """
    Play L{STEPS} with two sessions: the admin's and a non-admin's.

    @return: C{[(step name, normalised answer)]}.
    """
    answers = []
    for name, kind, fields in STEPS:
        if kind == "import":
            direction = fields["direction"]
            await admin.call("recorder/import_statistics",
                             metadata=S.metadata(SLUG, direction), stats=fields["stats"])
            rows = [S.Row(datetime.datetime.fromisoformat(stat["start"]), None,
                          Decimal(repr(stat["sum"]))) for stat in fields["stats"]]
            await sync.recorded(admin, S.statistic_id(SLUG, direction), rows)
            answer = {"recorded": True}
        elif kind == "refuse":
            answer = await _refused(admin, fields)
        elif kind == "refuse as user":
            answer = await _refused(user, fields)
        elif kind == "recorder/list_statistic_ids":
            answer = _ours(await admin.call(kind, **fields))
        else:
            answer = await admin.call(kind, **fields)
        answers.append((name, answer))
    return answers


def keys_the_fake_has(fake_answers: list, real_answers: list) -> list:
    """
    The real answers of list steps cut to the keys the fake gives (HA adds
    display details the product never reads); every other answer whole.
    """
    cut = []
    for (name, fake), (_, real) in zip(fake_answers, real_answers):
        if isinstance(fake, list) and isinstance(real, list) and len(fake) == len(real):
            real = [{k: item.get(k) for k in mine} for mine, item in zip(fake, real)]
        cut.append((name, real))
    return cut
