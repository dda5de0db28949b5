"""
A household's tariff, from a TOML file (C{--tariff FILE}): the billing day,
the contract and its basic charge, the energy price by tiers of the
period's kWh or by bands of the time of day, the per-kWh adjustments (fuel,
renewable) by the month they apply from, and the price of sold energy.

    name = "TEPCO Juryo Dento B"
    billing_day = 5
    contract = "40A"
    basic = { "30A" = 935.25, "40A" = 1247.00 }
    [[tiers]]
    up_to = 120
    price = 29.80
    ...

Every number is read as written (a C{Decimal}, never a float).  A file that
cannot be read or does not fit is one L{TariffError} line naming the file,
the line or key, and what is wrong.
"""

from __future__ import annotations

import datetime
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Optional

from smartmeter_tx.errors import ConfigError

__all__ = ["Tariff", "Tier", "Band", "TariffError", "load_tariff", "parse_tariff", "DAYS",
           "HOLIDAY"]

#: The day names a band's C{days} takes (Monday first, as C{weekday()} counts).
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Japan's national holidays, as a band's C{days} names them.
HOLIDAY = "holiday"
_KEYS = {"name", "billing_day", "contract", "basic", "tiers", "bands", "adjustments", "sell",
         "breaker_warning"}
#: The share of an ampere contract at which the breaker is said to be near
#: (percent; C{breaker_warning} sets another).
BREAKER_WARNING = Decimal(90)
_HOURS = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_MONTH = re.compile(r"^(\d{4})-(\d\d)$")
_SLOTS_A_DAY = 48


class TariffError(ConfigError):
    """A tariff file that cannot be read or does not fit: one line."""


@dataclass(frozen=True)
class Tier:
    """Energy up to C{up_to} kWh of the period (the last: no bound) at C{price} yen/kWh."""

    up_to: Optional[Decimal]
    price: Decimal


@dataclass(frozen=True)
class Band:
    """
    A time-of-day price: slots that start from C{start} to before C{end}
    (minutes after midnight, JST; C{end} below C{start} wraps past
    midnight) on C{days} (C{None}: every day).
    """

    name: str
    start: int
    end: int
    days: Optional[frozenset]
    price: Decimal

    def matches(self, start: datetime.datetime, holiday: bool) -> bool:
        """Whether a slot that starts at C{start} (JST) on such a day is in the band."""
        if self.days is not None:
            named = DAYS[start.weekday()] in self.days or (holiday and HOLIDAY in self.days)
            if not named:
                return False
        minute = start.hour * 60 + start.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


@dataclass(frozen=True)
class Tariff:
    """
    @ivar basic: yen per period by contract; C{contract} names this home's.
    @ivar adjustments: per-kWh rates by name (C{fuel}, C{renewable}, ...),
        each C{((first month, yen/kWh), ...)}, oldest first.
    @ivar sell_price: yen/kWh for sold energy, or C{None}.
    @ivar breaker_warning: the percent of an ampere contract a phase's
        current reaches when the breaker is near its limit.
    """

    name: str
    billing_day: int
    contract: Optional[str]
    basic: dict
    tiers: tuple
    bands: tuple
    adjustments: dict
    sell_price: Optional[Decimal]
    breaker_warning: Decimal = BREAKER_WARNING

    @property
    def basic_yen(self) -> Decimal:
        """The basic charge of one period (0 without C{basic})."""
        return self.basic[self.contract] if self.contract in self.basic else Decimal(0)

    @property
    def contract_amperes(self) -> Optional[int]:
        """The contract in amperes (C{"40A"}: 40), or C{None} for another kind."""
        match = re.fullmatch(r"\s*(\d+)\s*A\s*", self.contract or "")
        return int(match.group(1)) if match else None

    def period(self, at: datetime.datetime) -> tuple:
        """
        The billing period that holds C{at} (aware): from C{billing_day}
        00:00 JST to the same day of the next month.

        @return: C{(start, end)}, aware, in C{at}'s zone.
        """
        day = self.billing_day
        year, month = at.year, at.month
        if at.day < day:
            year, month = (year - 1, 12) if month == 1 else (year, month - 1)
        start = at.replace(year=year, month=month, day=day, hour=0, minute=0, second=0,
                           microsecond=0)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return start, start.replace(year=year, month=month)

    def adjustment_rates(self, period_start: datetime.datetime) -> tuple:
        """
        The adjustments in force for a period (the rate of each table's latest
        month not after the period's start month).

        @return: C{(total yen/kWh, names with no rate in force)}.
        """
        month = (period_start.year, period_start.month)
        total, missing = Decimal(0), []
        for name, rates in sorted(self.adjustments.items()):
            known = [rate for first, rate in rates if first <= month]
            if known:
                total += known[-1]
            else:
                missing.append(name)
        return total, tuple(missing)

    def tier_at(self, energy: Decimal) -> tuple:
        """The tier a period's next kWh is in after C{energy}: C{(1-based index, Tier)}."""
        return next((n, t) for n, t in enumerate(self.tiers, 1)
                    if t.up_to is None or energy < t.up_to)

    def band_at(self, start: datetime.datetime, holiday: bool) -> Band:
        """The first band that a slot starting at C{start} falls in (there is one)."""
        return next(b for b in self.bands if b.matches(start, holiday))


def load_tariff(path: str) -> Tariff:
    """
    Read and check a tariff file.

    @raise TariffError: it cannot be read or does not fit (one line).
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f, parse_float=Decimal)
    except OSError as e:
        raise TariffError(f"cannot read the tariff {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise TariffError(f"tariff {path}: not TOML: {e}") from None
    except UnicodeDecodeError:
        raise TariffError(f"tariff {path}: not a UTF-8 text file") from None
    return parse_tariff(data, path)


def parse_tariff(data: dict, source: str = "tariff") -> Tariff:
    """
    Check a tariff's parsed TOML.  Pure.

    @raise TariffError: one line: C{tariff SOURCE: KEY: what is wrong}.
    """
    def fail(key: str, why: str) -> TariffError:
        return TariffError(f"tariff {source}: {key}: {why}")

    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key (known: {', '.join(sorted(_KEYS))})")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "missing: the tariff's name, shown to the user")
    day = data.get("billing_day")
    if not isinstance(day, int) or isinstance(day, bool) or not 1 <= day <= 28:
        raise fail("billing_day", "must be a whole number from 1 to 28")
    basic = {str(k): _yen(v, f"basic.{k}", fail) for k, v in _table(data, "basic", fail).items()}
    contract = data.get("contract")
    if contract is not None and not isinstance(contract, str):
        raise fail("contract", "must be a string such as \"40A\"")
    if basic and contract not in basic:
        raise fail("contract", f"must name one of basic's contracts ({', '.join(basic)})")
    tiers, bands = _tiers(data.get("tiers"), fail), _bands(data.get("bands"), fail)
    if bool(tiers) == bool(bands):
        raise fail("tiers", "give [[tiers]] (by the period's kWh) or [[bands]] (by the time "
                            "of day), one of the two")
    sell = _table(data, "sell", fail)
    if set(sell) - {"price"}:
        raise fail("sell", "takes only price")
    warning = _yen(data.get("breaker_warning", BREAKER_WARNING), "breaker_warning", fail)
    if not 50 <= warning <= 100:
        raise fail("breaker_warning", "must be a percent of the contract from 50 to 100")
    return Tariff(name=name.strip(), billing_day=day, contract=contract, basic=basic,
                  tiers=tiers, bands=bands, adjustments=_adjustments(data, fail),
                  sell_price=_yen(sell["price"], "sell.price", fail) if "price" in sell else None,
                  breaker_warning=warning)


def _table(data: dict, key: str, fail) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise fail(key, "must be a table")
    return value


def _yen(value: Any, key: str, fail) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)) or not (
            Decimal(value).is_finite()):
        raise fail(key, f"must be a number, not {value!r}")
    return Decimal(value)


def _array(value: Any, name: str, keys: tuple, fail) -> list:
    """
    C{[[name]]}'s tables, each with only C{keys}, or C{[]} without it.

    @return: C{[(its key in messages, table)]}.
    """
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value) or not value:
        raise fail(name, f"must be [[{name}]] tables")
    for n, table in enumerate(value):
        if set(table) - set(keys):
            raise fail(f"{name}[{n}]", f"takes only {', '.join(keys[:-1])} and {keys[-1]}")
    return [(f"{name}[{n}]", table) for n, table in enumerate(value)]


def _tiers(value: Any, fail) -> tuple:
    tables = _array(value, "tiers", ("up_to", "price"), fail)
    if not tables:
        return ()
    tiers, last = [], Decimal(0)
    for n, (key, table) in enumerate(tables):
        price = _yen(table.get("price"), f"{key}.price", fail)
        up_to = table.get("up_to")
        if up_to is None:
            if n != len(tables) - 1:
                raise fail(f"{key}.up_to", "missing: only the last tier has no up_to")
        else:
            up_to = _yen(up_to, f"{key}.up_to", fail)
            if up_to <= last:
                raise fail(f"{key}.up_to", f"must be above the tier before ({last} kWh)")
            last = up_to
        tiers.append(Tier(up_to, price))
    if tiers[-1].up_to is not None:
        raise fail(f"tiers[{len(tiers) - 1}].up_to", "the last tier has no up_to (it has no "
                                                   "upper bound)")
    return tuple(tiers)


def _bands(value: Any, fail) -> tuple:
    tables = _array(value, "bands", ("name", "hours", "days", "price"), fail)
    if not tables:
        return ()
    bands = []
    for key, table in tables:
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            raise fail(f"{key}.name", "missing")
        start, end = _hours(table.get("hours"), f"{key}.hours", fail)
        days = table.get("days")
        if days is not None:
            if (not isinstance(days, list) or not days
                    or any(d not in DAYS + (HOLIDAY,) for d in days)):
                raise fail(f"{key}.days", f"must list some of {', '.join(DAYS)}, {HOLIDAY}")
            days = frozenset(days)
        bands.append(Band(name.strip(), start, end, days,
                          _yen(table.get("price"), f"{key}.price", fail)))
    _covered(bands, fail)
    return tuple(bands)


def _hours(text: Any, key: str, fail) -> tuple:
    match = _HOURS.match(text) if isinstance(text, str) else None
    if not match:
        raise fail(key, f"must be \"HH:MM-HH:MM\", not {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or end > 24 * 60 or m1 % 30 or m2 % 30 or start == end:
        raise fail(key, f"{text!r}: times from 00:00 to 24:00, on the hour or half hour (the "
                        "meter's slots), start and end apart")
    return start, end


def _covered(bands: list, fail) -> None:
    """Every slot of every kind of day is in some band (else the bill would have a hole)."""
    monday = datetime.datetime(2024, 1, 1)
    for offset in range(7):
        for holiday in (False, True):
            for slot in range(_SLOTS_A_DAY):
                start = monday + datetime.timedelta(days=offset, minutes=30 * slot)
                if not any(b.matches(start, holiday) for b in bands):
                    kind = f"{DAYS[offset]}{' (a holiday)' if holiday else ''}"
                    raise fail("bands", f"no band covers {kind} {start:%H:%M}")


def _adjustments(data: dict, fail) -> dict:
    out = {}
    for name, table in _table(data, "adjustments", fail).items():
        key = f"adjustments.{name}"
        if not isinstance(table, dict) or not table:
            raise fail(key, "must be a table of \"YYYY-MM\" = yen/kWh")
        rates = []
        for month, rate in table.items():
            match = _MONTH.match(month)
            if not match or not 1 <= int(match.group(2)) <= 12:
                raise fail(f"{key}.{month}", "the key must be a month, \"YYYY-MM\"")
            rates.append(((int(match.group(1)), int(match.group(2))),
                          _yen(rate, f"{key}.{month}", fail)))
        out[str(name)] = tuple(sorted(rates))
    return out
