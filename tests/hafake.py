"""
A strict fake of Home Assistant's websocket API (the recorder's statistics
commands of HA 2024.x), served by autobahn on the test's reactor, on
loopback.

It serves the API at C{/api/websocket} only (any other path is HA's
frontend: a page, no websocket), follows HA's handshake (C{auth_required},
C{auth}, C{auth_ok} or C{auth_invalid} and a close), insists on increasing message ids, and rejects
in C{recorder/import_statistics} what HA 2024.3's recorder rejects: a
message that does not match the schema exactly (unknown keys included), a
non-admin user, an external statistic id that is malformed or whose source
is not its domain, an entity id whose source is not C{recorder}, a start
that is naive or not on the hour.  An accepted import is written after the
answer, as HA's recorder queue does; the same start imported again
replaces the row.  Month rows are HA's: whole months of its time zone,
each with the sum of its last hour, also past C{end_time}.

The fake is held to the real HA by L{tests.ha_scenario}, which runs against
both (L{tests.outputs.test_ha_real}).
"""

from __future__ import annotations

import datetime
import json
import re

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny

HA_VERSION = "2024.3.3"
#: HA's time zone for month boundaries (the instance's configured one).
TIME_ZONE = datetime.timezone(datetime.timedelta(hours=9))
_ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")
_STATISTIC_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_):(?!_)[\da-z_]+(?<!_)$")
_META_KEYS = {"has_mean": bool, "has_sum": bool, "name": (str, type(None)), "source": str,
              "statistic_id": str, "unit_of_measurement": (str, type(None))}
_STAT_KEYS = {"start", "mean", "min", "max", "last_reset", "state", "sum"}
_PERIODS = {"5minute", "hour", "day", "week", "month"}
_TYPES = {"last_reset", "max", "mean", "min", "state", "sum"}


HOUR = datetime.timedelta(hours=1)


def _month(when: datetime.datetime) -> datetime.datetime:
    """The start of the month holding C{when}, in HA's time zone, as UTC."""
    local = when.astimezone(TIME_ZONE)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).astimezone(
        datetime.timezone.utc)


class Invalid(Exception):
    """A schema violation: HA answers C{invalid_format}."""


class HaError(Exception):
    """What HA's recorder raises as HomeAssistantError: C{home_assistant_error}."""


def _datetime(value):
    """cv.datetime: a datetime from an ISO 8601 string (possibly naive)."""
    if not isinstance(value, str):
        raise Invalid("expected a datetime")
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"Invalid datetime specified: {value}") from None


def _number(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"expected float for dictionary value @ data['stats'][{key!r}]")


def check_import(msg: dict) -> tuple:
    """
    The schema of C{recorder/import_statistics}, then the recorder's rules.

    @return: C{(metadata, [(start as aware UTC datetime, stat dict)])}.
    @raise Invalid: the schema does not match.
    @raise HaError: the recorder refuses it.
    """
    if set(msg) != {"id", "type", "metadata", "stats"}:
        raise Invalid(f"extra keys not allowed or required key missing: {sorted(msg)}")
    meta, stats = msg["metadata"], msg["stats"]
    if not isinstance(meta, dict) or set(meta) != set(_META_KEYS):
        raise Invalid("metadata must have exactly " + ", ".join(sorted(_META_KEYS)))
    for key, kind in _META_KEYS.items():
        if not isinstance(meta[key], kind) or (kind is not bool and isinstance(meta[key], bool)):
            raise Invalid(f"bad type for metadata {key}")
    if not isinstance(stats, list):
        raise Invalid("expected a list for dictionary value @ data['stats']")
    parsed = []
    for stat in stats:
        if not isinstance(stat, dict) or "start" not in stat or not set(stat) <= _STAT_KEYS:
            raise Invalid(f"extra keys not allowed @ data['stats']: {sorted(stat)}")
        start = _datetime(stat["start"])
        for key in ("mean", "min", "max", "state", "sum"):
            if key in stat:
                _number(stat[key], key)
        if stat.get("last_reset") is not None:
            reset = _datetime(stat["last_reset"])
            if reset.tzinfo is None:
                raise HaError("Naive timestamp")
        parsed.append((start, stat))
    sid = meta["statistic_id"]
    if _ENTITY_ID.match(sid):
        if meta["source"] != "recorder":
            raise HaError("Invalid source")
    else:
        if not _STATISTIC_ID.match(sid):
            raise HaError("Invalid statistic_id")
        if meta["source"] != sid.split(":", 1)[0]:
            raise HaError("Invalid source")
    rows = []
    for start, stat in parsed:
        if start.tzinfo is None or start.utcoffset() is None:
            raise HaError("Naive timestamp")
        if start.minute or start.second or start.microsecond:
            raise HaError("Invalid timestamp")
        rows.append((start.astimezone(datetime.timezone.utc), stat))
    return meta, rows


class FakeHomeAssistant:
    """
    The recorder's state and the users.

    @ivar tokens: access token -> whether its user is an admin.
    @ivar rows: statistic id -> {UTC start: {"state": ..., "sum": ...}}.
    @ivar received: every message received, as parsed JSON.
    @ivar imports: the C{stats} lists accepted by import_statistics.
    """

    def __init__(self, tokens: dict) -> None:
        self.tokens = tokens
        self.rows: dict = {}
        self.metadata: dict = {}
        self.received: list = []
        self.imports: list = []
        self.protocols: list = []
        self.refuse = False  # close every new connection at once (HA "down")
        #: After auth_ok, answer no command and no ping (HA hung, or SIGSTOPped).
        self.stall = False
        #: After auth_ok, answer every command with this text instead (a
        #: proxy's error page), or with each result's C{result} replaced by
        #: C{shape} (an answer of a shape HA never sends).
        self.page: "str | None" = None
        self.shape: object = None
        #: Drop the connection on every import (an HA that logs us in and
        #: then fails each import).
        self.drop_imports = False
        #: Seconds before an accepted import is written (HA's recorder
        #: queues it: the answer comes first); C{None}: never written.
        self.recorder_lag: "float | None" = 0.0
        self.reactor = None

    def listen(self, reactor):
        """@return: the listening port (on 127.0.0.1, a free port)."""
        factory = WebSocketServerFactory()
        # No timers of autobahn's own on the test's reactor: a test ends
        # with nothing scheduled, whoever closed the connection.
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        factory.protocol = _Server
        factory.ha = self
        self.reactor = reactor
        return reactor.listenTCP(0, factory, interface="127.0.0.1")

    def sums(self, sid: str) -> list:
        """C{[(start in JST, sum)]} of C{sid}, oldest first."""
        return [(start.astimezone(TIME_ZONE), row.get("sum"))
                for start, row in sorted(self.rows.get(sid, {}).items())]

    # -- commands ------------------------------------------------------------

    def import_statistics(self, msg: dict, admin: bool):
        if not admin:
            return "unauthorized", "Unauthorized"
        meta, rows = check_import(msg)
        self.imports.append(msg["stats"])
        if self.recorder_lag is not None:
            self.reactor.callLater(self.recorder_lag, self._record, meta, rows)
        return None

    def _record(self, meta: dict, rows: list) -> None:
        """The recorder's task: the metadata, then each row (the same start replaces)."""
        table = self.rows.setdefault(meta["statistic_id"], {})
        self.metadata[meta["statistic_id"]] = meta
        for start, stat in rows:
            table[start] = {k: v for k, v in stat.items() if k != "start"}

    def statistics_during_period(self, msg: dict):
        allowed = {"id", "type", "start_time", "end_time", "statistic_ids", "period", "units",
                   "types"}
        if not set(msg) <= allowed or not {"start_time", "statistic_ids", "period"} <= set(msg):
            raise Invalid(f"bad keys {sorted(msg)}")
        if msg["period"] not in _PERIODS or not set(msg.get("types", [])) <= _TYPES:
            raise Invalid("bad period or types")
        ids = msg["statistic_ids"]
        if not isinstance(ids, list) or not ids:
            raise Invalid("statistic_ids must be a non-empty list")
        start = _datetime(msg["start_time"])
        end = _datetime(msg["end_time"]) if "end_time" in msg else None
        if start.tzinfo is None or (end is not None and end.tzinfo is None):
            # HA reads a naive time as UTC; our client never sends one.
            raise Invalid("naive start_time or end_time")
        types = set(msg.get("types") or _TYPES)
        if msg["period"] == "month":
            # HA widens the range to whole months (its time zone): from the
            # month holding start_time to the end of the one holding end_time.
            start = _month(start)
            end = None if end is None else _month(_month(end) + datetime.timedelta(days=32))
        elif msg["period"] != "hour":
            raise Invalid("this fake keeps hours and months only")
        result = {}
        for sid in ids:
            rows = [(s, s + HOUR, r) for s, r in sorted(self.rows.get(sid, {}).items())
                    if s >= start and (end is None or s < end)]
            if msg["period"] == "month":
                rows = self._months(rows)
            if rows:
                result[sid] = [dict({k: r.get(k) for k in sorted(types)},
                                    start=s.timestamp() * 1000, end=e.timestamp() * 1000)
                               for s, e, r in rows]
        return result

    @staticmethod
    def _months(rows: list) -> list:
        """One row per month (HA's time zone): the month's last sum and state."""
        months: dict = {}
        for start, _, row in rows:
            key = _month(start)
            months[key] = (_month(key + datetime.timedelta(days=32)), row)
        return sorted((k, end, row) for k, (end, row) in months.items())

    def list_statistic_ids(self, msg: dict):
        if not set(msg) <= {"id", "type", "statistic_type"}:
            raise Invalid(f"extra keys not allowed: {sorted(msg)}")
        kind = msg.get("statistic_type")
        if kind not in (None, "sum", "mean"):
            raise Invalid("statistic_type must be sum or mean")
        return [dict(statistic_id=sid, source=meta["source"], name=meta["name"],
                     has_sum=meta["has_sum"], has_mean=meta["has_mean"],
                     statistics_unit_of_measurement=meta["unit_of_measurement"])
                for sid, meta in sorted(self.metadata.items())
                if kind is None or meta["has_" + kind]]


class _Server(WebSocketServerProtocol):
    def onConnect(self, request):
        if request.path != "/api/websocket":
            raise ConnectionDeny(ConnectionDeny.NOT_FOUND, "Not Found")

    def onOpen(self):
        ha = self.factory.ha
        if ha.refuse:
            self.dropConnection(abort=True)
            return
        ha.protocols.append(self)
        self.user = None
        self.last_id = 0
        self.send({"type": "auth_required", "ha_version": HA_VERSION})

    def send(self, message: dict) -> None:
        self.sendMessage(json.dumps(message).encode(), isBinary=False)

    def onMessage(self, payload, isBinary):
        ha = self.factory.ha
        msg = json.loads(payload)
        ha.received.append(msg)
        if self.user is None:
            token = msg.get("access_token") if msg.get("type") == "auth" else None
            if set(msg) == {"type", "access_token"} and token in ha.tokens:
                self.user = {"admin": ha.tokens[token]}
                self.send({"type": "auth_ok", "ha_version": HA_VERSION})
            else:
                self.send({"type": "auth_invalid",
                           "message": "Invalid access token or password"})
                self.sendClose()
            return
        ident = msg.get("id")
        if not isinstance(ident, int) or isinstance(ident, bool):
            self.send({"type": "result", "id": ident, "success": False,
                       "error": {"code": "invalid_format", "message": "Message incorrectly "
                                 "formatted."}})
            return
        if ident <= self.last_id:
            self.send({"type": "result", "id": ident, "success": False,
                       "error": {"code": "id_reuse",
                                 "message": "Identifier values have to increase."}})
            return
        self.last_id = ident
        if ha.stall:
            return
        if ha.drop_imports and msg.get("type") == "recorder/import_statistics":
            self.dropConnection(abort=True)
            return
        if ha.page is not None:
            self.sendMessage(ha.page.encode(), isBinary=False)
            return
        answer = self.answer(ident, msg)
        if ha.shape is not None and answer.get("success"):
            answer["result"] = ha.shape
        self.send(answer)

    def onPing(self, payload):
        if not self.factory.ha.stall:
            super().onPing(payload)

    def answer(self, ident: int, msg: dict) -> dict:
        ha = self.factory.ha
        kind = msg.get("type")
        try:
            if kind == "recorder/import_statistics":
                refused = ha.import_statistics(msg, self.user["admin"])
                if refused:
                    return {"type": "result", "id": ident, "success": False,
                            "error": {"code": refused[0], "message": refused[1]}}
                result = None
            elif kind == "recorder/statistics_during_period":
                result = ha.statistics_during_period(msg)
            elif kind == "recorder/list_statistic_ids":
                result = ha.list_statistic_ids(msg)
            else:
                return {"type": "result", "id": ident, "success": False,
                        "error": {"code": "unknown_command", "message": "Unknown command."}}
        except Invalid as e:
            return {"type": "result", "id": ident, "success": False,
                    "error": {"code": "invalid_format", "message": str(e)}}
        except HaError as e:
            return {"type": "result", "id": ident, "success": False,
                    "error": {"code": "home_assistant_error", "message": str(e)}}
        return {"type": "result", "id": ident, "success": True, "result": result}

    def onClose(self, wasClean, code, reason):
        ha = self.factory.ha
        if self in ha.protocols:
            ha.protocols.remove(self)
